"""``ticor quantize``: an int8 (CPU) or fp16 (GPU) bundle behind an accuracy gate (build extra)."""

from __future__ import annotations

import argparse
from typing import Any

from ticor.commands._help import describe


def register(sub: Any) -> None:
    quant = sub.add_parser("quantize", help="make an int8 (CPU) or fp16 (GPU) bundle behind an accuracy gate",
                           **describe("quantize"))
    quant.add_argument("bundle", help="the fp32 bundle directory")
    quant.add_argument("--precision", choices=["int8", "fp16"], default="int8",
                       help="int8 for the CPU provider, fp16 for GPU providers (default int8)")
    quant.add_argument("--data", help="the dataset the bundle was trained on (default: CACHE/dataset/full)")
    quant.add_argument("--out", help="output bundle (default: next to the fp32 one, PRESET-PRECISION)")
    quant.add_argument("--calibration", type=int, default=256, help="train pictures for int8 calibration (default 256)")
    quant.add_argument("--methods", default="minmax,entropy,percentile",
                       help="int8 calibration methods to compare, comma-separated (default: all three)")
    quant.add_argument("--text", default="auto", metavar="GRAPH",
                       help="text graph: auto (the default: fastest that keeps the gate on val, else fp32), fp32, "
                            "int8-rowwise, fp16")
    quant.add_argument("--image", default="auto", metavar="GRAPH",
                       help="image graph: auto (the default), fp32, int8-weights (stored int8, fp32 arithmetic), "
                            "int8-minmax, int8-entropy, int8-percentile (integer kernels), fp16")
    quant.add_argument("--force", action="store_true", help="quantize again even when up to date")
    quant.add_argument("--quiet", action="store_true", help="no progress on stderr")
    quant.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ticor._deps import require_modules, require_onnxruntime
    from ticor.bundle import read_manifest
    from ticor.errors import UsageError
    from ticor.paths import dataset_dir

    require_modules("ticor quantize", ["onnx", "PIL", "numpy"])
    require_onnxruntime()
    from ticor.quantization.quantize import gate_line, quantize

    src = Path(args.bundle)
    m = read_manifest(src)
    if args.calibration < 1:
        raise UsageError("--calibration must be at least 1")
    out = Path(args.out) if args.out else src.parent / f"{m.preset}-{args.precision}"
    data = Path(args.data) if args.data else dataset_dir()
    methods = tuple(x.strip() for x in args.methods.split(",") if x.strip())
    done = quantize(src, out, data, precision=args.precision, calibration=args.calibration, methods=methods,
                    text=args.text, image=args.image, force=args.force, quiet=args.quiet)
    print(out)
    print(f"gate: {gate_line(done)}")
    return 0
