"""Which picture size: accuracy on both domains against image-branch cost, side by side.

For each size (default 128, 160, 192, 224 px) and on the held-out data of a built dataset:

- the photos of the val and test splits, prepared from their original files exactly as the
  runtime prepares a user's photo (:class:`~ticor.preprocess.ImageSpec` at that size), and the
  drawings (emoji, Tux Paint, clip art) of the test split, re-rendered from their sources at
  that size by the dataset's own renderer;
- **ConSE probe** (no training at all): MobileNetV2's ImageNet probabilities mapped into the
  pretrained text encoder's space through the class names (top-k weighted), against the
  captions' pretrained embeddings by cosine: what the ImageNet head knows at that size;
- **trained at 128, run at N** (``--run``): a training run's model fed pictures of that size
  (the branch is fully convolutional), so the effect of the size alone, without retraining;
- **cost**: the image branch exported to ONNX at that size, onnxruntime on the CPU, median
  latency at batch 1 and batch 64; and the frozen trunk's time per 1,000 pictures (the part of
  training that grows with the pixel count, cached once per dataset).

Photo rows: caption->photo recall@1 among the held-out photos (captions equal as text count as
one; every photo of a caption's concept is a hit) and ROC-AUC on the photo pairs. Drawing
row: ROC-AUC on the test split's drawing pairs.

    python -m ticor.benchmarks.resolution [--data DATASET] [--run RUN] [--sizes 128 160 192 224]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ticor.evaluation import Dataset, load_dataset, norm_text, read_jsonl
from ticor.metrics import recall_at_k, roc_auc
from ticor.paths import cache_path

SIZES = (128, 160, 192, 224)


def _sets(ds: Dataset) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(photo pairs of val+test, drawing pairs of test)."""
    photos = [r for s in ("val", "test") for r in ds.pairs[s] if r["family"] == "photo"]
    drawings = [r for r in ds.pairs["test"] if r["family"] != "photo"]
    return photos, drawings


def _render_jobs(ds: Dataset, images: set[str]) -> dict[str, Any]:
    """Dataset picture -> the render job that made it (from provenance and the catalog)."""
    from ticor.dataset import catalog
    from ticor.dataset.sources import fetch_all

    roots = fetch_all(log=lambda _m: None)
    concepts, _, _ = catalog.all_concepts(roots)
    jobs = {job.key: job for c in concepts for _, job in c.jobs}
    out = {}
    for row in read_jsonl(ds.root / "provenance.jsonl"):
        if row["image"] in images:
            out[row["image"]] = jobs[f"{row['source']}:{row['ref']}"]
    return out


def _pixels(jobs: dict[str, Any], images: list[str], size: int) -> np.ndarray:
    """``[N, 3, size, size]``: photos from their original files through the runtime's recipe,
    drawings rendered at ``size`` and prepared the same way."""
    from PIL import Image

    from ticor.dataset.render import render
    from ticor.preprocess import ImageSpec, image_array, load_image

    spec = ImageSpec(size=size)
    out = np.empty((len(images), 3, size, size), np.float32)
    for i, name in enumerate(images):
        job = jobs[name]
        if job.kind == "photo":
            out[i] = load_image(job.ref, spec)
        else:
            res = render(job, size)
            if res.png is None:
                raise RuntimeError(f"{name} no longer renders: {res.reason}")
            with Image.open(io.BytesIO(res.png)) as im:
                out[i] = image_array(im, spec)
    return out


