"""One-node ONNX graphs written as protobuf bytes, and what this CPU's int8 kernel computes.

The runtime install has onnxruntime but not the ``onnx`` package (it is on the build side), so
the few tiny graphs the runtime and the benchmark run to learn about the machine are written
here directly: field numbers from ``onnx.proto`` (IR version 8). ``ticor quantize`` records
:func:`int8_kernel_probe` with its gate, and ``ticor bench`` probes the machine it runs on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ticor.sessions import plain_cpu_session

#: ONNX ``TensorProto.DataType`` codes used here.
FLOAT, UINT8, INT8, INT32 = 1, 2, 3, 6
MS_DOMAIN = "com.microsoft"
_DTYPES = {FLOAT: np.float32, UINT8: np.uint8, INT8: np.int8, INT32: np.int32}

#: (name, element type, shape) of a graph input or output.
ValueSpec = tuple[str, int, list[int]]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes | int | str) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _value_info(name: str, elem_type: int, shape: list[int]) -> bytes:
    dims = b"".join(_field(1, _field(1, d)) for d in shape)  # TensorShapeProto.dim { dim_value }
    tensor = _field(1, elem_type) + _field(2, dims)  # TypeProto.Tensor { elem_type, shape }
    return _field(1, name) + _field(2, _field(1, tensor))  # ValueInfoProto { name, type { tensor_type } }


def _tensor(name: str, array: np.ndarray) -> bytes:
    code = next((c for c, t in _DTYPES.items() if array.dtype == t), None)
    if code is None:
        raise ValueError(f"no ONNX type here for {array.dtype}")
    dims = b"".join(_field(1, int(d)) for d in array.shape)  # TensorProto.dims
    # TensorProto { dims, data_type, name, raw_data (little-endian) }
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return dims + _field(2, code) + _field(8, name) + _field(9, raw)


def one_node_model(op: str, inputs: list[ValueSpec], output: ValueSpec, opset: int = 17, domain: str = "",
                   initializers: dict[str, np.ndarray] | None = None) -> bytes:
    """A serialized ModelProto with one ``op`` node (in ``domain``) from ``inputs`` (graph inputs)
    and ``initializers`` (constants, in that order after the inputs) to ``output``."""
    consts = initializers or {}
    node = (b"".join(_field(1, n) for n, _, _ in inputs) + b"".join(_field(1, n) for n in consts)
            + _field(2, output[0]) + _field(4, op) + (_field(7, domain) if domain else b""))
    graph = (_field(1, node) + _field(2, "one") + b"".join(_field(5, _tensor(n, a)) for n, a in consts.items())
             + b"".join(_field(11, _value_info(*i)) for i in inputs) + _field(12, _value_info(*output)))
    opsets = _field(8, _field(1, "") + _field(2, opset))
    if domain:
        opsets += _field(8, _field(1, domain) + _field(2, 1))
    return _field(1, 8) + _field(7, graph) + opsets


#: Inner dimension of :func:`int8_kernel_probe`'s product (one row of a 384-wide layer's worth, rounded).
PROBE_K = 256


def int8_kernel_probe() -> dict[str, Any]:
    """Whether this CPU's onnxruntime uint8 x int8 kernel computes the exact int32 dot product.

    onnxruntime's x86 kernel for uint8 activations times int8 weights (``DynamicQuantizeMatMul``
    and ``MatMulInteger`` in the text graphs, ``QLinearConv`` in the image graphs) multiplies with
    ``vpmaddubsw`` on CPUs without VNNI: adjacent pairs of products are summed in int16 and clip
    at 32,767, so two products of 255 x 127 (64,770) come out as 32,767. With VNNI
    (``vpdpbusd``) the sums are int32 and exact. The probe runs one ``DynamicQuantizeMatMul``
    whose activation quantizes to all 255 and whose weight codes are all 127, and compares it
    with the exact sum: the ratio is 1.0 on an exact kernel and about 0.5 on a saturating one.
    The int8 graphs' agreement with fp32 measured on one kind of CPU is therefore not the
    agreement on the other: a bundle records which kind its gate ran on.
    """
    import onnxruntime as ort

    model = one_node_model("DynamicQuantizeMatMul", [("x", FLOAT, [1, PROBE_K])], ("y", FLOAT, [1, 1]),
                           domain=MS_DOMAIN, initializers={"w": np.full((PROBE_K, 1), 127, np.int8),
                                                           "scale": np.ones(1, np.float32)})
    session = plain_cpu_session(model, threads=1)
    # x = 1.0 everywhere quantizes to 255 (range [0, 1], scale 1/255): y = 255 * 127 * K / 255
    y = float(session.run(None, {"x": np.ones((1, PROBE_K), np.float32)})[0][0, 0])
    ratio = y / (127.0 * PROBE_K)
    exact = abs(ratio - 1.0) < 1e-3
    return {"exact": exact, "ratio": round(ratio, 4),
            "kernel": "exact int32 dot products" if exact else
                      "saturating: pairs of uint8 x int8 products clip at the int16 limit (x86 without VNNI)",
            "probe": f"DynamicQuantizeMatMul, {PROBE_K} products of 255 x 127, onnxruntime {ort.__version__}"}
