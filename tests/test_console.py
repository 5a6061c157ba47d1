"""Progress on stderr: redrawn in place on a terminal, whole lines every few percent elsewhere."""

from __future__ import annotations

import io

from ticor._console import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_to_a_log_file_writes_whole_lines_every_few_percent() -> None:
    log = io.StringIO()
    bar = Progress("ticor train: step", 200, stream=log, every=10)
    for i in range(1, 201):
        bar.update(i)
    bar.note("  step 200: val ROC-AUC 0.9")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 9 + 2  # 10%, 20%, ... 90%, then the note and the final line
    assert lines[0].startswith("ticor train: step: 20/200") and lines[-1].startswith("ticor train: step: 200/200")


def test_progress_on_a_terminal_redraws_one_line() -> None:
    tty = _Tty()
    bar = Progress("render", 10, stream=tty)
    bar.update(3)
    bar.note("a message")
    bar.close()
    out = tty.getvalue()
    assert out.startswith("\rrender: 3/10") and "\na message\n" in out and out.endswith("   \n")


def test_quiet_progress_writes_nothing() -> None:
    log = io.StringIO()
    bar = Progress("x", 5, quiet=True, stream=log)
    bar.update(5)
    bar.note("n")
    bar.close()
    assert log.getvalue() == ""
