"""The held-out photo set as a ``ticor eval`` file: every photo pair of the val and test splits.

    python -m ticor.benchmarks.heldout_photos [--data DATASET] --out FILE.jsonl
    ticor eval FILE.jsonl --bundle BUNDLE --image-root DATASET

Each row is the dataset's pair row plus ``group`` (the concept its picture shows) and
``text_group`` (the concepts its caption was written for), so ``ticor eval``'s recall@k counts
every photo of a caption's concepts as a hit, exactly as the manifest's own recall does. The
val photos choose the kept training step and fit the calibration; the test photos are used
once. Any bundle can be scored on the same file, so two bundles compare on the same set.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from ticor.evaluation import read_jsonl
from ticor.paths import cache_path

SPLITS = ("val", "test")
FAMILY = "photo"


def heldout_rows(data: Path) -> list[dict[str, object]]:
    """The photo pairs of val and test with their ``group`` and ``text_group`` columns."""
    concept = {r["image"]: r["concept"] for r in read_jsonl(data / "items.jsonl")}
    text_concepts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for t in read_jsonl(data / "texts.jsonl"):
        text_concepts[(t["split"], t["text"])].add(t["concept"])
    rows = []
    for split in SPLITS:
        for r in read_jsonl(data / "pairs" / f"{split}.jsonl"):
            if r["family"] == FAMILY:
                rows.append({**r, "split": split, "group": concept[r["image"]],
                             "text_group": sorted(text_concepts[(split, r["text"])])})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.heldout_photos", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=cache_path("dataset", "full"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    rows = heldout_rows(args.data)
    if not rows:
        raise SystemExit(f"{args.data}: no photo pairs in {' or '.join(SPLITS)}")
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    captions = {r["text"] for r in rows}
    photos = {r["image"] for r in rows}
    per_split = ", ".join(f"{s} {sum(r['split'] == s for r in rows)}" for s in SPLITS)
    print(f"{args.out}: {len(rows)} pairs ({per_split}), {len(captions)} captions, {len(photos)} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
