"""Concept groups and concept-disjoint splits.

Concepts that share a seed, a text, a picture or a noun are merged into one group (across
sources: "tiger" the emoji and "Tiger" the clip art), and whole groups go to train, val or
test, so no split shares a group, a picture or a text with another.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

from ticor.dataset.catalog import Concept
from ticor.evaluation import SPLITS, norm_text

SPLIT_TARGETS = {"train": 0.8, "val": 0.1, "test": 0.1}
# Groups holding photographs are split on their own, by photo count: a third each, so the held-out
# photos (val and test) number well over 150 and the photo rows of the reports mean something.
PHOTO_SPLIT_TARGETS = {"train": 0.34, "val": 0.33, "test": 0.33}
PHOTO_FAMILY = "photo"


def stable_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def stable_rng(*parts: str) -> random.Random:
    return random.Random(int(stable_hash(*parts)[:16], 16))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_concepts(concepts: list[Concept], images: dict[str, list[str]]) -> list[str]:
    """Group id per concept: concepts sharing a seed, a text, a picture or a noun are merged."""
    uf = _UnionFind(len(concepts))
    first: dict[str, int] = {}

    def link(token: str, i: int) -> None:
        if token in first:
            uf.union(first[token], i)
        else:
            first[token] = i

    for i, c in enumerate(concepts):
        link("seed:" + c.seed, i)
        for t in c.texts:
            link("text:" + norm_text(t.text), i)
        for digest in images[c.key]:
            link("image:" + digest, i)
        for noun in c.nouns:
            if noun:
                link("noun:" + noun, i)
    # A head noun joins the concept whose whole name it is ("bengal tiger" -> "tiger").
    for i, c in enumerate(concepts):
        if c.head and "noun:" + c.head in first:
            uf.union(first["noun:" + c.head], i)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(concepts)):
        members[uf.find(i)].append(i)
    group_of = [""] * len(concepts)
    for idx in members.values():
        gid = "g" + stable_hash(*sorted(concepts[i].key for i in idx))[:12]
        for i in idx:
            group_of[i] = gid
    return group_of


def group_weights(concepts: list[Concept], group_of: list[str],
                  images: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """Per group: (concepts, photographs) -- what :func:`assign_splits` balances."""
    weights: dict[str, tuple[int, int]] = {}
    for c, gid in zip(concepts, group_of):
        n, photos = weights.get(gid, (0, 0))
        weights[gid] = (n + 1, photos + (len(images[c.key]) if c.family == PHOTO_FAMILY else 0))
    return weights


def assign_splits(weights: dict[str, tuple[int, int]]) -> dict[str, str]:
    """Groups with photographs by their photo count to :data:`PHOTO_SPLIT_TARGETS`, the others by
    their concept count to :data:`SPLIT_TARGETS`."""
    photo = {g: p for g, (_, p) in weights.items() if p}
    rest = {g: n for g, (n, p) in weights.items() if not p}
    return {**_fill(photo, PHOTO_SPLIT_TARGETS), **_fill(rest, SPLIT_TARGETS)}


def _fill(group_sizes: dict[str, int], targets: dict[str, float]) -> dict[str, str]:
    """Biggest groups first, each to the split furthest below its target share."""
    assigned = dict.fromkeys(SPLITS, 0)
    total = 0
    split_of = {}
    for gid in sorted(group_sizes, key=lambda g: (-group_sizes[g], stable_hash("split", g))):
        size = group_sizes[gid]
        total += size
        best = max(SPLITS, key=lambda s: (targets[s] * total - assigned[s], -SPLITS.index(s)))
        split_of[gid] = best
        assigned[best] += size
    return split_of
