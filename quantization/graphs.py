"""Per-graph recipes of ``ticor quantize``.

- Text branch: int8 in integer kernels on the exported graph with per-row activation scales, so
  no text depends on its batch; the word-embedding table stored small (see :func:`quantize_text`).
- Image branch: ``int8-weights`` (:func:`image_int8_weights`: the weights stored int8, fp32
  arithmetic), and static QDQ int8 (per-channel weights, activations calibrated on real pictures:
  min-max, entropy or percentile), the integer-kernel form, whose one activation scale per tensor
  loses decisions on this network (docs/studies/quantization-image.md). Dynamic int8 is not
  offered for the CNN: its ConvInteger kernels are many times slower than fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticor.bundle import IMAGE_INPUT, TEXT_INPUTS
from ticor.errors import UsageError
from ticor.quantization import text_int8
from ticor.quantization.text_int8 import NodeError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@contextlib.contextmanager
def _hushed() -> Iterator[None]:
    """onnxruntime's quantization tools print progress to stdout and log hints: keep stdout ours."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]  # the second: its modules configure
    levels = [g.level for g in loggers]                                  # the root logger when imported
    for g in loggers:
        g.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for g, level in zip(loggers, levels, strict=True):
            g.setLevel(level)


TEXT_RECIPES = ("int8-rowwise",)
#: Calibration texts for the per-node error measurement (train split, spread evenly).
CALIBRATION_TEXTS = 256


@dataclass(frozen=True)
class TextQuantization:
    """What :func:`quantize_text` did: a sentence per recipe, and the per-MatMul error report."""

    how: dict[str, str]
    report: list[NodeError]

    def report_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.report]


def quantize_text(src: Path, outputs: dict[str, Path], calibration: list[dict[str, np.ndarray]]) -> TextQuantization:
    """Int8 text graphs, one per recipe in ``outputs`` (keys from :data:`TEXT_RECIPES`), built on the
    exported graph (onnxruntime's own session fusions serve its float parts), with the word-embedding
    table stored small: its exact 4-bit form when it has one, else int8 with one scale per row; only
    looked-up rows are expanded (:func:`_quantize_lookup`).

    - ``int8-rowwise``: every MatMul with a weight in integer arithmetic with per-row (per-token)
      activation scales (:func:`text_int8.to_rowwise_int8`): no text's embedding depends on its batch.

    First each MatMul's own int8 error is measured on ``calibration`` (text-graph feeds from the
    train split), per tensor and per row (:func:`text_int8.node_errors`): the report is stored.
    """
    import onnx

    unknown = sorted(set(outputs) - set(TEXT_RECIPES))
    if unknown:
        raise UsageError(f"unknown text recipe {unknown[0]!r}; known: {', '.join(TEXT_RECIPES)}")
    if not calibration:
        raise UsageError("the text recipes' per-node measurement needs calibration texts")
    how: dict[str, str] = {}
    with _hushed():
        model = onnx.load(str(src))
        nodes = text_int8.weight_matmuls(model.graph)
        acts = text_int8.matmul_inputs(model, {n.name: n.input[0] for n in nodes}, calibration)
        report = text_int8.node_errors(model, acts)
        del acts
        if "int8-rowwise" in outputs:
            q, count = text_int8.to_rowwise_int8(model, lead_from=model.graph.input[0].name)
            table = _quantize_lookup(q.graph, src)
            onnx.save(q, str(outputs["int8-rowwise"]))
            how["int8-rowwise"] = (f"{count} of {len(nodes)} MatMuls MatMulIntegerToFloat with int8 activations "
                                   "quantized per row (per token) at run time, symmetric, and int8 weights per "
                                   f"column: no row depends on its batch; {table}")
    return TextQuantization(how, report)


