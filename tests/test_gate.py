"""The quantization gate on known scores: each criterion refuses on its own, the band is honest,
and the batch-drift measure tells a batch-independent embedder from one that is not."""

from __future__ import annotations

import numpy as np
import pytest

from ticor.bundle import Gate
from ticor.metrics import CONFIDENT_BAND, against_reference
from ticor.quantization.gate import MAX_BATCH_DRIFT, MIN_CONFIDENT, batch_drift, failures, judge

THR = 0.35


def _data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    scores = np.clip(np.where(y, rng.normal(0.65, 0.2, n), rng.normal(0.2, 0.15, n)), 0.0, 1.0)
    langs = ["en" if k % 3 else "zh" for k in range(n)]
    return y, scores, langs


def _failed(verdict: dict) -> set[str]:
    return {k for k, v in verdict["criteria"].items() if not v["passed"]}


def test_identical_scores_pass_every_criterion() -> None:
    y, s, langs = _data()
    v = judge(y, langs, s, THR, s.copy(), THR, drift=0.0)
    assert v["passed"] and not _failed(v) and not failures(v)
    assert v["reported"]["agreement"] == 1.0 and v["reported"]["abs_diff_max"] == 0.0
    assert set(v["by_lang"]) == {"en", "zh"} and sum(b["pairs"] for b in v["by_lang"].values()) == len(y)


def test_batch_drift_alone_fails_the_gate() -> None:
    y, s, langs = _data()
    v = judge(y, langs, s, THR, s, THR, drift=2 * MAX_BATCH_DRIFT)
    assert _failed(v) == {"batch_independence"} and "with its batch" in failures(v)[0]
    assert judge(y, langs, s, THR, s, THR, drift=MAX_BATCH_DRIFT)["passed"]
    reported = judge(y, langs, s, THR, s, THR, drift=1.0, drift_limit=None)  # fp16, meant for GPU providers
    assert reported["passed"] and reported["criteria"]["batch_independence"]["value"] == 1.0


def test_confident_flips_fail_but_flips_inside_the_band_do_not() -> None:
    y, s, langs = _data()
    near = np.flatnonzero((np.abs(s - THR) < CONFIDENT_BAND * 0.9) & (s >= THR))[:40]
    moved = s.copy()
    moved[near] = THR - 0.001  # 40 coin-toss pairs flip: reported, not gated
    v = judge(y, langs, s, THR, moved, THR, drift=0.0)
    assert v["reported"]["agreement"] < 1.0 and v["reported"]["match_lost"] == len(near) == 40
    assert v["criteria"]["confident_kept"]["value"] == 1.0 and "confident_kept" not in _failed(v)
    confident = np.flatnonzero(s > THR + 0.3)
    n_conf = int((np.abs(s - THR) > CONFIDENT_BAND).sum())
    allowed = int(np.floor(n_conf * (1 - MIN_CONFIDENT)))
    flipped = s.copy()
    flipped[confident[: allowed + 1]] = 0.0  # one confident flip more than 99.9% allows
    v = judge(y, langs, s, THR, flipped, THR, drift=0.0)
    assert "confident_kept" in _failed(v)
    assert v["criteria"]["confident_kept"]["flips"] == allowed + 1
    flipped[confident[allowed]] = s[confident[allowed]]
    assert "confident_kept" not in _failed(judge(y, langs, s, THR, flipped, THR, drift=0.0))


def test_f1_and_auc_drops_fail_on_their_own() -> None:
    y, s, langs = _data()
    # every clearly negative score lifted to just outside the band below the threshold: no decision
    # changes and every pair stays confident, but those negatives now outrank the low positives
    noisy = s.copy()
    noisy[s < THR - 0.1] = np.maximum(noisy[s < THR - 0.1], np.where(y[s < THR - 0.1], 0.0, THR - 0.06))
    v = judge(y, langs, s, THR, noisy, THR, drift=0.0)
    assert v["criteria"]["f1"]["change"] == 0.0 and v["criteria"]["roc_auc"]["change"] < -0.005
    assert _failed(v) == {"roc_auc"}
    # a higher threshold for the variant: fewer matches found, F1 falls by more than half a point
    v = judge(y, langs, s, THR, s, THR + 0.2, drift=0.0)
    assert "f1" in _failed(v) and v["criteria"]["f1"]["change"] < -0.005


