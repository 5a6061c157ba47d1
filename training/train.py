"""``ticor train``: fine-tune the top of both encoders, the projections and the fusion head.

Recipe (each part measured, see docs/training.md and docs/studies/training.md):

- frozen trunks cached once (:mod:`ticor.training.features`); per step only the top text
  layers, the top MobileNetV2 blocks, the projections and the head run forward and backward;
- a batch is ``batch`` matching (text, picture) pairs from the train split plus, for each
  text, its hard negative picture from the pair file when it has one;
- loss = symmetric InfoNCE over the batch (other pictures that also match a text are masked
  out, not counted as negatives) + binary cross-entropy of the fusion head on the matching
  pair, the hard negative and one random in-batch negative;
- AdamW, linear warm-up then cosine decay; dropout on in the trained layers, batch-norm
  statistics frozen;
- the decision threshold maximises F1 on the validation split; the test split is scored
  once, at the end, together with the article's baseline design trained on the same frozen
  features.

A checkpoint (safetensors: trainable weights, optimiser moments, step, validation history)
is written every ``checkpoint_every`` steps and on Ctrl-C; an interrupted run resumes from it
with the same batch order and dropout masks.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ticor import __version__
from ticor._console import Progress, say
from ticor._files import sha256_file
from ticor.errors import UsageError
from ticor.evaluation import Dataset, load_dataset, split_scores
from ticor.metrics import best_threshold, evaluate, roc_auc, table
from ticor.paths import cache_path
from ticor.training.batches import Batches
from ticor.training.checkpoint import (
    assign,
    load_checkpoint,
    load_trained,
    save_checkpoint,
    trainable_state,
    trained_file_state,
)
from ticor.training.features import (
    ImageFeatures,
    TextFeatures,
    conse_features,
    conse_vectors,
    image_features,
    text_features,
)
from ticor.training.model import PRESETS, ArticleBaseline, MatchModel, Preset, load_backbones

TRAINED_FILE = "trained.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
LOG_FILE = "train-log.json"


@dataclass(frozen=True)
class TrainConfig:
    preset: str
    epochs: int = 6
    batch: int = 96
    lr_text: float = 6e-5
    lr_image: float = 3e-4
    lr_new: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 60
    temperature: float = 0.05
    seed: int = 0
    max_steps: int = 0  # 0: epochs decide; >0 caps the run (smoke tests)
    checkpoint_every: int = 50
    evals_per_epoch: int = 2  # val ROC-AUC measured this often; the best point is kept
    photo_repeat: int = 4  # each photo's matching pairs count this often per epoch (they are ~1% of the pairs)

    def key(self, dataset_sha256: str, weights_id: str) -> str:
        blob = json.dumps({"config": asdict(self), "data": dataset_sha256, "weights": weights_id,
                           "code": 1}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- batches


# ----------------------------------------------------------------------------- the model in steps


def _embed_texts(model: MatchModel, tf: TextFeatures, idx: list[int]) -> torch.Tensor:
    h, mask = tf.batch(idx)
    return model.text.top(h, mask)


def _embed_images(model: MatchModel, imf: ImageFeatures, idx: list[int]) -> torch.Tensor:
    return model.image.top(imf.trunk[idx], None if imf.conse is None else imf.conse[idx])


def _loss(model: MatchModel, batches: Batches, tf: TextFeatures, imf: ImageFeatures, step: int,
          temperature: float) -> tuple[torch.Tensor, dict[str, float]]:
    texts, images, hard = batches.get(step)
    columns = list(dict.fromkeys(images + [h for h in hard if h is not None]))
    col = {c: j for j, c in enumerate(columns)}
    t = _embed_texts(model, tf, texts)
    v = _embed_images(model, imf, columns)
    sim = t @ v.T / temperature  # [B, C]
    b = len(texts)
    target = torch.tensor([col[i] for i in images])
    # another picture that also matches text i is not a negative for it: mask it out
    also = torch.tensor([[c in batches.match_sets[texts[i]] and c != images[i] for c in columns]
                         for i in range(b)])
    sim_t2i = sim.masked_fill(also, float("-inf"))
    loss_t2i = nn.functional.cross_entropy(sim_t2i, target)
    sim_i2t = sim[:, target].T  # [B images, B texts]
    same = torch.tensor([[images[j] in batches.match_sets[texts[i]] and i != j for i in range(b)]
                         for j in range(b)])
    loss_i2t = nn.functional.cross_entropy(sim_i2t.masked_fill(same, float("-inf")), torch.arange(b))
    # fusion head: matching pair, hard negative, one random in-batch negative
    rand_cols = []
    for i in range(b):
        j = (i + 1 + step) % b
        while images[j] in batches.match_sets[texts[i]] and j != i:
            j = (j + 1) % b
        rand_cols.append(j)
    # j == i only when every picture in the batch matches text i: no random negative then
    rand_ok = torch.tensor([images[j] not in batches.match_sets[texts[i]] for i, j in enumerate(rand_cols)])
    logits_pos = model.head.logit(t, v[target])
    logits_rand = model.head.logit(t, v[target[rand_cols]])
    bce = nn.functional.binary_cross_entropy_with_logits
    loss_head = bce(logits_pos, torch.ones(b))
    if rand_ok.any():
        loss_head = loss_head + 0.5 * bce(logits_rand[rand_ok], torch.zeros(int(rand_ok.sum())))
    hard_rows = [i for i in range(b) if hard[i] is not None]
    if hard_rows:
        hv = v[[col[hard[i]] for i in hard_rows]]
        loss_head = loss_head + 0.5 * bce(model.head.logit(t[hard_rows], hv), torch.zeros(len(hard_rows)))
    loss = (loss_t2i + loss_i2t) / 2 + loss_head
    return loss, {"contrastive": float((loss_t2i + loss_i2t).detach() / 2), "head": float(loss_head.detach())}


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(model: MatchModel, cfg: TrainConfig) -> torch.optim.AdamW:
    groups = [
        {"params": [p for layer in model.text.bert.encoder.layer[model.text.split :] for p in layer.parameters()],
         "lr": cfg.lr_text},
        {"params": list(model.image.features[model.image.split :].parameters()), "lr": cfg.lr_image},
        {"params": list(model.text.proj.parameters()) + list(model.image.proj.parameters())
         + (list(model.image.conse_proj.parameters()) if model.image.conse is not None else [])
         + list(model.head.parameters()), "lr": cfg.lr_new},
    ]
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


# ----------------------------------------------------------------------------- checkpoints


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def split_embeddings(model: MatchModel, ds: Dataset, tf: TextFeatures, imf: ImageFeatures, split: str
                     ) -> tuple[list[str], torch.Tensor, list[str], torch.Tensor]:
    model.eval()
    texts, images = ds.split_texts(split), ds.split_images(split)
    t_idx = [tf.index[t] for t in texts]
    tv = torch.cat([_embed_texts(model, tf, t_idx[i : i + 256]) for i in range(0, len(t_idx), 256)])
    i_idx = [imf.index[p] for p in images]
    iv = torch.cat([_embed_images(model, imf, i_idx[i : i + 256]) for i in range(0, len(i_idx), 256)])
    return texts, tv, images, iv


def torch_head(model: MatchModel) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.head(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    return fn


def score_split(model: MatchModel, ds: Dataset, tf: TextFeatures, imf: ImageFeatures, split: str,
                with_rank: bool = False) -> tuple[list[dict[str, Any]], np.ndarray, Any]:
    _, tv, _, iv = split_embeddings(model, ds, tf, imf, split)
    scores, rank = split_scores(ds, split, tv.numpy(), iv.numpy(), torch_head(model), with_rank=with_rank, chunk=32)
    return ds.pairs[split], scores, rank


# ----------------------------------------------------------------------------- baseline


def train_baseline(ds: Dataset, tf: TextFeatures, imf: ImageFeatures, seed: int, epochs: int = 30
                   ) -> dict[str, Any]:
    """The article's design on frozen pooled features, trained with BCE on the train pairs."""
    torch.manual_seed(seed)

    def xy(split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = ds.pairs[split]
        a = tf.pooled[[tf.index[r["text"]] for r in rows]]
        b = imf.pooled[[imf.index[r["image"]] for r in rows]]
        return a, b, torch.tensor([float(r["label"]) for r in rows])

    a, b, y = xy("train")
    mu_a, sd_a = a.mean(0), a.std(0) + 1e-6  # standardised inputs (the article's Keras default scaler)
    mu_b, sd_b = b.mean(0), b.std(0) + 1e-6
    net = ArticleBaseline(a.shape[1], b.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = len(y)
    for _ in range(epochs):
        perm = torch.randperm(n)
        for s in range(0, n, 256):
            i = perm[s : s + 256]
            loss = nn.functional.binary_cross_entropy_with_logits(
                net.logit((a[i] - mu_a) / sd_a, (b[i] - mu_b) / sd_b), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def scores(split: str) -> tuple[np.ndarray, np.ndarray]:
        a2, b2, y2 = xy(split)
        with torch.no_grad():
            return torch.sigmoid(net.logit((a2 - mu_a) / sd_a, (b2 - mu_b) / sd_b)).numpy(), y2.numpy()

    val_s, val_y = scores("val")
    thr = best_threshold(val_y, val_s)
    test_s, _ = scores("test")
    return evaluate(ds.pairs["test"], test_s, thr)


# ----------------------------------------------------------------------------- the run


def train(dataset_dir: Path, run_dir: Path, cfg: TrainConfig, force: bool = False, quiet: bool = False,
          init: Path | None = None, baseline: bool = True) -> dict[str, Any]:
    """Train (or reuse) a run; returns the training log (metrics, threshold, timings). ``init``: a
    ``trained.safetensors`` to start from instead of the pretrained backbones alone (``ticor adapt``);
    ``baseline``: also train the article's design on the same frozen features, for the log."""
    if cfg.preset not in PRESETS:
        raise UsageError(f"unknown preset {cfg.preset!r}; known: {', '.join(PRESETS)}")
    preset: Preset = PRESETS[cfg.preset]
    t_start = time.monotonic()
    ds = load_dataset(dataset_dir)
    backbones = load_backbones(preset)
    key = cfg.key(ds.sha256, backbones.weights_id + (f"+init:{sha256_file(init)}" if init else ""))
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, trained_path, ckpt_path = run_dir / LOG_FILE, run_dir / TRAINED_FILE, run_dir / CHECKPOINT_FILE
    if not force and log_path.is_file() and trained_path.is_file():
        log = json.loads(log_path.read_text(encoding="utf-8"))
        if log.get("key") == key and log.get("trained_sha256") == sha256_file(trained_path):
            say(quiet, f"ticor train: {run_dir} is up to date (same data, weights and settings)")
            return log
    if force and ckpt_path.exists():
        ckpt_path.unlink()

    torch.manual_seed(cfg.seed)  # the new projections and head start the same every run
    model = MatchModel(preset, backbones.bert, backbones.cnn)
    if init is not None:
        load_trained(model, init)
    feat_dir = cache_path("features")
    say(quiet, f"ticor train: preset {preset.name} ({preset.description}); caching frozen trunk outputs")
    t0 = time.monotonic()
    tf = text_features(model.text, Path(backbones.tokenizer), preset.text_spec, ds.texts(), feat_dir,
                       backbones.text_weights_id, quiet=quiet)
    imf = image_features(model.image, preset.image_spec, ds.root, ds.images(), feat_dir,
                         backbones.image_weights_id, quiet=quiet)
    if model.image.conse is not None and init is not None:  # the table came with the trained weights
        conse_vectors(model, imf, quiet)
    elif model.image.conse is not None:
        conse_features(model, Path(backbones.tokenizer), preset.text_spec, imf, feat_dir,
                       backbones.text_weights_id, quiet)
    t_features = time.monotonic() - t0

    batches = Batches(ds, tf, imf, cfg.batch, cfg.seed, cfg.photo_repeat)
    total = batches.steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps) if total else cfg.max_steps
    opt = _optimizer(model, cfg)
    step, elapsed_before = 0, 0.0
    progress: dict[str, Any] = {"history": [], "best_step": None, "best_auc": None}
    best: dict[str, torch.Tensor] | None = None
    if ckpt_path.is_file():
        step, elapsed_before, saved, best = load_checkpoint(ckpt_path, model, opt, key)
        if step:
            progress = saved or progress
            say(quiet, f"ticor train: resuming at step {step}/{total} from {ckpt_path}")
    eval_every = max(1, batches.steps_per_epoch // max(1, cfg.evals_per_epoch))
    t_train = time.monotonic()
    model.train()
    last: dict[str, float] = {}
    bar = Progress("ticor train: step", total, quiet, start=step)
    while step < total:
        torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout masks repeat on resume
        f = _lr_factor(step, total, cfg.warmup_steps)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f
        try:
            loss, parts = _loss(model, batches, tf, imf, step, cfg.temperature)
            opt.zero_grad()
            loss.backward()
        except KeyboardInterrupt:  # weights are still those after `step` steps: keep them
            save_checkpoint(ckpt_path, model, opt, step, key, elapsed_before + time.monotonic() - t_train,
                             progress, best)
            bar.note(f"ticor train: interrupted; checkpoint at step {step} in {ckpt_path}, "
                     "run the same command to resume")
            raise
        opt.step()
        step += 1
        last = parts
        bar.update(step, f"epoch {step / max(1, batches.steps_per_epoch):.2f} "
                         f"contrastive {parts['contrastive']:.3f} head {parts['head']:.3f}")
        if step % eval_every == 0 or step == total:
            rows, scores, _ = score_split(model, ds, tf, imf, "val")
            auc = roc_auc(np.array([r["label"] for r in rows]), scores)
            progress["history"].append({"step": step, "val_roc_auc": auc, **parts})
            if progress["best_auc"] is None or auc > progress["best_auc"]:
                progress["best_auc"], progress["best_step"] = auc, step
                best = trainable_state(model)
            model.train()
            bar.note(f"  step {step}: val ROC-AUC {auc:.4f} (best {progress['best_auc']:.4f} at step "
                     f"{progress['best_step']})")
        if step % cfg.checkpoint_every == 0 and step < total:
            save_checkpoint(ckpt_path, model, opt, step, key, elapsed_before + time.monotonic() - t_train,
                             progress, best)
    bar.close()
    train_seconds = elapsed_before + time.monotonic() - t_train

    if best is not None:  # the point with the best val ROC-AUC
        assign(model, best)
    model.eval()
    val_rows, val_scores, _ = score_split(model, ds, tf, imf, "val")
    threshold = best_threshold(np.array([r["label"] for r in val_rows]), val_scores)
    val_metrics = evaluate(val_rows, val_scores, threshold)
    test_rows, test_scores, rank = score_split(model, ds, tf, imf, "test", with_rank=True)
    test_metrics = evaluate(test_rows, test_scores, threshold, rank)
    baseline_metrics = train_baseline(ds, tf, imf, cfg.seed) if baseline else None

    save_file({k: v.contiguous() for k, v in trained_file_state(model).items()}, str(trained_path),
              metadata={"preset": preset.name, "weights": backbones.weights_id, "key": key})
    log = {
        "key": key,
        "ticor": __version__,
        "preset": preset.name,
        "config": asdict(cfg),
        "dataset": {"path": str(ds.root), "dataset_sha256": ds.sha256,
                    "pairs": {s: len(r) for s, r in ds.pairs.items()}},
        "base_weights": list(backbones.sources),
        "trained_sha256": sha256_file(trained_path),
        "steps": total,
        "epochs": total / max(1, batches.steps_per_epoch),
        "final_losses": last,
        "history": progress["history"],
        "kept_step": progress["best_step"],
        "seconds": {"features": round(t_features, 1), "train": round(train_seconds, 1),
                    "total": round(time.monotonic() - t_start, 1)},
        "threshold": threshold,
        "threshold_source": "maximum F1 on the val split",
        "val": val_metrics,
        "test": test_metrics,
        "baseline_test": baseline_metrics,
    }
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(log_path)
    if ckpt_path.exists():
        ckpt_path.unlink()
    return log


def report(log: dict[str, Any]) -> str:
    rows = [(f"ticor {log['preset']} (torch, test)", log["test"]),
            ("article baseline (frozen concat)", log["baseline_test"])]
    s = log["seconds"]
    return (table(rows) + f"\nthreshold {log['threshold']:.4f} (max F1 on val); {log['steps']} steps, "
            f"{log['epochs']:.2f} epochs, kept step {log['kept_step']} (best val ROC-AUC); "
            f"features {s['features']} s, training {s['train']} s, total {s['total']} s")
