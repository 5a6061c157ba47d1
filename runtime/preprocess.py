"""Input preparation shared by training, export and the runtime (numpy + Pillow + tokenizers).

The settings travel in the bundle manifest, so a bundle carries the exact recipe its graphs
were trained with: the trainer caches features through :func:`image_array`, the runtime feeds
its graphs through the same function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ticor.errors import UsageError
from ticor.imaging import BACKGROUND, flatten, to_rgba

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class ImageSpec:
    """How a decoded picture becomes the image graph's ``[3, size, size]`` float32 input.

    EXIF orientation applied, transparency composited on ``background``, padded to a centred
    square with ``background`` (nothing is cropped away), resized with ``resize_filter``,
    scaled to [0, 1] and normalised with ``mean``/``std``, channels first.
    """

    size: int = 128
    resize_filter: str = "lanczos"
    fit: str = "pad"
    background: tuple[int, int, int] = BACKGROUND
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    exif_transpose: bool = True
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.resize_filter not in _FILTERS:
            raise UsageError(f"unknown resize filter {self.resize_filter!r}; known: {sorted(_FILTERS)}")
        if self.fit != "pad" or self.layout != "NCHW" or self.dtype != "float32":
            raise UsageError("only fit='pad', layout='NCHW', dtype='float32' are supported")
        if self.size < 16:
            raise UsageError(f"image size {self.size} is too small")

    def to_json(self) -> dict[str, Any]:
        """As stored in a manifest (tuples as JSON lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageSpec:
        return cls(**{**d, "background": tuple(d["background"]), "mean": tuple(d["mean"]),
                      "std": tuple(d["std"])})


def image_array(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """``[3, size, size]`` float32 for one decoded Pillow image."""
    rgb = flatten(to_rgba(image), spec.background)
    w, h = rgb.size
    if w != h:
        side = max(w, h)
        square = Image.new("RGB", (side, side), spec.background)
        square.paste(rgb, ((side - w) // 2, (side - h) // 2))
        rgb = square
    if rgb.size != (spec.size, spec.size):
        rgb = rgb.resize((spec.size, spec.size), _FILTERS[spec.resize_filter])
    arr = np.asarray(rgb, dtype=np.float32) / np.float32(255.0)
    arr = (arr - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image(path: Path | str, spec: ImageSpec) -> np.ndarray:
    """Decode ``path`` fully (a truncated file raises here, not later) and prepare it."""
    with Image.open(path) as im:
        im.load()
        return image_array(im, spec)


@dataclass(frozen=True)
class TextSpec:
    """How a caption becomes ``input_ids``/``attention_mask``: prefix, tokenizer, max length."""

    prefix: str
    max_length: int
    pad_token: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TextSpec:
        return cls(**d)


def load_tokenizer(path: Path | str, spec: TextSpec) -> Any:
    """A ``tokenizers.Tokenizer`` with the spec's truncation and padding switched on."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    pad_id = tok.token_to_id(spec.pad_token)
    if pad_id is None:
        raise UsageError(f"{path}: tokenizer has no pad token {spec.pad_token!r}")
    tok.enable_truncation(max_length=spec.max_length)
    tok.enable_padding(pad_id=pad_id, pad_token=spec.pad_token)
    return tok


def encode_texts(tokenizer: Any, texts: list[str], spec: TextSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` int64 ``[N, S]``, padded to the longest text in the batch."""
    if isinstance(texts, str):
        raise UsageError("texts must be a list of strings, not a single string")
    for t in texts:
        if not isinstance(t, str):
            raise UsageError(f"a text must be a str, got {type(t).__name__}")
    encs = tokenizer.encode_batch([spec.prefix + t for t in texts])
    ids = np.array([e.ids for e in encs], dtype=np.int64).reshape(len(texts), -1)
    mask = np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(len(texts), -1)
    return ids, mask
