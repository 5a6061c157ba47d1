"""Matching metrics in plain numpy: shared by training, export, quantization and benchmarks.

``evaluate`` takes a split's pair scores (one probability per pair) plus the pair rows and
returns accuracy, precision, recall and F1 at a threshold, ROC-AUC, the same per language,
per negative kind and per family (the dataset's rows say which: emoji, tux, openclipart, photo),
and, when given a text-by-image score matrix, text-to-image recall@k (overall, and per family
among that family's own pictures: a photo caption against the split's photos).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is missing."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    npos, nneg = int(labels.sum()), int((~labels).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    # 1-based ranks, tied scores sharing the average rank of their run
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    r = ((ends - counts + 1 + ends) / 2.0)[inverse]
    return float((r[labels].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 for ``score >= threshold`` as the match decision."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(scores) >= threshold
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    acc = (tp + tn) / len(y) if len(y) else float("nan")
    return {"accuracy": acc, "precision": prec, "recall": rec, "f1": f1, "n": len(y)}


#: A pair whose reference score lies within this distance of the reference threshold is a coin toss
#: in the reference already; a quantized variant is judged on the others (the int8 gate).
CONFIDENT_BAND = 0.05


def against_reference(ref_scores: np.ndarray, ref_threshold: float, scores: np.ndarray, threshold: float,
                      band: float = CONFIDENT_BAND) -> dict[str, Any]:
    """How a variant's decisions compare with a reference's on the same pairs, each at its own
    threshold: the share decided alike overall and among the *confident* pairs (reference score
    more than ``band`` from its threshold), flips by direction (a match lost, a match gained), the
    share of pairs inside the band, and the score change's 99.9th percentile and maximum."""
    ref_scores, scores = np.asarray(ref_scores, np.float64), np.asarray(scores, np.float64)
    if ref_scores.shape != scores.shape or not len(scores):
        raise ValueError("the reference and the variant must score the same, non-empty set of pairs")
    ref, new = ref_scores >= ref_threshold, scores >= threshold
    flips = ref != new
    confident = np.abs(ref_scores - ref_threshold) > band
    diff = np.abs(scores - ref_scores)
    return {"pairs": len(scores), "agreement": float(np.mean(~flips)), "band": band,
            "in_band_share": float(np.mean(~confident)), "confident_pairs": int(confident.sum()),
            "confident_flips": int((flips & confident).sum()),
            "confident_kept": float(np.mean(~flips[confident])) if confident.any() else 1.0,
            "match_lost": int((ref & ~new).sum()), "match_gained": int((~ref & new).sum()),
            "abs_diff_p999": float(np.quantile(diff, 0.999)), "abs_diff_max": float(diff.max())}


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises F1 (midpoint between neighbouring scores)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.sum() == 0 or (~y).sum() == 0:
        raise ValueError("choosing a threshold needs both matching and non-matching pairs")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    f1 = 2 * tp / (tp + fp + y.sum())
    distinct = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # cut only between different scores
    f1 = np.where(distinct, f1, -1.0)
    k = int(np.argmax(f1))
    if k + 1 < len(s_sorted):
        return float((s_sorted[k] + s_sorted[k + 1]) / 2.0)
    return float(s_sorted[k])


