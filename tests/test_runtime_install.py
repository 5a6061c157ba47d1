"""The runtime install (`ticor[cpu]`) must not pull torch, transformers or the build side."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

FORBIDDEN = {"torch", "transformers", "optimum", "optimum-onnx", "onnx", "cairosvg", "onnxruntime-gpu"}


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("runtime-venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{REPO}[cpu]"],
        check=True, capture_output=True, text=True,
    )
    return env_dir


def test_runtime_install_has_no_torch_or_build_packages(runtime_env: Path) -> None:
    python = runtime_env / "bin" / "python"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines() if "==" in line}
    assert {"ticor", "numpy", "pillow", "tokenizers", "onnxruntime"} <= names
    assert not names & FORBIDDEN, names & FORBIDDEN


def test_runtime_imports_and_answers(runtime_env: Path) -> None:
    python = runtime_env / "bin" / "python"
    code = ("import sys, ticor, ticor.bundle, ticor.metrics, ticor.preprocess; ticor.require_onnxruntime(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "[]"
    version = subprocess.run(
        [str(runtime_env / "bin" / "ticor"), "--version"], check=True, capture_output=True, text=True
    )
    assert "onnxruntime distribution: onnxruntime" in version.stdout


def test_build_command_without_the_extra_says_what_to_install(runtime_env: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(runtime_env / "bin" / "ticor"), "data", "build", "--out", str(tmp_path / "d")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "pip install 'ticor[cpu,build]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "d").exists()


def test_train_without_the_extra_says_what_to_install(runtime_env: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(runtime_env / "bin" / "ticor"), "train", "--out", str(tmp_path / "run")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "pip install 'ticor[cpu,build]'" in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("extras", "runtime_build"),
    [("cpu,build", "onnxruntime"), ("gpu,build", "onnxruntime-gpu"), ("gpu", "onnxruntime-gpu")],
)
def test_every_extra_combination_resolves_to_exactly_one_onnxruntime(
    extras: str, runtime_build: str, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), f"{REPO}[{extras}]"],
        check=True, capture_output=True, text=True,
    )
    import json

    names = {i["metadata"]["name"].lower() for i in json.loads(report.read_text())["install"]}
    builds = sorted(n for n in names if n.startswith("onnxruntime"))
    assert builds == [runtime_build]
    if "build" in extras:
        torch = next(i for i in json.loads(report.read_text())["install"]
                     if i["metadata"]["name"].lower() == "torch")
        assert torch["metadata"]["version"].startswith("2.13.0")
    else:
        assert "torch" not in names and "transformers" not in names
