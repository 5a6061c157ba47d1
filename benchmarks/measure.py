"""Timing, the machine's matmul peak, graph FLOPs and the machine record for ``ticor bench``."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ticor import __version__
from ticor.bundle import Architecture
from ticor.kernels import FLOAT, INT8, INT32, UINT8, int8_kernel_probe, one_node_model
from ticor.sessions import plain_cpu_session


def stats(ms: list[float], batch: int) -> dict[str, float]:
    a = np.array(ms)
    p50 = float(np.percentile(a, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "min_ms": float(a.min()), "iqr_ms": float(np.percentile(a, 75) - np.percentile(a, 25)),
            "items_per_s": batch / (p50 / 1e3), "runs": len(ms)}


def in_turn(call: Callable[[Any], Any], items: list[Any]) -> Callable[[], Any]:
    """``call`` on ``items`` one after the other, cycling, with a walk of its own: each variant
    made this way gets the same item on its k-th call, so within a round of :func:`interleaved`
    every variant works on the same input (a shared walk would give each variant other captions)."""
    count = itertools.count()
    return lambda: call(items[next(count) % len(items)])


def interleaved(calls: dict[str, Callable[[], Any]], runs: int, warmup: int = 3) -> dict[str, list[float]]:
    """Each call timed ``runs`` times (ms), all of them once per round, in an order shuffled per
    round (seeded): every variant goes first, and follows every other, about equally often. (With
    the order only rotated, the variant listed after torch eager ran right after it in most
    rounds, while torch's OpenMP threads still spin: measured, that variant's fresh pair took
    0.5 ms more, whichever bundle it was.)"""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    shuffle = random.Random(0).shuffle
    for _ in range(runs):
        shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def matmul_peak(threads: int) -> dict[str, float]:
    """This CPU's fp32 and int8 matrix-multiply throughput through onnxruntime (one big MatMul)."""
    m_, k_, n_ = 512, 1024, 1024
    rng = np.random.default_rng(0)
    out = {}
    for kind in ("fp32", "int8"):
        if kind == "fp32":
            model = one_node_model("MatMul", [("a", FLOAT, [m_, k_]), ("b", FLOAT, [k_, n_])],
                                   ("c", FLOAT, [m_, n_]))
            feeds = {"a": rng.random((m_, k_), dtype=np.float32), "b": rng.random((k_, n_), dtype=np.float32)}
        else:
            model = one_node_model("MatMulInteger", [("a", UINT8, [m_, k_]), ("b", INT8, [k_, n_])],
                                   ("c", INT32, [m_, n_]))
            feeds = {"a": rng.integers(0, 255, (m_, k_), dtype=np.uint8),
                     "b": rng.integers(-127, 127, (k_, n_), dtype=np.int8)}
        s = plain_cpu_session(model, threads=threads)
        t = interleaved({"mm": lambda s=s, feeds=feeds: s.run(None, feeds)}, 20)["mm"]
        out[f"{kind}_gops"] = 2 * m_ * k_ * n_ / (min(t) / 1e3) / 1e9
    return out


def text_flops(arch: Architecture, batch: int, seq: int, embed_dim: int) -> float:
    h, layers = arch.text_hidden_size, arch.text_layers
    per_token = layers * (2 * 12 * h * h + 2 * 2 * seq * h)
    return float(batch * seq * per_token + batch * 2 * h * embed_dim)


# ------------------------------------------------------------------ onnxruntime profiles
_WEIGHT_INPUT = {"Conv": 1, "FusedConv": 1, "NhwcFusedConv": 1, "QLinearConv": 3, "ConvInteger": 1}
_MATMULS = {"MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm", "QLinearMatMul",
            "MatMulIntegerToFloat"}
#: Kernels that compute in integers (the fused forms onnxruntime makes of QDQ and dynamic quantization).
INTEGER_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearConv", "QLinearMatMul",
               "QGemm", "ConvInteger", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QAttention"}
#: Conversions between float and integers (time spent, not integer arithmetic).
CONVERT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
#: Weight-only quantized matmuls: int weights, the arithmetic depends on the kernel's accuracy level.
WEIGHT_ONLY_OPS = {"MatMulNBits"}


def profile_nodes(graph: Path, feeds: dict[str, np.ndarray], threads: int, optimization: str = "all",
                  runs: int = 3) -> list[dict[str, Any]]:
    """Per-node kernel times and shapes from an onnxruntime profile of ``graph`` on ``feeds``
    (the last of ``runs`` runs): ``op``, ``us``, ``inputs`` and ``outputs`` shapes."""
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        so.intra_op_num_threads = threads
        so.graph_optimization_level = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                       "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
        s = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text(encoding="utf-8"))
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    per_run = len(nodes) // runs if runs else len(nodes)
    last = nodes[-per_run:] if per_run else []

    def shapes(items: list[dict[str, list[int]]]) -> list[list[int]]:
        return [next(iter(x.values())) for x in items]

    return [{"op": e["args"]["op_name"], "us": float(e["dur"]),
             "inputs": shapes(e["args"].get("input_type_shape", [])),
             "outputs": shapes(e["args"].get("output_type_shape", []))} for e in last]


