"""The figures of ``ticor eval --plots`` (the ``plot`` extra: matplotlib, imported when drawing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ticor.pair_eval import Scored


def plot_report(scored: Scored, r: dict[str, Any], out: Path) -> list[Path]:
    """``pr-curve.png``, ``score-histogram.png`` and ``reliability.png`` (the plot extra: matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    labels = np.array([p.label for p in scored.pairs]).astype(bool)
    s = scored.scores
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(labels[order])
    fp = np.cumsum(~labels[order])
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(labels.sum()), 1)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(recall, precision, linewidth=1.2)
    for p in r["operating_points"]:
        ax.scatter([p["recall"]], [p["precision"]], s=20, zorder=3)
        ax.annotate(f"{p['threshold']:.3g}", (p["recall"], p["precision"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.axhline(labels.mean(), color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title(f"precision/recall, {len(s)} pairs (dashed: base rate)", fontsize=9)
    fig.tight_layout()
    pr = out / "pr-curve.png"
    fig.savefig(pr, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = [i / 40 for i in range(41)]
    ax.hist(s[labels], bins=bins, alpha=0.6, label=f"matching ({int(labels.sum())})")
    ax.hist(s[~labels], bins=bins, alpha=0.6, label=f"not matching ({int((~labels).sum())})")
    ax.axvline(r["threshold"]["value"], color="black", linewidth=1, label="threshold")
    ax.set_yscale("log")
    ax.set_xlabel("score")
    ax.set_ylabel("pairs (log)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    hist = out / "score-histogram.png"
    fig.savefig(hist, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    cells = [b for b in r["calibration"]["reliability"] if b["n"]]
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.plot([b["mean_score"] for b in cells], [b["match_rate"] for b in cells], marker="o")
    for b in cells:
        ax.annotate(str(b["n"]), (b["mean_score"], b["match_rate"]), fontsize=6, xytext=(3, -8),
                    textcoords="offset points")
    ax.set_xlabel("mean score in bin")
    ax.set_ylabel("share of pairs that match")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability (expected calibration error {r['calibration']['ece']:.3f})", fontsize=9)
    fig.tight_layout()
    rel = out / "reliability.png"
    fig.savefig(rel, dpi=120)
    plt.close(fig)
    return [pr, hist, rel]

