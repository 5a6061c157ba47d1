"""``ticor rank``: the best pictures in a folder for a text, or the best texts for a picture."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ticor.commands._help import describe
from ticor.commands._runtime import add_runtime_options, load_matcher, threshold_line
from ticor.errors import UsageError


def register(sub: Any) -> None:
    rank = sub.add_parser("rank", help="the best pictures for a text (or texts for a picture)", **describe("rank"))
    rank.add_argument("--text", help="query text (candidates: --images DIR)")
    rank.add_argument("--images", help="folder of candidate pictures (searched recursively)")
    rank.add_argument("--image", help="query picture (candidates: --texts FILE)")
    rank.add_argument("--texts", help="file of candidate texts, one per line")
    rank.add_argument("-k", type=int, default=10, help="how many to print (default 10)")
    add_runtime_options(rank)
    rank.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ticor.inputs import accepted_extensions, accepted_formats

    if (args.text is None) == (args.image is None):
        raise UsageError("give exactly one query: --text TEXT (with --images DIR) or --image FILE (with --texts FILE)")
    if args.k < 1:
        raise UsageError("-k must be at least 1")
    query: str | Path
    if args.text is not None:
        if not args.images or not Path(args.images).is_dir():
            raise UsageError("--text needs --images DIR, a folder of pictures")
        exts = accepted_extensions()
        cands = sorted(str(p) for p in Path(args.images).rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not cands:
            raise UsageError(f"{args.images}: no pictures ({', '.join(accepted_formats())})")
        query = args.text
    else:
        if not args.texts or not Path(args.texts).is_file():
            raise UsageError("--image needs --texts FILE, one text per line")
        cands = [t for t in Path(args.texts).read_text(encoding="utf-8", errors="replace").splitlines() if t.strip()]
        query = Path(args.image)
    m = load_matcher(args)
    print(threshold_line("rank", m.operating_point), file=sys.stderr)
    try:
        r = m.rank(query, cands, k=args.k)
    finally:
        m.close()
    for place, h in enumerate(r.hits, 1):
        print(json.dumps({"rank": place, "score": h.score, "match": h.match,
                          ("image" if args.text is not None else "text"): cands[h.index]}, ensure_ascii=False))
    for i, status, err in r.failed:
        print(f"ticor rank: skipped {cands[i]}: {status} ({err})", file=sys.stderr)
    return 0
