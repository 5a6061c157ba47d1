"""``ticor export``: trained run -> fp32 ONNX bundle, every graph checked against torch.

Graphs are written with torch's TorchScript-based exporter at opset 17 (weights inside the
file, dynamic batch and sequence axes), then each one is run in onnxruntime on real inputs
from the dataset at several batch sizes and compared with torch. A shape mismatch and a value
mismatch are reported apart, the latter with the largest difference; beyond the tolerance the
export fails and no bundle is left behind. The bundle's test metrics are then computed with
the exported graphs themselves.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticor import __version__
from ticor._console import say
from ticor._files import sha256_file
from ticor.bundle import (
    BRANCHES,
    GRAPH_IO,
    HEAD_INPUTS,
    HEAD_OUTPUT,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    MANIFEST,
    OPSET,
    TEXT_INPUTS,
    TEXT_OUTPUT,
    TOKENIZER,
    Architecture,
    DataRecord,
    Manifest,
    TrainingRecord,
    read_manifest,
    write_bundle,
)
from ticor.errors import BundleError, ExportValidationError, UsageError
from ticor.evaluation import Dataset, load_dataset, split_scores
from ticor.metrics import evaluate
from ticor.preprocess import ImageSpec, TextSpec, encode_texts, load_image, load_tokenizer
from ticor.sessions import plain_cpu_session
from ticor.training.checkpoint import load_trained
from ticor.training.model import PRESETS, MatchModel, load_backbones
from ticor.training.train import LOG_FILE, TRAINED_FILE

ATOL = 1e-4  # embeddings are unit vectors, probabilities in [0, 1]


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], folder: Path, part: str) -> None:
    """One branch as its graph, with the names and dynamic axes of :data:`~ticor.bundle.GRAPH_IO`."""
    spec = GRAPH_IO[part]
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(folder / spec.file), input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.torch_dynamic_axes(), opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)


def _sessions(folder: Path) -> dict[str, Any]:
    return {part: plain_cpu_session(folder / GRAPH_IO[part].file) for part in BRANCHES}


def _compare(part: str, got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> float:
    if got.shape != want.shape:
        raise ExportValidationError(f"{part}: onnxruntime output shape {got.shape} != torch shape {want.shape}")
    if not np.all(np.isfinite(got)):
        raise ExportValidationError(f"{part}: onnxruntime output has NaN or infinite values")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
    if diff > atol:
        raise ExportValidationError(f"{part}: largest difference to torch {diff:.3g} exceeds {atol:g}")
    return diff


def validate(model: MatchModel, folder: Path, ds: Dataset, tokenizer_path: Path) -> dict[str, Any]:
    """Run every graph in onnxruntime on real dataset inputs and compare with torch."""
    preset = model.preset
    tok = load_tokenizer(tokenizer_path, preset.text_spec)
    texts = ds.split_texts("test")
    # short and long texts, both languages, at batch sizes 1, 3 and 16
    by_len = sorted(texts, key=len)
    picked = [by_len[0], by_len[-1]] + by_len[:: max(1, len(by_len) // 14)][:14]
    images = ds.split_images("test")[:16]
    sess = _sessions(folder)
    worst = {"text": 0.0, "image": 0.0, "head": 0.0}
    with torch.no_grad():
        for n in (1, 3, len(picked)):
            ids, mask = encode_texts(tok, picked[:n], preset.text_spec)
            want = model.text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            got = sess["text"].run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
            worst["text"] = max(worst["text"], _compare(f"text graph (batch {n})", got, want))
        for n in (1, 3, len(images)):
            x = np.stack([load_image(ds.root / p, preset.image_spec) for p in images[:n]])
            want = model.image(torch.from_numpy(x)).numpy()
            got = sess["image"].run([IMAGE_OUTPUT], {IMAGE_INPUT: x})[0]
            worst["image"] = max(worst["image"], _compare(f"image graph (batch {n})", got, want))
        ids, mask = encode_texts(tok, picked, preset.text_spec)
        t = model.text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        x = np.stack([load_image(ds.root / p, preset.image_spec) for p in images])
        v = model.image(torch.from_numpy(x)).numpy()
        for n in (1, len(images)):
            a, b = t[:n], v[:n]
            want = model.head(torch.from_numpy(a), torch.from_numpy(b)).numpy()
            got = sess["head"].run([HEAD_OUTPUT], {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0]
            worst["head"] = max(worst["head"], _compare(f"head graph (batch {n})", got, want))
    return {"atol": ATOL, "max_abs_diff": worst, "texts": len(picked), "images": len(images),
            "batch_sizes": sorted({1, 3, len(picked), len(images)})}


def onnx_split_scores(folder: Path, ds: Dataset, split: str, text_spec: TextSpec, image_spec: ImageSpec,
                      tokenizer_path: Path, with_rank: bool) -> tuple[np.ndarray, Any]:
    """Pair scores (and the ranking matrix) of a split computed with the bundle's graphs."""
    tok = load_tokenizer(tokenizer_path, text_spec)
    sess = _sessions(folder)
    texts = ds.split_texts(split)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows: dict[int, np.ndarray] = {}
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        ids, mask = encode_texts(tok, [texts[i] for i in idx], text_spec)
        out = sess["text"].run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
        rows.update(zip(idx, out))
    tv = np.stack([rows[i] for i in range(len(texts))])
    images = ds.split_images(split)
    iv = np.concatenate([
        sess["image"].run([IMAGE_OUTPUT], {IMAGE_INPUT: np.stack(
            [load_image(ds.root / p, image_spec) for p in images[s : s + 64]])})[0]
        for s in range(0, len(images), 64)])

    def head(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sess["head"].run([HEAD_OUTPUT], {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0]

    return split_scores(ds, split, tv, iv, head, with_rank=with_rank)


def export(run_dir: Path, out: Path, force: bool = False, quiet: bool = False) -> Path:
    """Write (or reuse) the fp32 bundle for a finished training run."""
    log_path, trained_path = run_dir / LOG_FILE, run_dir / TRAINED_FILE
    if not (log_path.is_file() and trained_path.is_file()):
        raise UsageError(f"{run_dir} holds no finished training run; run `ticor train` first")
    log = json.loads(log_path.read_text(encoding="utf-8"))
    trained_sha = sha256_file(trained_path)
    if trained_sha != log["trained_sha256"]:
        raise UsageError(f"{trained_path} does not match its training log (modified?); retrain")
    preset = PRESETS[log["preset"]]
    if not force and (out / MANIFEST).is_file():
        try:
            m = read_manifest(out)
            if m.trained_sha256 == trained_sha and (m.text_spec, m.image_spec) == (preset.text_spec,
                                                                                    preset.image_spec):
                say(quiet, f"ticor export: {out} is up to date")
                return out
        except BundleError as exc:
            say(quiet, f"ticor export: rebuilding {out} ({exc})")
    ds = load_dataset(Path(log["dataset"]["path"]))
    if ds.sha256 != log["dataset"]["dataset_sha256"]:
        raise UsageError(f"the dataset at {ds.root} changed since training; retrain")
    t0 = time.monotonic()
    backbones = load_backbones(preset)
    model = MatchModel(preset, backbones.bert, backbones.cnn)
    load_trained(model, trained_path)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        say(quiet, f"ticor export: writing ONNX graphs (opset {OPSET}) into {work}")
        ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
        size = preset.image_spec.size
        _export(model.text, (ids, mask), work, "text")
        _export(model.image, (torch.zeros(2, 3, size, size),), work, "image")
        emb = torch.nn.functional.normalize(torch.ones(2, preset.embed_dim), dim=-1)
        _export(model.head, (emb, emb), work, "head")
        shutil.copyfile(backbones.tokenizer, work / TOKENIZER)
        say(quiet, "ticor export: validating every graph against torch on real inputs")
        validation = validate(model, work, ds, work / TOKENIZER)
        say(quiet, "ticor export: scoring the val and test splits with the exported graphs")
        args = (preset.text_spec, preset.image_spec, work / TOKENIZER)
        val_scores, _ = onnx_split_scores(work, ds, "val", *args, with_rank=False)
        test_scores, rank = onnx_split_scores(work, ds, "test", *args, with_rank=True)
        threshold = float(log["threshold"])
        bert = model.text.bert.config
        manifest = Manifest(
            preset=preset.name, description=preset.description, precision="fp32",
            model_version=f"{preset.name}-fp32-{trained_sha[:12]}",
            created_by=f"ticor {__version__}, torch {torch.__version__}",
            files={}, graphs={part: GRAPH_IO[part] for part in BRANCHES}, embedding_dim=preset.embed_dim,
            text_spec=preset.text_spec, image_spec=preset.image_spec, threshold=threshold,
            threshold_source=log["threshold_source"], tokenizer=TOKENIZER,
            architecture=Architecture(text_layers=bert.num_hidden_layers, text_hidden_size=bert.hidden_size,
                                      text_num_heads=bert.num_attention_heads, image_encoder="mobilenet_v2"),
            dataset=DataRecord(log["dataset"]["dataset_sha256"], log["dataset"]["pairs"]),
            base_weights=tuple(log["base_weights"]),
            source={"trained_sha256": trained_sha, "train_key": log["key"]}, validation=validation,
            metrics={"val": evaluate(ds.pairs["val"], val_scores, threshold),
                     "test": evaluate(ds.pairs["test"], test_scores, threshold, rank)},
            training=TrainingRecord(log["steps"], log["epochs"], log["seconds"], log["config"],
                                    log["baseline_test"]),
            export_seconds=round(time.monotonic() - t0, 1))
        write_bundle(work, out, manifest)
    finally:
        if work.exists():
            shutil.rmtree(work)
    say(quiet, f"ticor export: bundle written to {out}")
    return out
