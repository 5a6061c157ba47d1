"""Dynamic int8 for the text branch, built node by node and measured node by node.

Every ``MatMul`` with a constant weight in the exported text graph becomes one
``DynamicQuantizeMatMul`` (onnxruntime's integer kernel: the activation quantized to uint8 per
tensor at run time, the weight int8 per column, an int32 accumulation): written directly rather
than through ``quantize_dynamic``, so that any subset of MatMuls can be left in float, and so
that what runs is exactly what was measured.

Where the signal is lost is measured before choosing what to keep in float
(:func:`node_errors`): the fp32 graph is run on calibration texts with every MatMul's input
exposed, and each MatMul's own int8 arithmetic is reproduced on those real inputs in numpy (the
same per-tensor uint8 activation and per-column int8 weight). A node's error is
``||y_int8 - y|| / ||y||`` over the calibration tokens: the error that node adds on its own,
before any propagation. The report is stored in the bundle's recipe.

SmoothQuant (Xiao et al. 2023) on every int8 MatMul: ``x / s`` and ``diag(s) W`` with
``s_j = max|x_j|^a / max|W_j|^(1-a)`` (calibrated on the same texts), which moves the range of
a few outlier channels from the activation, quantized per tensor, into the weight, quantized per
column; the division is one ``Mul`` before the node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticor.kernels import MS_DOMAIN

#: SmoothQuant's migration strength, applied to every int8 MatMul. Measured on the multilingual
#: val split (all 72 MatMuls int8, decisions equal to fp32): none -> 96.9%, 0.5 -> 96.9%,
#: 0.65 -> 98.5%, 0.8 -> 98.1%.
ALPHA = 0.65


@dataclass(frozen=True)
class NodeError:
    """One MatMul's own int8 error on the calibration texts, plain and with SmoothQuant."""

    node: str
    shape: tuple[int, int]  # weight [K, N]
    error: float  # ||y_int8 - y|| / ||y||
    smoothed_error: float
    rowwise_error: float  # the same with the activation quantized per row (int8-rowwise)
    activation_range: float  # max |x| over the calibration tokens
    outlier_ratio: float  # max |x| over the median of the per-channel max |x|

    @property
    def best(self) -> float:
        """The error of the form used (SmoothQuant on every int8 MatMul: the local error is not
        what decides, the end-to-end agreement is, see :data:`ALPHA`)."""
        return self.smoothed_error

    def to_json(self, kept_float: bool) -> dict[str, Any]:
        return {"node": self.node, "weight": list(self.shape), "error": round(self.error, 5),
                "smoothed_error": round(self.smoothed_error, 5),
                "rowwise_error": round(self.rowwise_error, 5), "role": role(self.node),
                "activation_range": round(self.activation_range, 3), "outlier_ratio": round(self.outlier_ratio, 2),
                "kept_float": kept_float}


def weight_matmuls(graph: Any) -> list[Any]:
    """The MatMul nodes whose second input is a constant 2-D weight, in graph order."""
    inits = {i.name: i for i in graph.initializer}
    return [n for n in graph.node
            if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]


def _dynamic_uint8(x: np.ndarray) -> np.ndarray:
    """``DynamicQuantizeLinear`` then dequantize: uint8 per tensor, the range widened to hold 0."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    zero = np.clip(np.rint(-lo / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zero, 0, 255)
    return ((q - zero) * scale).astype(np.float32)


def int8_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes int8 [K, N], scale float32 [N])``: symmetric, one scale per output column."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12).astype(np.float32) / np.float32(127.0)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def smoothing(x_max: np.ndarray, w: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """SmoothQuant's per-input-channel factors ``s`` (``x / s``, ``diag(s) W``)."""
    w_max = np.maximum(np.abs(w).max(axis=1), 1e-8)
    s = np.power(np.maximum(x_max, 1e-8), alpha) / np.power(w_max, 1.0 - alpha)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


