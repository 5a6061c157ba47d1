"""Image normalisation shared by the dataset builder and the runtime.

One function turns any decoded Pillow image into 8-bit RGBA the same way everywhere:
EXIF orientation applied, 16-bit and 32-bit integer images scaled (not clipped), palette and
grey images with transparency kept transparent. ``flatten`` then composites on the fixed
background. Training data and runtime inputs go through the same two steps.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

BACKGROUND: tuple[int, int, int] = (255, 255, 255)


def to_rgba(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGBA copy of ``image`` (first frame, EXIF orientation applied)."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        else:
            top = 65535.0 if mode.startswith("I;16") or arr.max() <= 65535 else float(arr.max())
            scaled = arr * (255.0 / top)
        grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGBA")
    if mode == "P" and "transparency" in image.info:
        return image.convert("RGBA")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return image.convert("RGBA")
    if mode == "CMYK":
        return image.convert("RGB").convert("RGBA")
    return image.convert("RGB").convert("RGBA")


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """``flatten(to_rgba(image))`` without the round trip through RGBA for pictures that have no
    transparency and need no scaling (most photos): the same pixels, a fraction of the work."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("L", "CMYK", "YCbCr", "RGBX") and "transparency" not in image.info:
        return image.convert("RGB")
    return flatten(to_rgba(image), background)


def flatten(rgba: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Composite an RGBA image on the fixed background and return RGB."""
    if rgba.mode != "RGBA":
        rgba = to_rgba(rgba)
    base = Image.new("RGBA", rgba.size, background + (255,))
    base.alpha_composite(rgba)
    return base.convert("RGB")
