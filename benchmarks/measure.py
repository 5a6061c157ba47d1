"""Timing, the machine's matmul peak, graph FLOPs and the machine record for ``ticor bench``."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ticor import __version__
from ticor.bundle import Architecture
from ticor.sessions import plain_cpu_session


def stats(ms: list[float], batch: int) -> dict[str, float]:
    a = np.array(ms)
    p50 = float(np.percentile(a, 50))
    return {"p50_ms": p50, "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "min_ms": float(a.min()), "iqr_ms": float(np.percentile(a, 75) - np.percentile(a, 25)),
            "items_per_s": batch / (p50 / 1e3), "runs": len(ms)}


def interleaved(calls: dict[str, Callable[[], Any]], runs: int, warmup: int = 3) -> dict[str, list[float]]:
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


def matmul_peak(threads: int) -> dict[str, float]:
    """This CPU's fp32 and int8 matrix-multiply throughput through onnxruntime (one big MatMul)."""
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
        s = plain_cpu_session(model.SerializeToString(), threads=threads)
        t = interleaved({"mm": lambda s=s, feeds=feeds: s.run(None, feeds)}, 20)["mm"]
        out[f"{kind}_gops"] = 2 * m_ * k_ * n_ / (min(t) / 1e3) / 1e9
    return out


def text_flops(arch: Architecture, batch: int, seq: int, embed_dim: int) -> float:
    h, layers = arch.text_hidden_size, arch.text_layers
    per_token = layers * (2 * 12 * h * h + 2 * 2 * seq * h)
    return float(batch * seq * per_token + batch * 2 * h * embed_dim)


def graph_flops(path: Path, input_shape: list[int]) -> float:
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


def machine_record(threads: list[int]) -> dict[str, Any]:
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