def _metrics(rows: list[dict[str, Any]], score: Callable[[np.ndarray, np.ndarray], np.ndarray],
             tv: dict[str, np.ndarray], iv: dict[str, np.ndarray], ds: Dataset, with_rank: bool) -> dict[str, float]:
    texts = sorted({r["text"] for r in rows})
    images = sorted({r["image"] for r in rows})
    t = np.stack([tv[x] for x in texts])
    i = np.stack([iv[x] for x in images])
    ti, ii = {x: k for k, x in enumerate(texts)}, {x: k for k, x in enumerate(images)}
    s = score(t[[ti[r["text"]] for r in rows]], i[[ii[r["image"]] for r in rows]])
    out = {"roc_auc": roc_auc(np.array([r["label"] for r in rows]), s)}
    if with_rank:
        unique = sorted({norm_text(x): x for x in texts}.values())
        matrix = np.stack([score(np.repeat(t[[ti[x]]], len(images), 0), i) for x in unique])
        truth = [{ii[p] for p in ds.positives_of(x) if p in ii} for x in unique]
        keep = [k for k, tr in enumerate(truth) if tr]
        out.update(recall_at_k(matrix[keep], [truth[k] for k in keep], ks=(1, 5)))
        out["captions"], out["photos"] = len(keep), len(images)
    return out


