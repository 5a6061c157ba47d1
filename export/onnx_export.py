"""``ticor export``: trained run -> fp32 ONNX bundle, every graph checked against torch.

Graphs are written with torch's TorchScript-based exporter at opset 17 (weights inside the
file, dynamic batch and sequence axes), then each one is run in onnxruntime on real inputs
from the dataset at several batch sizes and compared with torch. A shape mismatch and a value
mismatch are reported apart, the latter with the largest difference; beyond the tolerance the
export fails and no bundle is left behind. The bundle's test metrics are then computed with
the exported graphs themselves.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ticor import __version__
from ticor._console import say
from ticor._files import sha256_file
from ticor.bundle import (
    BRANCHES,
    GRAPH_IO,
    HEAD_INPUTS,
    HEAD_OUTPUT,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    MANIFEST,
    OPSET,
    TEXT_INPUTS,
    TEXT_OUTPUT,
    TOKENIZER,
    Architecture,
    DataRecord,
    Manifest,
    OperatingCurve,
    ScoreCalibration,
    TrainingRecord,
    read_manifest,
    write_bundle,
)
from ticor.calibration import expected_calibration_error, fit_platt, logit, operating_curve, platt, reliability
from ticor.errors import BundleError, ExportValidationError, UsageError
from ticor.evaluation import Dataset, load_dataset, pair_scores, split_scores
from ticor.export.vocab import covered_chars, heldout_check, slice_embeddings, trim_unigram
from ticor.metrics import evaluate
from ticor.preprocess import ImageSpec, TextSpec, Vocabulary, encode_texts, load_image, load_tokenizer
from ticor.sessions import plain_cpu_session
from ticor.training.checkpoint import load_trained
from ticor.training.model import PRESETS, MatchModel, Preset, load_backbones
from ticor.training.train import LOG_FILE, TRAINED_FILE

ATOL = 1e-4  # embeddings are unit vectors, probabilities in [0, 1]


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], folder: Path, part: str) -> None:
    """One branch as its graph, with the names and dynamic axes of :data:`~ticor.bundle.GRAPH_IO`."""
    spec = GRAPH_IO[part]
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(folder / spec.file), input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.torch_dynamic_axes(), opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)


def _sessions(folder: Path) -> dict[str, Any]:
    return {part: plain_cpu_session(folder / GRAPH_IO[part].file) for part in BRANCHES}


def _compare(part: str, got: np.ndarray, want: np.ndarray, atol: float = ATOL) -> float:
    if got.shape != want.shape:
        raise ExportValidationError(f"{part}: onnxruntime output shape {got.shape} != torch shape {want.shape}")
    if not np.all(np.isfinite(got)):
        raise ExportValidationError(f"{part}: onnxruntime output has NaN or infinite values")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
    if diff > atol:
        raise ExportValidationError(f"{part}: largest difference to torch {diff:.3g} exceeds {atol:g}")
    return diff


def image_encoder(preset: Preset) -> str:
    """The manifest's name for the image branch's design."""
    return (f"mobilenet_v2 + ConSE (top-{preset.conse_top_k} ImageNet classes)" if preset.conse_top_k
            else "mobilenet_v2")


def validate(model: MatchModel, folder: Path, ds: Dataset, tokenizer_path: Path) -> dict[str, Any]:
    """Run every graph in onnxruntime on real dataset inputs and compare with torch."""
    preset = model.preset
    tok = load_tokenizer(tokenizer_path, preset.text_spec)
    texts = ds.split_texts("test")
    # short and long texts, both languages, at batch sizes 1, 3 and 16
    by_len = sorted(texts, key=len)
    picked = [by_len[0], by_len[-1]] + by_len[:: max(1, len(by_len) // 14)][:14]
    images = ds.split_images("test")[:16]
    sess = _sessions(folder)
    worst = {"text": 0.0, "image": 0.0, "head": 0.0}
    with torch.no_grad():
        for n in (1, 3, len(picked)):
            ids, mask = encode_texts(tok, picked[:n], preset.text_spec)
            want = model.text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            got = sess["text"].run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
            worst["text"] = max(worst["text"], _compare(f"text graph (batch {n})", got, want))
        for n in (1, 3, len(images)):
            x = np.stack([load_image(ds.root / p, preset.image_spec) for p in images[:n]])
            want = model.image(torch.from_numpy(x)).numpy()
            got = sess["image"].run([IMAGE_OUTPUT], {IMAGE_INPUT: x})[0]
            worst["image"] = max(worst["image"], _compare(f"image graph (batch {n})", got, want))
        ids, mask = encode_texts(tok, picked, preset.text_spec)
        t = model.text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        x = np.stack([load_image(ds.root / p, preset.image_spec) for p in images])
        v = model.image(torch.from_numpy(x)).numpy()
        for n in (1, len(images)):
            a, b = t[:n], v[:n]
            want = model.head(torch.from_numpy(a), torch.from_numpy(b)).numpy()
            got = sess["head"].run([HEAD_OUTPUT], {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0]
            worst["head"] = max(worst["head"], _compare(f"head graph (batch {n})", got, want))
    return {"atol": ATOL, "max_abs_diff": worst, "texts": len(picked), "images": len(images),
            "batch_sizes": sorted({1, 3, len(picked), len(images)})}


def onnx_split_embeddings(folder: Path, ds: Dataset, split: str, text_spec: TextSpec, image_spec: ImageSpec,
                          tokenizer_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a split's texts and pictures (``ds.split_texts``/``split_images`` order)
    computed with the bundle's text and image graphs."""
    tok = load_tokenizer(tokenizer_path, text_spec)
    text = plain_cpu_session(folder / GRAPH_IO["text"].file)
    image = plain_cpu_session(folder / GRAPH_IO["image"].file)
    texts = ds.split_texts(split)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    rows: dict[int, np.ndarray] = {}
    for s in range(0, len(order), 64):
        idx = order[s : s + 64]
        ids, mask = encode_texts(tok, [texts[i] for i in idx], text_spec)
        out = text.run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
        rows.update(zip(idx, out))
    tv = np.stack([rows[i] for i in range(len(texts))])
    images = ds.split_images(split)
    iv = np.concatenate([
        image.run([IMAGE_OUTPUT], {IMAGE_INPUT: np.stack(
            [load_image(ds.root / p, image_spec) for p in images[s : s + 64]])})[0]
        for s in range(0, len(images), 64)])
    return tv, iv


