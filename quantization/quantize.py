"""``ticor quantize``: an fp32 bundle -> an int8 (CPU) or fp16 (GPU) bundle behind an accuracy gate.

int8: text branch fused + dynamic int8 per-channel (embedding table included), image branch
static QDQ int8 per-channel calibrated on real train pictures (each calibration method tried,
the one with the best validation F1 kept), head kept fp32 (70 kB: nothing to gain). fp16: every
graph converted with float32 inputs and outputs kept at the boundary.

Per-branch variants are scored on the validation split and timed at batch 1 side by side; the
table is printed and stored. The chosen variant's threshold is re-fitted on validation, then
the **gate** compares it with fp32 on test: F1 within 0.5 points and at least 99% of decisions
the same, or nothing is written and the message names the branch that breaks it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticor import __version__
from ticor._console import say
from ticor._files import sha256_file
from ticor.bundle import (
    GRAPH_FILES,
    HEAD_INPUTS,
    IMAGE_INPUT,
    MANIFEST,
    TEXT_INPUTS,
    TOKENIZER,
    BundleError,
    Manifest,
    read_manifest,
)
from ticor.errors import TicorError, UsageError
from ticor.metrics import at_threshold, best_threshold, evaluate, roc_auc
from ticor.preprocess import encode_texts, load_image, load_tokenizer
from ticor.quantization.graphs import CALIBRATION_METHODS, quantize_image, quantize_text, to_fp16

MAX_F1_DROP = 0.005  # absolute F1 (0.5 points)
MIN_AGREEMENT = 0.99


class GateError(TicorError):
    """A quantized variant lost too much against fp32; nothing was written."""


@dataclass(frozen=True)
class Variant:
    text: str  # graph file for the text branch
    image: str
    head: str = GRAPH_FILES["head"]

    def label(self, names: dict[str, str]) -> str:
        return f"text {names[self.text]} + image {names[self.image]} + head {names[self.head]}"


def _assemble(work: Path, variant: Variant, tokenizer: Path) -> Path:
    """A directory laid out like a bundle (links) for scoring one variant."""
    d = Path(tempfile.mkdtemp(dir=work, prefix="variant-"))
    for part, src in (("text", variant.text), ("image", variant.image), ("head", variant.head)):
        (d / GRAPH_FILES[part]).symlink_to(work / src)
    (d / TOKENIZER).symlink_to(tokenizer)
    return d


def calibration_set(ds, count: int) -> list[str]:
    """``count`` train pictures spread evenly over the sorted train split (deterministic)."""
    images = ds.split_images("train")
    if not images:
        raise UsageError("the dataset has no train pictures to calibrate with")
    step = max(1, len(images) // count)
    return images[::step][:count]


def _latency(path: Path, feeds: dict[str, np.ndarray], runs: int = 100) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(5):
        s.run(None, feeds)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, feeds)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def quantize(src: Path, out: Path, data: Path, precision: str = "int8", calibration: int = 256,
             methods: tuple[str, ...] = CALIBRATION_METHODS, calibration_override: list[str] | None = None,
             force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Write (or reuse) the quantized bundle ``out``; returns its manifest data."""
    from ticor.export.data import load_dataset

    if precision not in ("int8", "fp16"):
        raise UsageError(f"precision must be int8 or fp16, not {precision!r}")
    bad = [m for m in methods if m not in CALIBRATION_METHODS]
    if bad or not methods:
        raise UsageError(f"calibration methods must be among {', '.join(CALIBRATION_METHODS)}")
    m = read_manifest(src)
    if m.precision != "fp32":
        raise UsageError(f"{src} is a {m.precision} bundle; quantize the fp32 bundle")
    if not force and (out / MANIFEST).is_file():
        try:
            done = read_manifest(out)
            if done.data.get("quantization", {}).get("source_model_version") == m.data["model_version"]:
                say(quiet, f"ticor quantize: {out} is up to date")
                return done.data
        except BundleError as exc:
            say(quiet, f"ticor quantize: rebuilding {out} ({exc})")
    ds = load_dataset(data)
    if ds.sha256 != m.data["data"]["dataset_sha256"]:
        raise UsageError(f"{data} is not the dataset {src} was trained on (dataset_sha256 differs)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        return _run(m, src, out, work, ds, precision, calibration, methods, calibration_override, quiet)
    finally:
        if work.exists():
            shutil.rmtree(work)


def _run(m: Manifest, src: Path, out: Path, work: Path, ds, precision: str, calibration: int,
         methods: tuple[str, ...], calibration_override: list[str] | None, quiet: bool) -> dict[str, Any]:
    from ticor.export.onnx_export import onnx_split_scores as split_scores

    t_start = time.monotonic()
    arch = m.data.get("architecture")
    if not arch:
        raise UsageError(f"{src} was exported before bundles recorded their architecture; export it again")
    tok = src / TOKENIZER
    for part, f in GRAPH_FILES.items():  # the fp32 graphs as they are, under uniform names
        (work / f"{part}.fp32.onnx").symlink_to((src / f).resolve())
    names = {f"{p}.fp32.onnx": "fp32" for p in GRAPH_FILES}
    recipe: dict[str, Any] = {}
    calib_info: dict[str, Any] | None = None
    if precision == "int8":
        say(quiet, "ticor quantize: text branch -> fused, dynamic int8 per-channel (embedding table included)")
        quantize_text(work / "text.fp32.onnx", work / "text.int8.onnx", arch["text_num_heads"],
                      arch["text_hidden_size"])
        names["text.int8.onnx"] = "int8"
        pictures = calibration_override if calibration_override is not None else calibration_set(ds, calibration)
        root = ds.root
        arrays = [load_image(root / p, m.image_spec) for p in pictures]
        calib_info = {"split": "train", "pictures": len(pictures),
                      "sha256": hashlib.sha256("\n".join(pictures).encode()).hexdigest()}
        say(quiet, f"ticor quantize: image branch -> static QDQ int8 per-channel, {', '.join(methods)} "
                   f"calibration on {len(arrays)} train pictures")
        quantize_image(work / "image.fp32.onnx", {meth: work / f"image.int8-{meth}.onnx" for meth in methods},
                       arrays)
        names.update({f"image.int8-{meth}.onnx": f"int8 ({meth})" for meth in methods})
        recipe = {"text": ("onnxruntime BERT fusions without the embedding fusion, then dynamic int8 "
                           "per-channel (MatMul, Gather, Attention)"),
                  "image": "quant_pre_process, then static QDQ int8 per-channel weights, uint8 activations",
                  "head": "fp32 (70 kB; nothing to gain)"}
        quant_text, quant_images = "text.int8.onnx", [f"image.int8-{x}.onnx" for x in methods]
    else:
        for part in GRAPH_FILES:
            to_fp16(work / f"{part}.fp32.onnx", work / f"{part}.fp16.onnx")
            names[f"{part}.fp16.onnx"] = "fp16"
        recipe = {"all": "float16 weights and compute; float32 inputs and outputs kept at the boundary"}
        quant_text, quant_images = "text.fp16.onnx", ["image.fp16.onnx"]

    fp32 = Variant("text.fp32.onnx", "image.fp32.onnx", "head.fp32.onnx")
    head = "head.fp16.onnx" if precision == "fp16" else "head.fp32.onnx"
    candidates = [fp32, Variant(quant_text, "image.fp32.onnx", head)]
    candidates += [Variant("text.fp32.onnx", img, head) for img in quant_images]
    candidates += [Variant(quant_text, img, head) for img in quant_images]

    val_y = np.array([r["label"] for r in ds.pairs["val"]])
    table = []
    ids, mask = encode_texts(load_tokenizer(tok, m.text_spec), ["a dog runs across the grass"], m.text_spec)
    picture = load_image(ds.root / ds.split_images("test")[0], m.image_spec)[None]
    emb = np.full((1, m.data["embedding_dim"]), 1.0 / np.sqrt(m.data["embedding_dim"]), np.float32)
    latency = {}
    for f in sorted(names):
        part = f.split(".")[0]
        feeds = ({TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask} if part == "text" else
                 {IMAGE_INPUT: picture} if part == "image" else {HEAD_INPUTS[0]: emb, HEAD_INPUTS[1]: emb})
        latency[f] = _latency(work / f, feeds)
    for v in candidates:
        say(quiet, f"ticor quantize: scoring val with {v.label(names)}")
        scores, _ = split_scores(_assemble(work, v, tok), ds, "val", m.text_spec, m.image_spec, tok, False)
        thr = best_threshold(val_y, scores)
        table.append({"variant": v.label(names), "files": [v.text, v.image, v.head],
                      "val_f1": at_threshold(val_y, scores, thr)["f1"], "val_roc_auc": roc_auc(val_y, scores),
                      "threshold": thr,
                      "latency_ms": {"text": latency[v.text], "image": latency[v.image], "head": latency[v.head]},
                      "bytes": sum((work / f).stat().st_size for f in (v.text, v.image, v.head))})
    full = [row for row in table if row["files"][0] == quant_text and row["files"][1] in quant_images]
    chosen = max(full, key=lambda r: (r["val_f1"], r["val_roc_auc"]))
    say(quiet, "\n" + format_table(table, chosen))

    # the gate, on test
    test_rows = ds.pairs["test"]
    test_y = np.array([r["label"] for r in test_rows])
    base_scores, _ = split_scores(_assemble(work, fp32, tok), ds, "test", m.text_spec, m.image_spec, tok, False)
    base_pred = base_scores >= m.threshold
    base_f1 = at_threshold(test_y, base_scores, m.threshold)["f1"]

    def judge(row: dict, with_rank: bool = False) -> dict[str, Any]:
        v = Variant(*row["files"])
        scores, rank = split_scores(_assemble(work, v, tok), ds, "test", m.text_spec, m.image_spec, tok,
                                    with_rank)
        f1 = at_threshold(test_y, scores, row["threshold"])["f1"]
        agree = float(np.mean((scores >= row["threshold"]) == base_pred))
        return {"variant": row["variant"], "fp32_test_f1": base_f1, "test_f1": f1, "f1_change": f1 - base_f1,
                "agreement": agree, "passed": bool(base_f1 - f1 <= MAX_F1_DROP and agree >= MIN_AGREEMENT),
                "scores": scores, "rank": rank}

    gate = judge(chosen, with_rank=True)
    if not gate["passed"]:
        culprits = []
        for part, index in (("text", 0), ("image", 1)):  # each quantized branch alone, the other fp32
            files = [fp32.text, fp32.image, chosen["files"][2]]
            files[index] = chosen["files"][index]
            row = next(r for r in table if r["files"] == files)
            g = judge(row)
            if not g["passed"]:
                culprits.append(f"the {part} branch ({row['variant']}: test F1 {g['test_f1']:.4f}, "
                                f"agreement {g['agreement']:.2%})")
        which = "; ".join(culprits) if culprits else "only the combination of both branches"
        raise GateError(
            f"gate failed for {chosen['variant']}: test F1 {gate['test_f1']:.4f} vs fp32 {base_f1:.4f} "
            f"(allowed drop {MAX_F1_DROP:.3f}), decisions agree on {gate['agreement']:.2%} of test pairs "
            f"(needs {MIN_AGREEMENT:.0%}). Failing on its own: {which}. Nothing was written.")

    # write the bundle
    final = work / "bundle"
    final.mkdir()
    for part, f in zip(("text", "image", "head"), chosen["files"]):
        shutil.copyfile(work / f, final / GRAPH_FILES[part])
    shutil.copyfile(tok, final / TOKENIZER)
    d = json.loads(json.dumps(m.data))
    d["precision"] = precision
    d["model_version"] = m.data["model_version"].replace("-fp32-", f"-{precision}-")
    d["created_by"] = f"ticor {__version__} quantize"
    d["files"] = {n: {"bytes": (final / n).stat().st_size, "sha256": sha256_file(final / n)}
                  for n in sorted([*GRAPH_FILES.values(), TOKENIZER])}
    d["threshold"] = chosen["threshold"]
    d["threshold_source"] = "maximum F1 on the val split, re-fitted after quantization"
    d["metrics"] = {"test": evaluate(test_rows, gate["scores"], chosen["threshold"], gate["rank"])}
    d.pop("validation", None)
    d["quantization"] = {
        "source_model_version": m.data["model_version"],
        "source_files": m.data["files"],
        "recipe": recipe,
        "calibration": calib_info,
        "chosen": chosen["variant"],
        "table": table,
        "gate": {k: v for k, v in gate.items() if k not in ("scores", "rank")}
        | {"max_f1_drop": MAX_F1_DROP, "min_agreement": MIN_AGREEMENT},
        "seconds": round(time.monotonic() - t_start, 1),
    }
    (final / MANIFEST).write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    read_manifest(final)
    if out.exists():
        shutil.rmtree(out)
    final.rename(out)
    say(quiet, f"ticor quantize: gate passed ({gate_line(d)}); bundle written to {out}")
    return d


def gate_line(d: dict[str, Any]) -> str:
    g = d["quantization"]["gate"]
    size = sum(f["bytes"] for f in d["files"].values())
    src = sum(f["bytes"] for f in d["quantization"]["source_files"].values())
    return (f"test F1 fp32 {g['fp32_test_f1']:.4f} -> {d['precision']} {g['test_f1']:.4f} "
            f"({g['f1_change'] * 100:+.2f} pts), decisions agree on {g['agreement']:.2%}, "
            f"size {src / 1e6:.1f} MB -> {size / 1e6:.1f} MB ({size / src:.0%})")


def format_table(table: list[dict], chosen: dict | None = None) -> str:
    head = f"{'variant (val split)':<58} {'F1':>6} {'AUC':>6} {'text ms':>8} {'image ms':>8} {'head ms':>8} {'MB':>7}"
    lines = [head]
    for r in table:
        mark = " *" if chosen is not None and r["files"] == chosen["files"] else ""
        lat = r["latency_ms"]
        lines.append(f"{r['variant'][:58]:<58} {r['val_f1']:6.3f} {r['val_roc_auc']:6.3f} {lat['text']:8.2f} "
                     f"{lat['image']:8.2f} {lat['head']:8.3f} {r['bytes'] / 1e6:7.1f}{mark}")
    lines.append("batch-1 latency: median of 100 runs per graph in one process, 2 threads; * = chosen")
    return "\n".join(lines)
