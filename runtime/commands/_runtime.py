"""Options and loading shared by the commands that run a bundle (``score``, ``rank``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle directory (default: CACHE/bundles/multilingual-int8, built by `make run`)")
    p.add_argument("--provider", help="auto (default), cpu, cuda, tensorrt or an onnxruntime provider name")
    p.add_argument("--threads", type=int, help="intra-op threads per graph (default: TICOR_THREADS or "
                                               "onnxruntime's choice)")
    p.add_argument("--no-cache", action="store_true", help="do not use the embedding cache (CACHE/embeddings.sqlite)")
    p.add_argument("--decode-threads", type=int, help="pictures decoded in parallel per batch (default: up to 4, "
                                                      "one per core)")
    point = p.add_mutually_exclusive_group()
    point.add_argument("--threshold", type=float, help="match when the score is at least this (default: the "
                                                       "bundle's threshold)")
    point.add_argument("--min-precision", type=float, help="the lowest threshold with at least this precision on "
                                                           "the bundle's val split (the most recall at it)")
    point.add_argument("--min-recall", type=float, help="the highest threshold with at least this recall on the "
                                                        "bundle's val split (the most precision at it)")


def add_pair_columns(p: argparse.ArgumentParser, slice_help: str) -> None:
    """The columns of a pair file (``ticor eval``, ``ticor adapt``)."""
    p.add_argument("--image-root", help="folder for relative image paths (default: the pair file's folder)")
    p.add_argument("--text-col", default="text", help="text column (default text)")
    p.add_argument("--image-col", default="image", help="image column (default image)")
    p.add_argument("--label-col", default="label", help="label column (default label)")
    p.add_argument("--slice-col", action="append", default=[], help=f"{slice_help} (repeatable)")


def load_matcher(args: argparse.Namespace) -> Any:
    """The bundle named by the options (verified; a bad bundle or provider exits 2, nothing written)."""
    from ticor._deps import require_onnxruntime
    from ticor.matcher import Matcher

    require_onnxruntime()
    return Matcher.load(args.bundle, providers=args.provider, threads=args.threads, cache=not args.no_cache,
                        decode_threads=args.decode_threads, **operating_options(args))


def operating_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"threshold": args.threshold, "min_precision": args.min_precision, "min_recall": args.min_recall}


def threshold_line(command: str, point: Any) -> str:
    """``ticor score: threshold 0.5123 (the bundle's threshold)``: said on stderr before any row."""
    return f"ticor {command}: threshold {point.threshold:.4f} ({point.how})"