def test_against_reference_counts() -> None:
    ref = np.array([0.10, 0.34, 0.36, 0.90, 0.80])
    new = np.array([0.10, 0.36, 0.34, 0.20, 0.85])
    r = against_reference(ref, 0.35, new, 0.35)
    assert r["pairs"] == 5 and r["agreement"] == pytest.approx(2 / 5)
    assert r["confident_pairs"] == 3 and r["confident_flips"] == 1 and r["confident_kept"] == pytest.approx(2 / 3)
    assert (r["match_lost"], r["match_gained"]) == (2, 1) and r["in_band_share"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError):
        against_reference(ref, 0.35, new[:3], 0.35)


def _head(t: np.ndarray, i: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(t * i).sum(axis=1, keepdims=True)))


def test_batch_drift_tells_a_batch_dependent_embedder() -> None:
    rng = np.random.default_rng(2)
    texts = [f"caption {k} " * (1 + k % 4) for k in range(12)]
    pictures = rng.random((12, 3, 8, 8)).astype(np.float32)

    def per_row(batch: list[str]) -> np.ndarray:
        return np.array([[len(t) % 7, t.count("1"), 1.0] for t in batch], np.float32) / 10

    def pictures_per_row(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), 3, -1).mean(axis=2)

    def per_batch(batch: list[str]) -> np.ndarray:  # one scale for the whole batch, as dynamic int8 has
        v = per_row(batch)
        scale = max(float(np.abs(v).max()), 1e-6) / 7
        return np.round(v / scale) * scale

    assert batch_drift(per_row, pictures_per_row, _head, texts, pictures) == 0.0
    assert batch_drift(per_batch, pictures_per_row, _head, texts, pictures) > MAX_BATCH_DRIFT


def test_a_version_1_gate_record_still_loads_and_reads() -> None:
    old = {"variant": "text int8-mixed + image fp32 + head fp32", "fp32_test_f1": 0.777, "test_f1": 0.7778,
           "f1_change": 0.0008, "agreement": 0.9942, "passed": True, "max_f1_drop": 0.005, "min_agreement": 0.99}
    g = Gate.from_json(old)
    assert g.version == 1 and g.criteria is None and "gate version 1" in g.describe()
    assert Gate.from_json(g.to_json()) == g


def test_branches_that_fail_together_go_back_to_fp32_slowest_first() -> None:
    """``ticor quantize``'s choice: each branch passed alone on val; together they fail, so the
    branch that gains least time goes back to fp32 (a forced branch stays), and the rows join
    the table."""
    from ticor.quantization.choice import Graph, settle

    y, s, langs = _data()
    ok, bad = judge(y, langs, s, THR, s, THR, drift=0.0), judge(y, langs, s, THR, 1.0 - s, THR, drift=0.0)
    fp32 = {p: Graph(p, "fp32", f"{p}.fp32") for p in ("text", "image", "head")}
    text, image = Graph("text", "int8-t", "text.t"), Graph("image", "int8-i", "image.i")
    ms = {"fp32": 10.0, "int8-t": 5.0, "int8-i": 9.5}  # the image graph gains least

    def row_for(combo: dict) -> dict:
        names = {p: g.name for p, g in combo.items()}
        both = names["text"] != "fp32" and names["image"] != "fp32"
        v = bad if both else ok
        return {"variant": " + ".join(f"{p} {n}" for p, n in names.items()), "graphs": names,
                "files": [g.file for g in combo.values()], "val_passes": v["passed"], "val_gate": v,
                "latency_ms": {p: ms[n] for p, n in names.items()}}

    def table() -> list[dict]:
        return [row_for(fp32), row_for(fp32 | {"text": text}), row_for(fp32 | {"image": image})]

    t = table()
    chosen, row = settle(fp32 | {"text": text, "image": image}, fp32, {"text": "auto", "image": "auto"}, t, row_for)
    assert {p: g.name for p, g in chosen.items()} == {"text": "int8-t", "image": "fp32", "head": "fp32"}
    assert row["val_passes"] and len(t) == 4 and not t[3]["val_passes"]  # the failing pair is in the table
    # the image forced by the user: the text goes back instead
    chosen, row = settle(fp32 | {"text": text, "image": image}, fp32, {"text": "auto", "image": "int8-i"}, table(),
                         row_for)
    assert {p: g.name for p, g in chosen.items()} == {"text": "fp32", "image": "int8-i", "head": "fp32"}
    # both forced: nothing changes, the test gate decides (and refuses)
    chosen, row = settle(fp32 | {"text": text, "image": image}, fp32, {"text": "int8-t", "image": "int8-i"}, table(),
                         row_for)
    assert not row["val_passes"] and chosen["image"] is image and chosen["text"] is text
