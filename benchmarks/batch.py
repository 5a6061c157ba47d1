"""How much a pair's score moves with its batch, per bundle (the quantization gate's first criterion,
measured on many pairs through the runtime as a user calls it).

``python -m ticor.benchmarks.batch BUNDLE [BUNDLE ...] [--data DIR] [--pairs N]``: the first N test
pairs of the dataset scored one at a time (``Matcher.score``), in batches of 64 in file order (as
``ticor score`` runs them), and in shuffled batches of 7 beside odd companions; prints, per bundle,
the largest score change and the decisions that differ from the pair scored alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ticor.evaluation import load_dataset
from ticor.paths import dataset_dir
from ticor.quantization.gate import ODD_TEXTS


def measure(bundle: Path, pairs: list[tuple[str, Path]], odd_pictures: list[Path]) -> dict[str, float]:
    """Each pair scored alone, in batches of 64 in order, and in shuffled batches of 7 beside one odd
    companion (the gate's odd texts with ``odd_pictures`` in turn): the largest score change and the
    decisions changed against the pair scored alone."""
    from ticor import Matcher

    m = Matcher.load(bundle, providers="cpu", threads=2)
    alone = np.array([m.score(t, p).score for t, p in pairs])
    in_order = np.array([r.score for k in range(0, len(pairs), 64) for r in m.score_batch(pairs[k : k + 64])])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pairs))
    shuffled = np.empty(len(pairs))
    for k in range(0, len(pairs), 7):
        idx = order[k : k + 7]
        company = [(ODD_TEXTS[k % len(ODD_TEXTS)], odd_pictures[k % len(odd_pictures)])]
        shuffled[idx] = [r.score for r in m.score_batch([*company, *(pairs[i] for i in idx)])[1:]]
    thr = m.threshold
    out = {"pairs": len(pairs)}
    for name, got in (("batches of 64", in_order), ("shuffled, odd company", shuffled)):
        out[f"{name}: largest change"] = float(np.abs(got - alone).max())
        out[f"{name}: decisions changed"] = int(((got >= thr) != (alone >= thr)).sum())
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.batch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=None, help="built dataset (default: CACHE/dataset/full)")
    ap.add_argument("--pairs", type=int, default=1200, help="test pairs (default 1200)")
    args = ap.parse_args(argv)
    ds = load_dataset(args.data or dataset_dir())
    rows = ds.pairs["test"][: args.pairs]
    pairs = [(r["text"], ds.root / r["image"]) for r in rows]
    odd = [ds.root / ds.split_images("val")[0]]
    results = {str(b): measure(b, pairs, odd) for b in args.bundles}
    keys = list(next(iter(results.values())))
    print("| bundle | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for b, r in results.items():
        print(f"| {Path(b).name} | " + " | ".join(f"{r[k]:.2g}" if isinstance(r[k], float) else str(r[k])
                                              for k in keys) + " |")


if __name__ == "__main__":
    main()
