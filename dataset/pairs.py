"""Labelled pairs of a split, and the check that re-derives every label before anything is written."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from ticor.dataset import catalog
from ticor.dataset.catalog import Concept
from ticor.dataset.splits import PHOTO_FAMILY, stable_rng
from ticor.errors import BuildError
from ticor.evaluation import norm_text

PAIRS_FORMAT = """\
One JSON object per line:
  id          unique pair id, e.g. "test-000123"
  text        the caption (str)
  image       path of the picture relative to the dataset directory
  label       1 if the text describes the picture, else 0
  lang        "en" or "zh"
  negative    null for positives, else "random" (another concept group; for a photo's caption,
              another photo) or "hard" (a look-alike: same emoji subgroup or sibling, same Tux
              or clip-art folder, same GCompris activity board or folder)
  text_kind   "name", "keywords", "sentence" or "title"
  family      "emoji", "tux", "openclipart" or "photo" (of the text's concept)
  image_source  which source drew the picture (noto, openmoji, fluent-flat, fluent-color, tux,
              openclipart) or took it (gcompris)
Your own data needs only text, image and label (lang and negative are used in reports).
"""


@dataclass
class Record:
    """A concept after rendering, with its group and split."""

    concept: Concept
    images: list[tuple[str, str]]  # (image source, sha256), sorted
    group: str
    split: str

    @property
    def texts(self) -> list[catalog.Text]:
        return self.concept.texts


def image_path(digest: str) -> str:
    return f"images/{digest[:2]}/{digest}.png"


def make_pairs(records: list[Record], split: str) -> tuple[list[dict], Counter]:
    """Positives for every text (and every picture), one negative per positive."""
    recs = sorted((r for r in records if r.split == split), key=lambda r: r.concept.key)
    positives_of: dict[str, set[str]] = defaultdict(set)  # normalised text -> picture hashes
    for r in recs:
        for t in r.texts:
            positives_of[norm_text(t.text)].update(d for _, d in r.images)
    by_hard: dict[str, list[Record]] = defaultdict(list)
    by_seed: dict[str, list[Record]] = defaultdict(list)
    for r in recs:
        for key in r.concept.hard_keys:
            by_hard[key].append(r)
        by_seed[r.concept.seed].append(r)
    photos = [r for r in recs if r.concept.family == PHOTO_FAMILY]
    notes: Counter = Counter()
    pairs: list[dict] = []
    seen_texts: set[str] = set()

    def add(text: catalog.Text, r: Record, img: tuple[str, str], label: int, neg: str | None) -> None:
        """One pair of a text of ``r`` (the text's own concept) and a picture."""
        pairs.append(
            {
                "text": text.text,
                "lang": text.lang,
                "text_kind": text.kind,
                "family": r.concept.family,
                "image": image_path(img[1]),
                "image_source": img[0],
                "label": label,
                "negative": neg,
            }
        )

    def fits(text_rec: Record, other: Record) -> bool:
        """Pictures the text may well describe, so never a negative: its toned pictures for a
        toneless emoji name, and concepts merged into its group by a shared noun, text or
        picture (the same thing from another source)."""
        c, o = text_rec.concept, other.concept
        if c.tone_base and not c.toned and c.tone_base == o.tone_base:
            return True
        return text_rec.group == other.group and c.seed != o.seed

    def negative(t: catalog.Text, r: Record, want_hard: bool, rng: random.Random) -> None:
        forbidden = positives_of[norm_text(t.text)]
        if want_hard:
            pool: dict[str, Record] = {}
            for key in r.concept.hard_keys:
                for o in by_hard[key]:
                    pool[o.concept.key] = o
            for o in by_seed[r.concept.seed]:  # tone and gender siblings
                pool[o.concept.key] = o
            candidates = [
                (o, img)
                for k, o in sorted(pool.items())
                if k != r.concept.key and not fits(r, o)
                for img in o.images
                if img[1] not in forbidden
            ]
            if candidates:
                _, img = rng.choice(candidates)
                add(t, r, img, 0, "hard")
                return
            notes["hard negative unavailable, used random"] += 1
        # a photo's caption is paired with another photo: the distractors a user's photo has are photos
        pool_recs = photos if r.concept.family == PHOTO_FAMILY and len(photos) > 1 else recs
        for _ in range(1000):
            o = pool_recs[rng.randrange(len(pool_recs))]
            if o.group == r.group:
                continue
            img = o.images[rng.randrange(len(o.images))]
            if img[1] not in forbidden:
                add(t, r, img, 0, "random")
                return
        notes["no negative found"] += 1

    for r in recs:
        rng = stable_rng("pairs", split, r.concept.key)
        texts = [t for t in r.texts if norm_text(t.text) not in seen_texts]
        seen_texts.update(norm_text(t.text) for t in texts)
        start = rng.randrange(len(r.images))
        plan: list[tuple[catalog.Text, tuple[str, str]]] = []
        for k, t in enumerate(texts):
            plan.append((t, r.images[(start + k) % len(r.images)]))
        planned = {img[1] for _, img in plan}
        for img in r.images:  # every picture appears in at least one positive
            if img[1] not in planned and r.texts:
                plan.append((r.texts[len(plan) % len(r.texts)], img))
                planned.add(img[1])
        hard_first = rng.random() < 0.5
        for k, (t, img) in enumerate(plan):
            add(t, r, img, 1, None)
            negative(t, r, (k % 2 == 0) == hard_first, rng)
    for i, p in enumerate(pairs):
        p["id"] = f"{split}-{i:06d}"
    return pairs, notes


# ---------------------------------------------------------------- verification


def verify(records: list[Record], pairs: dict[str, list[dict]]) -> None:
    """Raise BuildError unless splits are disjoint and every label is right."""
    owner: dict[str, dict[str, str]] = {"group": {}, "image": {}, "text": {}}
    for r in records:
        tokens = {"group": [r.group], "image": [d for _, d in r.images],
                  "text": [norm_text(t.text) for t in r.texts]}
        for kind, values in tokens.items():
            for v in values:
                prev = owner[kind].setdefault(v, r.split)
                if prev != r.split:
                    raise BuildError(f"{kind} {v!r} is in both {prev} and {r.split}")
    positives: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for t in r.texts:
            positives[norm_text(t.text)].update(image_path(d) for _, d in r.images)
    for split, rows in pairs.items():
        for p in rows:
            truth = int(p["image"] in positives[norm_text(p["text"])])
            if truth != p["label"]:
                raise BuildError(f"pair {p['id']} is labelled {p['label']} but should be {truth}")
            if owner["image"].get(p["image"].split("/")[-1][:-4]) != split:
                raise BuildError(f"pair {p['id']} uses a picture from another split")


# ---------------------------------------------------------------- the build
