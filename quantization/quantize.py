"""``ticor quantize``: an fp32 bundle -> an int8 (CPU) or fp16 (GPU) bundle behind an accuracy gate.

Candidates per branch. int8: text — each MatMul's own int8 error measured on train texts, per
row and per tensor (the report is printed and stored), then ``int8-rowwise`` (integer kernels with
per-row activation scales); image static QDQ int8 per-channel calibrated on real train pictures,
one graph per calibration method; head fp32 (70 kB: nothing to gain). fp16: every graph converted
with float32 inputs and outputs kept at the boundary.

Each candidate is scored on the validation split **alone** (other branches fp32) and every graph
is timed at batch 1 and at batch 64 side by side; the table is printed and stored. Per branch the
fastest candidate (product of its time ratios to fp32 at both sizes) that keeps the gate on
validation is chosen, else fp32 (``--text``/``--image`` force
one). The chosen bundle's threshold is re-fitted on validation (fp32's share of positive
decisions), then the **gate** (:mod:`ticor.quantization.gate`: batch independence, F1 and
ROC-AUC, confident decisions kept) compares it with fp32 on test, or nothing is written and the
message names the criteria and the branch that break it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ticor import __version__
from ticor._console import say
from ticor.bundle import (
    BRANCHES,
    GRAPH_FILES,
    HEAD_INPUTS,
    IMAGE_INPUT,
    MANIFEST,
    TEXT_INPUTS,
    Gate,
    Manifest,
    OperatingCurve,
    Quantization,
    read_manifest,
    write_bundle,
)
from ticor.calibration import operating_curve
from ticor.errors import BundleError, GateError, UsageError
from ticor.evaluation import Dataset, load_dataset, split_scores
from ticor.kernels import int8_kernel_probe
from ticor.metrics import evaluate
from ticor.preprocess import encode_texts, load_image, load_tokenizer
from ticor.quantization.choice import Graph, matched_threshold, settle, speed_key
from ticor.quantization.gate import (
    GATE_VERSION,
    MAX_BATCH_DRIFT,
    MAX_F1_DROP,
    batch_drift,
    failures,
    format_table,
    gate_line,
    judge,
)
from ticor.quantization.graphs import (
    CALIBRATION_METHODS,
    CALIBRATION_TEXTS,
    IMAGE_WEIGHTS,
    TEXT_RECIPES,
    TextQuantization,
    image_int8_weights,
    quantize_image,
    quantize_text,
    to_fp16,
)
from ticor.sessions import plain_cpu_session
from ticor.verdict import describe_by_lang

#: Bumped when a recipe changes what it writes: an int8 bundle made by another version is rebuilt.
RECIPE_VERSION = 7
#: Pairs of each split whose score is checked alone and in company (the gate's batch independence).
DRIFT_PAIRS = 40


class _Embeddings:
    """Branch outputs per (graph file, split), each graph run once per split, pictures decoded once."""

    def __init__(self, work: Path, ds: Dataset, m: Manifest) -> None:
        self.work, self.ds, self.m = work, ds, m
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        self._pictures: dict[str, np.ndarray] = {}
        self._tok = load_tokenizer(m.tokenizer_path, m.text_spec)
        self._drift: dict[tuple[str, ...], float] = {}

    def _session(self, file: str) -> Any:
        return plain_cpu_session(self.work / file)

    def get(self, g: Graph, split: str) -> np.ndarray:
        key = (g.file, split)
        if key not in self._cache:
            s = self._session(g.file)
            if g.branch == "text":
                texts = self.ds.split_texts(split)
                order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
                out = np.empty((len(texts), self.m.embedding_dim), np.float32)
                for k in range(0, len(order), 64):
                    idx = order[k : k + 64]
                    ids, mask = encode_texts(self._tok, [texts[i] for i in idx], self.m.text_spec)
                    out[idx] = s.run(None, {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
            else:
                if split not in self._pictures:
                    self._pictures[split] = np.stack([load_image(self.ds.root / p, self.m.image_spec)
                                                      for p in self.ds.split_images(split)])
                pics = self._pictures[split]
                out = np.concatenate([s.run(None, {IMAGE_INPUT: pics[k : k + 64]})[0]
                                      for k in range(0, len(pics), 64)])
            self._cache[key] = out
        return self._cache[key]

    def drift(self, combo: dict[str, Graph], split: str) -> float:
        """The largest change of a pair's score with its batch (:func:`gate.batch_drift`), over
        :data:`DRIFT_PAIRS` pairs of ``split`` spread evenly; measured once per graphs and split."""
        key = (combo["text"].file, combo["image"].file, combo["head"].file, split)
        if key not in self._drift:
            self._drift[key] = self._measure_drift(combo, split)
        return self._drift[key]

    def _measure_drift(self, combo: dict[str, Graph], split: str) -> float:
        rows = self.ds.pairs[split][:: max(1, len(self.ds.pairs[split]) // DRIFT_PAIRS)][:DRIFT_PAIRS]
        ts, im = self._session(combo["text"].file), self._session(combo["image"].file)

        def texts(batch: list[str]) -> np.ndarray:
            ids, mask = encode_texts(self._tok, batch, self.m.text_spec)
            return ts.run(None, {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]

        pictures = np.stack([load_image(self.ds.root / r["image"], self.m.image_spec) for r in rows])
        return batch_drift(texts, lambda x: im.run(None, {IMAGE_INPUT: x})[0], self.head_fn(combo["head"]),
                           [r["text"] for r in rows], pictures)

    def head_fn(self, g: Graph) -> Any:
        s = self._session(g.file)
        return lambda a, b: s.run(None, {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0]

    def scores(self, combo: dict[str, Graph], split: str, with_rank: bool = False) -> tuple[np.ndarray, Any]:
        tv, iv = self.get(combo["text"], split), self.get(combo["image"], split)
        return split_scores(self.ds, split, tv, iv, self.head_fn(combo["head"]), with_rank=with_rank)


def calibration_set(ds: Dataset, count: int) -> list[str]:
    """``count`` train pictures spread evenly over the sorted train split (deterministic)."""
    images = ds.split_images("train")
    if not images:
        raise UsageError("the dataset has no train pictures to calibrate with")
    step = max(1, len(images) // count)
    return images[::step][:count]


def calibration_texts(ds: Dataset, count: int) -> list[str]:
    """``count`` train texts spread evenly over the train split, sorted by length (as batches run)."""
    texts = ds.split_texts("train")
    if not texts:
        raise UsageError("the dataset has no train texts to calibrate with")
    return sorted(texts[:: max(1, len(texts) // count)][:count], key=len)


def sensitivity_lines(tq: TextQuantization, worst: int = 6) -> str:
    """The per-MatMul error report's head, as printed by ``ticor quantize``."""
    if not tq.report:
        return "no per-node report"
    row, tensor = (float(np.median([getattr(r, k) for r in tq.report])) for k in ("rowwise_error", "tensor_error"))
    lines = [f"text MatMuls' own int8 error per row (median {row:.4f}; one scale per batch tensor would give "
             f"{tensor:.4f}), worst {worst}:"]
    for r in tq.report[:worst]:
        lines.append(f"  {r.node:<44} {r.shape[0]:>5}x{r.shape[1]:<5} {r.rowwise_error:.4f} per row, "
                     f"{r.tensor_error:.4f} per tensor")
    return "\n".join(lines)