def recall_at_k(
    score_matrix: np.ndarray, positives: Sequence[set[int]], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Share of texts (rows) with a matching image (column) among their top-k scores."""
    if len(positives) != score_matrix.shape[0]:
        raise ValueError("one positive set per score row is needed")
    order = np.argsort(-score_matrix, axis=1, kind="stable")[:, : max(ks)]
    out = {}
    for k in ks:
        hits = [bool(positives[i] & set(order[i, :k].tolist())) for i in range(len(positives))]
        out[f"recall@{k}"] = float(np.mean(hits)) if hits else float("nan")
    return out


Rank = tuple[Any, ...]  # (matrix [texts, pictures], truth per text[, text families, picture families])


def rank_families(rows: Sequence[dict[str, Any]], texts: Sequence[str], images: Sequence[str]
                  ) -> tuple[list[str | None], list[str | None]]:
    """The family of each ranked text (its rows') and picture (that of the captions it matches),
    from pair rows with ``text``, ``image``, ``label`` and ``family``."""
    text_family = {r["text"]: r.get("family") for r in rows}
    image_family = {r["image"]: r.get("family") for r in rows if int(r["label"]) == 1}
    return [text_family.get(t) for t in texts], [image_family.get(p) for p in images]


def evaluate(
    rows: Sequence[dict[str, Any]],
    scores: np.ndarray,
    threshold: float,
    rank: Rank | None = None,
) -> dict[str, Any]:
    """Metrics over pair ``rows`` (``label``, optional ``lang``, ``negative`` and ``family``) and
    scores; ``rank``: the caption-by-picture score matrix, each caption's matching columns and,
    optionally, the families of its rows and columns (:func:`rank_families`), for recall@k."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(rows) != len(scores):
        raise ValueError(f"{len(rows)} pairs but {len(scores)} scores")
    labels = np.array([int(r["label"]) for r in rows])
    out: dict[str, Any] = {"threshold": float(threshold), "overall": _block(labels, scores, threshold)}
    langs = sorted({str(r["lang"]) for r in rows if r.get("lang")})
    out["by_lang"] = {}
    for lang in langs:
        sel = np.array([r.get("lang") == lang for r in rows])
        out["by_lang"][lang] = _block(labels[sel], scores[sel], threshold)
    out["by_negative"] = {}
    for kind in sorted({str(r["negative"]) for r in rows if r.get("negative")}):
        # positives against this kind of negative only
        sel = np.array([r["label"] == 1 or r.get("negative") == kind for r in rows])
        out["by_negative"][kind] = _block(labels[sel], scores[sel], threshold)
    families = sorted({str(r["family"]) for r in rows if r.get("family")})
    if families:
        out["by_family"] = {}
        for fam in families:
            sel = np.array([r.get("family") == fam for r in rows])
            out["by_family"][fam] = _block(labels[sel], scores[sel], threshold)
    if rank is not None:
        out["retrieval"] = recall_at_k(rank[0], rank[1])
        out["retrieval"]["texts"] = int(rank[0].shape[0])
        out["retrieval"]["images"] = int(rank[0].shape[1])
        if families and len(rank) == 4:
            _family_retrieval(rank, out["by_family"])
    return out


def _family_retrieval(rank: Rank, blocks: dict[str, dict[str, Any]]) -> None:
    """Recall@k of each family's captions among that family's own pictures."""
    text_family, image_family = rank[2], rank[3]
    for fam, block in blocks.items():
        ti = [i for i, f in enumerate(text_family) if f == fam]
        ii = [j for j, f in enumerate(image_family) if f == fam]
        col = {j: k for k, j in enumerate(ii)}
        truth = [{col[j] for j in rank[1][i] if j in col} for i in ti]
        keep = [k for k, t in enumerate(truth) if t]
        if len(ii) < 2 or not keep:
            continue
        sub = rank[0][np.ix_([ti[k] for k in keep], ii)]
        block["retrieval"] = {**recall_at_k(sub, [truth[k] for k in keep]), "texts": len(keep), "images": len(ii)}


def _block(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    return {**at_threshold(labels, scores, threshold), "roc_auc": roc_auc(labels, scores)}


def table(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """A plain-text table, one line per named result of :func:`evaluate`."""
    head = (f"{'model':<34} {'acc':>6} {'prec':>6} {'rec':>6} {'F1':>6} {'AUC':>6} "
            f"{'F1 en':>6} {'F1 zh':>6} {'AUC rnd':>7} {'AUC hard':>8} {'R@1':>6} {'R@5':>6} {'R@10':>6} "
            f"{'photo F1':>8} {'photo AUC':>9} {'photo R@1':>9}")
    lines = [head, "-" * len(head)]

    def f(x: Any) -> str:
        return "   n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:6.3f}"

    for name, m in rows:
        o = m["overall"]
        lang = m.get("by_lang", {})
        neg = m.get("by_negative", {})
        ret = m.get("retrieval", {})
        photo = m.get("by_family", {}).get("photo", {})
        lines.append(
            f"{name:<34} {f(o['accuracy'])} {f(o['precision'])} {f(o['recall'])} {f(o['f1'])} "
            f"{f(o['roc_auc'])} {f(lang.get('en', {}).get('f1'))} {f(lang.get('zh', {}).get('f1'))} "
            f"{f(neg.get('random', {}).get('roc_auc')):>7} {f(neg.get('hard', {}).get('roc_auc')):>8} "
            f"{f(ret.get('recall@1'))} {f(ret.get('recall@5'))} {f(ret.get('recall@10'))} "
            f"{f(photo.get('f1')):>8} {f(photo.get('roc_auc')):>9} "
            f"{f(photo.get('retrieval', {}).get('recall@1')):>9}"
        )
    return "\n".join(lines)
