"""Scoring a labelled dataset with any set of branches: torch-free, shared by every stage.

A built dataset (``manifest.json``, ``pairs/{train,val,test}.jsonl``, ``items.jsonl``,
``texts.jsonl``) is read into a :class:`Dataset`. :func:`pair_scores`, :func:`rank_matrix` and
:func:`retrieval_truth` turn per-text and per-picture embeddings plus a head function into pair
scores and the text-by-picture ranking matrix, so training (torch), export and quantization
(onnxruntime) and the benchmark (any variant) score splits and recall@k the same way.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticor.errors import UsageError
from ticor.metrics import Rank, rank_families

SPLITS = ("train", "val", "test")

HeadFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def norm_text(text: str) -> str:
    """Identity of a text: NFKC, case-folded, punctuation and extra spaces removed (the rule the
    dataset builder labels pairs with)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"[\s\W_]+", " ", text, flags=re.UNICODE)
    return text.strip()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Dataset:
    root: Path
    sha256: str
    pairs: dict[str, list[dict[str, Any]]]
    positives: dict[str, set[str]]  # norm_text(text) -> every picture path it matches

    def positives_of(self, text: str) -> set[str]:
        """Every picture that ``text`` matches."""
        return self.positives.get(norm_text(text), set())

    def texts(self) -> list[str]:
        return sorted({p["text"] for rows in self.pairs.values() for p in rows})

    def images(self) -> list[str]:
        return sorted({p["image"] for rows in self.pairs.values() for p in rows})

    def split_texts(self, split: str) -> list[str]:
        return sorted({p["text"] for p in self.pairs[split]})

    def split_images(self, split: str) -> list[str]:
        return sorted({p["image"] for p in self.pairs[split]})


def load_dataset(root: Path | str) -> Dataset:
    """Read ``manifest.json``, the pair files, items and texts of a built dataset."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{root} is not a built dataset (no manifest.json); run `ticor data build`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    pairs = {s: read_jsonl(root / "pairs" / f"{s}.jsonl") for s in SPLITS}
    for s, rows in pairs.items():
        if not rows:
            raise UsageError(f"{root}: the {s} split has no pairs")
    images_of: dict[str, list[str]] = defaultdict(list)
    for item in read_jsonl(root / "items.jsonl"):
        images_of[item["concept"]].append(item["image"])
    positives: dict[str, set[str]] = defaultdict(set)
    for t in read_jsonl(root / "texts.jsonl"):
        positives[norm_text(t["text"])].update(images_of[t["concept"]])
    return Dataset(root=root, sha256=manifest["dataset_sha256"], pairs=pairs, positives=dict(positives))


def pair_scores(head_fn: HeadFn, rows: list[dict[str, Any]], texts: list[str], tv: np.ndarray,
                images: list[str], iv: np.ndarray) -> np.ndarray:
    """Head probability for each pair row, from per-text and per-picture embeddings."""
    ti = {t: i for i, t in enumerate(texts)}
    ii = {p: i for i, p in enumerate(images)}
    a = tv[[ti[r["text"]] for r in rows]]
    b = iv[[ii[r["image"]] for r in rows]]
    return head_fn(a, b)


def rank_matrix(head_fn: HeadFn, tv: np.ndarray, iv: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Head probability of every text against every picture ``[texts, images]``."""
    out = np.empty((len(tv), len(iv)), dtype=np.float32)
    for s in range(0, len(tv), chunk):
        t = tv[s : s + chunk]
        a = np.repeat(t, len(iv), axis=0)
        b = np.tile(iv, (len(t), 1))
        out[s : s + len(t)] = head_fn(a, b).reshape(len(t), len(iv))
    return out


def retrieval_truth(ds: Dataset, texts: list[str], images: list[str]) -> list[set[int]]:
    ii = {p: i for i, p in enumerate(images)}
    return [{ii[p] for p in ds.positives_of(t) if p in ii} for t in texts]


def split_scores(ds: Dataset, split: str, tv: np.ndarray, iv: np.ndarray, head_fn: HeadFn,
                 with_rank: bool = False, rows: list[dict[str, Any]] | None = None,
                 chunk: int = 64) -> tuple[np.ndarray, Rank | None]:
    """Pair scores of ``rows`` (default: the whole split) and, with ``with_rank``, the ranking
    matrix and its truth, from embeddings of ``ds.split_texts(split)`` and
    ``ds.split_images(split)`` (or of the texts and pictures of ``rows``, when given)."""
    rows = ds.pairs[split] if rows is None else rows
    texts = ds.split_texts(split) if rows is ds.pairs[split] else sorted({r["text"] for r in rows})
    images = ds.split_images(split) if rows is ds.pairs[split] else sorted({r["image"] for r in rows})
    scores = pair_scores(head_fn, rows, texts, tv, images, iv)
    rank = ((rank_matrix(head_fn, tv, iv, chunk=chunk), retrieval_truth(ds, texts, images),
             *rank_families(rows, texts, images)) if with_rank else None)
    return scores, rank