def _latency(branch: Any, size: int, threads: int, runs: int) -> dict[str, float]:
    import onnxruntime as ort
    import torch

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as `ticor export` uses
        path = Path(tmp) / "image.onnx"
        torch.onnx.export(branch, (torch.zeros(2, 3, size, size),), str(path), input_names=["pixel_values"],
                          output_names=["image_embedding"], dynamic_axes={"pixel_values": {0: "batch"}},
                          opset_version=17, dynamo=False)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    out = {}
    for batch, n in ((1, runs), (64, max(3, runs // 10))):
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        sess.run(None, {"pixel_values": x})
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            sess.run(None, {"pixel_values": x})
            times.append((time.perf_counter() - t0) * 1e3)
        out[f"b{batch}_ms"] = statistics.median(times)
    return out


def study(data: Path, run: Path | None, sizes: tuple[int, ...], threads: int = 2, runs: int = 50,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    from ticor.preprocess import encode_texts, load_tokenizer
    from ticor.training.features import fill_conse_table, text_features
    from ticor.training.model import PRESETS, MatchModel, load_backbones

    torch.set_num_threads(threads)
    ds = load_dataset(data)
    photos, drawings = _sets(ds)
    images = sorted({r["image"] for r in photos + drawings})
    texts = sorted({r["text"] for r in photos + drawings})
    log(f"resolution study: {len({r['image'] for r in photos})} held-out photos, "
        f"{len({r['image'] for r in drawings})} test drawings, {len(texts)} captions")
    jobs = _render_jobs(ds, set(images))
    preset = PRESETS["multilingual"]
    bb = load_backbones(preset)
    probe = MatchModel(preset, bb.bert, bb.cnn).eval()  # pretrained parts; the ConSE table filled below
    feat = cache_path("features")
    tok = load_tokenizer(bb.tokenizer, preset.text_spec)
    fill_conse_table(probe, Path(bb.tokenizer), preset.text_spec, feat, bb.text_weights_id)
    # the captions' pretrained pooled embeddings: the training cache's own (same weights, same texts)
    tf = text_features(probe.text, Path(bb.tokenizer), preset.text_spec, texts, feat, bb.text_weights_id, quiet=True)
    probe_tv = dict(zip(texts, torch.nn.functional.normalize(tf.pooled, dim=-1).numpy()))
    trained = None
    if run is not None:
        from ticor.benchmarks._common import load_torch_model

        trained, _, _ = load_torch_model(run, "multilingual")
        with torch.no_grad():
            emb = []
            for s in range(0, len(texts), 128):
                ids, mask = (torch.from_numpy(a) for a in encode_texts(tok, texts[s : s + 128], preset.text_spec))
                emb.append(trained.text(ids, mask))
            trained_tv = dict(zip(texts, torch.cat(emb).numpy()))

        def head(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return trained.head(torch.from_numpy(a), torch.from_numpy(b)).numpy()

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a * b).sum(-1)

    rows: list[dict[str, Any]] = []
    for size in sizes:
        t0 = time.perf_counter()
        px = _pixels(jobs, images, size)
        prep = time.perf_counter() - t0
        x = torch.from_numpy(px)
        with torch.no_grad():
            t0 = time.perf_counter()
            trunk = torch.cat([probe.image.trunk(x[s : s + 64]) for s in range(0, len(x), 64)])
            trunk_s = (time.perf_counter() - t0) / len(x) * 1000
            cv = torch.nn.functional.normalize(probe.image.conse(trunk), dim=-1).numpy()
        probe_iv = dict(zip(images, cv))
        row: dict[str, Any] = {"size": size, "trunk_s_per_1000": trunk_s, "prepare_s_per_1000": prep / len(x) * 1000,
                               "probe": {"photo": _metrics(photos, cosine, probe_tv, probe_iv, ds, True),
                                         "drawing": _metrics(drawings, cosine, probe_tv, probe_iv, ds, False)}}
        if trained is not None:
            with torch.no_grad():
                iv = torch.cat([trained.image(x[s : s + 64]) for s in range(0, len(x), 64)]).numpy()
            tiv = dict(zip(images, iv))
            row["trained"] = {"photo": _metrics(photos, head, trained_tv, tiv, ds, True),
                              "drawing": _metrics(drawings, head, trained_tv, tiv, ds, False)}
            row["latency"] = _latency(trained.image, size, threads, runs)
        rows.append(row)
        log(_line(row))
    return {"dataset": ds.sha256, "run": str(run) if run else None, "threads": threads, "rows": rows}


def _line(r: dict[str, Any]) -> str:
    p, d = r["probe"]["photo"], r["probe"]["drawing"]
    s = (f"{r['size']:>4} px | probe: photo R@1 {p['recall@1']:.3f} AUC {p['roc_auc']:.3f}, drawing AUC "
         f"{d['roc_auc']:.3f}")
    if "trained" in r:
        tp, td, lat = r["trained"]["photo"], r["trained"]["drawing"], r["latency"]
        s += (f" | trained@128: photo R@1 {tp['recall@1']:.3f} AUC {tp['roc_auc']:.3f}, drawing AUC "
              f"{td['roc_auc']:.3f} | image b1 {lat['b1_ms']:.2f} ms, b64 {lat['b64_ms']:.1f} ms")
    return s + f" | trunk {r['trunk_s_per_1000']:.1f} s/1000"


def table(result: dict[str, Any]) -> str:
    """The study as a Markdown table."""
    head = ("| size | probe photo R@1 | probe photo AUC | probe drawing AUC | trained@128 photo R@1 | "
            "trained@128 photo AUC | trained@128 drawing AUC | image b1 ms | image b64 ms | trunk s/1000 |")
    lines = [head, "|" + "---|" * 10]
    for r in result["rows"]:
        p, d = r["probe"]["photo"], r["probe"]["drawing"]
        t = r.get("trained", {})
        lat = r.get("latency", {})

        def f(x: Any, fmt: str = ".3f") -> str:
            return format(x, fmt) if x is not None else "–"

        lines.append(f"| {r['size']} | {f(p['recall@1'])} | {f(p['roc_auc'])} | {f(d['roc_auc'])} | "
                     f"{f(t.get('photo', {}).get('recall@1'))} | {f(t.get('photo', {}).get('roc_auc'))} | "
                     f"{f(t.get('drawing', {}).get('roc_auc'))} | {f(lat.get('b1_ms'), '.2f')} | "
                     f"{f(lat.get('b64_ms'), '.1f')} | {r['trunk_s_per_1000']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.resolution", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=cache_path("dataset", "full"))
    ap.add_argument("--run", type=Path, default=cache_path("runs", "multilingual"),
                    help="a multilingual training run (its model fed each size); 'none' to skip")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the study here")
    args = ap.parse_args(argv)
    run = None if str(args.run) == "none" else args.run
    result = study(args.data, run, tuple(args.sizes), args.threads)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
