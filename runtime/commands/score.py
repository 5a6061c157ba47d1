"""``ticor score``: (text, image) rows from CSV/TSV/JSONL/Parquet or stdin, locally or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ticor.commands._help import describe
from ticor.commands._runtime import add_runtime_options, load_matcher, operating_options, threshold_line
from ticor.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError


def register(sub: Any) -> None:
    score = sub.add_parser("score", help="score (text, image) rows from CSV/TSV/JSONL/Parquet or stdin",
                           **describe("score"))
    score.add_argument("input", help="CSV, TSV, JSONL or Parquet file (by extension), or - for JSONL on stdin")
    score.add_argument("-o", "--output", help="JSONL, CSV or Parquet file (by extension); default: JSONL on "
                                              "stdout. With a file the run is resumable")
    add_runtime_options(score)
    score.add_argument("--batch-size", type=int, default=64, help="pairs per inference batch (default 64)")
    score.add_argument("--image-root", help="folder for relative image paths (default: the input's folder)")
    score.add_argument("--text-col", default="text", help="text column (default text)")
    score.add_argument("--image-col", default="image", help="image column (default image)")
    score.add_argument("--id-col", default="id", help="id column (default id; absent: the row number)")
    score.add_argument("--max-failures", type=int, help="stop once more rows than this have failed")
    score.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    score.add_argument("--shard-rows", type=int, default=4096, help="rows per committed shard (default 4096)")
    score.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local (default) or ray (Ray Data; the ray extra); both write the same OUTPUT file")
    score.add_argument("--address", help="ray: join this cluster (default: start a local Ray)")
    score.add_argument("--actors", type=int, default=1, help="ray: inference actors (default 1)")
    score.add_argument("--cpus-per-actor", type=int, default=1,
                       help="ray: CPUs (= intra-op threads) per actor (default 1)")
    score.add_argument("--gpus-per-actor", type=float, default=0, help="ray: GPUs per actor (default 0)")
    score.set_defaults(handler=run)


def _failed_line(bad: int) -> str:
    return f"ticor score: {bad} row{'s' if bad > 1 else ''} failed (see the status and error columns)"


def run(args: argparse.Namespace) -> int:
    from ticor.errors import ScoreFailed
    from ticor.tables import Columns

    cols = Columns(text=args.text_col, image=args.image_col, id=args.id_col)
    if args.input != "-" and not Path(args.input).is_file():
        raise UsageError(f"{args.input}: no such input file")
    output = Path(args.output) if args.output and args.output != "-" else None
    image_root = Path(args.image_root) if args.image_root else None
    if args.engine == "ray":
        return _run_ray(args, cols, output, image_root)
    from ticor.scorer import score_file

    m = load_matcher(args)
    print(threshold_line("score", m.operating_point), file=sys.stderr)
    try:
        s = score_file(m, args.input, output, cols, image_root, batch_size=args.batch_size,
                       shard_rows=args.shard_rows, max_failures=args.max_failures, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print("ticor score: interrupted; committed rows are kept, run the same command to resume"
              if output else "ticor score: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ScoreFailed as exc:
        print(f"ticor score: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        m.close()
    print(s.line(), file=sys.stderr)
    bad = sum(s.failed.values())
    if bad:
        print(_failed_line(bad), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _run_ray(args: argparse.Namespace, cols: Any, output: Path | None, image_root: Path | None) -> int:
    from ticor.paths import bundle_dir
    from ticor.ray_engine import score_with_ray
    from ticor.tables import check_header, check_unique_ids, input_format

    if output is None:
        raise UsageError("--engine ray writes a file: pass -o OUT.jsonl, OUT.csv or OUT.parquet")
    if args.input == "-":
        raise UsageError("--engine ray reads a file, not stdin")
    check_header(args.input, input_format(args.input), cols)
    check_unique_ids(args.input, cols)
    from ticor.bundle import read_manifest

    bundle = Path(args.bundle) if args.bundle else bundle_dir()
    if not bundle.is_dir():
        raise UsageError(f"{bundle}: no such bundle directory")
    point = read_manifest(bundle).operating_point(**operating_options(args))
    print(threshold_line("score", point), file=sys.stderr)
    try:
        s = score_with_ray(args.input, output, bundle, cols, image_root,
                           address=args.address, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                           gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size, provider=args.provider,
                           overwrite=args.overwrite, threshold=point.threshold)
    except KeyboardInterrupt:
        print("ticor score: interrupted; written parts are kept, run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    counts = s["counts"]
    bad = sum(v for k, v in counts.items() if k != "ok")
    rows = sum(counts.values())
    rate = s["rows_scored"] / s["seconds"] if s["seconds"] else 0.0
    print(f"ticor score: {rows} rows ({counts.get('ok', 0)} ok, {bad} failed), {s['rows_already_done']} done before, "
          f"{s['rows_scored']} scored now in {s['seconds']:.1f} s, {rate:.0f} rows/s, engine ray ({s['address']})",
          file=sys.stderr)
    if bad:
        print(_failed_line(bad), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
