"""``ticor adapt``: a bundle in, a new bundle out, tuned (or only calibrated) on the user's pairs."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ticor._files import sha256_file
from ticor.commands._help import describe
from ticor.commands._runtime import add_pair_columns
from ticor.errors import EXIT_OK, UsageError

MAX_FORGETTING = 0.01  # F1 on the base's own test split


def register(sub: Any) -> None:
    p = sub.add_parser("adapt", help="tune a bundle on your own pairs (or only calibrate it): a new bundle",
                       **describe("adapt"))
    p.add_argument("pairs", help="pair file (CSV/TSV/JSONL/Parquet): text, image, optional label (absent: every "
                                 "row is a match), lang, group, split")
    p.add_argument("--bundle", required=True, help="the base bundle (fp32 to tune; any bundle to --calibrate-only)")
    p.add_argument("--out", required=True, help="the new bundle's directory (never the base's)")
    p.add_argument("--val", help="a pair file to validate on instead of holding out a part of PAIRS")
    p.add_argument("--val-share", type=float, default=0.2, help="share of the rows held out when neither --val nor a "
                                                               "split column is given (default 0.2)")
    p.add_argument("--calibrate-only", action="store_true", help="no training (runtime install, seconds): fit the "
                                                                 "score calibration and threshold on the pairs")
    p.add_argument("--precision", choices=["auto", "int8", "fp32"], default="auto",
                   help="the tuned bundle's precision: int8 goes through `ticor quantize` and its gate, measured on "
                        "the held-out part (a refusal fails the run); auto: int8 when the gate passes, else fp32, "
                        "saying why (default auto)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the small-data recipe's, docs/adapt.md)")
    p.add_argument("--max-steps", type=int, default=0, help="stop training after this many steps (default: no cap)")
    p.add_argument("--max-forgetting", type=float, default=MAX_FORGETTING,
                   help=f"largest F1 loss allowed on the base's own test split (default {MAX_FORGETTING})")
    p.add_argument("--allow-forgetting", action="store_true", help="write the bundle even when it forgets more")
    p.add_argument("--run", help="the base's training run (default CACHE/runs/PRESET; its weights must be the ones "
                                 "the base bundle records)")
    p.add_argument("--replay", type=float, default=1.0, help="pairs of the base's own train split mixed into "
                                                             "training, per training row of yours (default 1.0; "
                                                             "0: none)")
    p.add_argument("--base-data", help="the base's dataset for the retention check (default CACHE/dataset/full "
                                       "when it is the one the base was trained on)")
    point = p.add_mutually_exclusive_group()
    point.add_argument("--min-precision", type=float, help="the new bundle's threshold: the lowest with this "
                                                           "precision on the held-out part")
    point.add_argument("--min-recall", type=float, help="the new bundle's threshold: the highest with this recall "
                                                        "on the held-out part")
    add_pair_columns(p, "also compare per value of this column")
    p.add_argument("--group-col", default="group", help="what each row's picture shows (default group, if present)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out part and training (default 0)")
    p.add_argument("--json", help="write the before/after report as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=run)


def _counts(excluded: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in excluded:
        out[e.status] = out.get(e.status, 0) + 1
    return dict(sorted(out.items()))


def _table(before: dict[str, Any], after: dict[str, Any], n_val: int, tuned: bool) -> str:
    from ticor.adapt_data import interval

    lines = [f"{'held-out pairs':28s} {'base':>8s} {'adapted':>8s} {'change':>8s}"]
    keys = [("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
            ("ROC-AUC", "roc_auc")]
    for name, k in keys:
        a, b = before["overall"].get(k), after["overall"].get(k)
        if a is None or b is None:
            continue
        lines.append(f"{name:28s} {a:8.3f} {b:8.3f} {b - a:+8.3f}")
    for k in ("recall@1", "recall@5", "recall@10"):
        a, b = (before.get("retrieval") or {}).get(k), (after.get("retrieval") or {}).get(k)
        if a is not None and b is not None:
            lines.append(f"caption->picture {k:11s} {a:8.3f} {b:8.3f} {b - a:+8.3f}")
    groups = [(key[3:], before.get(key) or {}, after.get(key) or {}) for key in ("by_lang", "by_negative")]
    groups += [(col, (before.get("by_slice") or {}).get(col) or {}, values)
               for col, values in sorted((after.get("by_slice") or {}).items())]
    for name, old_blocks, new_blocks in groups:
        for v, blk in sorted(new_blocks.items()):
            old = old_blocks.get(v) or {}
            if old.get("f1") is not None and blk.get("f1") is not None:
                label = f"{name}={v} F1"
                lines.append(f"{label:28s} {old['f1']:8.3f} {blk['f1']:8.3f} {blk['f1'] - old['f1']:+8.3f}")
    lo, hi = interval(round(after["overall"]["accuracy"] * n_val), n_val)
    lines.append(f"thresholds: base {before['threshold']:.4f}, adapted {after['threshold']:.4f}; on {n_val} pairs "
                 f"the adapted accuracy's 95% interval is {lo:.3f}-{hi:.3f}")
    if tuned:
        lines.append("the adapted column's stopping step, WiSE-FT mix, calibration and threshold were chosen on these "
                     "pairs: read it as optimistic (a --val file never used otherwise gives an unbiased figure)")
    return "\n".join(lines)


def _finish(src: Path, out: Path, record: dict[str, Any], args: argparse.Namespace, description: str) -> Any:
    """Copy the bundle ``src`` to ``out`` with the adaptation record (and the operating point asked)."""
    from ticor.bundle import BUNDLE_FILES, read_manifest, write_bundle

    m = read_manifest(src)
    threshold, source = m.threshold, m.threshold_source
    if args.min_precision is not None or args.min_recall is not None:
        point = m.operating_point(min_precision=args.min_precision, min_recall=args.min_recall)
        threshold, source = point.threshold, point.how
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name in BUNDLE_FILES:
            shutil.copyfile(src / name, work / name)
        final = dataclasses.replace(m, adaptation=record, threshold=threshold, threshold_source=source,
                                    description=description,
                                    model_version=f"{m.model_version}-adapted-{record['pairs']['sha256'][:8]}")
        return write_bundle(work, out, final)
    finally:
        if work.exists():
            shutil.rmtree(work)


def run(args: argparse.Namespace) -> int:
    from ticor._console import say
    from ticor._deps import require_modules, require_onnxruntime
    from ticor.adapt_data import (
        MIN_VAL_EACH,
        drawn_negatives,
        hold_out,
        read_pairs,
        split_column,
    )
    from ticor.bundle import read_manifest
    from ticor.pair_eval import PairFile, bundle_metrics
    from ticor.tables import Columns

    require_onnxruntime()
    t0 = time.monotonic()
    base, out = Path(args.bundle), Path(args.out)
    m = read_manifest(base)
    if out.resolve() == base.resolve():
        raise UsageError("--out is the base bundle: ticor adapt never overwrites the bundle it starts from")
    if not args.calibrate_only:
        require_modules("ticor adapt", ["torch", "transformers", "onnx", "safetensors"])
        if m.precision != "fp32":
            raise UsageError(f"{base} is a {m.precision} bundle: tune from the fp32 bundle (the tuned one is "
                             "quantized again), or use --calibrate-only")
    cols = Columns(text=args.text_col, image=args.image_col)
    root = Path(args.image_root) if args.image_root else None
    slices = tuple(args.slice_col)
    pf = read_pairs(args.pairs, cols, root, args.label_col, args.group_col, slices)
    left_out = _counts(pf.excluded)
    say(args.quiet, f"ticor adapt: {args.pairs}: {pf.rows} rows, {len(pf.pairs)} usable"
                    + (f", left out: {', '.join(f'{k} {v}' for k, v in left_out.items())}" if left_out else ""))
    if args.val:
        vf = read_pairs(args.val, cols, root, args.label_col, args.group_col, slices)
        from ticor.adapt_data import Parts

        parts = Parts(pf.pairs, vf.pairs, f"--val {args.val}", 0)
        shared_pictures = {p.image for p in vf.pairs} & {p.image for p in pf.pairs}
        if shared_pictures:
            say(args.quiet, f"ticor adapt: warning: --val shares {len(shared_pictures)} pictures with {args.pairs}; "
                            "its figures will be optimistic")
    else:
        parts = split_column(pf, args.pairs) or hold_out(pf.pairs, args.val_share, args.seed)
    val = drawn_negatives(parts.val, args.seed)
    pos, neg = sum(p.label for p in val), sum(1 - p.label for p in val)
    say(args.quiet, f"ticor adapt: training part {len(parts.train)} rows; validation part {len(val)} pairs "
                    f"({pos} matching, {neg} not{', drawn' if len(val) > len(parts.val) else ''}); {parts.how}")
    if min(pos, neg) < 2 or (not args.calibrate_only and sum(p.label for p in parts.train) < 2):
        raise UsageError("too few pairs: the validation part needs matching and non-matching pairs, and the "
                         "training part at least two matching ones")
    if min(pos, neg) < MIN_VAL_EACH:
        say(args.quiet, f"ticor adapt: warning: {min(pos, neg)} pairs of one label in the validation part is too few "
                        "to tell a change of a few points; read the intervals in the table")
    val_pf = PairFile("validation part", None, val, [], slices, len(val))
    record: dict[str, Any] = {
        "mode": "calibrate" if args.calibrate_only else "tune",
        "base": {"model_version": m.model_version, "precision": m.precision, "path": str(base.resolve()),
                 "manifest_sha256": sha256_file(base / "manifest.json")},
        "pairs": {"path": str(Path(args.pairs).resolve()), "sha256": pf.sha256 or sha256_file(Path(args.pairs)),
                  "rows": pf.rows, "used": len(pf.pairs), "left_out": left_out},
        "parts": {"how": parts.how, "train": len(parts.train), "val": len(val), "val_matching": pos,
                  "val_drawn": len(val) - len(parts.val), "crossing_left_out": parts.crossing,
                  "val_file_sha256": sha256_file(Path(args.val)) if args.val else None},
        "settings": {"seed": args.seed, "val_share": args.val_share, "precision": args.precision,
                     "epochs": args.epochs, "max_steps": args.max_steps, "max_forgetting": args.max_forgetting,
                     "allow_forgetting": args.allow_forgetting, "replay": args.replay},
    }
    say(args.quiet, "ticor adapt: scoring the validation part with the base bundle")
    before = bundle_metrics(base, val_pf)
    if args.calibrate_only:
        done = _calibrate(m, base, out, parts.train, val_pf, before, record, args)
    else:
        done = _tune(m, base, out, parts, val, val_pf, before, record, args)
    after = done.adaptation["after"]
    table = _table(before, after, len(val), not args.calibrate_only)
    report = {"bundle": str(out), "before": before, "after": after, "record": done.adaptation}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n",
                                   encoding="utf-8")
    sys.stdout.write(f"{out}\n{table}\n")
    ret = done.adaptation.get("retention")
    if ret:
        sys.stdout.write(f"retention: the base's own test split F1 {ret['base_f1']:.4f} -> {ret['adapted_f1']:.4f} "
                         f"({ret['adapted_f1'] - ret['base_f1']:+.4f}; bound {args.max_forgetting})\n")
    say(args.quiet, f"ticor adapt: done in {time.monotonic() - t0:.0f} s")
    return EXIT_OK


def _calibrate(m: Any, base: Path, out: Path, train: list[Any], val_pf: Any, before: dict[str, Any],
               record: dict[str, Any], args: argparse.Namespace) -> Any:
    """Platt map, threshold and operating curve fitted on the training part (non-matches drawn when
    it has none), measured on the held-out part; the graphs are the base's."""
    import numpy as np

    from ticor.adapt_data import drawn_negatives
    from ticor.calibration import OperatingCurve, expected_calibration_error, fit_platt, operating_curve, platt
    from ticor.matcher import Matcher
    from ticor.metrics import best_threshold
    from ticor.pair_eval import PairFile, bundle_metrics, score_labelled

    fit_pairs = drawn_negatives(train, args.seed)
    matcher = Matcher.load(base, providers="cpu", cache=False)
    try:
        scored = score_labelled(matcher, PairFile("training part", None, fit_pairs, [], (), len(fit_pairs)),
                                with_rank=False)
    finally:
        matcher.close()
    y = np.array([p.label for p in scored.pairs])
    if y.min() == y.max():
        raise UsageError("the training part needs matching and non-matching pairs to calibrate on")
    p = np.clip(scored.scores, np.float32(1e-38), 1.0 - 2.0**-24)
    z = np.log(p) - np.log1p(-p)
    prior = m.recalibration
    if prior is not None:  # the base was calibrated this way already: fit on the graph's own scores
        z = (z - prior[1]) / prior[0]
    a, b = fit_platt(z, y)
    if not a > 0:
        raise UsageError("the base bundle ranks these matching pairs below the non-matching ones: no calibration "
                         "can fix that; tune instead")
    new = platt(z, a, b)
    threshold = best_threshold(y, new)
    record["recalibration"] = {"a": a, "b": b, "fitted_on": "training part", "pairs": len(y),
                               "base_rate": float(y.mean()),
                               "ece": {"before": expected_calibration_error(scored.scores, y),
                                       "after": expected_calibration_error(new, y)}}
    curve = OperatingCurve("the adaptation's training part", tuple(operating_curve(new, y)))
    tmp = Path(tempfile.mkdtemp(prefix=".calibrated-", dir=out.parent if out.parent.exists() else None))
    try:
        from ticor.bundle import BUNDLE_FILES, write_bundle

        for name in BUNDLE_FILES:
            shutil.copyfile(base / name, tmp / name)
        staged = write_bundle(tmp, tmp.with_name(tmp.name + "-b"), dataclasses.replace(
            m, threshold=threshold, threshold_source="maximum F1 on the adaptation's training part",
            operating_curve=curve, adaptation={**record}))
        record["after"] = bundle_metrics(staged.root, val_pf)
        record["before"] = before
        return _finish(staged.root, out, record, args, f"{m.description}, calibrated on {Path(args.pairs).name}")
    finally:
        for d in (tmp, tmp.with_name(tmp.name + "-b")):
            if d.exists():
                shutil.rmtree(d)


