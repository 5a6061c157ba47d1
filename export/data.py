"""A built dataset as the trainer sees it: pair rows per split and the truth behind them."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ticor.dataset.catalog import norm_text
from ticor.errors import UsageError

SPLITS = ("train", "val", "test")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@dataclass
class Dataset:
    root: Path
    sha256: str
    pairs: dict[str, list[dict]]
    positives: dict[str, set[str]]  # norm_text(text) -> every picture path it matches

    def positives_of(self, text: str) -> set[str]:
        """Every picture that ``text`` matches (the same rule the dataset builder labels with)."""
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
    return Dataset(
        root=root,
        sha256=manifest["dataset_sha256"],
        pairs=pairs,
        positives=dict(positives),
    )