def q4_blocks(table: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(codes, scales)`` when every value of ``table`` ``[N, D]`` is exactly ``(code - 8) * scale``
    with a 4-bit code and one float16 scale per block of 32 along a row (so the table came out
    of 4-bit blocks, as multilingual-e5-small's does, and is frozen in training), else ``None``.
    ``codes`` ``[N, D/2]`` uint8: element ``2k`` in the low nibble of byte ``k``, ``2k+1`` in the
    high one; ``scales`` ``[N, D/32]`` float16."""
    n, d = table.shape
    if d % 32:
        return None
    blocks = table.astype(np.float32).reshape(n, d // 32, 32)
    pick = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=2)[..., None], axis=2)[..., 0]
    scale = (pick / np.float32(-8.0)).astype(np.float32)  # the largest magnitude is code 0 (ggml's Q4_0)
    if not np.array_equal(scale.astype(np.float16).astype(np.float32), scale):
        return None
    safe = np.where(scale == 0, np.float32(1.0), scale)[..., None]
    codes = np.rint(blocks / safe) + 8
    if codes.min() < 0 or codes.max() > 15 or not np.array_equal((codes - 8).astype(np.float32) * scale[..., None],
                                                                  blocks):
        return None
    packed = codes.reshape(n, d // 2, 2).astype(np.uint8)
    return (packed[..., 0] | (packed[..., 1] << 4)).astype(np.uint8), scale.astype(np.float16)


def q4_round(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, scales)`` as :func:`q4_blocks` packs them, for any table ``[N, D]`` (``D`` a
    multiple of 32): each block of 32 rounded to 4-bit codes, the value of largest magnitude at
    code 0 (its float16 scale ``value / -8``), the others rounded to the nearest code. Lossy: a
    value moves by at most half a step, or one step on the other side of zero beyond 7 steps
    (codes reach -8 steps one way and +7 the other)."""
    n, d = table.shape
    blocks = table.astype(np.float32).reshape(n, d // 32, 32)
    pick = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=2)[..., None], axis=2)[..., 0]
    scale = (pick / np.float32(-8.0)).astype(np.float16)
    wide = scale.astype(np.float32)
    safe = np.where(wide == 0, np.float32(1.0), wide)[..., None]
    codes = np.clip(np.rint(blocks / safe) + 8, 0, 15).astype(np.uint8).reshape(n, d // 2, 2)
    return (codes[..., 0] | (codes[..., 1] << 4)).astype(np.uint8), scale


def _quantize_lookup(graph: Any, src: Path) -> str:
    """Replace the word-embedding ``Gather`` on ``input_ids`` by a lookup in a smaller table:
    4-bit blocks, exactly when :func:`q4_blocks` finds the table in that form (lossless), else
    rounded to them (:func:`q4_round`; measured on ``en-small``'s table, val: no confident decision
    changed, as with int8 per row, at half its size); int8 with one scale per row when the rows do
    not split into blocks of 32. Only the looked-up rows are expanded, with standard ops.
    Returns what was done."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
               and n.input[1] == TEXT_INPUTS[0]]
    if len(lookups) != 1:
        raise UsageError(f"{src}: expected one word-embedding lookup on {TEXT_INPUTS[0]}, found {len(lookups)}")
    node = lookups[0]
    base, ids, out, name = node.input[0], node.input[1], node.output[0], node.name
    table = numpy_helper.to_array(inits[base]).astype(np.float32)
    rows, dim = table.shape
    q4 = q4_blocks(table)
    exact = q4 is not None
    if q4 is None and dim % 32 == 0:
        q4 = q4_round(table)
    graph.initializer.remove(inits[base])

    def const(suffix: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, base + suffix))
        return base + suffix

    def op(kind: str, inputs: list[str], suffix: str, **attrs: Any) -> Any:
        return helper.make_node(kind, inputs, [out + suffix], name=name + suffix, **attrs)

    if q4 is not None:
        codes, scales = q4
        last = np.array([-1], np.int64)
        nodes = [
            op("Gather", [const("_q4", codes), ids], "_packed"),
            op("Cast", [out + "_packed"], "_bytes", to=TensorProto.FLOAT),
            op("Mul", [out + "_bytes", const("_sixteenth", np.array(1 / 16, np.float32))], "_shifted"),
            op("Floor", [out + "_shifted"], "_high"),
            op("Mul", [out + "_high", const("_sixteen", np.array(16, np.float32))], "_high16"),
            op("Sub", [out + "_bytes", out + "_high16"], "_low"),
            op("Unsqueeze", [out + "_low", const("_last", last)], "_low1"),
            op("Unsqueeze", [out + "_high", base + "_last"], "_high1"),
            op("Concat", [out + "_low1", out + "_high1"], "_codes", axis=-1),
            op("Reshape", [out + "_codes", const("_blocks", np.array([0, 0, dim // 32, 32], np.int64))], "_blocked"),
            op("Sub", [out + "_blocked", const("_eight", np.array(8, np.float32))], "_centred"),
            op("Gather", [const("_q4scale", scales), ids], "_scale16"),
            op("Cast", [out + "_scale16"], "_scale", to=TensorProto.FLOAT),
            op("Unsqueeze", [out + "_scale", base + "_last"], "_scale1"),
            op("Mul", [out + "_centred", out + "_scale1"], "_values"),
        ]
        nodes.append(helper.make_node("Reshape", [out + "_values", const("_dims", np.array([0, 0, dim], np.int64))],
                                      [out], name=name + "_dequantize"))
        how = (f"word-embedding table in its exact 4-bit form ({rows:,} x {dim}: 4-bit codes with a float16 scale "
               "per 32 values, as the pretrained weights hold it; lossless)" if exact else
               f"word-embedding table rounded to 4-bit blocks ({rows:,} x {dim}: 4-bit codes with a float16 scale "
               "per 32 values; lossy)")
    else:
        scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0
        codes8 = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
        nodes = [op("Gather", [const("_int8", codes8), ids], "_int8"),
                 op("Gather", [const("_scale", scale.astype(np.float32)), ids], "_scale"),
                 op("Cast", [out + "_int8"], "_f32", to=TensorProto.FLOAT)]
        nodes.append(helper.make_node("Mul", [out + "_f32", out + "_scale"], [out], name=name + "_dequantize"))
        how = f"word-embedding table int8 with one scale per row ({rows:,} x {dim})"
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for k, n in enumerate(nodes):
        graph.node.insert(at + k, n)
    return how


class _Reader:
    """onnxruntime calibration reader over prepared ``[3, S, S]`` pictures."""

    def __init__(self, pictures: Iterable[np.ndarray], batch: int = 8) -> None:
        arr = list(pictures)
        batch = min(batch, len(arr))
        full = len(arr) // batch * batch  # equal batches: the histogram calibrators stack them
        self._batches = iter([{IMAGE_INPUT: np.stack(arr[i : i + batch])} for i in range(0, full, batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_image(src: Path, outputs: dict[str, Path], calibration: list[np.ndarray]) -> None:
    """Static QDQ int8 image graphs (per-channel weights), one per calibration method in ``outputs``.

    The graph is pre-processed (shape inference, folding) once; each method then calibrates
    on the same ``calibration`` pictures. Entropy ranges are computed here with a 2048-bin
    histogram: ``quantize_static`` would build its entropy calibrator with 128 bins for 128
    quantized levels, which leaves one candidate range, the min-max one.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    unknown = sorted(set(outputs) - set(methods))
    if unknown:
        raise UsageError(f"unknown calibration method {unknown[0]!r}; known: {', '.join(CALIBRATION_METHODS)}")
    if not calibration:
        raise UsageError("static quantization needs calibration pictures")
    with tempfile.TemporaryDirectory() as tmp, _hushed():
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        for method, dst in outputs.items():
            reader: _Reader | None = _Reader(calibration)
            cache = None
            if method == "entropy":
                calibrator = create_calibrator(pre, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                               calibrate_method=methods[method],
                                               extra_options={"num_bins": 2048, "num_quantized_bins": 128})
                calibrator.collect_data(reader)
                cache = Path(tmp) / "entropy-ranges.json"
                save_tensors_data(calibrator.compute_data(), cache)
                reader = None
            quantize_static(str(pre), str(dst), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], calibration_cache_path=cache)


IMAGE_WEIGHTS = "int8-weights"


def image_int8_weights(src: Path, dst: Path) -> str:
    """The image graph with its weights stored small and its arithmetic fp32: each pointwise (1x1)
    conv's and each ``Gemm``'s weight int8 with one symmetric scale per output channel, and the
    other weights (the first conv, the depthwise convs, float tables) float16. Each is expanded by
    ``Cast`` (and ``Mul`` by its scales), which onnxruntime folds into a float32 weight when the
    session loads (at any optimization level but ``disable``), so the graph then runs as the fp32
    graph does, at its speed. Measured (docs/studies/quantization-image.md): int8 for the
    depthwise and first convs' weights loses confident decisions; for the pointwise convs it does
    not. Returns what was done."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    uses = text_int8.input_uses(g)
    expand: list[Any] = []
    counts = {"int8": 0, "float16": 0}

    def int8(name: str, w: np.ndarray, axis: int) -> None:
        others = tuple(i for i in range(w.ndim) if i != axis)
        shape = [1] * w.ndim
        shape[axis] = -1
        scale = (np.maximum(np.abs(w).max(axis=others), 1e-12) / np.float32(127.0)).astype(np.float32).reshape(shape)
        codes = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        g.initializer.extend([numpy_helper.from_array(codes, name + "_int8"),
                              numpy_helper.from_array(scale, name + "_int8_scale")])
        expand.append(helper.make_node("Cast", [name + "_int8"], [name + "_int8_f32"], to=TensorProto.FLOAT,
                                       name=name + "_int8_cast"))
        expand.append(helper.make_node("Mul", [name + "_int8_f32", name + "_int8_scale"], [name],
                                       name=name + "_int8_expand"))
        counts["int8"] += w.size

    def half(name: str, w: np.ndarray) -> None:
        g.initializer.append(numpy_helper.from_array(w.astype(np.float16), name + "_fp16"))
        expand.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT,
                                       name=name + "_fp16_cast"))
        counts["float16"] += w.size

    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or n.input[1] not in inits or uses[n.input[1]] != 1:
            continue
        name = n.input[1]
        w = numpy_helper.to_array(inits[name]).astype(np.float32)
        attrs = {a.name: a.i for a in n.attribute if a.type == onnx.AttributeProto.INT}
        g.initializer.remove(inits[name])
        if n.op_type == "Gemm":
            int8(name, w, 0 if attrs.get("transB", 0) else 1)
        elif w.shape[2:] == (1, 1) and attrs.get("group", 1) == 1:
            int8(name, w, 0)
        else:
            half(name, w)
    consumers = {i for n in g.node if n.op_type not in ("Conv", "Gemm") for i in n.input}
    for init in list(g.initializer):  # other float tables read by other nodes (the ConSE class names)
        if init.name in consumers and init.data_type == TensorProto.FLOAT and len(init.dims) == 2:
            w = numpy_helper.to_array(init)
            g.initializer.remove(init)
            half(init.name, w)
    nodes = expand + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(dst))
    return (f"weights stored int8 ({counts['int8']:,} values: the pointwise convs and Gemms, one scale per output "
            f"channel) and float16 ({counts['float16']:,}: the other convs and float tables), expanded to float32 "
            "when the session loads: the arithmetic is fp32")


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and compute, float32 inputs/outputs kept (for CUDA/TensorRT providers)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
