"""User input made safe: pictures in any accepted form, and raw text.

Every failure is an :class:`InputError` with a ``kind`` from :data:`IMAGE_ERRORS`, the
status a batch row gets. Nothing here changes process-global Pillow state: truncated files
fail inside the decode guard (``.load()`` included) instead of being half-read, and the
pixel limit is checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import functools
import io
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from ticor.errors import InputError
from ticor.preprocess import ImageSpec, draft_for, image_array

#: Formats always opened; anything else (PSD, EPS, PDF, FITS, ...) is ``unsupported_format``.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Formats phones write, opened when this install can: AVIF (Pillow's own plugin, when built
#: with it) and HEIF/HEIC (the ``heif`` extra, pillow-heif). See :func:`accepted_formats`.
OPTIONAL_FORMATS = ("AVIF", "HEIF")
HEIF_LINE = "pip install 'ticor[heif]'"
#: How each format's files start (what :func:`is_image_bytes` and the refusals recognise).
_MAGIC = {"JPEG": (b"\xff\xd8\xff",), "PNG": (b"\x89PNG\r\n\x1a\n",), "WEBP": (b"RIFF",), "GIF": (b"GIF87a", b"GIF89a"),
          "BMP": (b"BM",), "TIFF": (b"II*\x00", b"MM\x00*")}
_BRANDS = {"HEIF": {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}, "AVIF": {b"avif", b"avis"}}
_EXTENSIONS = {"JPEG": (".jpg", ".jpeg", ".jpe"), "PNG": (".png",), "WEBP": (".webp",), "GIF": (".gif",),
               "BMP": (".bmp",), "TIFF": (".tif", ".tiff"), "AVIF": (".avif",), "HEIF": (".heic", ".heif")}
#: File name extensions of the always-accepted formats (:func:`accepted_extensions` adds the others).
EXTENSIONS = tuple(e for f in FORMATS for e in _EXTENSIONS[f])
#: Pictures larger than this many pixels (width x height, from the header) are ``too_large``.
MAX_PIXELS = 40_000_000
#: Raw text is cut to this many characters before tokenizing (tokenizers are superlinear).
MAX_TEXT_CHARS = 4096

IMAGE_ERRORS = ("missing", "unreadable", "decode_error", "too_large", "unsupported_format", "bad_input")

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray


@functools.lru_cache(maxsize=1)
def accepted_formats() -> tuple[str, ...]:
    """:data:`FORMATS` plus the optional ones this install decodes (pillow-heif is registered here)."""
    from PIL import features

    found = list(FORMATS)
    if features.check("avif"):
        found.append("AVIF")
    try:
        import pillow_heif
    except ImportError:
        pass
    else:
        pillow_heif.register_heif_opener()
        found.append("HEIF")
    return tuple(found)


def accepted_extensions() -> tuple[str, ...]:
    return tuple(e for f in accepted_formats() for e in _EXTENSIONS[f])


def sniff(data: bytes) -> str | None:
    """The format ``data`` starts like, among the accepted and optional ones (``None``: none)."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return next((f for f, brands in _BRANDS.items() if brand in brands), None)
    for fmt, magics in _MAGIC.items():
        if any(data.startswith(m) for m in magics) and (fmt != "WEBP" or data[8:12] == b"WEBP"):
            return fmt
    return None


def is_image_bytes(data: bytes) -> bool:
    """Whether ``data`` starts like a picture in one of the accepted formats."""
    return sniff(data) in accepted_formats()


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


