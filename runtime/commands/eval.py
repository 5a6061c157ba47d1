"""``ticor eval``: accuracy, precision, recall, F1, ROC-AUC and recall@k of a bundle on labelled pairs."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ticor.commands._help import describe
from ticor.commands._runtime import add_pair_columns, add_runtime_options, load_matcher
from ticor.errors import EXIT_OK, UsageError


def register(sub: Any) -> None:
    ev = sub.add_parser("eval", help="metrics of a bundle on your own labelled pairs (CSV/TSV/JSONL/Parquet)",
                        **describe("eval"))
    ev.add_argument("pairs", help="pair file with text, image and label (1/0) columns; optional lang, negative, "
                                  "group and --slice-col columns")
    add_runtime_options(ev)
    add_pair_columns(ev, "also report per value of this column")
    ev.add_argument("--id-col", default="id", help="id column (default id; absent: the row number)")
    ev.add_argument("--group-col", default="group", help="what each row's picture shows (a concept id): a caption "
                                                         "matches every picture of its matching pictures' groups "
                                                         "for recall@k (default group, if present)")
    ev.add_argument("--text-group-col", default="text_group", help="the caption's own group(s) for recall@k "
                                                                   "(default text_group, if present)")
    ev.add_argument("--also-at", type=float, action="append", default=[], metavar="THRESHOLD",
                    help="also report at this threshold (repeatable)")
    ev.add_argument("--no-rank", action="store_true", help="skip caption→picture recall@k")
    ev.add_argument("--json", help="write the full report as JSON here (- for stdout instead of the table)")
    ev.add_argument("--plots", help="write pr-curve.png, score-histogram.png and reliability.png into this folder "
                                     "(plot extra)")
    ev.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ticor._console import say
    from ticor._deps import PLOT_LINE, require_modules
    from ticor.eval_plots import plot_report
    from ticor.pair_eval import eval_report, format_report, read_labelled, score_labelled
    from ticor.tables import Columns

    for t in args.also_at:
        if not 0.0 <= t <= 1.0:
            raise UsageError(f"--also-at {t}: a threshold is a score between 0 and 1")
    if args.plots:
        require_modules("ticor eval --plots", ["matplotlib"], line=PLOT_LINE)
    cols = Columns(text=args.text_col, image=args.image_col, id=args.id_col)
    pf = read_labelled(args.pairs, cols, Path(args.image_root) if args.image_root else None, args.label_col,
                       args.slice_col, args.group_col or None,
                       args.text_group_col or None)
    m = load_matcher(args)
    try:
        say(args.quiet, f"ticor eval: {len(pf.pairs)} pairs ({len(pf.excluded)} excluded while reading), "
                        f"{len({p.text for p in pf.pairs})} captions, {len({p.image for p in pf.pairs})} pictures")
        scored = score_labelled(m, pf, with_rank=not args.no_rank)
        report = eval_report(m, pf, scored, args.also_at)
    finally:
        m.close()
    if args.plots and scored.pairs:
        report["plots"] = [str(p) for p in plot_report(scored, report, Path(args.plots))]
    text = json.dumps(finite(report), indent=2, sort_keys=True, allow_nan=False) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        if args.json:
            Path(args.json).write_text(text, encoding="utf-8")
        sys.stdout.write(format_report(report))
    if not scored.pairs:
        raise UsageError(f"{args.pairs}: no pair could be scored ({len(scored.excluded)} excluded)")
    return EXIT_OK


def finite(x: Any) -> Any:
    """``x`` with NaN (an ROC-AUC of a slice with one class) written as null."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
