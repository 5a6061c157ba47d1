"""``ticor adapt``: tune a bundle's model on a user's own pairs, keeping what it knew.

The base bundle's trained weights (its training run, found by their sha256) are the start;
the user's pairs, written as a dataset (:mod:`ticor.adapt_data`), are trained on with the same
recipe as ``ticor train`` (frozen trunks cached once, the top layers, projections and head tuned;
early stopping on the held-out part's ROC-AUC) at small-data settings (:data:`SMALL_DATA`). Then:

- **WiSE-FT**: the weights ``(1 - alpha) * base + alpha * tuned`` for each alpha in
  :data:`ALPHAS`, scored on the held-out part; the best ROC-AUC among the mixes that keep the
  base's own test split within ``max_forgetting`` F1 (when that dataset is present) is kept;
- the kept weights are exported like any training run (graphs validated against torch, Platt
  calibration and the operating curve fitted on the held-out part), then quantized by
  ``ticor quantize`` behind its gate (the held-out part as its val and test).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from ticor._console import say
from ticor._files import sha256_file
from ticor.errors import UsageError
from ticor.evaluation import load_dataset
from ticor.metrics import best_threshold, evaluate, roc_auc
from ticor.paths import cache_path
from ticor.training.checkpoint import assign, load_trained
from ticor.training.features import conse_vectors, image_features, text_features
from ticor.training.model import PRESETS, Backbones, MatchModel, load_backbones
from ticor.training.train import LOG_FILE, TRAINED_FILE, TrainConfig, score_split, train

ALPHAS = (0.25, 0.5, 0.75, 1.0)


#: ``ticor train``'s recipe at the settings measured for a few thousand pairs (docs/adapt.md); the
#: preset, seed and length are filled in per run.
SMALL_DATA = TrainConfig(preset="", epochs=10, batch=48, lr_text=6e-5, lr_image=3e-4, lr_new=2e-3, warmup_steps=10,
                         checkpoint_every=20, evals_per_epoch=2, photo_repeat=1)


def base_weights(run: Path, trained_sha256: str | None) -> Path:
    """The base bundle's trained weights in its training run ``run``, checked by sha256."""
    path = run / TRAINED_FILE
    if trained_sha256 is None:
        raise UsageError("the base bundle does not record the trained weights it came from; re-export it")
    if not path.is_file() or sha256_file(path) != trained_sha256:
        raise UsageError(f"tuning needs the base bundle's trained weights ({path}, sha256 {trained_sha256[:12]}...); "
                         "run `ticor train` (or `make run`) first, give --run, or use --calibrate-only")
    return path


class Retention:
    """The base's own test split scored by a model: F1 at the threshold fitted on its val split."""

    def __init__(self, model: MatchModel, dataset: Path, backbones: Backbones, quiet: bool) -> None:
        self.ds = load_dataset(dataset)
        preset = model.preset
        feat = cache_path("features")
        self.tf = text_features(model.text, Path(backbones.tokenizer), preset.text_spec, self.ds.texts(), feat,
                                backbones.text_weights_id, quiet=quiet)
        self.imf = image_features(model.image, preset.image_spec, self.ds.root, self.ds.images(), feat,
                                  backbones.image_weights_id, quiet=quiet)
        if model.image.conse is not None:
            conse_vectors(model, self.imf)

    def measure(self, model: MatchModel) -> dict[str, float]:
        val_rows, val_scores, _ = score_split(model, self.ds, self.tf, self.imf, "val")
        thr = best_threshold(np.array([r["label"] for r in val_rows]), val_scores)
        rows, scores, _ = score_split(model, self.ds, self.tf, self.imf, "test")
        m = evaluate(rows, scores, thr)
        return {"f1": m["overall"]["f1"], "roc_auc": m["overall"]["roc_auc"], "threshold": thr}


