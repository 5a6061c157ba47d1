"""Pieces the benchmarks (and the parity-reference script) share.

``torch_pixels``/``user_tokenizer`` are the preprocessing a PyTorch user would write (Pillow,
torch normalisation, transformers' fast tokenizer), written independently of the runtime's
numpy preprocessing so the two can be compared; ``peak_rss_mb`` reads ``VmHWM``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident memory. ``VmHWM``, not ``ru_maxrss``: the latter keeps the
    parent's peak across fork + exec."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def test_pairs(data: Path, n: int) -> list[dict[str, str]]:
    """The first ``n`` test pairs of a dataset: ``id``, ``text`` and the picture's absolute path."""
    rows = [json.loads(x) for x in (data / "pairs" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    return [{"id": f"p{i}", "text": r["text"], "image": str(data / r["image"])} for i, r in enumerate(rows[:n])]


def torch_pixels(path: str | Path, size: int, mean: tuple[float, ...], std: tuple[float, ...]):
    """``[3, size, size]`` torch tensor: EXIF transpose, RGBA on white, pad to a square, Lanczos,
    then scaling and normalisation in torch."""
    import torch
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGBA")
    base = Image.new("RGBA", im.size, (255, 255, 255, 255))
    base.alpha_composite(im)
    rgb = base.convert("RGB")
    side = max(rgb.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
    square = square.resize((size, size), Image.LANCZOS)
    t = torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1).float().div(255.0)
    return (t - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def user_tokenizer(tokenizer_file: str | Path, pad_token: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), pad_token=pad_token)


def load_torch_model(run_dir: Path, preset_name: str) -> tuple[Any, Any, Path]:
    """``(model in eval mode, preset, tokenizer file)`` of a finished training run."""
    from ticor.training.checkpoint import load_trained
    from ticor.training.model import PRESETS, MatchModel, load_backbones

    preset = PRESETS[preset_name]
    bb = load_backbones(preset)
    model = MatchModel(preset, bb.bert, bb.cnn)
    load_trained(model, run_dir / "trained.safetensors")
    model.eval()
    return model, preset, bb.tokenizer
