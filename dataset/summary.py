"""A built dataset's counts as text (``ticor data summary``, the end of ``ticor data build``)."""

from __future__ import annotations

from typing import Any

from ticor.evaluation import SPLITS


def _by_split(counts: dict[str, int]) -> str:
    return "  ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)


def summary_text(manifest: dict[str, Any]) -> str:
    c = manifest["counts"]
    lines = [f"dataset {manifest['dataset_sha256'][:16]}  ({manifest['inputs']['options']['subset']}, "
             f"{manifest['image']['size']} px)"]
    lines.append(f"  images: {c['images']}  " + _by_split(c["images_by_split"]))
    lines.append("  pictures by source:")
    for source, splits in sorted(c["images_by_source_split"].items()):
        lines.append(f"    {source:13s} " + "  ".join(f"{s} {splits.get(s, 0):5d}" for s in SPLITS))
    lines.append("  concepts by family:")
    for fam, splits in sorted(c["concepts_by_family_split"].items()):
        lines.append(f"    {fam:13s} " + "  ".join(f"{s} {splits.get(s, 0):5d}" for s in SPLITS))
    lines.append("  groups: " + _by_split(c["groups_by_split"]))
    lines.append("  pairs (positive / random / hard negatives):")
    for split in SPLITS:
        for lang, kinds in sorted(c["pairs_by_split_lang_kind"].get(split, {}).items()):
            lines.append(f"    {split:5s} {lang}  {kinds.get('positive', 0):6d} / {kinds.get('random', 0):6d} / "
                         f"{kinds.get('hard', 0):6d}")
    lines.append("  pairs total: " + _by_split(c["pairs_by_split"]))
    skipped = {src: sum(r.values()) for src, r in manifest["skipped"].items()}
    lines.append("  skipped: " + ", ".join(f"{s} {n}" for s, n in sorted(skipped.items())))
    return "\n".join(lines)
