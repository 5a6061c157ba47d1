"""Int8 for the text branch with per-row activation scales, built node by node and measured node by node.

Every ``MatMul`` with a constant weight in the exported text graph becomes integer arithmetic
whose activation scale is computed per row (per token) at run time (:func:`to_rowwise_int8`):
``QuantizeLinear`` along the rows, then onnxruntime's ``MatMulIntegerToFloat`` (uint8 x int8,
int32 sums). Written directly rather than through onnxruntime's quantization tools, so that what
runs is exactly what was measured, and so that no row's scale depends on its batch-mates (one
scale per tensor, as ``DynamicQuantizeMatMul`` takes, made a pair's score depend on its batch).

Where the signal is lost is measured (:func:`node_errors`): the fp32 graph is run on
calibration texts with every MatMul's input exposed, and each MatMul's own int8 arithmetic is
reproduced on those real inputs in numpy, per row (what runs) and per tensor (for comparison). A
node's error is ``||y_int8 - y|| / ||y||`` over the calibration tokens: the error that node adds
on its own, before any propagation. The report is stored in the bundle's recipe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticor.kernels import MS_DOMAIN


@dataclass(frozen=True)
class NodeError:
    """One MatMul's own int8 error on the calibration texts: per row (what runs) and per tensor."""

    node: str
    shape: tuple[int, int]  # weight [K, N]
    rowwise_error: float  # ||y_int8 - y|| / ||y||, the activation quantized per row (int8-rowwise)
    tensor_error: float  # the same with one activation scale per batch tensor, for comparison
    activation_range: float  # max |x| over the calibration tokens
    outlier_ratio: float  # max |x| over the median of the per-channel max |x|

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "weight": list(self.shape), "rowwise_error": round(self.rowwise_error, 5),
                "tensor_error": round(self.tensor_error, 5), "role": role(self.node),
                "activation_range": round(self.activation_range, 3), "outlier_ratio": round(self.outlier_ratio, 2)}


def input_uses(graph: Any) -> dict[str, int]:
    """How many node inputs read each tensor of ``graph`` (a weight read once can be replaced)."""
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    return uses


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


