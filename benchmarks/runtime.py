"""Runtime figures of a bundle: cold start, peak RSS, batch-1 latency against the graphs alone,
and throughput with cached embeddings.

    python -m ticor.benchmarks.runtime [BUNDLE ...] [--data DIR] [--runs N] [--json FILE] [--breakdown | --threads]

- **Cold start**: a fresh process, from before ``import ticor`` to the first score's result
  (``Matcher.load`` verifies every file's sha256 first), median of ``--runs`` processes; with
  the peak RSS of a process that then scores 200 fresh pairs.
- **Batch-1 latency** of a fresh pair (file read + decode + preprocess + tokenize + both
  branches + head, no embedding cache) next to the sum of the three graphs' own latencies on
  the same, already prepared inputs; both interleaved in one loop, medians.
- ``--breakdown``: where a cold start's time goes, each step timed in a fresh process (the
  imports, verifying the files, the tokenizer, each session, the first score).
- ``--threads``: the sessions' thread settings (1 intra-op thread; one per core with workers
  that spin-wait, onnxruntime's default; one per core without spinning, the runtime's default),
  each in its own process through ``Matcher.load`` (pools of one process would disturb another's
  timings), ``--runs`` rounds in turn: a fresh pair at batch 1 (``Matcher.score``) and the three
  graphs at batch 64 on prepared inputs, medians.
- **Cached throughput**: pairs/s of ``Matcher.head`` on cached embeddings, and of
  ``score_batch`` end to end when every text and picture is in the embedding cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ticor.benchmarks._common import test_pairs
from ticor.paths import bundle_dir, dataset_dir
from ticor.preprocess import load_image

_COLD = """
import time
t0 = time.perf_counter()
import ticor, sys, json
m = ticor.Matcher.load(sys.argv[1], providers="cpu", memory_arena=sys.argv[5] == "1")
r = m.score(sys.argv[2], sys.argv[3])
t1 = time.perf_counter()
pairs = json.loads(sys.argv[4])
m.score_batch([(t, p) for t, p in pairs])
from ticor.benchmarks._common import peak_rss_mb
print(json.dumps({"cold_s": t1 - t0, "peak_rss_mb": peak_rss_mb()}))
"""


#: The cold path in the order ``Matcher.load`` and the first ``score`` walk it, each step timed.
_BREAKDOWN = """
import json, sys, time
t = [("start", time.perf_counter())]
import numpy
t.append(("import numpy", time.perf_counter()))
import PIL.Image
t.append(("import Pillow", time.perf_counter()))
import tokenizers
t.append(("import tokenizers", time.perf_counter()))
import onnxruntime
t.append(("import onnxruntime", time.perf_counter()))
import ticor, ticor.matcher
t.append(("import ticor", time.perf_counter()))
from ticor.bundle import read_manifest
from ticor.preprocess import load_tokenizer
from ticor.sessions import SessionConfig, create_session
m = read_manifest(sys.argv[1])
t.append(("verify every file's sha256, read the manifest", time.perf_counter()))
load_tokenizer(m.tokenizer_path, m.text_spec)
t.append(("load the tokenizer", time.perf_counter()))
config = SessionConfig(providers=("CPUExecutionProvider",))
for part in ("text", "image", "head"):
    create_session(m.graph_path(part), m.files[m.graph_path(part).name].sha256, config)
    t.append((part + " session", time.perf_counter()))
s = time.perf_counter()
matcher = ticor.Matcher.load(sys.argv[1], providers="cpu")
loaded = time.perf_counter() - s
s = time.perf_counter()
matcher.score(sys.argv[2], sys.argv[3])
t.append(("first score (after a second Matcher.load)", t[-1][1] + time.perf_counter() - s))
print(json.dumps({"steps": [[name, b - a] for (_, a), (name, b) in zip(t, t[1:])], "load_again_s": loaded}))
"""


_THREADS = """
import itertools, json, statistics, sys
import numpy as np
import ticor
from ticor.benchmarks.measure import interleaved
from ticor.preprocess import load_image
pairs = json.loads(sys.argv[4])
m = ticor.Matcher.load(sys.argv[1], providers="cpu", threads=int(sys.argv[2]), spinning=sys.argv[3] == "1")
ids, mask = m.tokenize([t for t, _ in pairs[:64]])
pics = np.stack([load_image(p, m.manifest.image_spec) for _, p in pairs[:64]])
fresh = itertools.cycle(pairs)
pair = interleaved({"pair": lambda: m.score(*next(fresh))}, 300, warmup=5)["pair"]
def batch():
    m.head(m.run_branch("text", ids, mask), m.run_branch("image", pics))
