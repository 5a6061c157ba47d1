from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def ticor(*args: str, env: dict | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the installed command line in a child process."""
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run(
        [sys.executable, "-m", "ticor", *args], capture_output=True, text=True, env=full_env, **kw
    )
    if check and result.returncode != 0:
        raise AssertionError(f"ticor {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def source_roots() -> dict[str, Path]:
    """The extracted, verified sources (fetched into the ticor cache on first use)."""
    from ticor.dataset.sources import fetch_all

    return fetch_all(log=lambda _msg: None)


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    if not (FIXTURE_DATA / "manifest.json").exists():
        pytest.fail(f"the committed fixture is missing: {FIXTURE_DATA}")
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def fp32_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real multilingual fp32 bundle: trained 60 steps on the committed fixture, exported, validated
    (after fewer steps the model still ranks the fixture's val pairs below chance: no calibration)."""
    root = tmp_path_factory.mktemp("q")
    ticor("train", "--data", str(FIXTURE_DATA), "--out", str(root / "run"), "--max-steps", "60", "--batch", "16",
          "--quiet")
    ticor("export", "--run", str(root / "run"), "--out", str(root / "multilingual-fp32"), "--quiet")
    return root / "multilingual-fp32"