def node_errors(model: Any, inputs: dict[str, list[np.ndarray]]) -> list[NodeError]:
    """Each MatMul's own int8 error on its real fp32 inputs, per row (as :func:`to_rowwise_int8`
    computes) and per tensor (one dynamic range per batch), sorted worst first by the per-row error."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    report = []
    for n in weight_matmuls(model.graph):
        if n.name not in inputs:
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        codes, scale = int8_columns(w)
        wq = codes.astype(np.float32) * scale
        xs = inputs[n.name]
        x_max = np.max([np.abs(x).max(axis=0) for x in xs], axis=0)
        num_r = num_t = den = 0.0
        for x in xs:
            y = x @ w
            den += float(np.sum(y.astype(np.float64) ** 2))
            num_r += float(np.sum((_rowwise_int8(x) @ wq - y).astype(np.float64) ** 2))
            num_t += float(np.sum((_dynamic_uint8(x) @ wq - y).astype(np.float64) ** 2))
        den = max(den, 1e-30)
        report.append(NodeError(n.name, (int(w.shape[0]), int(w.shape[1])), (num_r / den) ** 0.5,
                                (num_t / den) ** 0.5, float(x_max.max()),
                                float(x_max.max() / max(float(np.median(x_max)), 1e-12))))
    return sorted(report, key=lambda r: -r.rowwise_error)


def _rowwise_int8(x: np.ndarray) -> np.ndarray:
    """Symmetric int8 per row (each token on its own, one scale ``max|x| / 127``), dequantized:
    what :func:`to_rowwise_int8`'s quantize step and ``MatMulIntegerToFloat`` compute. A row of
    zeros has scale 0 and stays zeros (the kernel multiplies its codes by 0)."""
    scale = np.abs(x).max(axis=-1, keepdims=True) * np.float32(1.0 / 127.0)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    return (np.rint(x / safe) * scale).astype(np.float32)


def to_rowwise_int8(model: Any, lead_from: str | None = None) -> tuple[Any, int]:
    """A copy of ``model`` with every weight MatMul in integer arithmetic whose
    activation scale is **per row** (per token). The input, seen as ``[rows, K]``, gets one scale
    per row, ``max|x| / 127`` (``Abs``, ``ReduceMax``, ``Mul``; a row of zeros gets scale 0 and
    gives zeros), and is quantized by one
    ``QuantizeLinear`` along axis 0 (uint8, zero point 128: symmetric int8 shifted); onnxruntime's
    ``MatMulIntegerToFloat`` then multiplies it by the int8 per-column weight (int32 sums) and
    scales by the ``[rows, 1]`` row scale and the column scale; a ``Reshape`` gives the rows their
    batch and sequence axes back. No row's scale depends on another row, so a text's embedding does
    not depend on its batch. MatMuls reading the same input (Q, K and V) share one quantize step.
    (Measured at our shapes, 1,280 rows, 2 threads: this form 2.9 ms for K 1,536 -> 384 where
    ``Abs``, ``Mul``, ``Round``, ``Add`` and ``Cast`` took 5.1 ms, fp32 ``MatMul`` 8.0 ms.)
    ``lead_from``: a graph input whose shape is every MatMul input's leading axes (``input_ids``'
    ``[batch, sequence]`` in the text graph): the row count, the zero points and the output shapes
    are then computed once for the graph instead of once per node (at batch 1 the graph is many
    small nodes, and each costs its dispatch; measured on the text graph, 2 threads: the quantize
    step in 4 nodes instead of 7 (``ReduceMax``, ``ReduceMin``, ``Neg``, ``Max``, a floor on the
    scale, ``Unsqueeze``) took batch 1 from 3.77 to 3.59 ms, batch 64 unchanged at 135 ms), and each
    output's shape is declared, so onnxruntime fuses the bias and ``Gelu`` after it. (Not done:
    ``MatMulIntegerToFloat``'s own bias input, which onnxruntime 1.32 multiplies by a ``[rows, 1]``
    scale.) Returns the model and the number of MatMuls made int8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {i.name: i for i in g.initializer}
    uses = input_uses(g)
    c = "rowwise_int8_"
    g.initializer.extend([numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), c + "inv127"),
                          numpy_helper.from_array(np.array(128, np.uint8), c + "zero"),
                          numpy_helper.from_array(np.array([128], np.uint8), c + "zero1"),
                          numpy_helper.from_array(np.array([-1], np.int64), c + "flat")])
    if lead_from is None:
        g.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), c + "i0"),
                              numpy_helper.from_array(np.array([-1], np.int64), c + "im1")])
    quantized_input: dict[str, tuple[str, str, str]] = {}
    done = 0
    new_nodes: list[Any] = []
    todo = {n.name for n in weight_matmuls(g)}

    def op(kind: str, inputs: list[str], output: str, **attrs: Any) -> str:
        new_nodes.append(helper.make_node(kind, inputs, [output], name=output, **attrs))
        return output

    shared_lead = shared_zero = None
    lead_dims = None
    if lead_from is not None:
        lead_dims = [d.dim_param or d.dim_value for d in
                     next(i for i in g.input if i.name == lead_from).type.tensor_type.shape.dim]
        shared_lead = op("Shape", [lead_from], c + "lead")
        shared_zero = op("Expand", [c + "zero1", op("ReduceProd", [shared_lead], c + "rows_n", keepdims=1)],
                         c + "zeros")
    out_shapes: dict[int | str, str] = {}

    for n in g.node:
        if n.name not in todo:
            new_nodes.append(n)
            continue
        x = n.input[0]
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        k_in, n_out = int(w.shape[0]), int(w.shape[1])
        if x not in quantized_input:
            b = f"{c}{len(quantized_input)}_"
            g.initializer.append(numpy_helper.from_array(np.array([-1, k_in], np.int64), b + "rows_k"))
            x2 = op("Reshape", [x, b + "rows_k"], b + "rows")
            absmax = op("ReduceMax", [op("Abs", [x2], b + "abs")], b + "absmax", axes=[1], keepdims=1)
            row_scale = op("Mul", [absmax, c + "inv127"], b + "row_scale")  # [rows, 1]
            scale = op("Reshape", [row_scale, c + "flat"], b + "scale")    # [rows]
            zero = shared_zero or op("Expand", [c + "zero1", op("Shape", [scale], b + "rows_n")], b + "zeros")
            q = op("QuantizeLinear", [x2, scale, zero], b + "q", axis=0)
            lead = shared_lead or op("Slice", [op("Shape", [x], b + "shape"), c + "i0", c + "im1"], b + "lead")
            quantized_input[x] = (q, row_scale, lead)
        q, row_scale, lead = quantized_input[x]
        codes, wscale = int8_columns(w)
        base = n.name + "_int8"
        g.initializer.extend([numpy_helper.from_array(codes, base + "_w"),
                              numpy_helper.from_array(wscale, base + "_scale")])
        if uses.get(n.input[1], 0) == 1:
            g.initializer.remove(inits[n.input[1]])
        new_nodes.append(helper.make_node("MatMulIntegerToFloat", [q, base + "_w", row_scale, base + "_scale",
                                                                   c + "zero"], [base + "_rows"], name=base,
                                          domain=MS_DOMAIN))
        key = n_out if shared_lead is not None else base
        if key not in out_shapes:  # the output's shape: the input's leading axes, then N
            g.initializer.append(numpy_helper.from_array(np.array([n_out], np.int64), f"{c}n_{key}"))
            out_shapes[key] = op("Concat", [lead, f"{c}n_{key}"], f"{c}shape_{key}", axis=0)
        shape = out_shapes[key]
        new_nodes.append(helper.make_node("Reshape", [base + "_rows", shape], list(n.output), name=base + "_out"))
        if lead_dims is not None:  # the output's shape, known: onnxruntime then fuses what follows (bias, Gelu)
            g.value_info.append(helper.make_tensor_value_info(n.output[0], TensorProto.FLOAT, [*lead_dims, n_out]))
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