def fit_calibration(model: MatchModel, ds: Dataset, emb: dict[str, tuple[np.ndarray, np.ndarray]],
                    raw_threshold: float) -> tuple[ScoreCalibration, float]:
    """Platt scaling of the head's logit on the val split (set on ``model.head``), its record,
    and the training threshold mapped through it (the same decisions)."""
    logits, labels = {}, {}
    for split, (tv, iv) in emb.items():
        with torch.no_grad():
            logits[split] = pair_scores(lambda a, b: model.head.logit(torch.from_numpy(a), torch.from_numpy(b))
                                        .numpy(), ds.pairs[split], ds.split_texts(split), tv,
                                        ds.split_images(split), iv).astype(np.float64)
        labels[split] = np.array([r["label"] for r in ds.pairs[split]])
    a, b = fit_platt(logits["val"], labels["val"])
    method, note = "platt", ""
    if not a > 0:  # a head that ranks val's matches below its non-matches: no monotonic map calibrates it
        method, note = "none", (f"Platt scaling on val gave a decreasing map (a = {a:.3g}): the head does not rank "
                                "matches above non-matches there, so scores are left as they are")
        a, b = 1.0, 0.0
    model.head.calibrate(a, b)
    ece = {split: {"before": expected_calibration_error(platt(z, 1.0, 0.0), labels[split]),
                   "after": expected_calibration_error(platt(z, a, b), labels[split])}
           for split, z in logits.items()}
    record = ScoreCalibration(
        method=method, a=a, b=b, fitted_on="val", pairs=len(labels["val"]),
        base_rate=float(labels["val"].mean()), ece=ece,
        reliability={split: reliability(platt(z, a, b), labels[split]) for split, z in logits.items()}, note=note)
    return record, float(platt(np.array([logit(raw_threshold)]), a, b)[0])


