"""``ticor eval``: a bundle's metrics on labelled pairs, bad rows excluded, the manifest reproduced."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_DATA, read_jsonl, ticor
from ticor.evaluation import norm_text
from ticor.pair_eval import LabelledPair, parse_label, retrieval_truth


def grouped_test_split(data: Path, out: Path) -> Path:
    """The dataset's test pairs as a user's labelled file, with each picture's concept as
    ``group`` and each caption's concepts as ``text_group`` (the dataset's recall@k truth)."""
    concept = {r["image"]: r["concept"] for r in read_jsonl(data / "items.jsonl")}
    text_concepts: dict[str, set[str]] = defaultdict(set)
    for t in read_jsonl(data / "texts.jsonl"):
        text_concepts[norm_text(t["text"])].add(t["concept"])
    with out.open("w", encoding="utf-8") as fh:
        for r in read_jsonl(data / "pairs" / "test.jsonl"):
            r = dict(r, group=concept[r["image"]], text_group=sorted(text_concepts[norm_text(r["text"])]))
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return out


def assert_same_numbers(stored: object, got: object, path: str = "metrics") -> None:
    if isinstance(stored, dict):
        assert isinstance(got, dict), path
        for k, v in stored.items():
            assert k in got, f"{path}.{k} missing"
            assert_same_numbers(v, got[k], f"{path}.{k}")
    elif isinstance(stored, (int, float)) and not isinstance(stored, bool):
        assert got == pytest.approx(stored, abs=1e-9), path


@pytest.mark.slow
def test_eval_reproduces_the_metrics_the_bundle_stores_for_the_test_split(fp32_bundle: Path, tmp_path: Path) -> None:
    pairs = grouped_test_split(FIXTURE_DATA, tmp_path / "test.jsonl")
    r = ticor("eval", str(pairs), "--bundle", str(fp32_bundle), "--image-root", str(FIXTURE_DATA), "--no-cache",
              "--json", "-", "--quiet")
    got = json.loads(r.stdout)
    stored = json.loads((fp32_bundle / "manifest.json").read_text())["metrics"]["test"]
    assert got["scored"] == len(read_jsonl(FIXTURE_DATA / "pairs" / "test.jsonl")) and got["excluded"]["count"] == 0
    assert_same_numbers(stored, got["metrics"])
    assert got["metrics"]["retrieval"]["texts"] == stored["retrieval"]["texts"]


@pytest.mark.slow
def test_bad_rows_are_reported_and_excluded_never_a_crash(fp32_bundle: Path, tmp_path: Path) -> None:
    rows = read_jsonl(FIXTURE_DATA / "pairs" / "test.jsonl")[:12]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes((FIXTURE_DATA / rows[0]["image"]).read_bytes()[:60])
    lines = ["id,text,image,label,lang,family"]
    for r in rows:
        lines.append(f'{r["id"]},"{r["text"]}",{FIXTURE_DATA / r["image"]},{r["label"]},{r["lang"]},{r["family"]}')
    good = FIXTURE_DATA / rows[0]["image"]
    lines += [f"bad-1,a cat,{tmp_path / 'missing.png'},1,en,x", f"bad-2,a cat,{corrupt},0,en,x",
              f"bad-3,a cat,{good},maybe,en,x", f"bad-4,,{good},1,,"]
    f = tmp_path / "pairs.csv"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = ticor("eval", str(f), "--bundle", str(fp32_bundle), "--slice-col", "family", "--also-at", "0.5",
              "--json", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots"), "--quiet")
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["rows"] == 16 and rep["scored"] == 12
    assert rep["excluded"]["by_status"] == {"bad_input": 1, "bad_label": 1, "decode_error": 1, "missing": 1}
    assert sorted(e["id"] for e in rep["excluded"]["rows"]) == ["bad-1", "bad-2", "bad-3", "bad-4"]
    assert set(rep["metrics"]["by_slice"]["family"]) == {r["family"] for r in rows}
    assert sum(b["n"] for b in rep["metrics"]["by_slice"]["family"].values()) == 12
    assert [p["name"] for p in rep["operating_points"]][:2] == ["the bundle's threshold", "also at"]
    assert any(p["name"].startswith("bundle's min_recall=0.9 on val") for p in rep["operating_points"])
    assert rep["operating_points"][1]["threshold"] == 0.5
    assert "4 excluded" in r.stdout and "family=" in r.stdout and "recall@1" in r.stdout
    assert 0 <= rep["calibration"]["ece"] <= 1 and rep["calibration"]["bundle"]["fitted_on"] == "val"
    for png in ("pr-curve.png", "score-histogram.png", "reliability.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_without_labels_is_refused_before_any_scoring(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("text,image\na cat,cat.png\n", encoding="utf-8")
    r = ticor("eval", str(f), "--bundle", str(tmp_path / "no-bundle"), check=False)
    assert r.returncode == 2 and "no 'label' column" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(("value", "want"), [(1, 1), (0, 0), ("1", 1), (" TRUE ", 1), ("no", 0), (True, 1),
                                             (1.0, 1), ("0.0", 0), ("2", None), ("", None), (None, None), (0.5, None)])
def test_labels_are_read_strictly(value: object, want: int | None) -> None:
    assert parse_label(value) == want


def test_recall_truth_follows_labels_groups_and_normalised_captions() -> None:
    def p(text: str, image: str, label: int, group: str | None = None, tg: tuple[str, ...] = ()) -> LabelledPair:
        return LabelledPair(row=0, id="", text=text, image=image, label=label, group=group, text_groups=tg)

    images = ["a1", "a2", "b1"]
    pairs = [p("Apple!", "a1", 1, "A"), p("apple", "b1", 0, "B"), p("x", "a2", 0, "A"), p("pear", "b1", 1, "B")]
    # "apple" and "Apple!" are one caption; its matching picture is in group A, so a2 matches too
    assert retrieval_truth(pairs, ["Apple!", "apple", "pear"], images) == [{0, 1}, {0, 1}, {2}]
    # a caption's own groups, when given, decide
    pairs.append(p("pear", "a1", 0, "A", ("A", "B")))
    assert retrieval_truth(pairs, ["pear"], images) == [{0, 1, 2}]
