"""Batch-scorer throughput: ``ticor score`` against the fp32 torch model as a user would write it.

    python -m ticor.benchmarks.scorer [--bundle DIR] [--preset NAME] [--rows N] [--rss-rows 10000,1000000]

All on the dataset's test pairs (its own pictures, paths in a CSV), in one run:

- **torch eager fp32**: the trained model loaded from ``CACHE/runs/PRESET``, pictures opened
  with Pillow and normalised with torch, texts tokenized with transformers' fast tokenizer,
  batches of 64 under ``torch.inference_mode()``, 2 threads;
- **ticor score** (a subprocess, as a user runs it) with the bundle, embedding cache off
  ("cold"), at several batch sizes; then with a warm embedding cache (every text and picture
  seen before);
- **peak RSS** (``VmHWM``) of ``ticor score`` on inputs of different sizes (the pairs
  repeated under new ids, embeddings cached), to show memory stays flat.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ticor.benchmarks._common import load_torch_model, test_pairs, torch_pixels, user_tokenizer
from ticor.paths import bundle_dir, dataset_dir, run_dir

_RSS = """
import sys
from ticor.cli import main
from ticor.benchmarks._common import peak_rss_mb
code = main(sys.argv[1:])
print(f"PEAK_RSS_MB {peak_rss_mb()}", file=sys.stderr)
sys.exit(code)
"""


def _csv(rows: list[dict], path: Path, repeat: int = 1) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "image"])
        w.writeheader()
        for k in range(repeat):
            for r in rows:
                w.writerow(dict(r, id=f"{r['id']}-{k}"))
    return path


def torch_rate(preset_name: str, rows: list[dict]) -> tuple[float, np.ndarray]:
    import torch

    torch.set_num_threads(2)
    model, preset, tokenizer_file = load_torch_model(run_dir(preset_name), preset_name)
    tok = user_tokenizer(tokenizer_file, preset.text_spec.pad_token)
    spec = preset.image_spec

    def picture(path: str) -> torch.Tensor:
        return torch_pixels(path, spec.size, spec.mean, spec.std)

    scores = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(rows), 64):
            chunk = rows[s : s + 64]
            enc = tok([preset.text_spec.prefix + r["text"] for r in chunk], padding=True, truncation=True,
                      max_length=preset.text_spec.max_length, return_tensors="pt")
            tv = model.text(enc["input_ids"], enc["attention_mask"])
            iv = model.image(torch.stack([picture(r["image"]) for r in chunk]))
            scores.append(model.head(tv, iv).numpy())
    return len(rows) / (time.perf_counter() - t0), np.concatenate(scores)


def ticor_rate(args: list[str], env_cache: Path) -> tuple[float, int]:
    import os

    r = subprocess.run([sys.executable, "-c", _RSS, "score", *args], capture_output=True, text=True,
                       env=dict(os.environ, TICOR_CACHE=str(env_cache)), check=False)
    if r.returncode not in (0, 1):
        raise RuntimeError(r.stderr)
    line = next(x for x in r.stderr.splitlines() if x.startswith("ticor score:") and "rows/s" in x)
    rate = float(line.split(" rows/s")[0].rsplit(" ", 1)[1])
    rss = float(next(x for x in r.stderr.splitlines() if x.startswith("PEAK_RSS_MB")).split()[1])
    return rate, rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.scorer", description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(bundle_dir()))
    ap.add_argument("--preset", default="multilingual")
    ap.add_argument("--data", default=str(dataset_dir()))
    ap.add_argument("--rows", type=int, default=2000, help="test pairs timed (default 2000)")
    ap.add_argument("--batch-sizes", default="16,64,256")
    ap.add_argument("--rss-rows", default="10000,1000000", help="input sizes for the memory check")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    rows = test_pairs(Path(a.data), a.rows)
    res: dict = {"bundle": a.bundle, "rows": len(rows)}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        inp = _csv(rows, tmp / "pairs.csv")
        base = ["--bundle", a.bundle, "--threads", "2"]
        res["torch_eager_fp32_rows_per_s"], torch_scores = torch_rate(a.preset, rows)
        res["cold"] = {}
        for bs in [int(x) for x in a.batch_sizes.split(",")]:
            rate, rss = ticor_rate([str(inp), "-o", str(tmp / f"cold-{bs}.jsonl"), *base, "--no-cache",
                                    "--batch-size", str(bs)], tmp / "cache-unused")
            res["cold"][bs] = {"rows_per_s": rate, "peak_rss_mb": rss}
        best = max(res["cold"], key=lambda b: res["cold"][b]["rows_per_s"])
        got = [json.loads(x)["score"] for x in (tmp / f"cold-{best}.jsonl").read_text().splitlines()]
        res["max_score_diff_vs_torch"] = float(np.max(np.abs(np.array(got) - torch_scores)))
        ticor_rate([str(inp), "-o", str(tmp / "fill.jsonl"), *base, "--batch-size", "256"], tmp / "cache")
        rate, _ = ticor_rate([str(inp), "-o", str(tmp / "warm.jsonl"), *base, "--batch-size", "256"], tmp / "cache")
        res["warm_cache_rows_per_s"] = rate
        res["rss"] = {}
        for n in [int(x) for x in a.rss_rows.split(",") if x]:
            big = _csv(rows, tmp / f"big-{n}.csv", repeat=max(1, n // len(rows)))
            rate, rss = ticor_rate([str(big), "-o", str(tmp / f"big-{n}.jsonl"), *base, "--batch-size", "256"],
                                   tmp / "cache")
            res["rss"][n] = {"rows": max(1, n // len(rows)) * len(rows), "peak_rss_mb": rss,
                             "rows_per_s": rate}
            big.unlink()
            (tmp / f"big-{n}.jsonl").unlink(missing_ok=True)
    t = res["torch_eager_fp32_rows_per_s"]
    print(f"torch eager fp32 (batches of 64, 2 threads): {t:.0f} rows/s")
    for bs, r in res["cold"].items():
        print(f"ticor score, cold, batch {bs:>4}: {r['rows_per_s']:.0f} rows/s ({r['rows_per_s'] / t:.1f}x torch), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    print(f"ticor score, warm embedding cache: {res['warm_cache_rows_per_s']:.0f} rows/s")
    for r in res["rss"].values():
        print(f"ticor score, {r['rows']} rows (cached): peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r['rows_per_s']:.0f} rows/s")
    print(f"largest score difference, int8 bundle vs torch fp32: {res['max_score_diff_vs_torch']:.4f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
