"""The whole build chain on the committed fixture: train a few steps, export, validate, info.

Real weights, real pictures, real onnxruntime; only the number of steps is small. A broken
install, a broken export or a graph that disagrees with torch fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import FIXTURE_DATA, ticor

pytestmark = pytest.mark.slow

STEPS = ["--max-steps", "6", "--batch", "16"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "multilingual"
    ticor("train", "--data", str(FIXTURE_DATA), "--out", str(out), *STEPS, "--quiet")
    return out


@pytest.fixture(scope="module")
def bundle(run_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "multilingual-fp32"
    ticor("export", "--run", str(run_dir), "--out", str(out), "--quiet")
    return out


def test_train_writes_weights_log_and_threshold(run_dir: Path) -> None:
    log = json.loads((run_dir / "train-log.json").read_text())
    assert log["preset"] == "multilingual" and log["steps"] == 6
    assert 0.0 < log["threshold"] < 1.0
    for block in (log["test"], log["baseline_test"], log["val"]):
        assert set(block["overall"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}
        assert set(block["by_lang"]) == {"en", "zh"}
        assert set(block["by_negative"]) == {"hard", "random"}
    assert set(log["test"]["retrieval"]) >= {"recall@1", "recall@5", "recall@10"}
    assert (run_dir / "trained.safetensors").is_file()
    assert not (run_dir / "checkpoint.safetensors").exists()
    # only the trained parts are stored: far smaller than the 470 MB text encoder
    assert (run_dir / "trained.safetensors").stat().st_size < 60e6


def test_the_conse_table_is_the_class_names_and_is_exported(run_dir: Path, bundle: Path) -> None:
    import onnx
    from safetensors.torch import load_file

    from ticor.training.imagenet import imagenet_names

    table = load_file(str(run_dir / "trained.safetensors"))["image.conse.class_text"]
    assert table.shape == (1000, 384)
    assert torch.allclose(table.norm(dim=-1), torch.ones(1000), atol=1e-5)
    # row k is class k's name through the pretrained text encoder: "tabby" nearer "tiger cat" than "airliner"
    names = imagenet_names()
    cos = table @ table[names.index("tabby")]
    assert cos[names.index("tiger cat")] > cos[names.index("airliner")]  # e5 cosines sit close together
    graph = onnx.load(str(bundle / "image.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"TopK", "Softmax", "Gather"} <= ops
    # the exported table is the trained file's (a constant of the graph)
    consts = [onnx.numpy_helper.to_array(t) for t in graph.initializer if tuple(t.dims) == (1000, 384)]
    assert len(consts) == 1 and np.allclose(consts[0], table.numpy())


def test_second_train_reuses_the_run(run_dir: Path) -> None:
    before = (run_dir / "trained.safetensors").stat().st_mtime_ns
    r = ticor("train", "--data", str(FIXTURE_DATA), "--out", str(run_dir), *STEPS)
    assert "up to date" in r.stderr
    assert (run_dir / "trained.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("stop", "resumes_at"),
    [(KeyboardInterrupt, [5]),  # Ctrl-C: the finished steps are checkpointed on the way out
     (SystemError, [4, 5])],  # a crash: the periodic checkpoint (every 2 steps here) is what is left
)
def test_interrupted_training_resumes_to_the_same_weights(tmp_path: Path, monkeypatch, stop, resumes_at) -> None:
    from safetensors.torch import load_file

    from ticor.training import train as tr

    cfg = tr.TrainConfig(preset="multilingual", max_steps=6, batch=16, checkpoint_every=2, warmup_steps=2)
    straight = tmp_path / "straight"
    tr.train(FIXTURE_DATA, straight, cfg, quiet=True)

    resumed = tmp_path / "resumed"
    real_loss = tr._loss

    def dying_loss(model, batches, tf, imf, step, temperature):
        if step == 5:
            raise stop
        return real_loss(model, batches, tf, imf, step, temperature)

    monkeypatch.setattr(tr, "_loss", dying_loss)
    with pytest.raises(stop):
        tr.train(FIXTURE_DATA, resumed, cfg, quiet=True)
    assert (resumed / "checkpoint.safetensors").is_file()
    assert not (resumed / "trained.safetensors").exists()
    seen = []
    monkeypatch.setattr(tr, "_loss", lambda *a: seen.append(a[4]) or real_loss(*a))
    tr.train(FIXTURE_DATA, resumed, cfg, quiet=True)
    assert seen == resumes_at  # not from 0
    a = load_file(str(straight / "trained.safetensors"))
    b = load_file(str(resumed / "trained.safetensors"))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst


def test_export_writes_a_complete_verified_bundle(bundle: Path) -> None:
    from ticor.bundle import GRAPH_FILES, read_manifest

    m = read_manifest(bundle)
    d = m.to_json()
    on_disk = json.loads((bundle / "manifest.json").read_text())
    assert json.dumps(d, sort_keys=True) == json.dumps(on_disk, sort_keys=True)  # the dataclasses round-trip
    assert set(d["files"]) == {"text.onnx", "image.onnx", "head.onnx", "tokenizer.json"}
    for part, g in d["graphs"].items():
        assert g["file"] == GRAPH_FILES[part] and g["opset"] == 17
    assert d["graphs"]["text"]["inputs"][0]["shape"] == ["batch", "sequence"]
    assert d["image"]["spec"]["size"] == 128 and d["image"]["spec"]["background"] == [255, 255, 255]
    assert d["text"]["spec"]["prefix"] == "query: "
    assert d["architecture"] == {"text_layers": 12, "text_hidden_size": 384, "text_num_heads": 12,
                                 "image_encoder": "mobilenet_v2 + ConSE (top-10 ImageNet classes)"}
    assert d["data"]["dataset_sha256"] == json.loads((FIXTURE_DATA / "manifest.json").read_text())[
        "dataset_sha256"]
    for part, diff in d["validation"]["max_abs_diff"].items():
        assert diff <= d["validation"]["atol"], part
    assert 0.0 <= d["metrics"]["test"]["overall"]["f1"] <= 1.0


def test_bundle_metrics_equal_the_torch_metrics(bundle: Path, run_dir: Path) -> None:
    log = json.loads((run_dir / "train-log.json").read_text())
    d = json.loads((bundle / "manifest.json").read_text())
    for key in ("accuracy", "f1", "roc_auc"):
        assert abs(d["metrics"]["test"]["overall"][key] - log["test"]["overall"][key]) < 1e-6


def test_exported_graphs_are_onnx_checked_with_dynamic_axes(bundle: Path) -> None:
    import onnx

    for name in ("text.onnx", "image.onnx", "head.onnx"):
        model = onnx.load(str(bundle / name))
        onnx.checker.check_model(model)
        assert not list(bundle.glob("*.data")), "weights must live inside the .onnx files"
        dims = [d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim]
        assert "batch" in dims


def test_second_export_reuses_the_bundle(bundle: Path, run_dir: Path) -> None:
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in bundle.iterdir()}
    r = ticor("export", "--run", str(run_dir), "--out", str(bundle))
    assert r.stdout.strip() == str(bundle) and "up to date" in r.stderr
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in bundle.iterdir()} == before  # nothing rewritten


def test_info_prints_the_manifest(bundle: Path) -> None:
    text = ticor("info", str(bundle)).stdout
    for needle in ("multilingual", "text.onnx", "input_ids", "probability", "threshold", "lanczos",
                   "size and sha256 verified", "article baseline"):
        assert needle in text, needle
    data = json.loads(ticor("info", str(bundle), "--json").stdout)
    assert data["preset"] == "multilingual"


def test_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    raw = bytearray((copy / "head.onnx").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (copy / "head.onnx").write_bytes(bytes(raw))
    r = ticor("info", str(copy), check=False)
    assert r.returncode == 2  # a bad bundle is a refused request: exit 2, nothing printed on stdout
    assert "head.onnx" in r.stderr and "sha256" in r.stderr
    assert r.stdout == ""


def test_validation_reports_value_drift_with_the_largest_difference(bundle: Path, run_dir: Path) -> None:
    from ticor.evaluation import load_dataset
    from ticor.export.onnx_export import ExportValidationError, validate
    from ticor.training.checkpoint import load_trained
    from ticor.training.model import PRESETS, MatchModel, load_backbones

    preset = PRESETS["multilingual"]
    bb = load_backbones(preset)
    model = MatchModel(preset, bb.bert, bb.cnn)
    load_trained(model, run_dir / "trained.safetensors")
    model.eval()
    from ticor.export.vocab import slice_embeddings, trim_unigram

    trim = trim_unigram(json.loads(Path(bb.tokenizer).read_text(encoding="utf-8")), preset.vocabulary)
    slice_embeddings(model.text.bert, trim.kept)  # as the export does: the bundle's vocabulary is trimmed
    ds = load_dataset(FIXTURE_DATA)
    validate(model, bundle, ds, bundle / "tokenizer.json")  # the untouched model agrees
    with torch.no_grad():
        model.image.proj.weight.add_(0.05)
    with pytest.raises(ExportValidationError, match=r"image graph .*largest difference"):
        validate(model, bundle, ds, bundle / "tokenizer.json")


def test_validation_tells_shape_from_value_errors() -> None:
    from ticor.export.onnx_export import ExportValidationError, _compare

    with pytest.raises(ExportValidationError, match="shape"):
        _compare("text", np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ExportValidationError, match=r"largest difference to torch 0\.5"):
        _compare("text", np.zeros((2, 3)), np.full((2, 3), 0.5))
    assert _compare("text", np.zeros(3), np.full(3, 1e-6)) <= 1e-6


def test_train_refuses_unknown_preset_and_missing_dataset(tmp_path: Path) -> None:
    r = ticor("train", "--preset", "nope", check=False)
    assert r.returncode == 2 and "unknown preset" in r.stderr
    r = ticor("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), check=False)
    assert r.returncode == 2 and "not a built dataset" in r.stderr
    r = ticor("export", "--run", str(tmp_path), "--out", str(tmp_path / "b"), check=False)
    assert r.returncode == 2 and "no finished training run" in r.stderr


def test_en_small_preset_trains_and_exports(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ticor("train", "--preset", "en-small", "--data", str(FIXTURE_DATA), "--out", str(run), "--max-steps", "3",
          "--batch", "16", "--quiet")
    out = tmp_path / "bundle"
    ticor("export", "--run", str(run), "--out", str(out), "--quiet")
    d = json.loads(ticor("info", str(out), "--json").stdout)
    assert d["preset"] == "en-small" and d["text"]["spec"]["pad_token"] == "[PAD]"
    assert d["files"]["text.onnx"]["bytes"] < 120e6  # MiniLM: no 250k-token embedding table
    assert max(d["validation"]["max_abs_diff"].values()) <= d["validation"]["atol"]
    v = d["vocabulary"]  # not trimmed: English only, and a 30k WordPiece vocabulary already
    assert v["model"] == "WordPiece" and "trim" not in v and v["unk_id"] == 100 and v["pieces"] == 30522
    from ticor.matcher import Matcher

    picture = next((FIXTURE_DATA / "images").glob("*/*.png"))
    r = Matcher.load(out).score_batch([("a red apple", picture), ("☃ snowman", picture)])
    assert r[0].flags == () and r[1].flags == ("unknown_chars:0.125",) and r[0].status == r[1].status == "ok"
