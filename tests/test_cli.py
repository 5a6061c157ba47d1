"""The command line and the optional-dependency scheme."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ticor
from ticor._deps import MissingDependencyError, onnxruntime_status, require_modules


def test_version_answers_without_heavy_imports() -> None:
    code = (
        "import sys; from ticor.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'numpy', 'cairosvg')"
        " if m in sys.modules)\nprint('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ticor 0.1.0" in out.stdout
    assert "HEAVY []" in out.stdout


def test_import_ticor_loads_no_build_side_package() -> None:
    code = "import sys, ticor; print(sorted(m for m in ('torch','transformers','optimum','onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("installed", "ok", "needle"),
    [
        ([], False, "pip install 'ticor[cpu]'"),
        (["onnxruntime"], True, None),
        (["onnxruntime-gpu"], True, None),
        (["onnxruntime", "onnxruntime-gpu"], False, "pip uninstall -y onnxruntime onnxruntime-gpu"),
        (["numpy", "onnxruntime-gpu"], True, None),
    ],
)
def test_onnxruntime_status(installed: list[str], ok: bool, needle: str | None) -> None:
    status = onnxruntime_status(installed)
    assert status.ok is ok
    problem = status.problem()
    if needle is None:
        assert problem is None
    else:
        assert problem is not None and needle in problem


def test_this_environment_has_exactly_one_onnxruntime() -> None:
    status = onnxruntime_status()
    assert status.ok, status.problem()


def test_missing_build_module_names_the_install_line() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'ticor\[cpu,build\]'"):
        require_modules("ticor train", ["surely_not_a_module_ticor"])


def test_unknown_subcommand_is_a_usage_error() -> None:
    result = ticor("frobnicate", check=False)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_build_size_is_checked() -> None:
    result = ticor("data", "build", "--subset", "fixture", "--size", "4", check=False)
    assert result.returncode != 0
    assert "--size must be between 32 and 1024" in result.stderr