def _vocabulary(model: MatchModel, source: Path, dest: Path, ds: Dataset, scripts: tuple[str, ...],
                quiet: bool) -> Vocabulary:
    """Write the bundle's ``tokenizer.json`` (trimmed to the preset's scripts, the embedding rows
    sliced to match) and its record, with the held-out corpus check and the dataset's own texts."""
    from tokenizers import Tokenizer

    from ticor.dataset.corpus import CORPORA, heldout_texts

    preset = model.preset
    raw = json.loads(source.read_text(encoding="utf-8"))
    if not scripts:
        shutil.copyfile(source, dest)
        model_json = raw["model"]
        unk = model_json.get("unk_id")
        if unk is None:  # WordPiece and BPE name their unknown token
            unk = Tokenizer.from_file(str(source)).token_to_id(model_json.get("unk_token") or "")
        return Vocabulary(model_json["type"], len(model_json["vocab"]), -1 if unk is None else int(unk),
                          covered_chars(raw))
    trim = trim_unigram(raw, scripts)
    dest.write_text(trim.dumps(), encoding="utf-8")
    original, trimmed = Tokenizer.from_file(str(source)), Tokenizer.from_file(str(dest))
    full_tok, trim_tok = load_tokenizer(source, preset.text_spec), load_tokenizer(dest, preset.text_spec)

    def embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Both branches' embeddings, with the untrimmed model: the trimmed ids mapped back
        select the very rows the sliced table holds."""
        us, ts = [], []
        for s in range(0, len(texts), 64):
            a_ids, a_mask = encode_texts(full_tok, texts[s : s + 64], preset.text_spec)
            b_ids, b_mask = encode_texts(trim_tok, texts[s : s + 64], preset.text_spec)
            with torch.no_grad():
                us.append(model.text(torch.from_numpy(a_ids), torch.from_numpy(a_mask)).numpy())
                ts.append(model.text(torch.from_numpy(trim.kept[b_ids]), torch.from_numpy(b_mask)).numpy())
        return np.concatenate(us), np.concatenate(ts)

    say(quiet, f"ticor export: trimming the vocabulary to {', '.join(scripts)}: "
               f"{trim.original_pieces:,} -> {trim.pieces:,} pieces; checking it on held-out text")
    heldout = heldout_check(original, trimmed, trim, heldout_texts(), embed)
    heldout["corpus"] = {lang: CORPORA[lang].spec for lang in heldout["texts"]}
    own = heldout_check(original, trimmed, trim, {"dataset": ds.texts()}, embed)
    slice_embeddings(model.text.bert, trim.kept)
    idn, cos = heldout["identical"], heldout["cosine_of_differing"]
    say(quiet, "ticor export: held-out text tokenized identically: " + ", ".join(
        f"{lang} {v:.2%} of {heldout['texts'][lang]:,}" for lang, v in idn.items())
        + (f"; cosine of the others to the untrimmed branch >= {cos['min']:.4f}" if cos["min"] is not None else "")
        + f"; the dataset's own texts: {own['identical']['dataset']:.2%} of {own['texts']['dataset']:,}")
    return Vocabulary(
        "Unigram", trim.pieces, int(trim.tokenizer["model"]["unk_id"]), covered_chars(trim.tokenizer),
        trim={"scripts": list(trim.scripts), "original_pieces": trim.original_pieces,
              "original_sha256": sha256_file(source), "method": "pieces made only of the kept scripts' characters"},
        heldout={**heldout, "dataset_texts": {k: own[k] for k in ("texts", "identical", "differ",
                                                                  "cosine_of_differing", "examples")}})


def export(run_dir: Path, out: Path, force: bool = False, quiet: bool = False, trim: bool = True) -> Path:
    """Write (or reuse) the fp32 bundle for a finished training run (``trim``: the vocabulary
    trimmed to the preset's scripts, else kept whole)."""
    log_path, trained_path = run_dir / LOG_FILE, run_dir / TRAINED_FILE
    if not (log_path.is_file() and trained_path.is_file()):
        raise UsageError(f"{run_dir} holds no finished training run; run `ticor train` first")
    log = json.loads(log_path.read_text(encoding="utf-8"))
    trained_sha = sha256_file(trained_path)
    if trained_sha != log["trained_sha256"]:
        raise UsageError(f"{trained_path} does not match its training log (modified?); retrain")
    preset = PRESETS[log["preset"]]
    scripts = preset.vocabulary if trim else ()
    if not force and (out / MANIFEST).is_file():
        try:
            m = read_manifest(out)
            if m.trained_sha256 == trained_sha and (m.text_spec, m.image_spec) == (
                    preset.text_spec, preset.image_spec) and m.score_calibration is not None and (
                    m.vocabulary is not None and m.vocabulary.scripts == scripts):
                say(quiet, f"ticor export: {out} is up to date")
                return out
        except BundleError as exc:
            say(quiet, f"ticor export: rebuilding {out} ({exc})")
    ds = load_dataset(Path(log["dataset"]["path"]))
    if ds.sha256 != log["dataset"]["dataset_sha256"]:
        raise UsageError(f"the dataset at {ds.root} changed since training; retrain")
    t0 = time.monotonic()
    backbones = load_backbones(preset)
    model = MatchModel(preset, backbones.bert, backbones.cnn)
    load_trained(model, trained_path)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        vocabulary = _vocabulary(model, backbones.tokenizer, work / TOKENIZER, ds, scripts, quiet)
        say(quiet, f"ticor export: writing ONNX graphs (opset {OPSET}) into {work}")
        ids = torch.tensor([[0, 5, 6, 2], [0, 7, 2, 1]])
        mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
        size = preset.image_spec.size
        _export(model.text, (ids, mask), work, "text")
        _export(model.image, (torch.zeros(2, 3, size, size),), work, "image")
        say(quiet, "ticor export: embedding the val and test splits with the exported graphs")
        args = (preset.text_spec, preset.image_spec, work / TOKENIZER)
        emb = {split: onnx_split_embeddings(work, ds, split, *args) for split in ("val", "test")}
        calibration, threshold = fit_calibration(model, ds, emb, float(log["threshold"]))
        if calibration.note:
            say(quiet, f"ticor export: not calibrated: {calibration.note}")
        else:
            say(quiet, f"ticor export: calibrated on val (Platt: a = {calibration.a:.3f}, b = {calibration.b:.3f}; "
                       f"expected calibration error on test {calibration.ece['test']['before']:.3f} -> "
                       f"{calibration.ece['test']['after']:.3f}; threshold {float(log['threshold']):.4f} -> "
                       f"{threshold:.4f}, the same decisions)")
        emb_in = torch.nn.functional.normalize(torch.ones(2, preset.embed_dim), dim=-1)
        _export(model.head, (emb_in, emb_in), work, "head")
        say(quiet, "ticor export: validating every graph against torch on real inputs")
        validation = validate(model, work, ds, work / TOKENIZER)
        head = plain_cpu_session(work / GRAPH_IO["head"].file)

        def head_fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return head.run([HEAD_OUTPUT], {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0]

        val_scores, val_rank = split_scores(ds, "val", *emb["val"], head_fn, with_rank=True)
        test_scores, rank = split_scores(ds, "test", *emb["test"], head_fn, with_rank=True)
        val_y = np.array([r["label"] for r in ds.pairs["val"]])
        bert = model.text.bert.config
        manifest = Manifest(
            preset=preset.name, description=preset.description, precision="fp32",
            model_version=f"{preset.name}-fp32-{trained_sha[:12]}",
            created_by=f"ticor {__version__}, torch {torch.__version__}",
            files={}, graphs={part: GRAPH_IO[part] for part in BRANCHES}, embedding_dim=preset.embed_dim,
            text_spec=preset.text_spec, image_spec=preset.image_spec, threshold=threshold,
            threshold_source=f"{log['threshold_source']}, mapped through the calibration", tokenizer=TOKENIZER,
            architecture=Architecture(text_layers=bert.num_hidden_layers, text_hidden_size=bert.hidden_size,
                                      text_num_heads=bert.num_attention_heads, image_encoder=image_encoder(preset)),
            dataset=DataRecord(log["dataset"]["dataset_sha256"], log["dataset"]["pairs"]),
            base_weights=tuple(log["base_weights"]),
            source={"trained_sha256": trained_sha, "train_key": log["key"]}, validation=validation,
            metrics={"val": evaluate(ds.pairs["val"], val_scores, threshold, val_rank),
                     "test": evaluate(ds.pairs["test"], test_scores, threshold, rank)},
            training=TrainingRecord(log["steps"], log["epochs"], log["seconds"], log["config"],
                                    log["baseline_test"]),
            score_calibration=calibration,
            operating_curve=OperatingCurve("val", tuple(operating_curve(val_scores, val_y))),
            vocabulary=vocabulary, export_seconds=round(time.monotonic() - t0, 1))
        write_bundle(work, out, manifest)
    finally:
        if work.exists():
            shutil.rmtree(work)
    say(quiet, f"ticor export: bundle written to {out}")
    return out
