"""Per-graph int8 recipes (building blocks of the coming ``ticor quantize``).

- Text branch: onnxruntime's BERT fusions (attention, skip layer-norm, bias-GELU) *without*
  the embedding fusion, so the word-embedding ``Gather`` stays visible and its table is
  quantized too; then dynamic int8, per-channel weights. The multilingual text graph goes
  from 471 MB to 118 MB this way.
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

from ticor.bundle import IMAGE_INPUT
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


def quantize_text(src: Path, dst: Path, num_heads: int, hidden_size: int) -> None:
    """Fused, dynamic int8 (per-channel) text graph, embedding table included."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # keep the Gather: its 96M-entry table is quantized too
    with tempfile.TemporaryDirectory() as tmp, _hushed():
        fused = Path(tmp) / "fused.onnx"
        model = optimizer.optimize_model(str(src), model_type="bert", num_heads=num_heads,
                                         hidden_size=hidden_size, opt_level=1, optimization_options=options)
        model.save_model_to_file(str(fused))
        quantize_dynamic(str(fused), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gather", "Attention"],
                         extra_options={"DefaultTensorType": 1})  # FLOAT where fused ops hide a type


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
    on the same ``calibration`` pictures.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
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
            quantize_static(str(pre), str(dst), _Reader(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method])


def to_fp16(src: Path, dst: Path) -> None:
    """float16 weights and compute, float32 inputs/outputs kept (for CUDA/TensorRT providers)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
