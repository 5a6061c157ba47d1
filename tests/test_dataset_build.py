"""Real builds from the pinned sources: determinism, resume, broken source files."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_DATA, read_jsonl, ticor

pytestmark = pytest.mark.slow


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _tree(root: Path) -> list[str]:
    skip = {".work", "build-log.json"}
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*")
        if p.is_file() and not skip & set(p.relative_to(root).parts)
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, source_roots: dict[str, Path]) -> Path:
    out = tmp_path_factory.mktemp("a") / "data"
    ticor("data", "build", "--subset", "fixture", "--out", str(out), "--jobs", "2", "--quiet")
    return out


def test_two_builds_are_byte_identical(built: Path, tmp_path: Path) -> None:
    other = tmp_path / "data"
    ticor("data", "build", "--subset", "fixture", "--out", str(other), "--jobs", "1", "--quiet")
    assert _manifest(built)["dataset_sha256"] == _manifest(other)["dataset_sha256"]
    files = _tree(built)
    assert files == _tree(other)
    _, mismatch, errors = filecmp.cmpfiles(built, other, files, shallow=False)
    assert not mismatch and not errors


def test_committed_fixture_is_what_the_builder_makes(built: Path) -> None:
    assert _manifest(built)["dataset_sha256"] == _manifest(FIXTURE_DATA)["dataset_sha256"], (
        "tests/fixtures/data is stale: rebuild it with "
        "`ticor data build --subset fixture --out tests/fixtures/data`"
    )


def test_second_build_reuses_the_dataset(built: Path) -> None:
    result = ticor("data", "build", "--subset", "fixture", "--out", str(built))
    assert "up to date, reused" in result.stderr
    assert re.search(r"pairs total: train \d+  val \d+  test \d+", result.stdout), result.stdout


def test_deleted_picture_is_noticed_and_rebuilt(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(built, copy)
    victim = sorted((copy / "images").glob("*/*.png"))[0]
    victim.unlink()
    result = ticor("data", "build", "--subset", "fixture", "--out", str(copy))
    assert "up to date" not in result.stderr
    assert victim.exists()
    assert _manifest(copy)["dataset_sha256"] == _manifest(built)["dataset_sha256"]


def test_build_killed_midway_resumes_to_the_same_dataset(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticor", "data", "build", "--subset", "fixture", "--out", str(out),
         "--jobs", "1", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    index = out / ".work" / "render-index.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if index.exists() and index.read_text().count("\n") >= 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "killed before the end: no manifest may exist"
    before = index.read_text().count("\n")
    result = ticor("data", "build", "--subset", "fixture", "--out", str(out), "--jobs", "1")
    log = json.loads((out / "build-log.json").read_text())
    total = sum(1 for _ in read_jsonl(out / "provenance.jsonl"))
    assert 0 < log["rendered_this_run"] <= total - before + 1
    assert _manifest(out)["dataset_sha256"] == _manifest(built)["dataset_sha256"]
    assert "pairs total:" in result.stdout


def _mirror(src: Path, dest: Path) -> None:
    """A copy of an extracted source made of symlinks (cheap), to corrupt single files in."""
    for path in src.rglob("*"):
        target = dest / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)


def test_corrupt_source_files_are_skipped_and_counted(
    built: Path, tmp_path: Path, source_roots: dict[str, Path]
) -> None:
    provenance = read_jsonl(built / "provenance.jsonl")
    openmoji_ref = next(p["ref"] for p in provenance if p["source"] == "openmoji")
    tux_ref = next(p["ref"] for p in provenance if p["source"] == "tux" and p["ref"].endswith(".png"))
    sources = tmp_path / "sources"
    sources.mkdir()
    for name, root in source_roots.items():
        if name in ("openmoji", "tuxpaint-stamps"):
            _mirror(root, sources / root.name)
        else:
            (sources / root.name).symlink_to(root)
    svg = sources / source_roots["openmoji"].name / "package" / "color" / "svg" / f"{openmoji_ref}.svg"
    svg.unlink()
    svg.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'><path d='M0 0 L10")  # truncated
    png = sources / source_roots["tuxpaint-stamps"].name / "usr/share/tuxpaint/stamps" / tux_ref
    data = png.read_bytes()
    png.unlink()
    png.write_bytes(data[: len(data) // 3])  # truncated PNG
    out = tmp_path / "data"
    ticor("data", "build", "--subset", "fixture", "--out", str(out), "--sources-dir", str(sources), "--quiet")
    skipped = read_jsonl(out / "skipped.jsonl")
    reasons = {(s["source"], s["ref"]): s["reason"] for s in skipped}
    assert reasons[("openmoji", openmoji_ref)].startswith("svg render failed")
    assert reasons[("tux", tux_ref)].startswith("png decode failed")
    manifest = _manifest(out)
    assert manifest["skipped"]["openmoji"]["svg render failed: ParseError"] == 1 or sum(
        manifest["skipped"]["openmoji"].values()) == 1
    assert sum(manifest["skipped"]["tux"].values()) >= 1
    # The rest is still there: one picture fewer from each of the two sources.
    assert manifest["counts"]["images"] == _manifest(built)["counts"]["images"] - 2


def test_summary_command_reads_a_dataset(built: Path) -> None:
    result = ticor("data", "summary", str(built))
    assert "pairs total:" in result.stdout
    missing = ticor("data", "summary", str(built / "nope"), check=False)
    assert missing.returncode == 2 and "no dataset" in missing.stderr
