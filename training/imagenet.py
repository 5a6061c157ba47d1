"""The 1,000 ImageNet class names, in the order of MobileNetV2's classifier outputs.

Read from torchvision's ``torchvision/models/_meta.py`` (a pinned, sha256-checked file taken
out of the torchvision wheel, :data:`ticor.training.weights.ASSETS`), as text: the list
assigned to ``_IMAGENET_CATEGORIES`` is parsed with :func:`ast.literal_eval`, nothing is
imported or executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from ticor.errors import SourceError

CLASSES = 1000
_NAME = "_IMAGENET_CATEGORIES"


def imagenet_names(path: Path | None = None) -> list[str]:
    """The class names (``path``: the ``_meta.py`` file; default: the pinned asset, fetched)."""
    if path is None:
        from ticor.training import weights

        path = weights.fetch("torchvision-imagenet-names")
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == _NAME for t in node.targets):
            names = ast.literal_eval(node.value)
            break
    else:
        raise SourceError(f"{path}: no {_NAME} list")
    if not (isinstance(names, list) and len(names) == CLASSES and all(isinstance(n, str) and n for n in names)):
        raise SourceError(f"{path}: {_NAME} is not a list of {CLASSES} names")
    return names
