"""The bundle: the one contract between the build side and the runtime.

A bundle is a directory with ``text.onnx``, ``image.onnx``, ``head.onnx``, ``tokenizer.json``
and ``manifest.json``. This module owns all of it: the graph input/output table
(:data:`GRAPH_IO`), written by the exporter and checked by the runtime before any session exists
and against each session; the manifest as typed dataclasses (:class:`Manifest` and its parts;
nothing outside this module reads a manifest key by string); :func:`read_manifest`, which refuses
a bundle whose files do not match their recorded sizes and sha256 before anything is loaded; and
:func:`write_bundle`, the one way a bundle is written (records, manifest, read back, rename).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticor._files import sha256_file
from ticor.calibration import OperatingCurve, OperatingPoint, ScoreCalibration, choose_threshold
from ticor.errors import BundleError
from ticor.preprocess import ImageSpec, TextSpec, Vocabulary
from ticor.verdict import describe_v1, describe_verdict

SCHEMA_VERSION = 1
FORMAT = "ticor-bundle"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
BRANCHES = ("text", "image", "head")
GRAPH_FILES = {part: f"{part}.onnx" for part in BRANCHES}
BUNDLE_FILES = (*GRAPH_FILES.values(), TOKENIZER)
OPSET = 17

Json = dict[str, Any]
Metrics = dict[str, Any]  # one result of ticor.metrics.evaluate


# ---------------------------------------------------------------- the graph IO table
@dataclass(frozen=True)
class TensorIO:
    name: str
    dtype: str  # numpy name: float32, int64, float16
    shape: tuple[int | str, ...]

    def to_json(self) -> Json:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: Json) -> TensorIO:
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class GraphSpec:
    file: str
    opset: int
    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]
    dynamic_axes: tuple[str, ...]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def torch_dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``dynamic_axes`` in the form ``torch.onnx.export`` takes."""
        return {t.name: {i: d for i, d in enumerate(t.shape) if d in self.dynamic_axes}
                for t in (*self.inputs, *self.outputs)}

    def to_json(self) -> Json:
        return {"file": self.file, "opset": self.opset, "inputs": [i.to_json() for i in self.inputs],
                "outputs": [o.to_json() for o in self.outputs], "dynamic_axes": list(self.dynamic_axes)}

    @classmethod
    def from_json(cls, d: Json) -> GraphSpec:
        return cls(d["file"], int(d["opset"]), tuple(TensorIO.from_json(i) for i in d["inputs"]),
                   tuple(TensorIO.from_json(o) for o in d["outputs"]), tuple(d.get("dynamic_axes", ())))


def _io(name: str, dtype: str, *shape: int | str) -> TensorIO:
    return TensorIO(name, dtype, shape)


#: What every bundle's graphs take and give. Defined once: written by the exporter, checked at load.
GRAPH_IO: dict[str, GraphSpec] = {
    "text": GraphSpec(GRAPH_FILES["text"], OPSET,
                      (_io("input_ids", "int64", "batch", "sequence"),
                       _io("attention_mask", "int64", "batch", "sequence")),
                      (_io("text_embedding", "float32", "batch", "embedding"),), ("batch", "sequence")),
    "image": GraphSpec(GRAPH_FILES["image"], OPSET, (_io("pixel_values", "float32", "batch", 3, "size", "size"),),
                       (_io("image_embedding", "float32", "batch", "embedding"),), ("batch",)),
    "head": GraphSpec(GRAPH_FILES["head"], OPSET,
                      (_io("text_embedding", "float32", "batch", "embedding"),
                       _io("image_embedding", "float32", "batch", "embedding")),
                      (_io("probability", "float32", "batch"),), ("batch",)),
}
TEXT_INPUTS = tuple(GRAPH_IO["text"].input_names)
TEXT_OUTPUT = GRAPH_IO["text"].output_names[0]
IMAGE_INPUT = GRAPH_IO["image"].input_names[0]
IMAGE_OUTPUT = GRAPH_IO["image"].output_names[0]
HEAD_INPUTS = tuple(GRAPH_IO["head"].input_names)
HEAD_OUTPUT = GRAPH_IO["head"].output_names[0]


