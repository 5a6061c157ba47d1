"""``ticor train`` and ``ticor export`` (build side)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ticor.errors import UsageError
from ticor.export.model import PRESETS
from ticor.paths import cache_dir


def _preset(name: str) -> str:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return name


def run_train(args: argparse.Namespace) -> int:
    from ticor.export.train import TrainConfig, default_run_dir, report, train

    preset = _preset(args.preset)
    overrides = {k: v for k, v in {"epochs": args.epochs, "batch": args.batch,
                                   "max_steps": args.max_steps}.items() if v is not None}
    for k, v in overrides.items():
        if v < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be at least 1")
    cfg = dataclasses.replace(TrainConfig(preset=preset), **overrides)
    data = Path(args.data) if args.data else cache_dir() / "dataset" / "full"
    out = Path(args.out) if args.out else default_run_dir(preset)
    log = train(data, out, cfg, force=args.force, quiet=args.quiet)
    print(json.dumps(log, indent=2, sort_keys=True) if args.json else report(log))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ticor.export.onnx_export import default_bundle_dir, export
    from ticor.export.train import default_run_dir

    preset = _preset(args.preset)
    run = Path(args.run) if args.run else default_run_dir(preset)
    out = Path(args.out) if args.out else default_bundle_dir(preset)
    print(export(run, out, force=args.force, quiet=args.quiet))
    return 0
