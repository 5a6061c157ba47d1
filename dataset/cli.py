"""``ticor data fetch | build | summary``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ticor.errors import UsageError
from ticor.paths import cache_dir


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _roots(args: argparse.Namespace, cache: Path) -> dict[str, Path]:
    from ticor.dataset.sources import SOURCES, fetch_all

    if getattr(args, "sources_dir", None):
        base = Path(args.sources_dir)
        roots = {s.name: base / s.dirname for s in SOURCES.values()}
        missing = [str(p) for p in roots.values() if not p.is_dir()]
        if missing:
            raise UsageError(f"data: not extracted sources: {', '.join(missing)}")
        return roots
    return fetch_all(cache, log=_log)


SPLITS = ("train", "val", "test")


def _by_split(counts: dict) -> str:
    return "  ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS)


def summary_text(manifest: dict) -> str:
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


def run(args: argparse.Namespace) -> int:
    cache = Path(args.cache).expanduser().resolve() if getattr(args, "cache", None) else cache_dir()
    if args.data_command == "fetch":
        _roots(args, cache)
        _log(f"sources ready in {cache}")
        return 0
    if args.data_command == "summary":
        path = Path(args.dataset) / "manifest.json"
        if not path.is_file():
            raise UsageError(f"data summary: no dataset at {args.dataset} ({path.name} missing)")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        print(json.dumps(manifest["counts"], indent=2) if args.json else summary_text(manifest))
        return 0
    from ticor.dataset.build import BuildOptions, build

    if args.size < 32 or args.size > 1024:
        raise UsageError("data build: --size must be between 32 and 1024")
    out = Path(args.out) if args.out else cache / "dataset" / args.subset
    options = BuildOptions(out=out.resolve(), subset=args.subset, size=args.size, jobs=max(args.jobs, 0),
                           quiet=args.quiet)
    roots = _roots(args, cache)
    result = build(roots, options, log=_log)
    state = "up to date, reused" if result.reused else f"built in {result.seconds:.0f}s"
    _log(f"dataset {out}: {state}")
    print(summary_text(result.manifest))
    return 0