# ---------------------------------------------------------------- the manifest
@dataclass(frozen=True)
class FileRecord:
    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FileRecord:
        return cls(path.stat().st_size, sha256_file(path))

    def to_json(self) -> Json:
        return {"bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, d: Json) -> FileRecord:
        return cls(int(d["bytes"]), str(d["sha256"]))


@dataclass(frozen=True)
class Architecture:
    text_layers: int
    text_hidden_size: int
    text_num_heads: int
    image_encoder: str

    def to_json(self) -> Json:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> Architecture:
        return cls(**d)


@dataclass(frozen=True)
class DataRecord:
    """The dataset the model was trained on."""

    dataset_sha256: str
    pairs: dict[str, int]

    def to_json(self) -> Json:
        return {"dataset_sha256": self.dataset_sha256, "pairs": dict(self.pairs)}

    @classmethod
    def from_json(cls, d: Json) -> DataRecord:
        return cls(d["dataset_sha256"], dict(d.get("pairs", {})))


@dataclass(frozen=True)
class TrainingRecord:
    steps: int
    epochs: float
    seconds: dict[str, float]
    config: Json
    baseline_test: Metrics | None

    def to_json(self) -> Json:
        return {"steps": self.steps, "epochs": self.epochs, "seconds": self.seconds, "config": self.config,
                "baseline_test": self.baseline_test}

    @classmethod
    def from_json(cls, d: Json) -> TrainingRecord:
        return cls(d["steps"], d["epochs"], d["seconds"], d["config"], d.get("baseline_test"))


@dataclass(frozen=True)
class Gate:
    """The gate's verdict on test: version 1 F1 and all decisions (``min_agreement``); version 2
    every criterion, what is reported beside them and per language in ``criteria`` (``ticor.verdict``)."""

    variant: str
    fp32_test_f1: float
    test_f1: float
    f1_change: float
    agreement: float  # all decisions equal to fp32's
    passed: bool
    max_f1_drop: float
    min_agreement: float | None = None  # version 1 only
    version: int = 1
    criteria: Json | None = None  # version 2

    def describe(self) -> str:
        """The verdict in one line (``ticor quantize``'s gate line, ``ticor info``)."""
        return describe_verdict(self.criteria) if self.criteria else describe_v1(self.to_json())

    def to_json(self) -> Json:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> Gate:
        return cls(**d)


@dataclass(frozen=True)
class Quantization:
    source_model_version: str
    source_files: dict[str, FileRecord]
    asked: dict[str, str]
    branches: dict[str, str]
    recipe: Json
    calibration: Json | None
    chosen: str
    table: list[Json]
    gate: Gate
    seconds: float

    @property
    def source_bytes(self) -> int:
        return sum(f.bytes for f in self.source_files.values())

    def kernel_clause(self) -> str:
        """How the CPU the gate ran on multiplies uint8 by int8 (``recipe.int8_kernel``, written by
        ``ticor quantize``'s probe; older bundles did not record it): exact int32 dot products,
        or int16 pair sums that saturate (x86 without VNNI), which changes the agreement."""
        probe = self.recipe.get("int8_kernel")
        if not probe:
            return ""
        return ("; measured on a CPU whose int8 kernel is exact" if probe["exact"] else
                f"; measured on a CPU whose int8 kernel saturates (probe ratio {probe['ratio']:.2f}, "
                "x86 without VNNI)")

    def to_json(self) -> Json:
        return {"source_model_version": self.source_model_version,
                "source_files": {k: v.to_json() for k, v in self.source_files.items()}, "asked": self.asked,
                "branches": self.branches, "recipe": self.recipe, "calibration": self.calibration,
                "chosen": self.chosen, "table": self.table, "gate": self.gate.to_json(), "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: Json) -> Quantization:
        return cls(d["source_model_version"], {k: FileRecord.from_json(v) for k, v in d["source_files"].items()},
                   d["asked"], d["branches"], d["recipe"], d.get("calibration"), d["chosen"], d["table"],
                   Gate.from_json(d["gate"]), d["seconds"])


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of a bundle. ``root`` is the bundle directory it was read from."""

    preset: str
    description: str
    precision: str  # fp32 | int8 | fp16
    model_version: str
    created_by: str
    files: dict[str, FileRecord]
    graphs: dict[str, GraphSpec]
    embedding_dim: int
    text_spec: TextSpec
    image_spec: ImageSpec
    threshold: float
    threshold_source: str
    tokenizer: str = TOKENIZER
    architecture: Architecture | None = None
    dataset: DataRecord | None = None  # "data" in the JSON
    base_weights: tuple[Json, ...] = ()
    source: Json | None = None  # what the bundle was exported from (trained sha, train key)
    validation: Json | None = None  # the export's comparison with torch
    metrics: dict[str, Metrics] = field(default_factory=dict)  # split -> metrics
    training: TrainingRecord | None = None
    quantization: Quantization | None = None
    score_calibration: ScoreCalibration | None = None
    operating_curve: OperatingCurve | None = None
    vocabulary: Vocabulary | None = None
    export_seconds: float | None = None
    adaptation: Json | None = None  # ticor adapt's record (base, pairs, parts, before/after, retention)
    root: Path = field(default=Path(), compare=False)

    path = property(lambda self: self.root / MANIFEST)
    size_bytes = property(lambda self: sum(f.bytes for f in self.files.values()))

    def operating_point(self, threshold: float | None = None, min_precision: float | None = None,
                        min_recall: float | None = None) -> OperatingPoint:
        """The threshold for ``threshold=``, ``min_precision=`` or ``min_recall=`` (at most one;
        none: the bundle's), chosen on the stored operating curve. Raises :class:`UsageError`."""
        curve = self.operating_curve
        return choose_threshold(self.threshold, list(curve.points) if curve else None,
                                curve.split if curve else "val", threshold=threshold, min_precision=min_precision,
                                min_recall=min_recall)

    @property
    def recalibration(self) -> tuple[float, float] | None:
        """``(a, b)`` of the Platt map the runtime applies after the head graph (``adapt --calibrate-only``)."""
        r = (self.adaptation or {}).get("recalibration")
        return (float(r["a"]), float(r["b"])) if r else None

    @property
    def trained_sha256(self) -> str | None:
        """The trained weights the graphs came from (shared by a bundle and its quantized ones)."""
        return (self.source or {}).get("trained_sha256")

    def file(self, name: str) -> Path:
        return self.root / name

    def graph_path(self, part: str) -> Path:
        return self.root / GRAPH_FILES[part]

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.tokenizer

    def to_json(self) -> Json:
        d: Json = {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "preset": self.preset,
            "description": self.description, "precision": self.precision, "model_version": self.model_version,
            "created_by": self.created_by, "files": {k: v.to_json() for k, v in sorted(self.files.items())},
            "graphs": {k: v.to_json() for k, v in self.graphs.items()}, "embedding_dim": self.embedding_dim,
            "text": {"tokenizer": self.tokenizer, "spec": self.text_spec.to_json()},
            "image": {"spec": self.image_spec.to_json()}, "threshold": self.threshold,
            "threshold_source": self.threshold_source, "base_weights": list(self.base_weights),
            "metrics": self.metrics,
        }
        optional = {"architecture": self.architecture, "data": self.dataset, "source": self.source,
                    "validation": self.validation, "training": self.training, "quantization": self.quantization,
                    "score_calibration": self.score_calibration, "operating_curve": self.operating_curve,
                    "vocabulary": self.vocabulary, "export_seconds": self.export_seconds, "adaptation": self.adaptation}
        for key, value in optional.items():
            if value is not None:
                d[key] = value.to_json() if hasattr(value, "to_json") else value
        return d

    @classmethod
    def from_json(cls, d: Json, root: Path | str = ".") -> Manifest:
        """A manifest from its JSON; :class:`BundleError` names what is missing or malformed."""
        where = Path(root) / MANIFEST
        _check_outline(d, where)
        absent = [p for p in BRANCHES if p not in d["graphs"]]
        if absent:
            raise BundleError(f"{where}: no {absent[0]} graph declared")
        try:
            def opt(key: str, kind: Any) -> Any:
                return kind.from_json(d[key]) if d.get(key) is not None else None

            return cls(
                preset=d["preset"], description=d.get("description", ""), precision=d["precision"],
                model_version=d.get("model_version", "?"), created_by=d.get("created_by", "?"),
                files={k: FileRecord.from_json(v) for k, v in d["files"].items()},
                graphs={k: GraphSpec.from_json(v) for k, v in d["graphs"].items()},
                embedding_dim=int(d["embedding_dim"]), text_spec=TextSpec.from_json(d["text"]["spec"]),
                image_spec=ImageSpec.from_json(d["image"]["spec"]), threshold=float(d["threshold"]),
                threshold_source=d.get("threshold_source", ""), tokenizer=d["text"].get("tokenizer", TOKENIZER),
                architecture=opt("architecture", Architecture), dataset=opt("data", DataRecord),
                base_weights=tuple(d.get("base_weights", ())), source=d.get("source"),
                validation=d.get("validation"), metrics=dict(d.get("metrics", {})),
                training=opt("training", TrainingRecord), quantization=opt("quantization", Quantization),
                score_calibration=opt("score_calibration", ScoreCalibration),
                operating_curve=opt("operating_curve", OperatingCurve), vocabulary=opt("vocabulary", Vocabulary),
                export_seconds=d.get("export_seconds"), adaptation=d.get("adaptation"), root=Path(root))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None


def _check_outline(d: Any, where: Path) -> None:
    """Format, schema version, the top-level keys and the file list (all that verifying needs)."""
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise BundleError(f"{where}: not a ticor bundle manifest")
    if d.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{where}: schema version {d.get('schema_version')!r}, this ticor reads {SCHEMA_VERSION}")
    for key in ("preset", "precision", "files", "graphs", "text", "image", "threshold"):
        if key not in d:
            raise BundleError(f"{where}: the manifest has no {key!r}")
    missing = sorted(set(BUNDLE_FILES) - set(d["files"]))
    if missing:
        raise BundleError(f"{where}: the manifest lists no {missing}")


# ---------------------------------------------------------------- reading and verifying
def verify_files(root: Path, files: dict[str, FileRecord]) -> None:
    """Raise :class:`BundleError` unless every listed file exists with its size and sha256."""
    for name, want in sorted(files.items()):
        p = root / name
        if not p.is_file():
            raise BundleError(f"{root}: {name} is missing")
        size = p.stat().st_size
        if size != want.bytes:
            raise BundleError(f"{root}: {name} has {size} bytes, the manifest says {want.bytes}")
        got = sha256_file(p)
        if got != want.sha256:
            raise BundleError(f"{root}: {name} has sha256 {got}, the manifest says {want.sha256} "
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
    _check_outline(data, path)
    if verify:  # the files first: a tampered bundle is refused whatever else its manifest says
        try:
            files = {k: FileRecord.from_json(v) for k, v in data["files"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"{path}: malformed file list ({type(exc).__name__}: {exc})") from None
        verify_files(root, files)
    return Manifest.from_json(data, root)


def check_declared_io(m: Manifest) -> None:
    """The manifest's graph names must be the ones this runtime feeds (before any session)."""
    for part, want in GRAPH_IO.items():
        g = m.graphs[part]
        if g.input_names != want.input_names or g.output_names != want.output_names:
            raise BundleError(f"{m.path}: the {part} graph declares inputs {g.input_names} and outputs "
                              f"{g.output_names}; this runtime feeds {want.input_names} -> {want.output_names}")


def check_session_io(path: Path, got_in: list[tuple[str, str]], got_out: list[tuple[str, str]],
                     declared: GraphSpec) -> None:
    """A loaded graph's ``(name, dtype)`` inputs and outputs must be the declared ones."""
    want_in = [(i.name, i.dtype) for i in declared.inputs]
    want_out = [(o.name, o.dtype) for o in declared.outputs]
    if got_in != want_in or got_out != want_out:
        raise BundleError(f"{path}: the graph has inputs {got_in} and outputs {got_out}, the manifest declares "
                          f"{want_in} -> {want_out} (graphs from another build?)")


# ---------------------------------------------------------------- writing
def write_bundle(work: Path, out: Path, manifest: Manifest) -> Manifest:
    """Turn the directory ``work`` (holding :data:`BUNDLE_FILES`) into the bundle ``out``.

    The file records are computed here, the manifest is written, read back and verified, then
    ``work`` is renamed to ``out`` (an older ``out`` is replaced). Returns the manifest of ``out``.
    """
    absent = [n for n in BUNDLE_FILES if not (work / n).is_file()]
    if absent:
        raise BundleError(f"{work}: cannot write a bundle without {', '.join(absent)}")
    files = {n: FileRecord.of(work / n) for n in sorted(BUNDLE_FILES)}
    final = dataclasses.replace(manifest, files=files, root=work)
    (work / MANIFEST).write_text(json.dumps(final.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    read_manifest(work)  # what we wrote must read back and verify
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return dataclasses.replace(final, root=out)
