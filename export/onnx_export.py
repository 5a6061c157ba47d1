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
    GRAPH_FILES,
    HEAD_INPUTS,
    HEAD_OUTPUT,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    MANIFEST,
    SCHEMA_VERSION,
    TEXT_INPUTS,
    TEXT_OUTPUT,
    TOKENIZER,
    BundleError,
    read_manifest,
)
from ticor.errors import TicorError, UsageError
from ticor.export.data import Dataset, load_dataset
from ticor.export.evaluation import pair_scores, rank_matrix, retrieval_truth
from ticor.export.model import PRESETS, Matcher, load_backbones
from ticor.export.train import LOG_FILE, TRAINED_FILE, load_trained
from ticor.metrics import evaluate
from ticor.paths import cache_dir
from ticor.preprocess import encode_texts, load_image, load_tokenizer

OPSET = 17
ATOL = 1e-4  # embeddings are unit vectors, probabilities in [0, 1]


class ExportValidationError(TicorError):
    """An exported graph disagrees with torch (shape or values beyond tolerance)."""


def default_bundle_dir(preset: str, precision: str = "fp32") -> Path:
    return cache_dir() / "bundles" / f"{preset}-{precision}"


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            axes: dict[str, dict[int, str]]) -> None:
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _compare(part: str, got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> float:
    if got.shape != want.shape:
        raise ExportValidationError(f"{part}: onnxruntime output shape {got.shape} != torch shape {want.shape}")
    if not np.all(np.isfinite(got)):
        raise ExportValidationError(f"{part}: onnxruntime output has NaN or infinite values")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
    if diff > atol:
        raise ExportValidationError(f"{part}: largest difference to torch {diff:.3g} exceeds {atol:g}")
    return diff


def validate(model: Matcher, folder: Path, ds: Dataset, tokenizer_path: Path) -> dict[str, Any]:
    """Run every graph in onnxruntime on real dataset inputs and compare with torch."""
    preset = model.preset
    tok = load_tokenizer(tokenizer_path, preset.text_spec)
    texts = ds.split_texts("test")
    # short and long texts, both languages, at batch sizes 1, 3 and 16
    by_len = sorted(texts, key=len)
    picked = [by_len[0], by_len[-1]] + by_len[:: max(1, len(by_len) // 14)][:14]
    images = ds.split_images("test")[:16]
    sess = {part: _session(folder / f) for part, f in GRAPH_FILES.items()}
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


def onnx_split_scores(folder: Path, ds: Dataset, split: str, text_spec, image_spec, tokenizer_path: Path,
                      with_rank: bool) -> tuple[np.ndarray, Any]:
    """Pair scores (and the ranking matrix) of a split computed with the bundle's graphs."""
    tok = load_tokenizer(tokenizer_path, text_spec)
    sess = {part: _session(folder / f) for part, f in GRAPH_FILES.items()}
    texts = ds.split_texts(split)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    chunks = {}
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        ids, mask = encode_texts(tok, [texts[i] for i in idx], text_spec)
        out = sess["text"].run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
        for row, i in enumerate(idx):
            chunks[i] = out[row]
    tv = np.stack([chunks[i] for i in range(len(texts))])
    images = ds.split_images(split)
    iv = np.concatenate([
        sess["image"].run([IMAGE_OUTPUT], {IMAGE_INPUT: np.stack(
            [load_image(ds.root / p, image_spec) for p in images[s : s + 64]])})[0]
        for s in range(0, len(images), 64)])

    def head(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sess["head"].run([HEAD_OUTPUT], {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0]

    scores = pair_scores(head, ds.pairs[split], texts, tv, images, iv)
    rank = (rank_matrix(head, tv, iv, chunk=64), retrieval_truth(ds, texts, images)) if with_rank else None
    return scores, rank


def _graph_io(part: str) -> dict[str, Any]:
    f32 = "float32"
    if part == "text":
        ins = [{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]} for n in TEXT_INPUTS]
        outs = [{"name": TEXT_OUTPUT, "dtype": f32, "shape": ["batch", "embedding"]}]
    elif part == "image":
        ins = [{"name": IMAGE_INPUT, "dtype": f32, "shape": ["batch", 3, "size", "size"]}]
        outs = [{"name": IMAGE_OUTPUT, "dtype": f32, "shape": ["batch", "embedding"]}]
    else:
        ins = [{"name": n, "dtype": f32, "shape": ["batch", "embedding"]} for n in HEAD_INPUTS]
        outs = [{"name": HEAD_OUTPUT, "dtype": f32, "shape": ["batch"]}]
    return {"file": GRAPH_FILES[part], "opset": OPSET, "inputs": ins, "outputs": outs,
            "dynamic_axes": ["batch", "sequence"] if part == "text" else ["batch"]}


def export(run_dir: Path, out: Path, force: bool = False, quiet: bool = False) -> Path:
    """Write (or reuse) the fp32 bundle for a finished training run."""
    log_path, trained_path = run_dir / LOG_FILE, run_dir / TRAINED_FILE
    if not (log_path.is_file() and trained_path.is_file()):
        raise UsageError(f"{run_dir} holds no finished training run; run `ticor train` first")
    log = json.loads(log_path.read_text(encoding="utf-8"))
    trained_sha = sha256_file(trained_path)
    if trained_sha != log["trained_sha256"]:
        raise UsageError(f"{trained_path} does not match its training log (modified?); retrain")
    if not force and (out / MANIFEST).is_file():
        try:
            m = read_manifest(out)
            if m.data.get("source", {}).get("trained_sha256") == trained_sha:
                say(quiet, f"ticor export: {out} is up to date")
                return out
        except BundleError as exc:
            say(quiet, f"ticor export: rebuilding {out} ({exc})")
    preset = PRESETS[log["preset"]]
    ds = load_dataset(Path(log["dataset"]["path"]))
    if ds.sha256 != log["dataset"]["dataset_sha256"]:
        raise UsageError(f"the dataset at {ds.root} changed since training; retrain")
    t0 = time.monotonic()
    backbones = load_backbones(preset)
    model = Matcher(preset, backbones.bert, backbones.cnn)
    load_trained(model, trained_path)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        say(quiet, f"ticor export: writing ONNX graphs (opset {OPSET}) into {work}")
        ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
        size = preset.image_spec.size
        _export(model.text, (ids, mask), work / GRAPH_FILES["text"], list(TEXT_INPUTS), [TEXT_OUTPUT],
                {TEXT_INPUTS[0]: {0: "batch", 1: "sequence"}, TEXT_INPUTS[1]: {0: "batch", 1: "sequence"},
                 TEXT_OUTPUT: {0: "batch"}})
        _export(model.image, (torch.zeros(2, 3, size, size),), work / GRAPH_FILES["image"], [IMAGE_INPUT],
                [IMAGE_OUTPUT], {IMAGE_INPUT: {0: "batch"}, IMAGE_OUTPUT: {0: "batch"}})
        emb = torch.nn.functional.normalize(torch.ones(2, preset.embed_dim), dim=-1)
        _export(model.head, (emb, emb), work / GRAPH_FILES["head"], list(HEAD_INPUTS), [HEAD_OUTPUT],
                {HEAD_INPUTS[0]: {0: "batch"}, HEAD_INPUTS[1]: {0: "batch"}, HEAD_OUTPUT: {0: "batch"}})
        shutil.copyfile(backbones.tokenizer, work / TOKENIZER)
        say(quiet, "ticor export: validating every graph against torch on real inputs")
        validation = validate(model, work, ds, work / TOKENIZER)
        say(quiet, "ticor export: scoring the val and test splits with the exported graphs")
        args = (preset.text_spec, preset.image_spec, work / TOKENIZER)
        val_scores, _ = onnx_split_scores(work, ds, "val", *args, with_rank=False)
        test_scores, rank = onnx_split_scores(work, ds, "test", *args, with_rank=True)
        threshold = float(log["threshold"])
        files = {name: {"bytes": (work / name).stat().st_size, "sha256": sha256_file(work / name)}
                 for name in sorted([*GRAPH_FILES.values(), TOKENIZER])}
        manifest = {
            "format": "ticor-bundle",
            "schema_version": SCHEMA_VERSION,
            "preset": preset.name,
            "description": preset.description,
            "precision": "fp32",
            "model_version": f"{preset.name}-fp32-{trained_sha[:12]}",
            "created_by": f"ticor {__version__}, torch {torch.__version__}",
            "files": files,
            "graphs": {part: _graph_io(part) for part in GRAPH_FILES},
            "embedding_dim": preset.embed_dim,
            "architecture": {"text_layers": model.text.bert.config.num_hidden_layers,
                             "text_hidden_size": model.text.bert.config.hidden_size,
                             "text_num_heads": model.text.bert.config.num_attention_heads,
                             "image_encoder": "mobilenet_v2"},
            "text": {"tokenizer": TOKENIZER, "spec": preset.text_spec.to_json()},
            "image": {"spec": preset.image_spec.to_json()},
            "threshold": threshold,
            "threshold_source": log["threshold_source"],
            "data": {"dataset_sha256": log["dataset"]["dataset_sha256"], "pairs": log["dataset"]["pairs"]},
            "base_weights": log["base_weights"],
            "source": {"trained_sha256": trained_sha, "train_key": log["key"]},
            "validation": validation,
            "metrics": {
                "val": evaluate(ds.pairs["val"], val_scores, threshold),
                "test": evaluate(ds.pairs["test"], test_scores, threshold, rank),
            },
            "training": {"steps": log["steps"], "epochs": log["epochs"], "seconds": log["seconds"],
                         "config": log["config"], "baseline_test": log["baseline_test"]},
            "export_seconds": round(time.monotonic() - t0, 1),
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        read_manifest(work)  # what we wrote must read back and verify
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    finally:
        if work.exists():
            shutil.rmtree(work)
    say(quiet, f"ticor export: bundle written to {out}")
    return out
