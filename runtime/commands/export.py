"""``ticor export``: a trained run as a validated fp32 ONNX bundle (build extra)."""

from __future__ import annotations

import argparse
from typing import Any

from ticor.commands._help import describe


def register(sub: Any) -> None:
    export = sub.add_parser("export", help="export a trained run as a validated fp32 ONNX bundle (build extra)",
                            **describe("export"))
    export.add_argument("--preset", default="multilingual", help="preset of the run (default multilingual)")
    export.add_argument("--run", help="run directory (default: CACHE/runs/PRESET)")
    export.add_argument("--out", help="bundle directory (default: CACHE/bundles/PRESET-fp32)")
    export.add_argument("--force", action="store_true", help="export again even when up to date")
    export.add_argument("--full-vocabulary", action="store_true", help="keep the pretrained vocabulary whole instead "
                        "of trimming it to the preset's scripts (a bigger bundle, for comparisons; give --out)")
    export.add_argument("--quiet", action="store_true", help="no progress on stderr")
    export.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ticor._deps import require_modules, require_onnxruntime
    from ticor.commands.train import BUILD_MODULES, check_preset
    from ticor.paths import bundle_dir, run_dir

    require_modules("ticor export", BUILD_MODULES)
    require_onnxruntime()
    from ticor.export.onnx_export import export

    preset = check_preset(args.preset)
    run_path = Path(args.run) if args.run else run_dir(preset)
    out = Path(args.out) if args.out else bundle_dir(preset, "fp32")
    print(export(run_path, out, force=args.force, quiet=args.quiet, trim=not args.full_vocabulary))
    return 0