def matmul_inputs(model: Any, name_of_input: dict[str, str], batches: Iterable[dict[str, np.ndarray]],
                  threads: int = 2) -> dict[str, list[np.ndarray]]:
    """Run ``model`` (fp32) on ``batches`` with the inputs of the given MatMuls exposed as outputs;
    returns, per node name, its input per batch flattened to ``[tokens, K]``, padded positions
    included (at run time they take part in the per-tensor range too)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for tensor in sorted(set(name_of_input.values()) - have):
        probe.graph.output.append(onnx.ValueInfoProto(name=tensor))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor named
    s = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    out: dict[str, list[np.ndarray]] = {n: [] for n in name_of_input}
    for feeds in batches:
        values = dict(zip(names, s.run(None, feeds), strict=True))
        for node, tensor in name_of_input.items():
            v = values[tensor]
            out[node].append(v.reshape(-1, v.shape[-1]))
    return out


def node_errors(model: Any, inputs: dict[str, list[np.ndarray]],
                alpha: float = ALPHA) -> tuple[list[NodeError], dict[str, np.ndarray]]:
    """Each MatMul's own int8 error on its real fp32 inputs (per-batch dynamic range, as at run
    time), without and with SmoothQuant, sorted worst first (by the smoothed error: the form
    used); and every node's SmoothQuant factors."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    report, factors = [], {}
    for n in weight_matmuls(model.graph):
        if n.name not in inputs:
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        codes, scale = int8_columns(w)
        wq = codes.astype(np.float32) * scale
        xs = inputs[n.name]
        x_max = np.max([np.abs(x).max(axis=0) for x in xs], axis=0)
        s = smoothing(x_max, w, alpha)
        ws = w * s[:, None]
        cs, ss = int8_columns(ws)
        wsq = cs.astype(np.float32) * ss
        num = num_s = num_r = den = 0.0
        for x in xs:
            y = x @ w
            den += float(np.sum(y.astype(np.float64) ** 2))
            num += float(np.sum((_dynamic_uint8(x) @ wq - y).astype(np.float64) ** 2))
            num_s += float(np.sum((_dynamic_uint8(x / s) @ wsq - y).astype(np.float64) ** 2))
            num_r += float(np.sum((_rowwise_int8(x) @ wq - y).astype(np.float64) ** 2))
        den = max(den, 1e-30)
        r = NodeError(n.name, (int(w.shape[0]), int(w.shape[1])), (num / den) ** 0.5, (num_s / den) ** 0.5,
                      (num_r / den) ** 0.5,
                      float(x_max.max()), float(x_max.max() / max(float(np.median(x_max)), 1e-12)))
        report.append(r)
        factors[n.name] = s
    return sorted(report, key=lambda r: -r.best), factors


def _rowwise_int8(x: np.ndarray) -> np.ndarray:
    """Symmetric int8 per row (each token on its own, one scale ``max|x| / 127``), dequantized:
    what :func:`to_rowwise_int8`'s quantize step and ``MatMulIntegerToFloat`` compute."""
    scale = np.maximum(np.abs(x).max(axis=-1, keepdims=True) / np.float32(127.0), np.float32(ROW_EPS))
    return (np.rint(x / scale) * scale).astype(np.float32)


#: The smallest per-row scale (a row of zeros quantizes to zeros instead of dividing by zero).
ROW_EPS = 1e-30


