"""The layout's rules, checked on the source: who may import whom (ARCHITECTURE.md), the manifest
read only through its dataclasses, every user-facing error in one family, files of one role."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = {"ticor": "runtime", "ticor.dataset": "dataset", "ticor.training": "training",
            "ticor.export": "export", "ticor.quantization": "quantization", "ticor.benchmarks": "benchmarks"}
BUILD_SIDE = {"ticor.dataset", "ticor.training", "ticor.export", "ticor.quantization", "ticor.benchmarks"}
HEAVY = {"torch", "transformers", "optimum", "onnx", "onnx_ir", "cairosvg", "safetensors", "openvino", "matplotlib"}

#: package -> what it must never import (top-level module names, or ticor packages)
FORBIDDEN = {
    "ticor": HEAVY | BUILD_SIDE,
    "ticor.dataset": {"torch", "transformers", "optimum", "onnx", "safetensors", "ticor.training", "ticor.export",
                      "ticor.quantization", "ticor.benchmarks"},
    "ticor.training": {"onnx", "optimum", "ticor.export", "ticor.quantization", "ticor.benchmarks"},
    "ticor.export": {"optimum", "ticor.quantization", "ticor.benchmarks"},
    "ticor.quantization": {"torch", "transformers", "optimum", "safetensors", "ticor.training", "ticor.export",
                           "ticor.benchmarks"},
    "ticor.benchmarks": set(),
}
#: Runtime extras the runtime may import inside a function (where the extra is needed), never at module level.
RUNTIME_EXTRAS = {"matplotlib"}


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, inside a function)`` for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def _matches(module: str, rule: str) -> bool:
    return module == rule or module.startswith(rule + ".")


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_import_rules_hold(package: str) -> None:
    folder = PACKAGES[package]
    bad = []
    for path in _modules(folder):
        commands = folder == "runtime" and path.parent.name == "commands"
        for module, line, in_function in _imports(path):
            if commands and in_function:
                continue  # a command's run() may import the build side, after checking its extra
            if package == "ticor" and in_function and any(_matches(module, x) for x in RUNTIME_EXTRAS):
                continue  # the plot extra, imported by the function that draws
            if commands and any(_matches(module, h) for h in HEAVY | BUILD_SIDE):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module} at module level")
            elif any(_matches(module, rule) for rule in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_rule_walker_sees_function_level_imports(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text("import os\ndef f():\n    import torch\n    from ticor.training import model\n")
    assert _imports(p) == [("os", 1, False), ("torch", 3, True), ("ticor.training", 4, True)]


def test_no_manifest_key_is_read_by_string_outside_the_bundle_module() -> None:
    import re

    from ticor.bundle import Manifest

    assert not hasattr(Manifest, "data") and not hasattr(Manifest, "__getitem__")
    pattern = re.compile(r"\.data\[|\.data\.get\(|json\.loads?\([^)]*MANIFEST")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
            for folder in PACKAGES.values() for p in _modules(folder) if p.name != "bundle.py" or folder != "runtime"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not hits, "\n".join(hits)


def test_every_exception_is_in_the_error_family() -> None:
    import ticor.errors as errors

    internal = {("dataset/render.py", "Skip")}  # control flow inside the renderer, never seen by a user
    stray = []
    for folder in PACKAGES.values():
        for path in _modules(folder):
            rel = str(path.relative_to(REPO))
            if rel == "runtime/errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                        isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id == "Exception")
                        for b in node.bases) and (rel, node.name) not in internal:
                    stray.append(f"{rel}: class {node.name}")
    assert not stray, "exceptions outside ticor.errors:\n" + "\n".join(stray)
    family = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(c, errors.TicorError) for c in family)
    assert {c.__name__ for c in family} >= {"BundleError", "InputError", "ProviderError", "GateError", "FetchError",
                                            "HashMismatchError", "SourceError", "BuildError", "FormatError",
                                            "ExportValidationError", "ScoreFailed", "MissingDependencyError"}


def test_each_command_owns_its_parser() -> None:
    import importlib

    from ticor.commands import COMMANDS

    for name in COMMANDS:
        mod = importlib.import_module(f"ticor.commands.{name}")
        assert callable(mod.register) and callable(mod.run), name
    cli = (REPO / "runtime" / "cli.py").read_text(encoding="utf-8")
    assert "add_argument(" in cli and cli.count("add_argument(") == 1  # --version only; the rest is per command


def test_no_source_file_mixes_roles_past_400_lines() -> None:
    long = [f"{p.relative_to(REPO)}: {n} lines" for folder in PACKAGES.values() for p in _modules(folder)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450]
    assert not long, "\n".join(long)
