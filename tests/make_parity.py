"""Make the runtime's parity references once, with torch (``python -m tests.make_parity``).

The runtime prepares pictures with numpy/Pillow and texts with ``tokenizers``. This script
computes the same tensors the way the training side of a torch project would write them —
``torch`` for scaling, normalisation and layout, ``transformers``' fast tokenizer for ids —
and commits them to ``tests/fixtures/parity/reference.npz``. ``tests/test_runtime.py``
compares the runtime against them without torch installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.conftest import FIXTURE_DATA
from ticor.benchmarks._common import torch_pixels, user_tokenizer

HERE = Path(__file__).resolve().parent / "fixtures" / "parity"
SIZE, MEAN, STD = 128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TEXTS = ["a red apple", "一只猫的脸", "  padded   text  ", "emoji 🐱 and accents: café, naïve",
         "the quick brown fox jumps over the lazy dog " * 8, ""]


def pictures() -> dict[str, Path]:
    """Three kinds of input: a dataset picture, a non-square RGBA cut-out, a rotated JPEG (EXIF 6)."""
    src = sorted((FIXTURE_DATA / "images").glob("*/*.png"))[:1][0]
    out = {"dataset.png": src}
    im = Image.open(src).convert("RGBA")
    cut = im.crop((10, 30, 118, 90))
    alpha = Image.linear_gradient("L").resize(cut.size)
    cut.putalpha(alpha)
    cut.save(HERE / "cutout-rgba.png")
    out["cutout-rgba.png"] = HERE / "cutout-rgba.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    im.convert("RGB").crop((0, 0, 128, 96)).save(HERE / "exif-rotated.jpg", quality=95, exif=exif)
    out["exif-rotated.jpg"] = HERE / "exif-rotated.jpg"
    return out


def reference_pixels(path: Path) -> np.ndarray:
    return torch_pixels(path, SIZE, MEAN, STD).numpy()


def main() -> None:
    from ticor.training.model import PRESETS, load_backbones

    HERE.mkdir(parents=True, exist_ok=True)
    pics = pictures()
    preset = PRESETS["multilingual"]
    tok_file = load_backbones(preset).tokenizer
    tok = user_tokenizer(tok_file, preset.text_spec.pad_token)
    spec = preset.text_spec
    enc = tok([spec.prefix + t for t in TEXTS], padding=True, truncation=True, max_length=spec.max_length,
              return_tensors="np")
    arrays = {f"pixels/{k}": reference_pixels(p) for k, p in pics.items()}
    arrays["input_ids"] = enc["input_ids"].astype(np.int64)
    arrays["attention_mask"] = enc["attention_mask"].astype(np.int64)
    np.savez_compressed(HERE / "reference.npz", **arrays)
    (HERE / "reference.json").write_text(json.dumps({
        "texts": TEXTS, "pictures": {k: str(p.relative_to(Path(__file__).resolve().parent.parent))
                                     for k, p in pics.items()},
        "made_by": f"tests/make_parity.py, torch {torch.__version__}"}, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