def to_rowwise_int8(model: Any, keep_float: Iterable[str] = ()) -> tuple[Any, int]:
    """A copy of ``model`` with every weight MatMul not in ``keep_float`` in integer arithmetic whose
    activation scale is **per row** (per token): the input quantized to int8 symmetrically with one
    scale per row (``Abs``, ``ReduceMax`` over the last axis, a divide, ``Round``, the +128 offset,
    ``Cast`` to uint8), then onnxruntime's ``MatMulIntegerToFloat`` (uint8 x int8 with zero point
    128, int32 accumulation, scaled by the ``[..., 1]`` row scale and the per-column weight scale).
    No row's scale depends on another row, so a text's embedding does not depend on its batch.
    MatMuls reading the same input (Q, K and V) share one quantize step. Returns the model and the
    number of MatMuls made int8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    c = "rowwise_int8_"
    g.initializer.extend([numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), c + "inv127"),
                          numpy_helper.from_array(np.array(ROW_EPS, np.float32), c + "eps"),
                          numpy_helper.from_array(np.array(128.0, np.float32), c + "offset"),
                          numpy_helper.from_array(np.array(128, np.uint8), c + "zero")])
    quantized_input: dict[str, tuple[str, str]] = {}
    done = 0
    new_nodes = []
    todo = {n.name for n in weight_matmuls(g)} - set(keep_float)
    for n in g.node:
        if n.name not in todo:
            new_nodes.append(n)
            continue
        x = n.input[0]
        if x not in quantized_input:
            b = f"{c}{len(quantized_input)}_"
            new_nodes += [
                helper.make_node("Abs", [x], [b + "abs"], name=b + "abs"),
                helper.make_node("ReduceMax", [b + "abs"], [b + "max"], name=b + "max", axes=[-1], keepdims=1),
                helper.make_node("Mul", [b + "max", c + "inv127"], [b + "scale0"], name=b + "scale0"),
                helper.make_node("Max", [b + "scale0", c + "eps"], [b + "scale"], name=b + "scale"),
                helper.make_node("Div", [x, b + "scale"], [b + "div"], name=b + "div"),
                helper.make_node("Round", [b + "div"], [b + "round"], name=b + "round"),
                helper.make_node("Add", [b + "round", c + "offset"], [b + "shift"], name=b + "shift"),
                helper.make_node("Cast", [b + "shift"], [b + "q"], name=b + "q", to=TensorProto.UINT8),
            ]
            quantized_input[x] = (b + "q", b + "scale")
        q, scale = quantized_input[x]
        codes, wscale = int8_columns(numpy_helper.to_array(inits[n.input[1]]).astype(np.float32))
        base = n.name + "_int8"
        g.initializer.extend([numpy_helper.from_array(codes, base + "_w"),
                              numpy_helper.from_array(wscale, base + "_scale")])
        if uses.get(n.input[1], 0) == 1:
            g.initializer.remove(inits[n.input[1]])
        new_nodes.append(helper.make_node("MatMulIntegerToFloat", [q, base + "_w", scale, base + "_scale", c + "zero"],
                                          list(n.output), name=base, domain=MS_DOMAIN))
        done += 1
    del g.node[:]
    g.node.extend(new_nodes)
    if not any(o.domain == MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, done


def role(node: str) -> str:
    """A MatMul's place in its layer (``attention/self/query``, ``output/dense``...): its name
    without the layer number."""
    return re.sub(r"layer\.\d+", "layer.*", node)


def keep_float(report: list[NodeError]) -> set[str]:
    """The MatMuls of the role whose median own int8 error is the highest: the same MatMul in
    every layer, kept in float. (Measured on the multilingual val split: it is the FFN output,
    whose input is the GELU's; keeping its 12 MatMuls float takes decisions equal to fp32 from
    98.5% to 99.55%, while keeping the 12 individually worst nodes reaches 98.9%.)"""
    by_role: dict[str, list[float]] = {}
    for r in report:
        by_role.setdefault(role(r.node), []).append(r.best)
    if not by_role:
        return set()
    worst = max(by_role, key=lambda k: float(np.median(by_role[k])))
    return {r.node for r in report if role(r.node) == worst}


def to_dynamic_int8(model: Any, keep_float: set[str], smooth: dict[str, np.ndarray]) -> tuple[Any, int]:
    """A copy of ``model`` with every weight MatMul not in ``keep_float`` as ``DynamicQuantizeMatMul``
    (int8 per-column weights); ``smooth[node]`` = SmoothQuant factors for that node. Returns the
    model and the number of MatMuls made int8."""
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    done = 0
    new_nodes = []
    quantized = {n.name for n in weight_matmuls(g)} - keep_float
    for n in g.node:
        if n.name not in quantized:
            new_nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        x = n.input[0]
        if n.name in smooth:
            s = smooth[n.name]
            w = w * s[:, None]
            inv = n.name + "_smooth_inv"
            g.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv))
            new_nodes.append(helper.make_node("Mul", [x, inv], [n.name + "_smoothed"], name=n.name + "_smooth"))
            x = n.name + "_smoothed"
        codes, scale = int8_columns(w)
        base = n.name + "_int8"
        g.initializer.extend([numpy_helper.from_array(codes, base + "_w"),
                              numpy_helper.from_array(scale, base + "_scale")])
        if uses.get(n.input[1], 0) == 1:
            g.initializer.remove(inits[n.input[1]])
        new_nodes.append(helper.make_node("DynamicQuantizeMatMul", [x, base + "_w", base + "_scale"],
                                          list(n.output), name=base, domain=MS_DOMAIN))
        done += 1
    del g.node[:]
    g.node.extend(new_nodes)
    if not any(o.domain == MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, done
