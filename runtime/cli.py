"""The ``ticor`` command line: builds the parser from :mod:`ticor.commands` and dispatches.

Each command module registers its own parser and imports what it needs only when it runs, so
``ticor --version`` and ``ticor --help`` answer without loading numpy, onnxruntime or torch.
A :class:`~ticor.errors.TicorError` becomes one line on stderr and its exit code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ticor import __version__
from ticor._deps import onnxruntime_status
from ticor.commands import COMMANDS
from ticor.errors import EXIT_INTERRUPTED, TicorError


def _version_text() -> str:
    status = onnxruntime_status()
    ort = ", ".join(status.distributions) or "none (runtime commands need ticor[cpu] or ticor[gpu])"
    return f"ticor {__version__} (onnxruntime distribution: {ort})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticor", description="Text-image correlation: build, quantize and run "
                                                               "matchers.")
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"ticor.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except TicorError as exc:
        print(f"ticor: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("ticor: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
