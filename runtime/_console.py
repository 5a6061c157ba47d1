"""Progress lines for the long-running commands: stderr, so stdout carries only results."""

from __future__ import annotations

import sys


def say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
