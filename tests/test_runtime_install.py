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


def test_runtime_scores_a_real_bundle_without_torch(runtime_env: Path, fp32_bundle: Path) -> None:
    """Load, score, rank and check preprocessing parity in the runtime-only install."""
    from ticor.dataset.photos import camera_set

    heics = camera_set()["heic"]
    heic = str(heics[0]) if heics else ""
    code = f"""
import json, sys
from pathlib import Path
import numpy as np
import ticor
from ticor.preprocess import load_image
repo = Path({str(REPO)!r})
m = ticor.Matcher.load({str(fp32_bundle)!r}, providers="cpu")
pics = sorted((repo / "tests/fixtures/data/images").glob("*/*.png"))[:6]
r = m.score_batch([("a red apple", p) for p in pics] + [("x", repo / "missing.png")])
assert [x.status for x in r] == ["ok"] * 6 + ["missing"], r
assert len(m.rank("a cat", pics, k=3).hits) == 3
ref = np.load(repo / "tests/fixtures/parity/reference.npz")
meta = json.loads((repo / "tests/fixtures/parity/reference.json").read_text(encoding="utf-8"))
for name, rel in meta["pictures"].items():
    np.testing.assert_allclose(load_image(repo / rel, m.manifest.image_spec), ref["pixels/" + name], atol=1e-6)
ids, mask = m.tokenize(meta["texts"])
assert (ids == ref["input_ids"]).all() and (mask == ref["attention_mask"]).all()
heic = {heic!r}
if heic:  # no pillow-heif here: a phone's HEIC is one row that names the extra to install
    (r,) = m.score_batch([("a photo", heic)])
    assert r.status == "unsupported_format" and "ticor[heif]" in r.error, r
print(sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "transformers", "onnx")))
"""
    out = subprocess.run([str(runtime_env / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         cwd="/", check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
