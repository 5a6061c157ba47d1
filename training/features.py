"""Cached outputs of the frozen trunks, computed once per (weights, split point, inputs).

The trunks are frozen and deterministic and their inputs carry no augmentation, so a cached
trunk output is exactly what the trunk would compute at every step. Each cache file records
the key it was made for; a mismatch (other weights, split, preprocessing or inputs) rebuilds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ticor._console import Progress
from ticor.preprocess import ImageSpec, TextSpec, encode_texts, load_image, load_tokenizer


@dataclass
class TextFeatures:
    texts: list[str]
    index: dict[str, int]
    hidden: torch.Tensor  # [total_tokens, H] trunk output, texts concatenated
    offsets: torch.Tensor  # [N + 1]
    pooled: torch.Tensor  # [N, H] frozen encoder's mean-pooled output (baseline input)

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded trunk states ``[B, S, H]`` and the attention mask ``[B, S]``."""
        lens = [int(self.offsets[i + 1] - self.offsets[i]) for i in idx]
        s = max(lens)
        h = torch.zeros(len(idx), s, self.hidden.shape[1])
        mask = torch.zeros(len(idx), s, dtype=torch.long)
        for row, (i, n) in enumerate(zip(idx, lens)):
            h[row, :n] = self.hidden[self.offsets[i] : self.offsets[i] + n]
            mask[row, :n] = 1
        return h, mask


@dataclass
class ImageFeatures:
    images: list[str]
    index: dict[str, int]
    trunk: torch.Tensor  # [N, C, h, w]
    pooled: torch.Tensor  # [N, 1280] frozen CNN's pooled output (baseline input)
    conse: torch.Tensor | None = None  # [N, text_dim] ConSE vectors (frozen parts only), see conse_features


def _key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _load_cached(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        return load_file(path)
    except (OSError, ValueError, json.JSONDecodeError):
        return None


def _store(path: Path, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
    meta_tmp = path.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps({**meta, "key": key}), encoding="utf-8")
    meta_tmp.replace(path.with_suffix(".json"))  # the key is written last: it marks completion


@torch.no_grad()
def text_features(branch: Any, tokenizer_path: Path, spec: TextSpec, texts: list[str], cache: Path, weights_id: str,
                  batch: int = 128, quiet: bool = False) -> TextFeatures:
    key = _key({"weights": weights_id, "split": branch.split, "spec": spec.to_json(),
                "tokenizer": hashlib.sha256(Path(tokenizer_path).read_bytes()).hexdigest(),
                "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest()})
    path = cache / f"text-{key[:16]}.safetensors"
    hit = _load_cached(path, key)
    if hit is not None:
        return TextFeatures(texts, {t: i for i, t in enumerate(texts)}, hit["hidden"], hit["offsets"],
                            hit["pooled"])
    tok = load_tokenizer(tokenizer_path, spec)
    lengths = [sum(e.attention_mask) for e in tok.encode_batch([spec.prefix + t for t in texts])]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])  # little padding per batch
    per_text: list[torch.Tensor | None] = [None] * len(texts)
    pooled = torch.zeros(len(texts), branch.bert.config.hidden_size)
    bar = Progress("ticor train: text trunk", len(texts), quiet)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        ids, mask = encode_texts(tok, [texts[i] for i in idx], spec)
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        h = branch.trunk(ids_t, mask_t)
        p = branch.pooled_final(h, mask_t)
        for row, i in enumerate(idx):
            per_text[i] = h[row, : lengths[i]].clone()
            pooled[i] = p[row]
        bar.update(start + len(idx))
    bar.close()
    offsets = torch.tensor([0] + np.cumsum(lengths).tolist(), dtype=torch.long)
    hidden = torch.cat(per_text, dim=0)  # type: ignore[arg-type]
    _store(path, key, {"hidden": hidden, "offsets": offsets, "pooled": pooled}, {"texts": len(texts)})
    return TextFeatures(texts, {t: i for i, t in enumerate(texts)}, hidden, offsets, pooled)


@torch.no_grad()
def image_features(branch: Any, spec: ImageSpec, root: Path, images: list[str], cache: Path, weights_id: str,
                   batch: int = 64, quiet: bool = False) -> ImageFeatures:
    key = _key({"weights": weights_id, "split": branch.split, "spec": spec.to_json(),
                "images": hashlib.sha256("\n".join(images).encode()).hexdigest()})
    # picture names are their sha256, so the list of names pins their content
    path = cache / f"image-{key[:16]}.safetensors"
    hit = _load_cached(path, key)
    if hit is not None:
        return ImageFeatures(images, {p: i for i, p in enumerate(images)}, hit["trunk"], hit["pooled"])
    trunks, pooled = [], []
    bar = Progress("ticor train: image trunk", len(images), quiet)
    for start in range(0, len(images), batch):
        names = images[start : start + batch]
        x = torch.from_numpy(np.stack([load_image(root / n, spec) for n in names]))
        t = branch.trunk(x)
        trunks.append(t)
        pooled.append(branch.pooled_final(t))
        bar.update(start + len(names))
    bar.close()
    trunk, pool = torch.cat(trunks), torch.cat(pooled)
    _store(path, key, {"trunk": trunk, "pooled": pool}, {"images": len(images)})
    return ImageFeatures(images, {p: i for i, p in enumerate(images)}, trunk, pool)


@torch.no_grad()
def fill_conse_table(model: Any, tokenizer_path: Path, spec: TextSpec, cache: Path, text_weights_id: str) -> None:
    """The model's ConSE table: the ImageNet class names through its (pretrained) text encoder,
    mean-pooled, L2-normalised."""
    from ticor.training.imagenet import imagenet_names

    tf = text_features(model.text, tokenizer_path, spec, imagenet_names(), cache, text_weights_id, quiet=True)
    model.image.conse.class_text.copy_(torch.nn.functional.normalize(tf.pooled, dim=-1))


@torch.no_grad()
def conse_features(model: Any, tokenizer_path: Path, spec: TextSpec, imf: ImageFeatures, cache: Path,
                   text_weights_id: str, quiet: bool = False) -> None:
    """Fill the model's ConSE table and ``imf.conse`` (each picture's ConSE vector, from its cached
    trunk output through the frozen top copy and classifier: exact, so computed once)."""
    fill_conse_table(model, tokenizer_path, spec, cache, text_weights_id)
    conse_vectors(model, imf, quiet)


@torch.no_grad()
def conse_vectors(model: Any, imf: ImageFeatures, quiet: bool = True) -> None:
    """``imf.conse``: each picture's ConSE vector from its cached trunk output, with the model's
    table as it is (filled by :func:`fill_conse_table`, or loaded with the trained weights)."""
    model.image.conse.eval()
    bar = Progress("ticor train: ConSE vectors", len(imf.images), quiet)
    out = []
    for start in range(0, len(imf.images), 512):
        out.append(model.image.conse(imf.trunk[start : start + 512]))
        bar.update(min(len(imf.images), start + 512))
    bar.close()
    imf.conse = torch.cat(out)
