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


def load_matcher(args: argparse.Namespace) -> Any:
    """The bundle named by the options (verified; a bad bundle or provider exits 2, nothing written)."""
    from ticor._deps import require_onnxruntime
    from ticor.matcher import Matcher

    require_onnxruntime()
    return Matcher.load(args.bundle, providers=args.provider, threads=args.threads, cache=not args.no_cache,
                        decode_threads=args.decode_threads)