def _latency(path: Path, feeds: dict[str, np.ndarray], runs: int = 100) -> float:
    s = plain_cpu_session(path, threads=2)
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
             text: str = "auto", image: str = "auto", force: bool = False, quiet: bool = False) -> Manifest:
    """Write (or reuse) the quantized bundle ``out``; returns its manifest data.

    ``text``/``image``: ``auto`` (the fastest graph of that branch that keeps the gate on
    validation, else fp32) or a graph name from the table to force (``fp32``, ``int8-rowwise``,
    ``int8-minmax``, ``fp16``...). Returns the written bundle's manifest.
    """
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
            q = done.quantization
            # the same fp32 files (a re-export of the same training changes them), recipe asked and preprocessing
            if q is not None and q.source_files == m.files and q.asked == {
                    "text": text, "image": image} and (done.text_spec, done.image_spec) == (m.text_spec, m.image_spec) \
                    and q.recipe.get("version") == RECIPE_VERSION:
                say(quiet, f"ticor quantize: {out} is up to date")
                return done
        except BundleError as exc:
            say(quiet, f"ticor quantize: rebuilding {out} ({exc})")
    ds = load_dataset(data)
    if m.dataset is None or ds.sha256 != m.dataset.dataset_sha256:
        raise UsageError(f"{data} is not the dataset {src} was trained on (dataset_sha256 differs)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        return _run(m, src, out, work, ds, precision, calibration, methods, calibration_override,
                    {"text": text, "image": image}, quiet)
    finally:
        if work.exists():
            shutil.rmtree(work)


