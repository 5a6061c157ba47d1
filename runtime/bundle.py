"""The bundle format: graph input/output names, the manifest, and its verification.

A bundle is a directory with ``text.onnx``, ``image.onnx``, ``head.onnx``, ``tokenizer.json``
and ``manifest.json``. The names below are defined once, here: the exporter writes them and
the runtime reads them. :func:`read_manifest` refuses a bundle whose files do not match the
sizes and sha256 sums its manifest records, before anything is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticor._files import sha256_file
from ticor.errors import TicorError
from ticor.preprocess import ImageSpec, TextSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
GRAPH_FILES = {"text": "text.onnx", "image": "image.onnx", "head": "head.onnx"}

TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUT = "text_embedding"
IMAGE_INPUT = "pixel_values"
IMAGE_OUTPUT = "image_embedding"
HEAD_INPUTS = ("text_embedding", "image_embedding")
HEAD_OUTPUT = "probability"


class BundleError(TicorError):
    """A bundle is missing, malformed, or its files do not match the manifest."""


@dataclass(frozen=True)
class Manifest:
    path: Path
    data: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def preset(self) -> str:
        return self.data["preset"]

    @property
    def precision(self) -> str:
        return self.data["precision"]

    @property
    def threshold(self) -> float:
        return float(self.data["threshold"])

    @property
    def text_spec(self) -> TextSpec:
        return TextSpec.from_json(self.data["text"]["spec"])

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec.from_json(self.data["image"]["spec"])

    def file(self, name: str) -> Path:
        return self.root / name


def verify_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`BundleError` unless every listed file exists with its size and sha256."""
    for name, want in sorted(files.items()):
        p = root / name
        if not p.is_file():
            raise BundleError(f"{root}: {name} is missing")
        size = p.stat().st_size
        if size != want["bytes"]:
            raise BundleError(f"{root}: {name} has {size} bytes, the manifest says {want['bytes']}")
        got = sha256_file(p)
        if got != want["sha256"]:
            raise BundleError(f"{root}: {name} has sha256 {got}, the manifest says {want['sha256']} "
                              "(modified or corrupt: refusing to load it)")


def read_manifest(bundle: Path | str, verify: bool = True) -> Manifest:
    """Load ``bundle/manifest.json``; with ``verify`` also check every file's size and sha256."""
    root = Path(bundle)
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not a ticor bundle (no {MANIFEST})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "ticor-bundle":
        raise BundleError(f"{path}: not a ticor bundle manifest")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema version {data.get('schema_version')!r}, this ticor reads "
                          f"{SCHEMA_VERSION}")
    for key in ("preset", "precision", "files", "graphs", "text", "image", "threshold"):
        if key not in data:
            raise BundleError(f"{path}: the manifest has no {key!r}")
    needed = set(GRAPH_FILES.values()) | {TOKENIZER}
    if not needed <= set(data["files"]):
        raise BundleError(f"{path}: the manifest lists no {sorted(needed - set(data['files']))}")
    if verify:
        verify_files(root, data["files"])
    return Manifest(path, data)


def describe(m: Manifest, verified: bool) -> str:
    """The manifest as readable text (``ticor info``)."""
    d = m.data
    lines = [
        f"bundle      {m.root}",
        f"preset      {d['preset']} — {d.get('description', '')}",
        f"precision   {d['precision']}    model version {d.get('model_version', '?')}",
        f"created by  {d.get('created_by', '?')}",
        f"threshold   {d['threshold']:.4f} ({d.get('threshold_source', '')})",
        f"embedding   {d.get('embedding_dim')} dims",
        "",
        "files (size and sha256 verified)" if verified else "files (not verified)",
    ]
    q = d.get("quantization")
    if q and q.get("branches"):
        g = q["gate"]
        lines.insert(4, "branches    " + ", ".join(f"{p} {q['branches'][p]}" for p in GRAPH_FILES if p in q["branches"])
                     + f"    gate: test F1 {g['fp32_test_f1']:.4f} (fp32) -> {g['test_f1']:.4f}, "
                     f"{g['agreement']:.2%} of decisions as fp32")
    for name, f in sorted(d["files"].items()):
        lines.append(f"  {name:<16} {f['bytes'] / 1e6:9.2f} MB  {f['sha256'][:16]}…")
    lines.append(f"  {'total':<16} {sum(f['bytes'] for f in d['files'].values()) / 1e6:9.2f} MB")
    lines.append("")
    lines.append("graphs")
    for part, g in d["graphs"].items():
        ins = ", ".join(f"{i['name']} {i['dtype']}[{','.join(map(str, i['shape']))}]" for i in g["inputs"])
        outs = ", ".join(f"{o['name']} {o['dtype']}[{','.join(map(str, o['shape']))}]" for o in g["outputs"])
        lines.append(f"  {part:<6} {g['file']} opset {g['opset']}: {ins} -> {outs}")
    t, im = d["text"], d["image"]["spec"]
    lines += [
        "",
        (f"text        tokenizer {t['tokenizer']}, prefix {t['spec']['prefix']!r}, "
         f"max length {t['spec']['max_length']}, pad {t['spec']['pad_token']}"),
        (f"image       {im['size']}x{im['size']} {im['layout']} {im['dtype']}, fit {im['fit']}, "
         f"resize {im['resize_filter']}, background {tuple(im['background'])}, "
         f"EXIF transpose {im['exif_transpose']}"),
        f"            mean {tuple(im['mean'])} std {tuple(im['std'])}",
    ]
    data = d.get("data", {})
    if data:
        lines += ["", f"trained on  dataset {data.get('dataset_sha256', '?')[:16]}… pairs "
                      + ", ".join(f"{k} {v}" for k, v in data.get("pairs", {}).items())]
    for src in d.get("base_weights", []):
        lines.append(f"  from      {src['asset']} {src['file']} ({src['license']})")
    metrics = d.get("metrics", {})
    if metrics:
        from ticor.metrics import table

        rows = [(f"{d['preset']} {d['precision']} (bundle, test)", metrics["test"])]
        base = d.get("training", {}).get("baseline_test")
        if base:
            rows.append(("article baseline (frozen concat)", base))
        lines += ["", "test split metrics (threshold from val)", table(rows)]
    return "\n".join(lines)
