"""``ticor quantize`` (build side: needs the dataset the bundle was trained on)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ticor.bundle import read_manifest
from ticor.errors import UsageError
from ticor.paths import cache_dir


def run_quantize(args: argparse.Namespace) -> int:
    from ticor.quantization.quantize import gate_line, quantize

    src = Path(args.bundle)
    m = read_manifest(src)
    if args.calibration < 1:
        raise UsageError("--calibration must be at least 1")
    out = Path(args.out) if args.out else src.parent / f"{m.preset}-{args.precision}"
    data = Path(args.data) if args.data else cache_dir() / "dataset" / "full"
    methods = tuple(x.strip() for x in args.methods.split(",") if x.strip())
    d = quantize(src, out, data, precision=args.precision, calibration=args.calibration, methods=methods,
                 text=args.text, image=args.image, force=args.force, quiet=args.quiet)
    print(out)
    print(f"gate: {gate_line(d)}")
    return 0
