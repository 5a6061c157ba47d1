"""``ticor train``: fine-tune a preset on a built dataset (build extra)."""

from __future__ import annotations

import argparse
from typing import Any

from ticor.commands._help import describe
from ticor.errors import UsageError

#: What the training and export commands need from the build extra.
BUILD_MODULES = ["torch", "transformers", "safetensors", "onnx", "PIL", "numpy"]


def register(sub: Any) -> None:
    train = sub.add_parser("train", help="train a preset on a built dataset (build extra)", **describe("train"))
    train.add_argument("--preset", default="multilingual", help="multilingual (default) or en-small")
    train.add_argument("--data", help="dataset directory (default: CACHE/dataset/full)")
    train.add_argument("--out", help="run directory (default: CACHE/runs/PRESET)")
    train.add_argument("--epochs", type=int, help="passes over the matching train pairs")
    train.add_argument("--batch", type=int, help="matching pairs per step")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    train.add_argument("--force", action="store_true", help="retrain even when the run is up to date")
    train.add_argument("--quiet", action="store_true", help="no progress on stderr")
    train.add_argument("--json", action="store_true", help="print the training log as JSON")
    train.set_defaults(handler=run)


def check_preset(name: str) -> str:
    from ticor.training.model import PRESETS

    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return name


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    from pathlib import Path

    from ticor._deps import require_modules
    from ticor.paths import dataset_dir, run_dir

    require_modules("ticor train", BUILD_MODULES)
    from ticor.training.train import TrainConfig, report, train

    preset = check_preset(args.preset)
    overrides = {k: v for k, v in {"epochs": args.epochs, "batch": args.batch,
                                   "max_steps": args.max_steps}.items() if v is not None}
    for k, v in overrides.items():
        if v < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be at least 1")
    cfg = dataclasses.replace(TrainConfig(preset=preset), **overrides)
    data = Path(args.data) if args.data else dataset_dir()
    out = Path(args.out) if args.out else run_dir(preset)
    log = train(data, out, cfg, force=args.force, quiet=args.quiet)
    print(json.dumps(log, indent=2, sort_keys=True) if args.json else report(log))
    return 0
