"""ticor: does this caption match this picture?

The runtime half of the project: numpy, Pillow, tokenizers and one onnxruntime build. It never
imports torch or transformers. The build side lives in ``ticor.dataset`` (the offline
dataset), ``ticor.training`` (the torch model and its training), ``ticor.export`` (ONNX export
and validation), ``ticor.quantization`` (int8/fp16 bundles behind an accuracy gate) and
``ticor.benchmarks``; it needs the ``build`` extra. See ARCHITECTURE.md for what may import what.
"""

from ticor._deps import onnxruntime_status, require_onnxruntime
from ticor.errors import (
    BundleError,
    InputError,
    MissingDependencyError,
    ProviderError,
    TicorError,
    UsageError,
)
from ticor.paths import cache_dir

__version__ = "0.1.0"

_LAZY = {"Matcher": "ticor.matcher", "Match": "ticor.results", "Ranked": "ticor.results",
         "Ranking": "ticor.results"}


def __getattr__(name: str) -> object:  # the runtime facade, imported on first use (keeps `ticor --version` instant)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ticor' has no attribute {name!r}")


__all__ = [
    "BundleError",
    "InputError",
    "Match",
    "Matcher",
    "MissingDependencyError",
    "ProviderError",
    "Ranked",
    "Ranking",
    "TicorError",
    "UsageError",
    "__version__",
    "cache_dir",
    "onnxruntime_status",
    "require_onnxruntime",
]
