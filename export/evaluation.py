"""Pair scores and the ranking matrix from branch embeddings and a head function (torch-free).

Used alike by training (torch head), export and quantization (onnxruntime head) and the
benchmark (any variant's head), so every place scores splits and recall@k the same way.
"""

from __future__ import annotations

import numpy as np

from ticor.export.data import Dataset


def pair_scores(head_fn, rows: list[dict], texts: list[str], tv: np.ndarray, images: list[str],
                iv: np.ndarray) -> np.ndarray:
    """Head probability for each pair row, from per-text and per-picture embeddings."""
    ti = {t: i for i, t in enumerate(texts)}
    ii = {p: i for i, p in enumerate(images)}
    a = tv[[ti[r["text"]] for r in rows]]
    b = iv[[ii[r["image"]] for r in rows]]
    return head_fn(a, b)


def rank_matrix(head_fn, tv: np.ndarray, iv: np.ndarray, chunk: int = 32) -> np.ndarray:
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
