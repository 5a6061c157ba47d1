"""Input preparation shared by training, export and the runtime (numpy + Pillow + tokenizers).

The settings travel in the bundle manifest, so a bundle carries the exact recipe its graphs
were trained with: the trainer caches features through :func:`image_array`, the runtime feeds
its graphs through the same function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ticor.errors import UsageError
from ticor.imaging import BACKGROUND, to_rgb, to_rgba

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC,
            "bilinear": Image.Resampling.BILINEAR}
DECODE_PATHS = ("reduced", "full")
#: Modes ``Image.reduce`` averages as they are; straight alpha is reduced premultiplied.
_REDUCE_AS_IS = ("L", "RGB", "CMYK")
_PREMULTIPLIED = {"RGBA": "RGBa", "LA": "La"}
_REDUCED = "ticor.reduced"  # marks a picture decoded or box-reduced below its full size


@dataclass(frozen=True)
class ImageSpec:
    """How a decoded picture becomes the image graph's ``[3, size, size]`` float32 input.

    EXIF orientation applied, transparency composited on ``background``, padded to a centred
    square with ``background`` (nothing is cropped away), resized with ``resize_filter``,
    scaled to [0, 1] and normalised with ``mean``/``std``, channels first.

    ``decode`` says how much of a large picture is decoded at all. ``"reduced"``: a JPEG is
    decoded at the smallest DCT scale (1/2, 1/4, 1/8) that leaves at least twice ``size`` on
    its long side, any other picture is box-reduced by an integer factor while it keeps eight
    times ``size``, and only then padded (at the exact fractional position it has on the full
    canvas) and resized, so the final resize still averages real pixels.
    ``"full"``: every pixel decoded and padded at full size (bundles made before the reduced
    path; their manifests have no ``decode``). Pictures no larger than twice ``size``, such as
    the 128 px training pictures, come out the same either way.
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
    decode: str = "reduced"

    def __post_init__(self) -> None:
        if self.decode not in DECODE_PATHS:
            raise UsageError(f"unknown decode path {self.decode!r}; known: {', '.join(DECODE_PATHS)}")
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
        return cls(**{"decode": "full", **d, "background": tuple(d["background"]), "mean": tuple(d["mean"]),
                      "std": tuple(d["std"])})

    @property
    def floor(self) -> int | None:
        """The long side a JPEG decoded at a DCT scale keeps at least (``None``: the full path)."""
        return 2 * self.size if self.decode == "reduced" else None

    @property
    def box_floor(self) -> int | None:
        """The long side a box-reduced picture keeps at least: eight times the graph size, so the
        final Lanczos still does most of the filtering (on ~4K PNGs, 8x keeps 99.7% of the default
        bundle's decisions against 98.6% at 2x; docs/runtime.md, camera photos)."""
        return 8 * self.size if self.decode == "reduced" else None


