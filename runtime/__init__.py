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

__all__ = [
    "MissingDependencyError",
    "TicorError",
    "UsageError",
    "__version__",
    "cache_dir",
    "onnxruntime_status",
    "require_onnxruntime",
]