def nodes_flops(nodes: list[dict[str, Any]]) -> float:
    """Multiply-add FLOPs (2 per MAC) of the convolutions and matrix products in a profile."""
    total = 0.0
    for n in nodes:
        if not n["outputs"]:
            continue
        out = n["outputs"][0]
        if n["op"] in _WEIGHT_INPUT and len(n["inputs"]) > _WEIGHT_INPUT[n["op"]]:
            w = n["inputs"][_WEIGHT_INPUT[n["op"]]]
            total += 2.0 * math.prod(out) * math.prod(w[1:])
        elif n["op"] in _MATMULS and n["inputs"] and n["inputs"][0]:
            total += 2.0 * math.prod(out) * n["inputs"][0][-1]
    return total


def graph_flops(path: Path, input_shape: list[int]) -> float:
    """Conv/Gemm/MatMul FLOPs of a one-input graph at a fixed input shape, from an onnxruntime
    profile with basic optimizations only (the original layout, no blocked formats)."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    feeds = {name: np.zeros(input_shape, np.float32)}
    return nodes_flops(profile_nodes(path, feeds, threads=1, optimization="basic", runs=1))


def kernel_share(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of kernel time in integer kernels, and the ops that take the most time."""
    total = sum(n["us"] for n in nodes) or 1.0
    by_op: dict[str, float] = {}
    for n in nodes:
        by_op[n["op"]] = by_op.get(n["op"], 0.0) + n["us"]
    top = dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:6])
    def share(ops: set[str]) -> float:
        return sum(v for k, v in by_op.items() if k in ops) / total

    return {"integer_share": share(INTEGER_OPS), "convert_share": share(CONVERT_OPS),
            "weight_only_share": share(WEIGHT_ONLY_OPS), "top_ops_share": {k: v / total for k, v in top.items()},
            "kernel_us": total}


def machine_record(threads: list[int], bundles: list[Path] | None = None) -> dict[str, Any]:
    """Enough to reproduce a row: CPU and its flags, cores, memory, OS, onnxruntime version and
    build, providers, thread settings, package versions and each bundle's identity."""
    import importlib.metadata

    import onnxruntime as ort

    from ticor._deps import onnxruntime_status

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(), "machine": platform.machine(), "cores": os.cpu_count(),
        "os": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
        "onnxruntime": ort.__version__, "onnxruntime_distribution": ", ".join(onnxruntime_status().distributions),
        "onnxruntime_build": ort.get_build_info() if hasattr(ort, "get_build_info") else None,
        "providers": ort.get_available_providers(), "threads": threads, "ticor": __version__,
        "env": {k: os.environ[k] for k in ("TICOR_THREADS", "TICOR_PROVIDER", "OMP_NUM_THREADS")
                if k in os.environ},
    }
    with contextlib.suppress(AttributeError, OSError):
        info["affinity_cores"] = len(os.sched_getaffinity(0))
    try:
        txt = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(x.split(":", 1)[1].strip() for x in txt.splitlines() if x.startswith("model name"))
        flags = next(x.split(":", 1)[1].split() for x in txt.splitlines() if x.startswith("flags"))
        info["flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma", "avx_vnni", "sse4")))
    except (OSError, StopIteration):
        pass
    try:
        mem = Path("/proc/meminfo").read_text()
        kb = int(next(x.split()[1] for x in mem.splitlines() if x.startswith("MemTotal")))
        info["memory_gb"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    try:
        osr = Path("/etc/os-release").read_text()
        info["os_release"] = next(x.split("=", 1)[1].strip('"') for x in osr.splitlines()
                                  if x.startswith("PRETTY_NAME"))
    except (OSError, StopIteration):
        pass
    for mod, dist in (("tokenizers", "tokenizers"), ("pillow", "pillow"), ("torch", "torch"),
                      ("openvino", "openvino"), ("optimum", "optimum-onnx"), ("transformers", "transformers"),
                      ("matplotlib", "matplotlib")):
        try:
            info[mod] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[mod] = None
    info["int8_kernel"] = int8_kernel_probe()
    if bundles:
        from ticor.bundle import read_manifest

        info["bundles"] = []
        for b in bundles:
            m = read_manifest(b)
            info["bundles"].append({"path": str(b), "model_version": m.model_version, "precision": m.precision,
                                    "size_bytes": m.size_bytes,
                                    "gate_int8_kernel": (m.quantization.recipe.get("int8_kernel")
                                                         if m.quantization is not None else None),
                                    "files_sha256": {n: f.sha256 for n, f in sorted(m.files.items())}})
    return info
