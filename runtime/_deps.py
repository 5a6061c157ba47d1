"""Optional dependencies: one onnxruntime build at the runtime, heavy packages on the build side."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass

from ticor.errors import MissingDependencyError

CPU_LINE = "pip install 'ticor[cpu]'"
GPU_LINE = "pip install 'ticor[gpu]'"
BUILD_LINE = "pip install 'ticor[cpu,build]'"
PLOT_LINE = "pip install 'ticor[plot]'"

# Distributions that ship the `onnxruntime` import package.
ONNXRUNTIME_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-training",
)


@dataclass(frozen=True)
class OnnxRuntimeStatus:
    """Which onnxruntime distributions are installed, and whether that is a usable set."""

    distributions: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return len(self.distributions) == 1

    def problem(self) -> str | None:
        if not self.distributions:
            return (
                "onnxruntime is not installed. For CPU inference run:\n"
                f"    {CPU_LINE}\nor, for CUDA/TensorRT providers:\n    {GPU_LINE}"
            )
        if len(self.distributions) > 1:
            names = ", ".join(self.distributions)
            return (
                f"several onnxruntime builds are installed together ({names}); they overwrite "
                "each other's files and GPU providers silently vanish. Keep exactly one:\n"
                f"    pip uninstall -y {' '.join(self.distributions)}\n"
                f"    {CPU_LINE}    (or: {GPU_LINE})"
            )
        return None


def _installed(names: Iterable[str]) -> tuple[str, ...]:
    import importlib.metadata  # here: 30 ms that `import ticor` need not pay

    found = []
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return tuple(found)


def onnxruntime_status(installed: Iterable[str] | None = None) -> OnnxRuntimeStatus:
    """Inspect the installed onnxruntime builds (``installed`` overrides discovery, for tests)."""
    if installed is None:
        return OnnxRuntimeStatus(_installed(ONNXRUNTIME_DISTRIBUTIONS))
    wanted = set(ONNXRUNTIME_DISTRIBUTIONS)
    return OnnxRuntimeStatus(tuple(n for n in installed if n in wanted))


def require_onnxruntime():  # type: ignore[no-untyped-def]
    """Import and return onnxruntime, or raise MissingDependencyError with the install line."""
    problem = onnxruntime_status().problem()
    if problem is not None:
        raise MissingDependencyError(problem)
    import onnxruntime

    return onnxruntime


def require_modules(purpose: str, modules: Iterable[str], line: str = BUILD_LINE) -> None:
    """Raise MissingDependencyError unless every module can be imported (checked, not imported)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"{purpose} needs {', '.join(missing)}, which is not installed. Run:\n    {line}"
        )
