"""Deterministic training batches: matching pairs of the train split with their hard negatives."""

from __future__ import annotations

import numpy as np

from ticor.errors import UsageError
from ticor.evaluation import Dataset
from ticor.training.features import ImageFeatures, TextFeatures


class Batches:
    """Deterministic batches of matching pairs (with hard negatives) per epoch.

    Texts of similar token length share a batch (sorted inside windows of 32 batches, then
    the batches shuffled), so little time goes into padding.
    """

    WINDOW = 32

    def __init__(self, ds: Dataset, tf: TextFeatures, imf: ImageFeatures, batch: int, seed: int,
                 photo_repeat: int = 1) -> None:
        rows = ds.pairs["train"]
        # photos are a small share of the train pairs: each photo positive counts photo_repeat times an epoch
        self.pos = [(tf.index[r["text"]], imf.index[r["image"]]) for r in rows if r["label"] == 1
                    for _ in range(photo_repeat if r.get("family") == "photo" else 1)]
        self.lengths = (tf.offsets[1:] - tf.offsets[:-1]).tolist()
        self.hard: dict[int, list[int]] = {}
        for r in rows:
            if r["label"] == 0 and r.get("negative") == "hard":
                self.hard.setdefault(tf.index[r["text"]], []).append(imf.index[r["image"]])
        self.match_sets: dict[int, set[int]] = {}
        for t, _ in self.pos:
            if t not in self.match_sets:
                self.match_sets[t] = {imf.index[p] for p in ds.positives_of(tf.texts[t]) if p in imf.index}
        if len(self.pos) < 2:
            raise UsageError("the train split needs at least two matching pairs")
        self.batch = min(batch, len(self.pos))
        self.seed = seed
        self.steps_per_epoch = len(self.pos) // self.batch
        self._epoch: tuple[int, list[np.ndarray]] | None = None

    def _plan(self, epoch: int) -> list[np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(len(self.pos))[: self.steps_per_epoch * self.batch]
            span = self.batch * self.WINDOW
            batches = []
            for w in range(0, len(order), span):
                window = sorted(order[w : w + span].tolist(), key=lambda i: self.lengths[self.pos[i][0]])
                batches += [np.array(window[k : k + self.batch]) for k in range(0, len(window), self.batch)]
            self._epoch = (epoch, [batches[i] for i in rng.permutation(len(batches))])
        return self._epoch[1]

    def get(self, step: int) -> tuple[list[int], list[int], list[int | None]]:
        epoch, k = divmod(step, self.steps_per_epoch)
        chosen = [self.pos[i] for i in self._plan(epoch)[k]]
        rng = np.random.default_rng([self.seed, epoch, k])
        texts = [t for t, _ in chosen]
        images = [i for _, i in chosen]
        hard = [int(rng.choice(self.hard[t])) if t in self.hard else None for t in texts]
        return texts, images, hard
