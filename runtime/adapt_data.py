"""A user's pair file made ready for ``ticor adapt``: torch-free (the calibration-only mode runs
in the runtime install).

- :func:`read_pairs`: the rows ``ticor eval`` reads (bad rows counted by status and left out);
  a file without ``label`` is a list of captioned pictures, every row a match; every picture
  is opened the runtime's way first, so an unreadable one is a row left out, not a crash.
- :func:`hold_out`: the validation part. Rows that share a picture, a caption (up to case and
  punctuation) or a ``group`` are linked; whole linked blocks go to one side, so the held-out
  part shares nothing with training.
- :func:`drawn_negatives`: for a part without labelled non-matches, one drawn caption per
  picture from another block (``negative = drawn``).
- :func:`write_dataset`: the parts written as a built dataset (``ticor.evaluation``'s layout,
  pictures linked by content hash) so training, export and ``ticor quantize`` read the user's
  pairs as they read the offline dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticor._files import sha256_file
from ticor.errors import InputError, UsageError
from ticor.evaluation import norm_text
from ticor.inputs import open_image
from ticor.pair_eval import Excluded, LabelledPair, PairFile, read_labelled
from ticor.tables import Columns

#: The fewest held-out pairs of each label that a difference of a few F1 points can be read from.
MIN_VAL_EACH = 30


@dataclass(frozen=True)
class Parts:
    train: list[LabelledPair]
    val: list[LabelledPair]
    how: str  # "held out", "--val FILE", "split column"
    linked_blocks: int
    crossing: int = 0  # non-matching rows left out because their caption belongs to the other part


def read_pairs(path: str, cols: Columns | None = None, image_root: Path | None = None, label_col: str = "label",
               group_col: str = "group", slice_cols: tuple[str, ...] = ()) -> PairFile:
    """The pair file's usable rows; pictures that do not open are left out with their status."""
    pf = read_labelled(path, cols, image_root, label_col, slice_cols, group_col, None, unlabelled=True)
    bad: dict[str, InputError] = {}
    for image in sorted({p.image for p in pf.pairs}):
        try:
            open_image(image).close()
        except InputError as exc:
            bad[image] = exc
    if not bad:
        return pf
    kept = [p for p in pf.pairs if p.image not in bad]
    excluded = pf.excluded + [Excluded(p.row, p.id, bad[p.image].kind, f"row {p.row}: {bad[p.image]}")
                              for p in pf.pairs if p.image in bad]
    return dataclasses.replace(pf, pairs=kept, excluded=sorted(excluded, key=lambda e: e.row))


def split_column(pf: PairFile, path: str, col: str = "split") -> Parts | None:
    """Parts from a ``split`` column (``train`` / ``val``), when the file has one."""
    from ticor.tables import read_rows

    values = {r.index + 1: str(r.fields.get(col) or "").strip().lower()
              for r in read_rows(path, Columns(extra=(col,)), None)}
    if not any(values.values()):
        return None
    odd = sorted({v for v in values.values() if v not in ("train", "val", "validation", "test")})
    if odd:
        raise UsageError(f"{path}: the {col!r} column holds {odd[:3]}; use train and val")
    train = [p for p in pf.pairs if values.get(p.row) == "train"]
    val = [p for p in pf.pairs if values.get(p.row) in ("val", "validation", "test")]
    return Parts(train, val, f"the file's {col!r} column", 0)


