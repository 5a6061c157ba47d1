"""Render one source picture (an emoji glyph, an SVG, a PNG or a photograph) to a fixed-size RGB PNG.

Drawings go the same way: draw as RGBA, crop to the visible content, centre on a square with a
small margin, resize to ``size`` with Lanczos, composite on the fixed background. A photograph
is never cropped: it is padded to a centred square with the background and resized with Lanczos,
exactly what the runtime's :class:`~ticor.preprocess.ImageSpec` does to a user's photo, so the
model trains on the pictures it will be given. Every result is encoded as PNG with no metadata.
Runs in worker processes; returns bytes or a skip reason.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from ticor.imaging import BACKGROUND, flatten, to_rgb, to_rgba

RENDER_VERSION = 1
MARGIN = 0.06  # fraction of the square left empty on each side
ALPHA_VISIBLE = 8  # alpha above this counts as content
MIN_CONTENT_PX = 6  # content smaller than this (after rasterising at 2x) is a broken render
MAX_SOURCE_BYTES = 4 << 20  # larger SVG/PNG files are skipped (slow or decompression bombs)
MAX_SOURCE_PIXELS = 25_000_000
NOTO_PIXEL_SIZE = 109  # the only size the CBDT bitmap font loads at


@dataclass(frozen=True)
class RenderJob:
    """What to draw: ``kind`` is 'glyph' (text in ``ref``), 'svg', 'png' or 'photo' (a file path)."""

    key: str  # stable identifier of this job (source and package-internal path)
    kind: str
    ref: str
    font: str = ""  # font path for 'glyph' jobs


@dataclass(frozen=True)
class RenderResult:
    key: str
    png: bytes | None
    reason: str = ""  # why it was skipped, when png is None


class Skip(Exception):
    """The source picture is broken or unusable; the message is the reason."""


@lru_cache(maxsize=2)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, NOTO_PIXEL_SIZE, layout_engine=ImageFont.Layout.RAQM)


def _draw_glyph(text: str, font_path: str) -> Image.Image:
    font = _font(font_path)
    canvas = Image.new("RGBA", (NOTO_PIXEL_SIZE * 8, NOTO_PIXEL_SIZE * 2), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    # Every glyph of this font has the same advance: a longer run means the font has no
    # ligature for the sequence and would draw its parts side by side.
    if font.getlength(text) > 1.2 * font.getlength("\U0001F600"):
        raise Skip("sequence not a single glyph in font")
    if canvas.getchannel("A").point(lambda a: 255 if a > ALPHA_VISIBLE else 0).getbbox() is None:
        raise Skip("glyph missing from font")
    return canvas


def _draw_svg(path: str, size: int) -> Image.Image:
    import cairosvg

    with open(path, "rb") as fh:
        data = fh.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        raise Skip("svg larger than 4 MiB")
    target = 2 * size
    try:
        png = cairosvg.svg2png(bytestring=data, output_width=target, unsafe=False)
        image = Image.open(io.BytesIO(png))
        if image.height > target:
            png = cairosvg.svg2png(bytestring=data, output_height=target, unsafe=False)
            image = Image.open(io.BytesIO(png))
        image.load()
    except Skip:
        raise
    except Exception as exc:  # noqa: BLE001 - cairosvg raises many unrelated types on bad input
        raise Skip(f"svg render failed: {type(exc).__name__}") from None
    return to_rgba(image)


def _draw_png(path: str) -> Image.Image:
    try:
        with Image.open(path, formats=["PNG"]) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                raise Skip("png too large")
            image.load()
            return to_rgba(image)
    except Skip:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise Skip(f"png decode failed: {type(exc).__name__}") from None


def _draw_photo(path: str, size: int) -> Image.Image:
    """A photograph (any format Pillow reads) padded to a centred square and resized, in RGB."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_SOURCE_PIXELS:
                raise Skip("photo too large")
            image.load()
            rgb = to_rgb(image, BACKGROUND)
    except Skip:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise Skip(f"photo decode failed: {type(exc).__name__}") from None
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), BACKGROUND)
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def _square(rgba: Image.Image, size: int) -> Image.Image:
    box = rgba.getchannel("A").point(lambda a: 255 if a > ALPHA_VISIBLE else 0).getbbox()
    if box is None:
        raise Skip("blank render")
    content = rgba.crop(box)
    if max(content.size) < MIN_CONTENT_PX:
        raise Skip("content too small")
    side = round(max(content.size) / (1 - 2 * MARGIN))
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(content, ((side - content.width) // 2, (side - content.height) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def render(job: RenderJob, size: int) -> RenderResult:
    """Render one job; never raises for a bad source file."""
    try:
        if job.kind == "photo":
            rgb = _draw_photo(job.ref, size)
        elif job.kind == "glyph":
            rgba = _draw_glyph(job.ref, job.font)
        elif job.kind == "svg":
            rgba = _draw_svg(job.ref, size)
        elif job.kind == "png":
            rgba = _draw_png(job.ref)
        else:
            raise ValueError(f"unknown render kind {job.kind!r}")
        if job.kind != "photo":
            rgb = flatten(_square(rgba, size), BACKGROUND)
    except Skip as skip:
        return RenderResult(job.key, None, str(skip))
    except OSError as exc:
        return RenderResult(job.key, None, f"unreadable: {type(exc).__name__}")
    out = io.BytesIO()
    rgb.save(out, format="PNG", optimize=False, compress_level=9)
    return RenderResult(job.key, out.getvalue())


def render_many(jobs: list[RenderJob], size: int) -> list[RenderResult]:
    """Worker entry point: render a chunk of jobs."""
    return [render(job, size) for job in jobs]