def tune(dataset: Path, run: Path, preset: str, init: Path, seed: int, base_dataset: Path | None,
         max_forgetting: float, allow_forgetting: bool, epochs: int | None = None, max_steps: int = 0,
         quiet: bool = False) -> dict[str, Any]:
    """Train on the user's dataset from ``init``, choose the WiSE-FT mix, leave the kept weights
    and their log in ``run`` (what ``ticor export`` reads); return the tuning record."""
    t0 = time.monotonic()
    cfg = dataclasses.replace(SMALL_DATA, preset=preset, seed=seed, epochs=epochs or SMALL_DATA.epochs,
                              max_steps=max_steps)
    log = train(dataset, run, cfg, quiet=quiet, init=init, baseline=False)
    tuned_path = run / TRAINED_FILE
    tuned_raw = run / "tuned.safetensors"  # the fully tuned weights (alpha 1), kept for reruns
    if log.get("wise") is None:  # fresh from training (a rerun after the mix finds the mix's log)
        shutil.copyfile(tuned_path, tuned_raw)
    tuned, base = load_file(str(tuned_raw)), load_file(str(init))
    p = PRESETS[preset]
    backbones = load_backbones(p)
    model = MatchModel(p, backbones.bert, backbones.cnn)
    load_trained(model, init)
    model.eval()
    ds = load_dataset(dataset)
    feat = cache_path("features")
    tf = text_features(model.text, Path(backbones.tokenizer), p.text_spec, ds.texts(), feat, backbones.text_weights_id,
                       quiet=True)
    imf = image_features(model.image, p.image_spec, ds.root, ds.images(), feat, backbones.image_weights_id, quiet=True)
    if model.image.conse is not None:
        conse_vectors(model, imf)
    retention = Retention(model, base_dataset, backbones, quiet) if base_dataset else None
    keys = [k for k in tuned if k in base and not k.startswith("image.conse.class_text")]
    mixes: list[dict[str, Any]] = []
    for alpha in (0.0, *ALPHAS):
        assign(model, {k: (1 - alpha) * base[k] + alpha * tuned[k] for k in keys})
        rows, scores, _ = score_split(model, ds, tf, imf, "val")
        row: dict[str, Any] = {"alpha": alpha, "val_roc_auc": roc_auc(np.array([r["label"] for r in rows]), scores)}
        if retention is not None:
            row["base_test"] = retention.measure(model)
        mixes.append(row)
        say(quiet, f"ticor adapt: WiSE-FT alpha {alpha:.2f}: held-out ROC-AUC {row['val_roc_auc']:.4f}"
                   + (f", base test F1 {row['base_test']['f1']:.4f}" if retention is not None else ""))
    base_f1 = mixes[0]["base_test"]["f1"] if retention is not None else None

    def keeps(row: dict[str, Any]) -> bool:
        return base_f1 is None or allow_forgetting or base_f1 - row["base_test"]["f1"] <= max_forgetting

    allowed = [r for r in mixes[1:] if keeps(r)]
    if not allowed:
        worst = min(mixes[1:], key=lambda r: base_f1 - r["base_test"]["f1"])  # type: ignore[operator]
        raise UsageError(f"every tuned mix loses more than {max_forgetting:.3f} F1 on the base's own test split "
                         f"(the least: alpha {worst['alpha']:.2f}, {base_f1:.4f} -> {worst['base_test']['f1']:.4f}); "
                         "nothing written. Give --allow-forgetting to accept it")
    chosen = max(allowed, key=lambda r: (round(r["val_roc_auc"], 4), -r["alpha"]))
    alpha = chosen["alpha"]
    kept = {k: (1 - alpha) * base[k] + alpha * tuned[k] for k in keys}
    assign(model, kept)
    rows, scores, _ = score_split(model, ds, tf, imf, "val")
    threshold = best_threshold(np.array([r["label"] for r in rows]), scores)
    full = dict(load_file(str(tuned_raw)))
    full.update(kept)
    save_file({k: v.contiguous() for k, v in full.items()}, str(tuned_path), metadata={"preset": preset})
    tuning = {"alpha": alpha, "mixes": mixes, "config": log["config"], "steps": log["steps"],
              "epochs": log["epochs"], "kept_step": log["kept_step"], "history": log["history"],
              "max_forgetting": max_forgetting, "allow_forgetting": allow_forgetting,
              "seconds": round(time.monotonic() - t0, 1)}
    log.update({"trained_sha256": sha256_file(tuned_path), "threshold": threshold,
                "threshold_source": "maximum F1 on the held-out part",
                "val": evaluate(rows, scores, threshold), "wise": tuning,
                "baseline_test": None})
    log["test"] = log["val"]
    (run / LOG_FILE).write_text(json.dumps(log, indent=2, sort_keys=True), encoding="utf-8")
    return tuning