def _build(m: Manifest, src: Path, work: Path, ds: Dataset, precision: str, calibration: int, methods: tuple[str, ...],
           calibration_override: list[str] | None, quiet: bool) -> tuple[list[Graph], dict[str, Any],
                                                                          dict[str, Any] | None]:
    """Every candidate graph of every branch, in ``work``; the fp32 graphs as links."""
    graphs = []
    for part, f in GRAPH_FILES.items():
        (work / f"{part}.fp32.onnx").symlink_to((src / f).resolve())
        graphs.append(Graph(part, "fp32", f"{part}.fp32.onnx"))
    if precision == "fp16":
        for part in BRANCHES:
            to_fp16(work / f"{part}.fp32.onnx", work / f"{part}.fp16.onnx")
            graphs.append(Graph(part, "fp16", f"{part}.fp16.onnx"))
        return graphs, {"version": RECIPE_VERSION,
                        "all": "float16 weights and compute; float32 inputs and outputs kept at the boundary"}, None
    texts = calibration_texts(ds, CALIBRATION_TEXTS)
    tok = load_tokenizer(m.tokenizer_path, m.text_spec)
    feeds = [dict(zip(TEXT_INPUTS, encode_texts(tok, texts[k : k + 64], m.text_spec), strict=True))
             for k in range(0, len(texts), 64)]
    say(quiet, f"ticor quantize: text branch -> int8 with per-row activation scales, each MatMul's int8 error "
               f"measured on {len(texts)} train texts")
    tq = quantize_text(work / "text.fp32.onnx", {r: work / f"text.{r}.onnx" for r in TEXT_RECIPES}, feeds)
    say(quiet, "ticor quantize: " + sensitivity_lines(tq))
    graphs += [Graph("text", r, f"text.{r}.onnx") for r in TEXT_RECIPES]
    pictures = calibration_override if calibration_override is not None else calibration_set(ds, calibration)
    arrays = [load_image(ds.root / p, m.image_spec) for p in pictures]
    calib = {"split": "train", "pictures": len(pictures),
             "sha256": hashlib.sha256("\n".join(pictures).encode()).hexdigest()}
    say(quiet, f"ticor quantize: image branch -> static QDQ int8 per-channel, {', '.join(methods)} "
               f"calibration on {len(arrays)} train pictures")
    quantize_image(work / "image.fp32.onnx", {x: work / f"image.int8-{x}.onnx" for x in methods}, arrays)
    graphs += [Graph("image", f"int8-{x}", f"image.int8-{x}.onnx") for x in methods]
    image_weights = image_int8_weights(work / "image.fp32.onnx", work / f"image.{IMAGE_WEIGHTS}.onnx")
    graphs.append(Graph("image", IMAGE_WEIGHTS, f"image.{IMAGE_WEIGHTS}.onnx"))
    recipe = {
        "version": RECIPE_VERSION,
        "text": {r: "the exported graph; " + h for r, h in tq.how.items()},
        "text_sensitivity": {"calibration": {"split": "train", "texts": len(texts),
                                             "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()},
                             "metric": "||y_int8 - y|| / ||y|| of each MatMul on its own fp32 inputs, "
                                       "activations per row (what runs) and per tensor",
                             "nodes": tq.report_json()},
        "image": {**{f"int8-{x}": f"quant_pre_process, then static QDQ int8 per-channel weights, uint8 activations "
                                  f"calibrated ({x})" for x in methods}, IMAGE_WEIGHTS: image_weights},
        "head": "fp32 (70 kB; nothing to gain)",
        # the gate's agreement depends on it: see ticor.kernels.int8_kernel_probe
        "int8_kernel": int8_kernel_probe(),
    }
    return graphs, recipe, calib


def _run(m: Manifest, src: Path, out: Path, work: Path, ds: Dataset, precision: str, calibration: int,
         methods: tuple[str, ...], calibration_override: list[str] | None, asked: dict[str, str],
         quiet: bool) -> Manifest:
    t_start = time.monotonic()
    graphs, recipe, calib_info = _build(m, src, work, ds, precision, calibration, methods,
                                        calibration_override, quiet)
    by_branch = {part: [g for g in graphs if g.branch == part] for part in BRANCHES}
    for part, choice in asked.items():
        if choice != "auto" and choice not in {g.name for g in by_branch[part]}:
            raise UsageError(f"--{part} {choice!r} is not one of this run's {part} graphs: "
                             f"auto, {', '.join(g.name for g in by_branch[part])}")
    fp32 = {part: by_branch[part][0] for part in BRANCHES}

    # batch-1 latency of every graph, side by side in this process
    tok = load_tokenizer(m.tokenizer_path, m.text_spec)
    ids, mask = encode_texts(tok, ["a dog runs across the grass"], m.text_spec)
    picture = load_image(ds.root / ds.split_images("test")[0], m.image_spec)[None]
    emb = np.full((1, m.embedding_dim), 1.0 / np.sqrt(m.embedding_dim), np.float32)
    feeds = {"text": {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask}, "image": {IMAGE_INPUT: picture},
             "head": {HEAD_INPUTS[0]: emb, HEAD_INPUTS[1]: emb}}
    latency = {g.file: _latency(work / g.file, feeds[g.branch]) for g in graphs}
    # batch 64 (the batch scorer's size): captions of the test split, test pictures
    ids64, mask64 = encode_texts(tok, ds.split_texts("test")[:64], m.text_spec)
    pictures64 = np.stack([load_image(ds.root / p, m.image_spec) for p in ds.split_images("test")[:64]])
    feeds64 = {"text": {TEXT_INPUTS[0]: ids64, TEXT_INPUTS[1]: mask64}, "image": {IMAGE_INPUT: pictures64},
               "head": {HEAD_INPUTS[0]: np.repeat(emb, 64, 0), HEAD_INPUTS[1]: np.repeat(emb, 64, 0)}}
    latency64 = {g.file: _latency(work / g.file, feeds64[g.branch], runs=10) for g in graphs}
    size = {g.file: (work / g.file).stat().st_size for g in graphs}

    emb_cache = _Embeddings(work, ds, m)
    ys = {s: np.array([r["label"] for r in ds.pairs[s]]) for s in ("val", "test")}
    langs = {s: [str(r.get("lang", "")) for r in ds.pairs[s]] for s in ("val", "test")}
    base = {s: emb_cache.scores(fp32, s)[0] for s in ("val", "test")}
    rate = float(np.mean(base["val"] >= m.threshold))

    def row_for(combo: dict[str, Graph], split: str = "val") -> dict[str, Any]:
        scores, _ = emb_cache.scores(combo, split)
        thr = matched_threshold(emb_cache.scores(combo, "val")[0], rate) if combo != fp32 else m.threshold
        verdict = judge(ys[split], langs[split], base[split], m.threshold, scores, thr, emb_cache.drift(combo, split),
                        drift_limit=None if precision == "fp16" else MAX_BATCH_DRIFT)
        c = verdict["criteria"]
        return {"variant": " + ".join(f"{p} {combo[p].name}" for p in BRANCHES),
                "graphs": {p: combo[p].name for p in BRANCHES}, "files": [combo[p].file for p in BRANCHES],
                "threshold": thr, f"{split}_f1": c["f1"]["value"], f"{split}_f1_change": c["f1"]["change"],
                f"{split}_roc_auc": c["roc_auc"]["value"], f"{split}_agreement": verdict["reported"]["agreement"],
                f"{split}_gate": verdict, f"{split}_passes": verdict["passed"],
                "latency_ms": {p: latency[combo[p].file] for p in BRANCHES},
                "latency_ms_b64": {p: latency64[combo[p].file] for p in BRANCHES},
                "bytes": sum(size[combo[p].file] for p in BRANCHES)}

    # each quantized graph alone (the other branches fp32), on validation
    table = [row_for(fp32)]
    for g in graphs:
        if g.name != "fp32":
            say(quiet, f"ticor quantize: scoring val with {g.branch} {g.name}")
            table.append(row_for(fp32 | {g.branch: g}))
    chosen_graphs = {}
    for part in BRANCHES:
        if asked.get(part, "auto") != "auto":
            chosen_graphs[part] = next(g for g in by_branch[part] if g.name == asked[part])
            continue
        fits = [r for r in table if r["val_passes"] and r["graphs"][part] != "fp32"
                and all(r["graphs"][o] == "fp32" for o in BRANCHES if o != part)]
        best = min(fits, key=lambda r: (speed_key(r, table[0], part), r["bytes"]), default=None)
        chosen_graphs[part] = (next(g for g in by_branch[part] if g.name == best["graphs"][part])
                               if best else fp32[part])
    if all(g.name == "fp32" for g in chosen_graphs.values()):
        raise GateError("no branch keeps the gate on validation when quantized; nothing was written.\n"
                        + format_table(table))
    chosen_graphs, chosen = settle(chosen_graphs, fp32, asked, table, row_for, quiet)
    say(quiet, "\n" + format_table(table, chosen))

    # the gate, on test
    gate_row = row_for(chosen_graphs, "test")
    verdict = gate_row["test_gate"]
    test_scores, rank = emb_cache.scores(chosen_graphs, "test", with_rank=True)
    gate = Gate(variant=chosen["variant"], fp32_test_f1=verdict["criteria"]["f1"]["reference"],
                test_f1=gate_row["test_f1"], f1_change=gate_row["test_f1_change"],
                agreement=gate_row["test_agreement"], passed=verdict["passed"], max_f1_drop=MAX_F1_DROP,
                version=GATE_VERSION, criteria=verdict)
    if not gate.passed:
        culprits = []
        for part in ("text", "image"):
            if chosen_graphs[part].name == "fp32":
                continue
            alone = row_for(fp32 | {part: chosen_graphs[part]}, "test")
            if not alone["test_passes"]:
                culprits.append(f"the {part} branch ({part} {chosen_graphs[part].name}: "
                                f"{'; '.join(failures(alone['test_gate']))})")
        which = "; ".join(culprits) if culprits else "only the combination of the quantized branches"
        raise GateError(f"gate failed on test for {chosen['variant']}: {'; '.join(failures(verdict))}. "
                        f"Failing on its own: {which}. Nothing was written.")

    # write the bundle
    val_scores, val_rank = emb_cache.scores(chosen_graphs, "val", with_rank=True)
    final = work / "bundle"
    final.mkdir()
    for part in BRANCHES:
        shutil.copyfile(work / chosen_graphs[part].file, final / GRAPH_FILES[part])
    shutil.copyfile(m.tokenizer_path, final / m.tokenizer)
    written = write_bundle(final, out, dataclasses.replace(
        m, precision=precision, model_version=m.model_version.replace("-fp32-", f"-{precision}-"),
        created_by=f"ticor {__version__} quantize", threshold=chosen["threshold"],
        threshold_source="the fp32 bundle's share of positive decisions on the val split, re-fitted after quantization",
        metrics={"val": evaluate(ds.pairs["val"], val_scores, chosen["threshold"], val_rank),
                 "test": evaluate(ds.pairs["test"], test_scores, chosen["threshold"], rank)}, validation=None,
        operating_curve=OperatingCurve("val", tuple(operating_curve(val_scores, ys["val"]))),
        quantization=Quantization(
            source_model_version=m.model_version, source_files=m.files, asked=asked, branches=chosen["graphs"],
            recipe=recipe, calibration=calib_info, chosen=chosen["variant"], table=table, gate=gate,
            seconds=round(time.monotonic() - t_start, 1))))
    say(quiet, f"ticor quantize: gate passed ({gate_line(written)}); bundle written to {out}; per language: "
               f"{describe_by_lang(verdict)}")
    return written
