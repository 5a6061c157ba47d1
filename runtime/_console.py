"""Progress for the long-running commands, on stderr so stdout carries only results.

On a terminal a progress line is redrawn in place (at most twice a second). Anywhere else (a
log file, a pipe, CI) no carriage return is ever written: one whole line each time another
``every`` percent is done, and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


class Progress:
    """``update(done)`` as work goes on, ``close()`` once at the end."""

    def __init__(self, label: str, total: int | None, quiet: bool = False, stream: TextIO | None = None,
                 every: float = 5.0, start: int = 0) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.every, self.start = every, start
        self.t0 = time.monotonic()
        self.last_draw = 0.0
        self.next_pct = every
        self.drawn = False
        self.done = start

    def _line(self, done: int, extra: str) -> str:
        rate = (done - self.start) / max(time.monotonic() - self.t0, 1e-9)
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and done < self.total:
            eta = f", ETA {(self.total - done) / rate:.0f} s"
        return f"{self.label}: {done}{of} ({rate:.0f}/s{eta}){' ' + extra if extra else ''}"

    def update(self, done: int, extra: str = "") -> None:
        self.done = done
        if self.quiet:
            return
        if self.tty:
            now = time.monotonic()
            if now - self.last_draw >= 0.5:
                self.last_draw = now
                self.stream.write("\r" + self._line(done, extra) + "   ")
                self.stream.flush()
                self.drawn = True
            return
        if self.total:
            pct = 100.0 * done / self.total
            if pct >= self.next_pct and done < self.total:
                while self.next_pct <= pct:
                    self.next_pct += self.every
                self.stream.write(self._line(done, extra) + "\n")
                self.stream.flush()

    def note(self, msg: str) -> None:
        """A line of its own between progress updates."""
        if self.quiet:
            return
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.drawn = False
        self.stream.write(msg + "\n")
        self.stream.flush()

    def step(self, n: int = 1, extra: str = "") -> None:
        self.update(self.done + n, extra)

    def close(self, extra: str = "") -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + self._line(self.done, extra) + "   \n")
        else:
            self.stream.write(self._line(self.done, extra) + "\n")
        self.stream.flush()