batch = interleaved({"batch": batch}, 12)["batch"]
print(json.dumps({"pair_b1_ms": statistics.median(pair), "graphs_b64_ms": statistics.median(batch)}))
"""


def thread_settings(bundle: Path, data: Path, rounds: int) -> dict[str, Any]:
    """Batch-1 pair and batch-64 graph latency per thread setting, each in its own process."""
    import os

    cores = os.cpu_count() or 1
    settings = {"1 thread": (1, False), f"{cores} threads, spinning": (cores, True),
                f"{cores} threads, no spinning (default)": (cores, False)}
    pairs = json.dumps([(r["text"], r["image"]) for r in test_pairs(data, 300)])
    got: dict[str, list[dict[str, float]]] = {k: [] for k in settings}
    for _ in range(rounds):
        for name, (threads, spin) in settings.items():
            out = subprocess.run([sys.executable, "-c", _THREADS, str(bundle), str(threads), "1" if spin else "0",
                                  pairs], capture_output=True, text=True, check=True)
            got[name].append(json.loads(out.stdout))
    return {"bundle": str(bundle), "cores": cores, "rounds": rounds,
            "settings": {k: {"pair_b1_ms": [r["pair_b1_ms"] for r in v],
                             "graphs_b64_ms": [r["graphs_b64_ms"] for r in v]} for k, v in got.items()}}


def cold_breakdown(bundle: Path, data: Path, runs: int) -> dict[str, Any]:
    """Where a cold start's time goes: each step in a fresh process, median over ``runs``."""
    t, p = next((r["text"], r["image"]) for r in test_pairs(data, 1))
    got = [json.loads(subprocess.run([sys.executable, "-c", _BREAKDOWN, str(bundle), t, p], capture_output=True,
                                     text=True, check=True).stdout) for _ in range(runs)]
    names = [name for name, _ in got[0]["steps"]]
    return {"bundle": str(bundle), "steps": {n: statistics.median(g["steps"][i][1] for g in got)
                                             for i, n in enumerate(names)},
            "load_again_s": statistics.median(g["load_again_s"] for g in got)}