def draft_for(image: Image.Image, spec: ImageSpec) -> None:
    """Before decoding: ask a JPEG for the smallest DCT scale that keeps ``spec.floor`` pixels on
    the long side (nothing for other formats, for the full path, or for small pictures)."""
    floor = spec.floor
    if floor is None or image.format != "JPEG":
        return
    w, h = image.size
    long = max(w, h)
    if long < 2 * floor:
        return
    got = image.draft(None, (max(1, -(-w * floor // long)), max(1, -(-h * floor // long))))
    if got is not None and got[1][2] < w:
        image.info[_REDUCED] = (got[1][2], got[1][3])  # the picture's extent in decoded pixels


def reduced(image: Image.Image, spec: ImageSpec) -> Image.Image:
    """A decoded picture box-reduced by the largest integer factor that keeps ``spec.floor``
    pixels on the long side (itself when it is already small, or for the full path)."""
    floor = spec.box_floor
    factor = max(image.size) // floor if floor else 0
    if factor < 2:
        return image
    if image.mode in _REDUCE_AS_IS:
        out = image.reduce(factor)
    else:
        if image.mode not in _PREMULTIPLIED:  # palette, 16-bit, ...: normalised first, exactly as training does
            image = to_rgba(image)
        straight = image.mode
        out = image.convert(_PREMULTIPLIED[straight]).reduce(factor).convert(straight)
        out.info = dict(image.info)  # keeps the EXIF orientation for to_rgba
    prior = image.info.get(_REDUCED) or image.size
    out.info[_REDUCED] = (prior[0] / factor, prior[1] / factor)
    return out


def image_array(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """``[3, size, size]`` float32 for one decoded Pillow image."""
    small = reduced(image, spec)
    rgb = to_rgb(small, spec.background)
    w, h = rgb.size
    extent = small.info.get(_REDUCED)
    if extent:
        # Reduced: pad and resize in one step, the square placed where it lies on the full-size canvas
        # (fractional offsets, and the true extent of a last, partial block of pixels): an integer
        # pad of the reduced picture would shift it by up to a pixel.
        ew, eh = extent if (extent[0] >= extent[1]) == (w >= h) else extent[::-1]  # EXIF may have turned it
        side = max(ew, eh)
        px, py = math.ceil((side - ew) / 2), math.ceil((side - eh) / 2)
        ox, oy = px - (side - ew) / 2, py - (side - eh) / 2
        canvas = Image.new("RGB", (math.ceil(ox + side), math.ceil(oy + side)), spec.background)
        canvas.paste(rgb, (px, py))
        rgb = canvas.resize((spec.size, spec.size), _FILTERS[spec.resize_filter], box=(ox, oy, ox + side, oy + side))
    elif w != h:
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
    """Decode ``path`` (a truncated file raises here, not later) and prepare it."""
    with Image.open(path) as im:
        draft_for(im, spec)
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


@dataclass(frozen=True)
class Vocabulary:
    """The text branch's vocabulary: its pieces and, for a trimmed one, what was kept of which.

    ``covered`` holds the characters that are pieces on their own, so never unknown; the runtime
    tokenizes a text for its unknown-character count only when it has others. ``trim`` (absent:
    the original vocabulary): the kept ``scripts``, ``original_pieces`` and the sha256 of the
    original ``tokenizer.json``. ``heldout``: the export's check on a held-out corpus.
    """

    model: str  # the tokenizer's model type: Unigram, WordPiece
    pieces: int
    unk_id: int
    covered: str
    trim: dict[str, Any] | None = None
    heldout: dict[str, Any] | None = None

    @property
    def scripts(self) -> tuple[str, ...]:
        """The scripts a trimmed vocabulary keeps (empty: untrimmed)."""
        return tuple((self.trim or {}).get("scripts", ()))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"model": self.model, "pieces": self.pieces, "unk_id": self.unk_id, "covered": self.covered}
        for key in ("trim", "heldout"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Vocabulary:
        return cls(str(d["model"]), int(d["pieces"]), int(d["unk_id"]), str(d["covered"]), d.get("trim"),
                   d.get("heldout"))


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


class UnknownChars:
    """The share of a text's characters that its tokenizer can only map to the unknown token
    (text in a script a trimmed vocabulary does not keep, or characters no vocabulary has).

    ``covered`` (from the bundle's vocabulary record) holds the characters that are pieces on
    their own: a text made only of them and of whitespace has none, and is not tokenized here.
    Others are tokenized and the characters under unknown tokens counted, over the part of the
    text the tokenizer reads (it truncates like the graph's input)."""

    def __init__(self, tokenizer: Any, unk_id: int, covered: str) -> None:
        self._tok = tokenizer
        self._unk = unk_id
        self._covered = frozenset(covered)

    def share(self, text: str) -> float:
        if self._covered.issuperset("".join(text.split())):
            return 0.0
        enc = self._tok.encode(text, add_special_tokens=False)
        if not enc.offsets:
            return 0.0
        unknown = sum(end - start for i, (start, end) in zip(enc.ids, enc.offsets) if i == self._unk)
        seen = sum(1 for ch in text[: enc.offsets[-1][1]] if not ch.isspace())
        return unknown / seen if seen else 0.0

    def flags(self, text: str) -> tuple[str, ...]:
        """``("unknown_chars:<share>",)`` when some characters became unknown, else ``()``."""
        share = self.share(text)
        return (f"unknown_chars:{share:.3g}",) if share > 0 else ()
