"""ticor: does this caption match this picture?

The runtime half of the project: numpy, Pillow, tokenizers and one onnxruntime build.
It never imports torch or transformers; the build side (dataset, training, export,
quantization) lives in ``ticor.dataset``, ``ticor.export`` and ``ticor.quantization``
and needs the ``build`` extra.
"""

from ticor._deps import onnxruntime_status, require_onnxruntime
from ticor.errors import MissingDependencyError, TicorError, UsageError
from ticor.paths import cache_dir

__version__ = "0.1.0"

_LAZY = {"Matcher": "ticor.matcher", "Match": "ticor.matcher", "Ranked": "ticor.matcher",
         "Ranking": "ticor.matcher", "InputError": "ticor.inputs", "BundleError": "ticor.bundle",
         "ProviderError": "ticor.sessions"}


def __getattr__(name: str):  # the runtime facade, imported on first use (keeps `ticor --version` instant)
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
