"""The text branch's int8 recipes on the fixture bundle's real text graph.

The per-node error report reproduces onnxruntime's own ``DynamicQuantizeMatMul`` and the per-row
``MatMulIntegerToFloat`` arithmetic (so it measures what runs; a row quantized per row gives the
same result alone and in a batch), both dynamic recipes build, keep fp32's embeddings, and spend their
time in integer kernels in an onnxruntime profile.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURE_DATA

pytestmark = pytest.mark.slow


def _feeds(m, texts: list[str]) -> list[dict[str, np.ndarray]]:
    from ticor.bundle import TEXT_INPUTS
    from ticor.preprocess import encode_texts, load_tokenizer

    tok = load_tokenizer(m.tokenizer_path, m.text_spec)
    texts = sorted(texts, key=len)
    return [dict(zip(TEXT_INPUTS, encode_texts(tok, texts[k : k + 16], m.text_spec), strict=True))
            for k in range(0, len(texts), 16)]


@pytest.fixture(scope="module")
def fused(fp32_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    """The fixture bundle's text graph with onnxruntime's BERT fusions, as the recipes start from it."""
    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    from ticor.bundle import read_manifest

    m = read_manifest(fp32_bundle)
    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False
    options.use_multi_head_attention = True
    path = tmp_path_factory.mktemp("fused") / "mha.onnx"
    optimizer.optimize_model(str(m.graph_path("text")), model_type="bert", num_heads=12, hidden_size=384,
                             opt_level=1, optimization_options=options).save_model_to_file(str(path))
    return m, onnx.load(str(path))


def test_node_error_reproduces_onnxruntime_dynamic_int8_kernel(fused) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from ticor.evaluation import load_dataset
    from ticor.quantization import text_int8 as ti

    m, model = fused
    nodes = ti.weight_matmuls(model.graph)
    assert len(nodes) == 72  # 12 layers x (Q, K, V, attention output, FFN in, FFN out)
    pick = next(n for n in nodes if "/layer.2/output/dense" in n.name)  # input after GELU: a wide range
    acts = ti.matmul_inputs(model, {pick.name: pick.input[0]}, _feeds(m, load_dataset(FIXTURE_DATA).texts()))
    x = acts[pick.name][0]
    w = numpy_helper.to_array({i.name: i for i in model.graph.initializer}[pick.input[1]])
    codes, scale = ti.int8_columns(w)
    one = helper.make_model(helper.make_graph(
        [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "s"], ["y"], domain=ti.MS_DOMAIN)], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(codes, "w"), numpy_helper.from_array(scale, "s")]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ti.MS_DOMAIN, 1)])
    kernel = ort.InferenceSession(one.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    emulated = ti._dynamic_uint8(x) @ (codes.astype(np.float32) * scale)
    exact = x @ w
    err_kernel = np.linalg.norm(kernel - exact) / np.linalg.norm(exact)
    # the emulation and the kernel agree far below the quantization error they both measure
    assert np.linalg.norm(kernel - emulated) / np.linalg.norm(exact) < 0.05 * err_kernel
    report = ti.node_errors(model, {pick.name: [x]})
    assert report[0].tensor_error == pytest.approx(err_kernel, rel=0.05)


def test_rowwise_int8_is_what_its_report_measures_and_each_row_stands_alone(fused) -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from ticor.evaluation import load_dataset
    from ticor.quantization import text_int8 as ti

    m, model = fused
    pick = next(n for n in ti.weight_matmuls(model.graph) if "/layer.2/output/dense" in n.name)
    acts = ti.matmul_inputs(model, {pick.name: pick.input[0]}, _feeds(m, load_dataset(FIXTURE_DATA).texts()))
    x = acts[pick.name][0]
    w = numpy_helper.to_array({i.name: i for i in model.graph.initializer}[pick.input[1]])
    one = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="one")], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", x.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")]),
        opset_imports=[helper.make_opsetid("", 17)])
    q, count = ti.to_rowwise_int8(one)
    assert count == 1 and "MatMulIntegerToFloat" in [n.op_type for n in q.graph.node]
    s = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    kernel = s.run(None, {"x": x})[0]
    codes, scale = ti.int8_columns(w)
    emulated = ti._rowwise_int8(x) @ (codes.astype(np.float32) * scale)
    exact = x @ w
    assert np.abs(kernel - emulated).max() <= 1e-4 * np.abs(exact).max()  # the integer product, scaled per row
    report = ti.node_errors(model, {pick.name: [x]})
    err = np.linalg.norm(kernel - exact) / np.linalg.norm(exact)
    assert report[0].rowwise_error == pytest.approx(err, rel=0.01) and report[0].rowwise_error < report[0].tensor_error
    # a row alone and the same row among others: bit for bit the same
    loud = x.copy()
    loud[0] *= 40.0
    together = s.run(None, {"x": loud})[0]
    rows = (1, len(x) // 2, len(x) - 1)
    assert all(np.array_equal(s.run(None, {"x": loud[k : k + 1]})[0][0], together[k]) for k in rows)
    # a row of zeros has scale 0 (no floor on the scale): it gives zeros, and its neighbours are untouched
    loud[1] = 0.0
    with_zero = s.run(None, {"x": loud})[0]
    assert np.isfinite(with_zero).all() and not np.any(with_zero[1]) and np.array_equal(with_zero[2:], together[2:])
    assert not np.any(ti._rowwise_int8(loud)[1])


def test_rowwise_recipe_builds_keeps_fp32_and_runs_integer_kernels(fp32_bundle: Path, tmp_path: Path) -> None:
    import onnx

    from ticor.benchmarks.measure import kernel_share, profile_nodes
    from ticor.bundle import read_manifest
    from ticor.evaluation import load_dataset
    from ticor.quantization.graphs import quantize_text
    from ticor.sessions import plain_cpu_session

    m = read_manifest(fp32_bundle)
    ds = load_dataset(FIXTURE_DATA)
    out = tmp_path / "text.int8-rowwise.onnx"
    tq = quantize_text(m.graph_path("text"), {"int8-rowwise": out}, _feeds(m, ds.split_texts("train")))
    assert len(tq.report) == 72
    assert [r.rowwise_error for r in tq.report] == sorted((r.rowwise_error for r in tq.report), reverse=True)
    # per row loses less than one scale per batch tensor on most nodes
    assert sum(r.rowwise_error < r.tensor_error for r in tq.report) > 60
    assert tq.how["int8-rowwise"].startswith("72 of 72 MatMuls MatMulIntegerToFloat")
    source_matmuls = [n.op_type for n in onnx.load(str(m.graph_path("text"))).graph.node].count("MatMul")
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    # the attention's own products (no weight) stay MatMul; Q, K and V share one quantize step
    assert ops.count("MatMulIntegerToFloat") == 72 and ops.count("MatMul") == source_matmuls - 72
    assert ops.count("QuantizeLinear") == 48
    feeds = _feeds(m, ds.split_texts("test"))
    ref = plain_cpu_session(m.graph_path("text")).run(None, feeds[0])[0]
    got = plain_cpu_session(out).run(None, feeds[0])[0]
    assert np.min(np.sum(ref * got, axis=1)) > 0.99
    share = kernel_share(profile_nodes(out, feeds[0], threads=1))
    top = max(share["top_ops_share"], key=share["top_ops_share"].get)
    assert top == "MatMulIntegerToFloat" and share["integer_share"] > 0.25, share
    assert out.stat().st_size < 0.3 * m.graph_path("text").stat().st_size


def test_kernel_probe_tells_exact_from_saturating_arithmetic() -> None:
    """The probe's verdict is what a random product shows: onnxruntime's result equals the exact
    int32 sum on a kernel the probe calls exact, and the sum of int16-saturated pairs of products
    on one it calls saturating (and the verdict follows the CPU's VNNI flag on x86). The probe's
    graph is written without the onnx package, so it runs in the runtime install too."""
    import platform

    import onnxruntime as ort

    from ticor.kernels import FLOAT, MS_DOMAIN, int8_kernel_probe, one_node_model

    probe = int8_kernel_probe()
    assert set(probe) == {"exact", "ratio", "kernel", "probe"}
    rng = np.random.default_rng(0)
    k, n = 384, 64
    codes = rng.integers(-127, 128, (k, n)).astype(np.int8)
    x = rng.uniform(0, 1, (8, k)).astype(np.float32)
    x[:, 0] = 1.0  # the activation's range is [0, 1]: codes round(x * 255)
    one = one_node_model("DynamicQuantizeMatMul", [("x", FLOAT, list(x.shape))], ("y", FLOAT, [8, n]),
                         domain=MS_DOMAIN, initializers={"w": codes, "s": np.ones(n, np.float32)})
    y = ort.InferenceSession(one, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    products = np.round(x * 255).astype(np.int64)[:, :, None] * codes.astype(np.int64)[None]
    exact = products.sum(1) / 255
    pairs = np.clip(products[:, 0::2] + products[:, 1::2], -32768, 32767).sum(1) / 255
    assert not np.allclose(exact, pairs, rtol=1e-3)  # the product is one that saturates
    np.testing.assert_allclose(y, exact if probe["exact"] else pairs, rtol=1e-4, atol=1e-3)
    if platform.machine() in ("x86_64", "AMD64"):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                     "")
        assert probe["exact"] == any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
