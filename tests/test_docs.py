"""The documentation says what runs: commands in its code blocks exist, its links resolve.

Every ``ticor SUB`` in a fenced code block of the README, ARCHITECTURE.md or docs/ must be a
command whose ``--help`` answers (``ticor data ACTION`` too); every ``python -m ticor...`` module
must exist; every relative link must point at a file or folder of the repository. Every
command's ``--help`` says what it reads and what it writes. The README stays a front page.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
from pathlib import Path

import pytest

from ticor.cli import build_parser
from ticor.commands import COMMANDS

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "ARCHITECTURE.md", REPO / "examples" / "README.md",
        *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
# `ticor SUB` where a command starts: line start, after a prompt, `&&`, `|`, `;`, `$(` or a backtick.
COMMAND = re.compile(r"(?:^|\$ |&& |\| |; |\$\(|`)(?:\S*/)?ticor ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", re.M)
MODULE = re.compile(r"python3? -m (ticor(?:\.[a-z_0-9]+)*)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DATA_ACTIONS = ("fetch", "build", "icons", "summary")


def _code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0, argv
    return out.getvalue()


def _commands_in_docs() -> dict[tuple[str, ...], list[str]]:
    found: dict[tuple[str, ...], list[str]] = {}
    for doc in DOCS:
        for block in _code_blocks(doc.read_text(encoding="utf-8")):
            for m in COMMAND.finditer(block):
                words = m.group(1).split()
                argv = tuple(words if words[0] == "data" and len(words) > 1 else words[:1])
                found.setdefault(argv, []).append(str(doc.relative_to(REPO)))
    return found


def test_docs_exist_and_readme_is_a_front_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    # install, the quick start and the headline figures come before the first page of detail
    first = readme.splitlines()[:120]
    for heading in ("## Install", "## Quick start", "## Headline figures"):
        assert heading in first, heading
    assert len(DOCS) > 10


def test_every_documented_command_answers_help() -> None:
    found = _commands_in_docs()
    assert ("score",) in found and ("bench",) in found  # the scan itself works
    for argv, where in found.items():
        assert argv[0] in COMMANDS, f"`ticor {' '.join(argv)}` in {where} is no command"
        if argv[0] == "data" and len(argv) > 1:
            assert argv[1] in DATA_ACTIONS, f"`ticor {' '.join(argv)}` in {where} is no action"
        _help(list(argv))


def test_every_documented_module_exists() -> None:
    modules = {m for doc in DOCS for block in _code_blocks(doc.read_text(encoding="utf-8"))
               for m in MODULE.findall(block)}
    modules |= {m for doc in DOCS for m in MODULE.findall(doc.read_text(encoding="utf-8"))}
    assert "ticor.benchmarks.runtime" in modules
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert not missing, f"python -m targets that do not exist: {missing}"


def test_every_relative_link_resolves() -> None:
    broken = []
    count = 0
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            count += 1
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert count > 30
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("argv", [[name] for name in COMMANDS] + [["data", a] for a in DATA_ACTIONS])
def test_every_command_help_says_what_it_reads_and_writes(argv: list[str]) -> None:
    text = _help(argv)
    assert "\nreads:" in text and "\nwrites:" in text, argv
    assert "CACHE is $TICOR_CACHE" in text


def test_the_scan_finds_commands_where_they_start() -> None:
    block = "$ ticor score x.csv\nmake run && ticor info DIR\n.venv/bin/ticor data fetch\nsee the ticor bench page\n"
    found = {m.group(1) for m in COMMAND.finditer(block)}
    assert found == {"score x", "info", "data fetch"}