def replay_pairs(dataset: Path, n: int, seed: int) -> list[Any]:
    """``n`` rows of the base's own train split (matching pairs and their hard negatives, whole
    captions, in a seeded order), so tuning keeps seeing what the base knew."""
    import random

    from ticor.evaluation import load_dataset, read_jsonl
    from ticor.pair_eval import LabelledPair

    ds = load_dataset(dataset)
    concept = {item["image"]: item["concept"] for item in read_jsonl(dataset / "items.jsonl")}
    by_text: dict[str, list[dict[str, Any]]] = {}
    for r in ds.pairs["train"]:
        if r["label"] == 1 or r.get("negative") == "hard":
            by_text.setdefault(r["text"], []).append(r)
    texts = sorted(by_text)
    random.Random(seed).shuffle(texts)
    out: list[Any] = []
    for t in texts:
        if len(out) >= n:
            break
        for r in by_text[t]:
            out.append(LabelledPair(row=0, id=f"base-{r['id']}", text=r["text"], image=str(ds.root / r["image"]),
                                    label=int(r["label"]), lang=r.get("lang"), negative=r.get("negative"),
                                    family=r.get("family"), group=f"base:{concept.get(r['image'], r['image'])}"))
    return out


def _tune(m: Any, base: Path, out: Path, parts: Any, val: list[Any], val_pf: Any, before: dict[str, Any],
          record: dict[str, Any], args: argparse.Namespace) -> Any:
    from ticor._console import say
    from ticor.adapt_data import write_dataset
    from ticor.evaluation import load_dataset
    from ticor.export.onnx_export import export
    from ticor.pair_eval import bundle_metrics
    from ticor.paths import cache_path, dataset_dir
    from ticor.training import adapt as recipe
    from ticor.training.adapt import base_weights, tune

    init = base_weights(Path(args.run) if args.run else cache_path("runs", m.preset), m.trained_sha256)
    key = hashlib.sha256(json.dumps({"pairs": record["pairs"]["sha256"], "base": m.model_version,
                                     "val": record["parts"], "settings": record["settings"],
                                     "recipe": dataclasses.asdict(recipe.SMALL_DATA)},
                                    sort_keys=True).encode()).hexdigest()[:16]
    work = cache_path("adapt", key)  # a rerun of the same command resumes here (training checkpoints)
    work.mkdir(parents=True, exist_ok=True)
    base_data = Path(args.base_data) if args.base_data else dataset_dir()
    try:
        ok = m.dataset is not None and load_dataset(base_data).sha256 == m.dataset.dataset_sha256
    except UsageError:
        ok = False
    replay: list[Any] = []
    if not ok:
        say(args.quiet, f"ticor adapt: the base's dataset is not at {base_data}: no retention check, no replay")
    elif args.replay:
        replay = replay_pairs(base_data, round(args.replay * len(parts.train)), args.seed)
        say(args.quiet, f"ticor adapt: {len(replay)} pairs of the base's own train split replayed beside yours")
    record["parts"]["replay"] = len(replay)
    write_dataset(work / "dataset", dataclasses.replace(parts, train=parts.train + replay), val)
    t = time.monotonic()
    tuning = tune(work / "dataset", work / "run", m.preset, init, args.seed, base_data if ok else None,
                  args.max_forgetting, args.allow_forgetting, args.epochs, args.max_steps, args.quiet)
    seconds = {"tune": round(time.monotonic() - t, 1)}
    t = time.monotonic()
    fp32 = export(work / "run", work / "fp32", quiet=args.quiet)
    seconds["export"] = round(time.monotonic() - t, 1)
    final = fp32
    if args.precision != "fp32":
        from ticor.errors import GateError
        from ticor.quantization.quantize import gate_line, quantize

        t = time.monotonic()
        try:
            q = quantize(fp32, work / "int8", work / "dataset", quiet=args.quiet)
            say(args.quiet, f"ticor adapt: gate: {gate_line(q)}")
            final = work / "int8"
            record["int8"] = "passed the gate"
        except GateError as exc:
            if args.precision == "int8":
                raise
            record["int8"] = f"refused by the gate on the held-out part: {str(exc).splitlines()[0]}"
            say(args.quiet, f"ticor adapt: int8 refused by the gate; the adapted bundle stays fp32:\n{exc}")
        seconds["quantize"] = round(time.monotonic() - t, 1)
    chosen = next(r for r in tuning["mixes"] if r["alpha"] == tuning["alpha"])
    if "base_test" in chosen:
        record["retention"] = {"base_f1": tuning["mixes"][0]["base_test"]["f1"],
                               "adapted_f1": chosen["base_test"]["f1"],
                               "base_roc_auc": tuning["mixes"][0]["base_test"]["roc_auc"],
                               "adapted_roc_auc": chosen["base_test"]["roc_auc"],
                               "how": "the base's test split, torch, threshold fitted on its val split for each"}
    record["wise"] = {"alpha": tuning["alpha"], "mixes": tuning["mixes"]}
    record["training"] = {k: tuning[k] for k in ("config", "steps", "epochs", "kept_step")}
    record["seconds"] = seconds
    record["before"] = before
    record["after"] = bundle_metrics(final, val_pf)
    return _finish(final, out, record, args, f"{m.description}, adapted to {Path(args.pairs).name}")
