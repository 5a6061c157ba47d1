"""``ticor adapt``: the held-out part, files without labels, bad rows, the calibration-only mode
(runtime), and tuning end to end on the fixture (a few steps): the record, the refusal on
forgetting, an interrupted run."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURE_DATA, read_jsonl, ticor
from ticor.adapt_data import drawn_negatives, hold_out, read_pairs
from ticor.bundle import read_manifest
from ticor.evaluation import norm_text
from ticor.pair_eval import LabelledPair


def _pair_file(path: Path, splits: tuple[str, ...] = ("train", "val", "test"), labelled: bool = True,
               extra: list[dict] | None = None) -> Path:
    """The fixture's pairs as a user's CSV (absolute picture paths, the concept as ``group``)."""
    concept = {r["image"]: r["concept"] for r in read_jsonl(FIXTURE_DATA / "items.jsonl")}
    rows = [r for s in splits for r in read_jsonl(FIXTURE_DATA / "pairs" / f"{s}.jsonl")]
    if not labelled:
        rows = [r for r in rows if r["label"] == 1]
    cols = ["text", "image", "group", "lang"] + (["label"] if labelled else [])
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "image": str(FIXTURE_DATA / r["image"]), "group": concept[r["image"]]})
        for r in extra or []:
            w.writerow(r)
    return path


def _pairs(n: int) -> list[LabelledPair]:
    """Rows linked in chains: pictures shared by two captions, captions by two pictures, groups."""
    out = []
    for i in range(n):
        out.append(LabelledPair(row=i + 1, id=str(i), text=f"caption {i // 2}", image=f"/p/{i // 3}.png",
                                label=1, group=f"g{i // 7}" if i % 5 else None))
        out.append(LabelledPair(row=i + 1, id=f"{i}n", text=f"caption {(i + 11) // 2}", image=f"/p/{i // 3}.png",
                                label=0, negative="random"))
    return out


def test_held_out_part_shares_no_picture_caption_or_group() -> None:
    pairs = _pairs(400)
    parts = hold_out(pairs, 0.2, seed=0)
    assert 0.1 * len(pairs) < len(parts.val) < 0.35 * len(pairs)
    train_images = {p.image for p in parts.train}
    train_caps = {norm_text(p.text) for p in parts.train}
    train_groups = {p.group for p in parts.train if p.group}
    for p in parts.val:
        assert p.image not in train_images
        assert norm_text(p.text) not in train_caps
        assert p.group is None or p.group not in train_groups
    assert parts.crossing > 0 and "left out" in parts.how  # negatives whose caption is the other side's
    again = hold_out(pairs, 0.2, seed=0)
    assert [p.id for p in again.val] == [p.id for p in parts.val]  # the same part every run


def test_one_linked_block_cannot_be_held_out() -> None:
    pairs = [LabelledPair(row=i, id=str(i), text="a dog", image=f"/p/{i}.png", label=1) for i in range(20)]
    with pytest.raises(Exception, match="one linked block"):
        hold_out(pairs, 0.2, seed=0)


def test_file_without_labels_is_a_list_of_matches(tmp_path: Path) -> None:
    path = _pair_file(tmp_path / "captions.csv", labelled=False)
    pf = read_pairs(str(path))
    assert pf.pairs and all(p.label == 1 for p in pf.pairs)
    parts = hold_out(pf.pairs, 0.3, seed=1)
    val = drawn_negatives(parts.val, seed=1)
    drawn = [p for p in val if p.negative == "drawn"]
    assert len(drawn) == len({p.image for p in parts.val})
    matches = {(norm_text(p.text), p.image) for p in parts.val}
    groups = {p.image: p.group for p in parts.val}
    caption_groups = {norm_text(p.text): p.group for p in parts.val}
    for d in drawn:  # a drawn caption never belongs to its picture's own concept
        assert (norm_text(d.text), d.image) not in matches
        assert caption_groups[norm_text(d.text)] != groups[d.image]


def test_bad_rows_are_left_out_by_status(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot a picture")
    good = next(iter((FIXTURE_DATA / "images").rglob("*.png")))
    extra = [{"text": "a cat", "image": str(tmp_path / "missing.png"), "label": "1"},
             {"text": "a cat", "image": str(corrupt), "label": "1"},
             {"text": "", "image": str(good), "label": "1"},
             {"text": "a cat", "image": str(good), "label": "maybe"}]
    pf = read_pairs(str(_pair_file(tmp_path / "pairs.csv", extra=extra)))
    statuses = sorted(e.status for e in pf.excluded)
    assert len(pf.excluded) == 4, statuses
    assert "bad_label" in statuses and "missing" in statuses and "bad_input" in statuses
    assert all(p.image != str(corrupt) for p in pf.pairs)


def test_calibrate_only_writes_a_new_bundle_with_its_record(fp32_bundle: Path, tmp_path: Path) -> None:
    from ticor.calibration import recalibrate
    from ticor.matcher import Matcher

    pairs = _pair_file(tmp_path / "mine.csv")
    out = tmp_path / "calibrated"
    refused = ticor("adapt", str(pairs), "--bundle", str(fp32_bundle), "--out", str(fp32_bundle),
                    "--calibrate-only", check=False)
    assert refused.returncode == 2 and "never overwrites" in refused.stderr
    done = ticor("adapt", str(pairs), "--bundle", str(fp32_bundle), "--out", str(out), "--calibrate-only",
                 "--json", str(tmp_path / "report.json"), "--slice-col", "lang", "--quiet")
    assert done.stdout.splitlines()[0] == str(out)
    assert "held-out pairs" in done.stdout and "ROC-AUC" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["before"]["by_slice"]["lang"]) == set(report["after"]["by_slice"]["lang"]) == {"en", "zh"}
    m = read_manifest(out)
    rec = m.adaptation
    assert rec is not None and rec["mode"] == "calibrate"
    assert rec["pairs"]["used"] == 488 and rec["pairs"]["left_out"] == {}
    assert rec["base"]["model_version"] == read_manifest(fp32_bundle).model_version
    assert m.recalibration is not None and m.operating_curve is not None
    # the base is untouched, the graphs are shared, the runtime applies the map after the head
    assert read_manifest(fp32_bundle).adaptation is None
    assert m.files["head.onnx"] == read_manifest(fp32_bundle).files["head.onnx"]
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, m.embedding_dim)).astype(np.float32)
    b = rng.normal(size=(16, m.embedding_dim)).astype(np.float32)
    base, new = Matcher.load(fp32_bundle, cache=False), Matcher.load(out, cache=False)
    try:
        np.testing.assert_allclose(new.head(a, b), recalibrate(base.head(a, b), *m.recalibration), rtol=1e-6)
    finally:
        base.close()
        new.close()
    info = ticor("info", str(out))
    assert "adaptation  calibrated from" in info.stdout
    ev = ticor("eval", str(pairs), "--bundle", str(out), "--quiet", "--no-rank")
    assert "F1" in ev.stdout


@pytest.mark.slow
def test_tune_end_to_end_refusal_and_resume(fp32_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from ticor.cli import main
    from ticor.errors import EXIT_INTERRUPTED

    # a row of its own makes the file (and so the work folder under CACHE/adapt) new to this run
    picture = next(iter((FIXTURE_DATA / "images").rglob("*.png")))
    pairs = _pair_file(tmp_path / "mine.csv", extra=[{"text": f"run {uuid.uuid4().hex}", "image": str(picture),
                                                      "label": "0"}])
    run = str(fp32_bundle.parent / "run")
    common = ["--bundle", str(fp32_bundle), "--run", run, "--base-data", str(FIXTURE_DATA), "--precision", "fp32",
              "--max-steps", "4", "--quiet"]
    # forgetting: a bound no mix can keep refuses, nothing written
    refused = ticor("adapt", str(pairs), "--out", str(tmp_path / "never"), "--max-forgetting", "-1", *common,
                    check=False)
    assert refused.returncode == 2 and "allow-forgetting" in refused.stderr
    assert not (tmp_path / "never").exists()

    # an interrupted run leaves no bundle; the same command resumes and finishes
    import ticor.training.train as train_module

    real_loss, calls = train_module._loss, []

    def interrupted(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_loss(*a, **kw)

    out = tmp_path / "adapted"
    args = ["adapt", str(pairs), "--out", str(out), "--json", str(tmp_path / "r.json"), *common]
    monkeypatch.setattr(train_module, "_loss", interrupted)
    assert main(args) == EXIT_INTERRUPTED
    assert not out.exists()
    monkeypatch.setattr(train_module, "_loss", real_loss)
    capsys.readouterr()
    assert main([a for a in args if a != "--quiet"]) == 0
    assert "resuming at step 2/4" in capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())
    rec = read_manifest(out).adaptation
    assert rec is not None and rec["mode"] == "tune"
    assert rec["training"]["steps"] == 4
    assert rec["parts"]["replay"] > 0  # the base's own train pairs beside the user's
    assert {r["alpha"] for r in rec["wise"]["mixes"]} == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert "retention" in rec and abs(rec["retention"]["base_f1"] - rec["retention"]["adapted_f1"]) <= 1.0
    assert rec["parts"]["train"] + rec["parts"]["val"] - rec["parts"]["val_drawn"] <= 489
    assert report["before"]["overall"]["n"] == report["after"]["overall"]["n"] == rec["parts"]["val"]
    ticor("eval", str(pairs), "--bundle", str(out), "--quiet", "--no-rank")
    scored = ticor("score", str(pairs), "--bundle", str(out))
    assert scored.stdout.count("\n") >= 400


@pytest.mark.slow
def test_icon_example_is_concept_disjoint_and_nested(tmp_path: Path) -> None:
    from ticor.dataset.icons import CURVE, build_icons

    made = build_icons(tmp_path / "icons", quiet=True)
    assert made["source"]["package"] == "@mdi/svg@7.4.47" and not made["skipped"]

    def rows(name: str) -> list[dict[str, str]]:
        with open(tmp_path / "icons" / name, encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    adapt, test = rows("adapt.csv"), rows("test.csv")
    assert {r["group"] for r in adapt}.isdisjoint({r["group"] for r in test})
    assert {r["image"] for r in adapt}.isdisjoint({r["image"] for r in test})
    assert all((tmp_path / "icons" / r["image"]).is_file() for r in test)
    captions = {}
    for r in adapt + test:
        if r["label"] == "1":
            captions.setdefault(r["group"], set()).update(r["text"].split())
    for r in adapt + test:  # a wrong caption shares no word with the picture's own captions
        if r["label"] == "0":
            assert not set(r["text"].split()) & captions[r["group"]], r
    previous: list[dict[str, str]] = []
    for n in CURVE:
        part = rows(f"adapt-{n}.csv")
        assert len(part) <= n and part[: len(previous)] == previous
        previous = part
    unlabelled = rows("captions.csv")
    assert "label" not in unlabelled[0] and len(unlabelled) == sum(r["label"] == "1" for r in adapt)
