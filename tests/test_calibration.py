"""Calibrated scores and operating points: the fit, the error measure, the stored curve, the options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURE_DATA, read_jsonl, ticor
from ticor.calibration import (
    choose_threshold,
    expected_calibration_error,
    fit_platt,
    operating_curve,
    platt,
)
from ticor.errors import UsageError


def test_platt_recovers_the_scaling_that_made_the_labels() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 200_000)
    y = rng.random(len(z)) < platt(z, 0.4, -1.2)
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.4, abs=0.01) and b == pytest.approx(-1.2, abs=0.02)
    # fitted scores are calibrated; the raw sigmoid(z) is not
    assert expected_calibration_error(platt(z, a, b), y) < 0.01
    assert expected_calibration_error(platt(z, 1.0, 0.0), y) > 0.1


def test_platt_refuses_one_class() -> None:
    with pytest.raises(ValueError, match="both"):
        fit_platt(np.arange(5.0), np.ones(5))


def test_the_curve_and_the_operating_point_options() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(5000) < 0.3
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.15), 0, 1)
    curve = operating_curve(s, y)
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)
    assert curve[0]["recall"] == 1.0 and curve[0]["flagged"] == 1.0
    hi = choose_threshold(0.5, curve, min_precision=0.9)
    assert hi.threshold > 0.5 and "min_precision=0.9 on val" in hi.how
    assert ((s >= hi.threshold) & y).sum() / (s >= hi.threshold).sum() >= 0.9
    lo = choose_threshold(0.5, curve, min_recall=0.95)
    assert lo.threshold < 0.5 and ((s >= lo.threshold) & y).sum() / y.sum() >= 0.95
    assert choose_threshold(0.5, curve).threshold == 0.5
    assert choose_threshold(0.5, None, threshold=0.7).threshold == 0.7
    with pytest.raises(UsageError, match="one of"):
        choose_threshold(0.5, curve, threshold=0.5, min_recall=0.5)
    with pytest.raises(UsageError, match="between 0 and 1"):
        choose_threshold(0.5, curve, min_precision=1.5)
    with pytest.raises(UsageError, match="does not store"):
        choose_threshold(0.5, None, min_precision=0.9)
    with pytest.raises(UsageError, match="no threshold reaches precision"):
        choose_threshold(0.5, [{"threshold": 0.1, "precision": 0.5, "recall": 1.0}], min_precision=0.99)


@pytest.mark.slow
def test_the_bundle_is_calibrated_on_val_and_its_val_scores_reproduce_its_curve(fp32_bundle: Path,
                                                                                  tmp_path: Path) -> None:
    m = json.loads((fp32_bundle / "manifest.json").read_text())
    cal = m["score_calibration"]
    assert cal["method"] == "platt" and cal["fitted_on"] == "val" and cal["a"] > 0
    assert set(cal["ece"]) == {"val", "test"} and cal["ece"]["val"]["after"] <= cal["ece"]["val"]["before"] + 1e-9
    # the threshold kept the training decisions: the same positive rate on val as the stored curve says
    val = tmp_path / "val.jsonl"
    val.write_text((FIXTURE_DATA / "pairs" / "val.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    points = m["operating_curve"]["points"]
    assert m["operating_curve"]["split"] == "val" and len(points) > 5
    for p in points[:: max(1, len(points) // 6)]:
        r = ticor("eval", str(val), "--bundle", str(fp32_bundle), "--image-root", str(FIXTURE_DATA), "--no-cache",
                  "--also-at", repr(p["threshold"]), "--json", "-", "--quiet", "--no-rank")
        got = next(o for o in json.loads(r.stdout)["operating_points"] if o["name"] == "also at")
        assert got["precision"] == pytest.approx(p["precision"], abs=1e-9)
        assert got["recall"] == pytest.approx(p["recall"], abs=1e-9)
    assert len(read_jsonl(val)) == len(read_jsonl(FIXTURE_DATA / "pairs" / "val.jsonl"))


@pytest.mark.slow
def test_operating_points_in_matcher_score_and_info(fp32_bundle: Path, tmp_path: Path) -> None:
    from ticor import Matcher

    m = json.loads((fp32_bundle / "manifest.json").read_text())
    want = choose_threshold(m["threshold"], m["operating_curve"]["points"], min_recall=0.9)
    matcher = Matcher.load(fp32_bundle, providers="cpu", min_recall=0.9)
    assert matcher.threshold == want.threshold and matcher.operating_point.how == want.how
    pics = sorted((FIXTURE_DATA / "images").glob("*/*.png"))[:3]
    hits = matcher.score_batch([("a red apple", p) for p in pics])
    assert all(h.match == (h.score >= want.threshold) for h in hits)
    with pytest.raises(UsageError, match="one of"):
        Matcher.load(fp32_bundle, providers="cpu", threshold=0.5, min_precision=0.5)

    r = ticor("score", str(FIXTURE_DATA.parent.parent.parent / "examples" / "sample-pairs.csv"), "--bundle",
              str(fp32_bundle), "--no-cache", "--threshold", "0.99")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert all(x["match"] == (x["score"] >= 0.99) for x in rows)
    assert "threshold 0.9900 (asked)" in r.stderr
    bad = ticor("score", "examples/sample-pairs.csv", "--bundle", str(fp32_bundle), "--min-precision", "2",
                check=False)
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr
    info = ticor("info", str(fp32_bundle)).stdout
    assert "calibration platt on val" in info and "operating points (val;" in info and "<- the bundle" in info


@pytest.mark.slow
def test_a_resumed_score_run_keeps_its_threshold(fp32_bundle: Path, tmp_path: Path) -> None:
    """The match column depends on the threshold: resuming with another one is refused, not mixed."""
    from ticor.bundle import read_manifest
    from ticor.resume import run_identity, write_state
    from ticor.tables import Columns

    inp = tmp_path / "pairs.csv"
    inp.write_text((FIXTURE_DATA.parent.parent.parent / "examples" / "sample-pairs.csv").read_text(encoding="utf-8")
                   .replace("../tests/fixtures/data/", str(FIXTURE_DATA) + "/"), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    parts = out.with_name(out.name + ".ticor-parts")
    parts.mkdir()
    write_state(parts, run_identity(str(inp), Columns(), None, read_manifest(fp32_bundle)))  # begun at the default
    r = ticor("score", str(inp), "-o", str(out), "--bundle", str(fp32_bundle), "--no-cache", "--threshold", "0.9",
              check=False)
    assert r.returncode == 2 and "threshold" in r.stderr and not out.exists()
    ticor("score", str(inp), "-o", str(out), "--bundle", str(fp32_bundle), "--no-cache")  # the same threshold resumes
    assert len(out.read_text().splitlines()) == 16
