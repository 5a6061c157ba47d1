"""A pair's score does not depend on its batch, for every precision the CPU provider runs.

Each bundle scores the same fixture pairs one at a time (``Matcher.score``), in one
``score_batch`` call, and in shuffled small batches beside odd companions (a very long caption, a
line of symbols, an empty caption, a blank and a noise picture), as ``python -m
ticor.benchmarks.batch`` measures it; the largest change must stay
within the gate's 1e-5. The int8 bundles here are built from the recipes ``ticor quantize`` keeps
(per-row text int8 with the image weights stored int8, and with static image int8), written without
the gate so that this test does not hang on the 30-pair fixture's quality; a bundle whose text
graph is onnxruntime's ``quantize_dynamic``
(one activation scale per batch tensor, what the earlier int8 bundles had), built the same way,
shows that the test fails where scores do depend on the batch. The int8 graphs compute in
integer kernels (an onnxruntime profile says so), and the stored-int8 image weights are expanded
once, when the session loads.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURE_DATA, read_jsonl
from ticor.quantization.gate import MAX_BATCH_DRIFT

pytestmark = pytest.mark.slow


def _bundle(fp32_bundle: Path, out: Path, text_recipe: str, image: str | None) -> Path:
    """An int8 bundle from the fp32 one with the named graphs, written without the gate
    (``text_recipe`` ``per-tensor``: onnxruntime's own dynamic quantization)."""
    from ticor.bundle import read_manifest, write_bundle
    from ticor.evaluation import load_dataset
    from ticor.preprocess import encode_texts, load_image, load_tokenizer
    from ticor.quantization.graphs import IMAGE_WEIGHTS, image_int8_weights, quantize_image, quantize_text
    from ticor.quantization.quantize import calibration_set, calibration_texts

    m = read_manifest(fp32_bundle)
    ds = load_dataset(FIXTURE_DATA)
    work = out.parent / (out.name + ".work")
    work.mkdir(parents=True)
    for f in ("head.onnx", "image.onnx", m.tokenizer):
        shutil.copyfile(fp32_bundle / f, work / f)
    tok = load_tokenizer(m.tokenizer_path, m.text_spec)
    texts = calibration_texts(ds, 64)
    feeds = [dict(zip(("input_ids", "attention_mask"), encode_texts(tok, texts, m.text_spec), strict=True))]
    if text_recipe == "per-tensor":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(fp32_bundle / "text.onnx", work / "text.onnx", weight_type=QuantType.QInt8)
    else:
        quantize_text(fp32_bundle / "text.onnx", {text_recipe: work / "text.onnx"}, feeds)
    if image == IMAGE_WEIGHTS:
        (work / "image.onnx").unlink()
        image_int8_weights(fp32_bundle / "image.onnx", work / "image.onnx")
    elif image is not None:
        pictures = [load_image(ds.root / p, m.image_spec) for p in calibration_set(ds, 32)]
        (work / "image.onnx").unlink()
        quantize_image(fp32_bundle / "image.onnx", {image: work / "image.onnx"}, pictures)
    write_bundle(work, out, dataclasses.replace(m, precision="int8"))
    return out


@pytest.fixture(scope="module")
def bundles(fp32_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batch")
    return {"fp32": fp32_bundle,
            "int8": _bundle(fp32_bundle, root / "int8", "int8-rowwise", "int8-weights"),
            "int8-static": _bundle(fp32_bundle, root / "int8-static", "int8-rowwise", "minmax"),
            "per-tensor": _bundle(fp32_bundle, root / "per-tensor", "per-tensor", None)}


@pytest.fixture(scope="module")
def odd_pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("odd")
    Image.new("RGB", (128, 128), (255, 255, 255)).save(d / "blank.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (600, 900, 3), dtype=np.uint8)).save(d / "noise.jpg", quality=90)
    return [d / "blank.png", d / "noise.jpg"]


def _largest_drift(bundle: Path, odd_pictures: list[Path]) -> float:
    """What ``python -m ticor.benchmarks.batch`` measures, on 24 fixture test pairs."""
    from ticor.benchmarks.batch import measure

    rows = read_jsonl(FIXTURE_DATA / "pairs" / "test.jsonl")[:24]
    got = measure(bundle, [(r["text"], FIXTURE_DATA / r["image"]) for r in rows], odd_pictures)
    return max(v for k, v in got.items() if k.endswith("largest change"))


@pytest.mark.parametrize("precision", ["fp32", "int8", "int8-static"])
def test_a_pairs_score_does_not_depend_on_its_batch(bundles: dict[str, Path], odd_pictures: list[Path],
                                                    precision: str) -> None:
    assert _largest_drift(bundles[precision], odd_pictures) <= MAX_BATCH_DRIFT


def test_per_tensor_dynamic_int8_is_caught(bundles: dict[str, Path], odd_pictures: list[Path]) -> None:
    assert _largest_drift(bundles["per-tensor"], odd_pictures) > MAX_BATCH_DRIFT


def test_the_int8_graphs_compute_in_integer_kernels(bundles: dict[str, Path]) -> None:
    from ticor.benchmarks.measure import kernel_share, profile_nodes

    rng = np.random.default_rng(0)
    ids = np.concatenate([np.zeros((8, 1)), rng.integers(5, 5000, (8, 22)), np.full((8, 1), 2)], axis=1)
    text = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones((8, 24), np.int64)}
    picture = {"pixel_values": rng.standard_normal((8, 3, 128, 128)).astype(np.float32)}
    for bundle, graph, feeds, op in (("int8", "text.onnx", text, "MatMulIntegerToFloat"),
                                     ("int8-static", "image.onnx", picture, "QLinearConv")):
        share = kernel_share(profile_nodes(bundles[bundle] / graph, feeds, threads=1))
        assert share["integer_share"] > 0.25 and next(iter(share["top_ops_share"])) == op, (graph, share)
    # the stored-int8 image weights: expanded once when the session loads, then fp32 convolutions
    ops = {n["op"] for n in profile_nodes(bundles["int8"] / "image.onnx", picture, threads=1)}
    assert ops & {"Conv", "FusedConv"} and not ops & {"Cast", "DequantizeLinear", "QLinearConv"}, sorted(ops)
