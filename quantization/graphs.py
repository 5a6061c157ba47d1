"""Per-graph recipes of ``ticor quantize``.

- Text branch: onnxruntime's BERT fusions (attention, skip layer-norm, bias-GELU) *without*
  the embedding fusion, so the word-embedding ``Gather`` stays visible and its table is
  quantized too; then either dynamic int8 or int8 weights with exact activations (see
  :func:`quantize_text`). The multilingual text graph goes from 471 MB to about 120 MB.
- Image branch: static QDQ int8, per-channel weights, activations calibrated on real pictures
  (min-max, entropy or percentile). Dynamic int8 is not offered for the CNN: its ConvInteger
  kernels are many times slower than fp32 on CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ticor.bundle import IMAGE_INPUT, TEXT_INPUTS
from ticor.errors import UsageError

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@contextlib.contextmanager
def _hushed() -> Iterator[None]:
    """onnxruntime's quantization tools print progress to stdout and log hints: keep stdout ours."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


TEXT_RECIPES = ("int8-dynamic", "int8-weights")


def quantize_text(src: Path, outputs: dict[str, Path], num_heads: int, hidden_size: int) -> None:
    """Int8 text graphs, one per recipe in ``outputs`` (keys from :data:`TEXT_RECIPES`).

    Both start from onnxruntime's BERT fusions without the embedding fusion, so the
    word-embedding ``Gather`` stays visible and its 96M-entry table is quantized too.

    - ``int8-dynamic``: dynamic int8, per-channel weights, activations quantized per tensor at
      run time (MatMul, Attention, Gather). The fastest on CPU, and the least faithful.
    - ``int8-weights``: int8 weights, activations kept exact: every MatMul becomes
      ``MatMulNBits`` (8 bits, blocks of 32, symmetric; accuracy level 4 lets the kernel use
      int8 dot products on blocks of 32 activations); the embedding table is stored int8 with one
      scale per row and dequantized after the lookup; the fused attention stays fp32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    unknown = sorted(set(outputs) - set(TEXT_RECIPES))
    if unknown:
        raise UsageError(f"unknown text recipe {unknown[0]!r}; known: {', '.join(TEXT_RECIPES)}")
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # keep the Gather: its table is quantized too
    with tempfile.TemporaryDirectory() as tmp, _hushed():
        fused = Path(tmp) / "fused.onnx"
        model = optimizer.optimize_model(str(src), model_type="bert", num_heads=num_heads,
                                         hidden_size=hidden_size, opt_level=1, optimization_options=options)
        model.save_model_to_file(str(fused))
        if "int8-dynamic" in outputs:
            quantize_dynamic(str(fused), str(outputs["int8-dynamic"]), per_channel=True,
                             weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gather", "Attention"],
                             extra_options={"DefaultTensorType": 1})  # FLOAT where fused ops hide a type
        if "int8-weights" in outputs:
            _weights_only_int8(fused, outputs["int8-weights"])


def _weights_only_int8(src: Path, dst: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=32, is_symmetric=True, accuracy_level=4,
                             op_types_to_quantize=("MatMul",))
    q.process()
    model = q.model.model
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    lookups = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
               and n.input[1] == TEXT_INPUTS[0]]
    if len(lookups) != 1:
        raise UsageError(f"{src}: expected one word-embedding lookup on {TEXT_INPUTS[0]}, found {len(lookups)}")
    node = lookups[0]
    table = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    scale = np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0
    codes = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
    base = node.input[0]
    graph.initializer.remove(inits[base])
    graph.initializer.extend([numpy_helper.from_array(codes, base + "_int8"),
                              numpy_helper.from_array(scale.astype(np.float32), base + "_scale")])
    out = node.output[0]
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for k, n in enumerate([
        helper.make_node("Gather", [base + "_int8", node.input[1]], [out + "_int8"], name=node.name + "_int8"),
        helper.make_node("Gather", [base + "_scale", node.input[1]], [out + "_scale"], name=node.name + "_scale"),
        helper.make_node("Cast", [out + "_int8"], [out + "_f32"], to=TensorProto.FLOAT, name=node.name + "_cast"),
        helper.make_node("Mul", [out + "_f32", out + "_scale"], [out], name=node.name + "_dequantize"),
    ]):
        graph.node.insert(at + k, n)
    onnx.save(model, str(dst))


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


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and compute, float32 inputs/outputs kept (for CUDA/TensorRT providers)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