def bench(bundle: Path, data: Path, runs: int, arena: bool = True) -> dict[str, Any]:
    from ticor import Matcher

    pairs = [(r["text"], r["image"]) for r in test_pairs(data, 2000)]
    cold = []
    for i in range(runs):
        t, p = pairs[i]
        out = subprocess.run([sys.executable, "-c", _COLD, str(bundle), t, p, json.dumps(pairs[100:300]),
                              "1" if arena else "0"],
                             capture_output=True, text=True, check=True)
        cold.append(json.loads(out.stdout))
    m = Matcher.load(bundle, providers="cpu", memory_arena=arena)
    lat_e2e, lat_graphs = [], []
    for i in range(300):
        t, p = pairs[i % 200]
        ids, mask = m.tokenize([t])
        pic = load_image(p, m.manifest.image_spec)[None]
        def e2e(t: str = t, p: str = p) -> float:
            t0 = time.perf_counter()
            m.score(t, p)
            return (time.perf_counter() - t0) * 1e3

        def graphs(ids: np.ndarray = ids, mask: np.ndarray = mask, pic: np.ndarray = pic) -> float:
            t0 = time.perf_counter()
            tv = m.run_branch("text", ids, mask)
            iv = m.run_branch("image", pic)
            m.head(tv, iv)
            return (time.perf_counter() - t0) * 1e3

        if i % 2:  # alternate which one runs first, so neither always finds the caches warm
            a, b = e2e(), graphs()
        else:
            b, a = graphs(), e2e()
        if i >= 20:
            lat_e2e.append(a)
            lat_graphs.append(b)
    with tempfile.TemporaryDirectory() as tmp:
        cached = Matcher.load(bundle, providers="cpu", cache=Path(tmp) / "emb.sqlite", memory_arena=arena)
        cached.score_batch(pairs)
        tv = cached.embed_texts([t for t, _ in pairs])
        iv = cached.embed_images([p for _, p in pairs])
        reps = 10  # 20,000 pairs through the head
        big_t, big_i = np.tile(tv, (reps, 1)), np.tile(iv, (reps, 1))
        t0 = time.perf_counter()
        cached.head(big_t, big_i)
        head_rate = len(big_t) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        cached.score_batch(pairs * 5)
        warm_rate = len(pairs) * 5 / (time.perf_counter() - t0)
        cached.close()
    e2e, graphs = statistics.median(lat_e2e), statistics.median(lat_graphs)
    return {
        "bundle": str(bundle), "precision": m.manifest.precision, "memory_arena": arena,
        "bundle_mb": m.manifest.size_bytes / 1e6,
        "cold_start_s": statistics.median(c["cold_s"] for c in cold),
        "cold_start_s_all": [round(c["cold_s"], 3) for c in cold],
        "peak_rss_mb": max(c["peak_rss_mb"] for c in cold),
        "e2e_batch1_ms": e2e, "graphs_batch1_ms": graphs, "e2e_over_graphs": e2e / graphs,
        "e2e_p90_ms": float(np.percentile(lat_e2e, 90)),
        "head_pairs_per_s": head_rate, "warm_cache_pairs_per_s": warm_rate,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.runtime", description=__doc__.split("\n")[0])
    ap.add_argument("bundles", nargs="*", help="bundle directories (default: CACHE/bundles/multilingual-int8)")
    ap.add_argument("--data", default=str(dataset_dir()), help="dataset with pairs/test.jsonl")
    ap.add_argument("--runs", type=int, default=5, help="cold-start processes per bundle")
    ap.add_argument("--no-arena", action="store_true", help="sessions without onnxruntime's CPU memory arena")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--breakdown", action="store_true", help="where the cold start's time goes, step by step")
    ap.add_argument("--threads", action="store_true", help="the sessions' thread settings, each in its own process")
    args = ap.parse_args(argv)
    bundles = [Path(b) for b in args.bundles] or [bundle_dir()]
    if args.threads:
        found = [thread_settings(b, Path(args.data), args.runs) for b in bundles]
        for r in found:
            print(f"{r['bundle']} ({r['cores']} cores; each setting in its own process, {r['rounds']} rounds in turn; "
                  "medians per round)")
            for name, v in r["settings"].items():
                print(f"  {name:<36} fresh pair batch 1: {' / '.join(f'{x:.2f}' for x in v['pair_b1_ms'])} ms   "
                      f"graphs batch 64: {' / '.join(f'{x:.1f}' for x in v['graphs_b64_ms'])} ms")
        if args.json:
            Path(args.json).write_text(json.dumps(found, indent=2) + "\n")
        return 0
    if args.breakdown:
        parts = [cold_breakdown(b, Path(args.data), args.runs) for b in bundles]
        print(f"{'step (fresh process, median of ' + str(args.runs) + ')':<48}"
              + "".join(f"{Path(r['bundle']).parent.name + '/' + Path(r['bundle']).name:>36}" for r in parts))
        for step in parts[0]["steps"]:
            print(f"{step:<48}" + "".join(f"{r['steps'][step] * 1e3:33.0f} ms" for r in parts))
        print(f"{'total':<48}" + "".join(f"{sum(r['steps'].values()) * 1e3:33.0f} ms" for r in parts))
        if args.json:
            Path(args.json).write_text(json.dumps(parts, indent=2) + "\n")
        return 0
    results = [bench(b, Path(args.data), args.runs, arena=not args.no_arena) for b in bundles]
    print(f"{'bundle':<28} {'MB':>7} {'cold s':>7} {'RSS MB':>7} {'e2e ms':>7} {'graphs':>7} {'ratio':>6} "
          f"{'head/s':>9} {'warm/s':>8}")
    for r in results:
        print(f"{Path(r['bundle']).name:<28} {r['bundle_mb']:7.1f} {r['cold_start_s']:7.3f} {r['peak_rss_mb']:7.0f} "
              f"{r['e2e_batch1_ms']:7.2f} {r['graphs_batch1_ms']:7.2f} {r['e2e_over_graphs']:6.2f} "
              f"{r['head_pairs_per_s']:9.0f} {r['warm_cache_pairs_per_s']:8.0f}")
    print("cold: process start to first score, median; e2e: fresh pair batch 1 vs the three graphs alone on "
          "prepared inputs (medians, interleaved); head/s: head on cached embeddings; warm/s: score_batch, all "
          "embeddings cached")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