def _blocks(pairs: list[LabelledPair]) -> list[list[int]]:
    """Rows linked by a shared picture or group, or a caption of a matching row (union-find; a
    non-matching row's caption does not link: it names another block's picture)."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, p in enumerate(pairs):
        keys = [("image", p.image)] + ([("text", norm_text(p.text))] if p.label == 1 else []) + (
            [("group", p.group)] if p.group else [])
        for key in keys:
            j = first.setdefault(key, i)
            parent[find(i)] = find(j)
    blocks: dict[int, list[int]] = defaultdict(list)
    for i in range(len(pairs)):
        blocks[find(i)].append(i)
    return list(blocks.values())


def hold_out(pairs: list[LabelledPair], share: float, seed: int) -> Parts:
    """Hold out about ``share`` of the rows in whole linked blocks (nothing shared with training)."""
    if not 0.0 < share < 1.0:
        raise UsageError(f"--val-share {share}: give a share between 0 and 1")
    blocks = _blocks(pairs)
    order = sorted(blocks, key=lambda b: hashlib.sha256(f"{seed}:{pairs[b[0]].image}".encode()).hexdigest())
    val: list[int] = []
    want = share * len(pairs)
    for b in order:
        if len(val) >= want:
            break
        if len(val) + len(b) <= max(want * 1.5, 1) or not val:
            val += b
    if len(val) >= len(pairs):
        raise UsageError(f"cannot hold out a validation part that shares no picture, caption or group with "
                         f"training: the {len(pairs)} rows are one linked block; give --val FILE")
    vs = set(val)
    train = [p for i, p in enumerate(pairs) if i not in vs]
    held = [pairs[i] for i in sorted(vs)]
    # a non-matching row whose caption is one of the other side's captions would share it: left out
    train_caps = {norm_text(p.text) for p in train if p.label == 1}
    val_caps = {norm_text(p.text) for p in held if p.label == 1}
    train2 = [p for p in train if p.label == 1 or norm_text(p.text) not in val_caps]
    held2 = [p for p in held if p.label == 1 or norm_text(p.text) not in train_caps]
    crossing = len(train) + len(held) - len(train2) - len(held2)
    return Parts(train2, held2, f"held out: {len(held2)} of {len(pairs)} rows in whole blocks sharing no picture, "
                 f"caption or group with training" + (f"; {crossing} non-matching rows whose caption belongs to "
                                                      "the other part left out" if crossing else ""),
                 len(blocks), crossing)


def drawn_negatives(pairs: list[LabelledPair], seed: int) -> list[LabelledPair]:
    """``pairs`` plus, for each picture without a labelled non-match, one caption drawn from a
    row of another linked block (so it does not match): the held-out part of a file of captioned
    pictures becomes a labelled one."""
    if any(p.label == 0 for p in pairs):
        return pairs
    blocks = _blocks(pairs)
    block_of = {i: k for k, b in enumerate(blocks) for i in b}
    if len(blocks) < 2:
        raise UsageError("the validation part needs pictures of at least two unrelated captions to draw "
                         "non-matching pairs from")
    rng = random.Random(seed)
    out = list(pairs)
    seen: set[str] = set()
    for i, p in enumerate(pairs):
        if p.image in seen:
            continue
        seen.add(p.image)
        j = rng.randrange(len(pairs))
        while block_of[j] == block_of[i]:
            j = rng.randrange(len(pairs))
        out.append(dataclasses.replace(p, id=f"{p.id}-drawn", text=pairs[j].text, label=0, negative="drawn",
                                       group=p.group))
    return out


def interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (what a metric on ``n`` pairs can and cannot tell)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def _row(p: LabelledPair, split: str, k: int, names: dict[str, str]) -> dict[str, Any]:
    return {"id": f"{split}-{k:06d}", "text": p.text, "image": names[p.image], "label": p.label,
            "lang": p.lang or "", "negative": p.negative, "family": p.family or "user", "source_row": p.row}


def write_dataset(out: Path, parts: Parts, val: list[LabelledPair]) -> str:
    """Write the parts as a built dataset in ``out`` (train; val = test = the held-out part);
    return its ``dataset_sha256`` (the rows and the pictures' content)."""
    (out / "pairs").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    names: dict[str, str] = {}
    for image in sorted({p.image for p in parts.train + val}):
        h = sha256_file(Path(image))
        link = out / "images" / f"{h}{Path(image).suffix.lower()}"
        if not link.exists():
            link.symlink_to(Path(image).resolve())
        names[image] = f"images/{link.name}"
    splits = {"train": [_row(p, "train", k, names) for k, p in enumerate(parts.train)],
              "val": [_row(p, "val", k, names) for k, p in enumerate(val)]}
    splits["test"] = [dict(r, id=r["id"].replace("val-", "test-")) for r in splits["val"]]
    # a caption matches the pictures of its matching rows and every picture of their groups
    group_pictures: dict[str, set[str]] = defaultdict(set)
    for p in parts.train + val:
        if p.group and p.label == 1:
            group_pictures[p.group].add(names[p.image])
    matches: dict[str, set[str]] = defaultdict(set)
    for p in parts.train + val:
        if p.label == 1:
            matches[norm_text(p.text)] |= {names[p.image]} | (group_pictures[p.group] if p.group else set())
    concepts = {t: f"t{k:06d}" for k, t in enumerate(sorted(matches))}
    blobs = {}
    for split, rows in splits.items():
        blobs[f"pairs/{split}.jsonl"] = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                                                for r in rows)
    blobs["items.jsonl"] = "".join(json.dumps({"concept": concepts[t], "image": i}) + "\n"
                                   for t in sorted(matches) for i in sorted(matches[t]))
    texts = sorted({p.text for p in parts.train + val if norm_text(p.text) in concepts})
    blobs["texts.jsonl"] = "".join(json.dumps({"concept": concepts[norm_text(t)], "text": t}, ensure_ascii=False)
                                   + "\n" for t in texts)
    digest = hashlib.sha256()
    for name in sorted(blobs):
        digest.update(name.encode() + b"\0" + blobs[name].encode())
        (out / name).write_text(blobs[name], encoding="utf-8")
    sha = digest.hexdigest()
    (out / "manifest.json").write_text(json.dumps({"dataset_sha256": sha, "kind": "ticor adapt: a user's pairs",
                                                   "pairs": {s: len(r) for s, r in splits.items()}}, indent=2),
                                       encoding="utf-8")
    return sha
