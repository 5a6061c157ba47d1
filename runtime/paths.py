"""Where ticor keeps downloads, extracted sources and built artefacts.

Everything lives under one cache directory, outside any repository:

* ``$TICOR_CACHE`` if set,
* else ``$XDG_CACHE_HOME/ticor`` if ``XDG_CACHE_HOME`` is set,
* else ``~/.cache/ticor``.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "TICOR_CACHE"


def cache_dir() -> Path:
    """The root cache directory (not created here)."""
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "ticor").resolve()