def _open_bytes(fh: BinaryIO, name: str, spec: ImageSpec | None = None) -> Image.Image:
    formats = accepted_formats()
    try:
        im = Image.open(fh, formats=formats)
    except UnidentifiedImageError:
        fh.seek(0)
        kind = sniff(fh.read(16))
        fh.seek(0)
        if kind in OPTIONAL_FORMATS and kind not in formats:
            need = HEIF_LINE if kind == "HEIF" else "a Pillow built with AVIF support (pip install -U pillow)"
            raise InputError("unsupported_format", f"{name}: {kind} pictures need {need}") from None
        try:  # a real picture in a format we do not open says so; anything else is not a picture
            with Image.open(fh) as other:
                fmt = other.format
        except Exception:  # noqa: BLE001 - Pillow raises many types for garbage; all mean "not a picture"
            fmt = None
        if fmt:
            raise InputError("unsupported_format", f"{name}: {fmt} pictures are not accepted "
                             f"(accepted: {', '.join(formats)})") from None
        raise InputError("decode_error", f"{name}: not a picture in any known format") from None
    except Image.DecompressionBombError as exc:
        raise InputError("too_large", f"{name}: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError("decode_error", f"{name}: {exc}") from None
    w, h = im.size
    if w * h > MAX_PIXELS:
        im.close()
        raise InputError("too_large", f"{name}: {w}x{h} pixels is over the limit of {MAX_PIXELS:,}")
    if w < 1 or h < 1:
        im.close()
        raise InputError("decode_error", f"{name}: empty picture ({w}x{h})")
    try:
        im.seek(0)  # animated GIF/WebP/APNG and multi-page TIFF: the first frame
        if spec is not None:
            draft_for(im, spec)  # a large JPEG decodes at a DCT scale, the header limit already checked
        im.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        im.close()
        raise InputError("decode_error", f"{name}: {exc}") from None
    except Image.DecompressionBombError as exc:
        im.close()
        raise InputError("too_large", f"{name}: {exc}") from None
    return im


def open_image(source: ImageInput, spec: ImageSpec | None = None) -> Image.Image:
    """A decoded Pillow image (first frame) from a path, bytes, a binary file, a Pillow image or
    an ``HxW``/``HxWxC`` uint8 array; with ``spec``, a large JPEG is decoded only at the scale the
    spec's picture path needs. Raises :class:`InputError`."""
    name = _describe(source)
    if isinstance(source, Image.Image):
        if source.width * source.height > MAX_PIXELS:
            raise InputError("too_large", f"{name}: {source.width}x{source.height} pixels is over the limit")
        return source
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2]
                                                                     not in (1, 3, 4)):
            raise InputError("bad_input", f"an image array must be uint8 HxW, HxWx1, HxWx3 or HxWx4, "
                             f"got {source.dtype} {source.shape}")
        if source.shape[0] * source.shape[1] > MAX_PIXELS or 0 in source.shape[:2]:
            raise InputError("too_large" if source.size else "bad_input", f"image array of shape {source.shape}")
        arr = source[:, :, 0] if source.ndim == 3 and source.shape[2] == 1 else source
        return Image.fromarray(np.ascontiguousarray(arr))
    data, name = read_source(source)
    return decode(data or b"", name, spec)


def picture_pixels(image: Image.Image, spec: ImageSpec, name: str) -> np.ndarray:
    """The graph input for a decoded picture (:func:`ticor.preprocess.image_array`); Pillow failing
    on it after a clean decode (rare modes) is a ``decode_error`` like any other."""
    try:
        return image_array(image, spec)
    except (OSError, ValueError) as exc:
        raise InputError("decode_error", f"{name}: {exc}") from None


def read_source(source: ImageInput) -> tuple[bytes | None, str]:
    """``(encoded bytes, name)`` for a path, bytes or binary file (``None`` bytes for a Pillow image
    or an array). Lets a caller hash the content before deciding to decode it at all."""
    name = _describe(source)
    if isinstance(source, (Image.Image, np.ndarray)):
        return None, name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with path.open("rb") as fh:
                return fh.read(), name
        except FileNotFoundError:
            raise InputError("missing", f"{path}: no such file") from None
        except IsADirectoryError:
            raise InputError("unreadable", f"{path}: is a directory") from None
        except PermissionError:
            raise InputError("unreadable", f"{path}: permission denied") from None
        except OSError as exc:
            raise InputError("unreadable", f"{path}: {exc.strerror or exc}") from None
    if hasattr(source, "read"):
        try:
            data = source.read()
        except OSError as exc:
            raise InputError("unreadable", f"{name}: {exc}") from None
        if not isinstance(data, (bytes, bytearray)):
            raise InputError("bad_input", f"{name}: the file object must be opened in binary mode")
        return bytes(data), name
    raise InputError("bad_input", f"an image must be a path, bytes, a binary file, a PIL image or a uint8 array, "
                     f"not {type(source).__name__}")


def decode(data: bytes, name: str = "<bytes>", spec: ImageSpec | None = None) -> Image.Image:
    """Decode encoded picture bytes (see :func:`open_image`)."""
    if not data:
        raise InputError("decode_error", f"{name}: empty file")
    return _open_bytes(io.BytesIO(data), name, spec)


@dataclass(frozen=True)
class CleanText:
    """Text ready for the tokenizer, and what had to be done to it."""

    text: str
    flags: tuple[str, ...] = ()  # "empty", "cut", "replaced"


_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e"}


def clean_text(raw: Any) -> CleanText:
    """Decode (bytes: UTF-8 with replacement), drop a BOM, replace lone surrogates, cut to
    :data:`MAX_TEXT_CHARS`; flag text that is empty once whitespace and zero-width characters
    are removed. Raises :class:`InputError` (``bad_input``) for a non-text value."""
    flags = []
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = bytes(raw).decode("utf-8", errors="replace")
        if "\ufffd" in raw:
            flags.append("replaced")
    if not isinstance(raw, str):
        raise InputError("bad_input", f"a text must be str or bytes, not {type(raw).__name__}")
    if len(raw) > MAX_TEXT_CHARS:
        raw = raw[:MAX_TEXT_CHARS]
        flags.append("cut")
    raw = raw.lstrip("\ufeff")
    fixed = raw.encode("utf-8", errors="replace").decode("utf-8")  # lone surrogates -> '?'
    if fixed != raw:
        flags.append("replaced")
    visible = "".join(ch for ch in fixed if ch not in _INVISIBLE and not unicodedata.category(ch).startswith("Z")
                      and not ch.isspace())
    if not visible:
        flags.append("empty")
    return CleanText(fixed, tuple(dict.fromkeys(flags)))
