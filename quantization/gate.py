"""The quantization gate: what a quantized bundle promises against its fp32 reference.

Chosen on val, reported on test, overall and per language (version 2 of the gate record):

1. **Batch independence.** A pair's score is the same alone, in any batch size and beside any
   company: the largest difference over a sample of pairs scored alone, in one batch, and in
   shuffled small batches beside odd companions (a very long caption, a line of symbols, an
   empty caption, a blank and a noise picture) is at most :data:`MAX_BATCH_DRIFT` on the CPU
   provider. fp16 bundles are for GPU providers: there it is measured (on the CPU) and reported.
2. **Quality.** F1 within :data:`MAX_F1_DROP` of fp32 and ROC-AUC within :data:`MAX_AUC_DROP`.
3. **Confident decisions kept.** Among pairs whose fp32 score is more than
   :data:`ticor.metrics.CONFIDENT_BAND` from fp32's threshold, at least :data:`MIN_CONFIDENT`
   decided as fp32 decides them (flips both ways). The band is fixed, never tuned per recipe.
4. Reported, not gated: the share of pairs inside the band, the unrestricted agreement, flips by
   direction, the 99.9th percentile of the score change, the change in calibration error.

A pair near the threshold is a coin toss in fp32 already; a confident pair that changes its
decision is a real regression: the gate promises the second and reports the first. The limits
are never loosened to let a graph through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ticor.bundle import BRANCHES, Manifest
from ticor.calibration import expected_calibration_error
from ticor.metrics import against_reference, at_threshold, roc_auc

GATE_VERSION = 2
MAX_BATCH_DRIFT = 1e-5  # largest |score alone - score in a batch|, CPU provider
MAX_F1_DROP = 0.005  # absolute F1 (0.5 points)
MAX_AUC_DROP = 0.005
MIN_CONFIDENT = 0.999  # share of confident pairs decided as fp32 decides them

#: Odd company for the batch-independence check: a caption far longer than any in the data, a line
#: of symbols and emoji, an empty caption.
ODD_TEXTS = ("a very long caption about " + "a red apple on a wooden table in the morning light, " * 40,
             "@#$%^&*()_+{}|:<>?~`-=[];',./ ★☆♠♣♥♦ ©®™ 🙂🙃🍎🐱 Ω≈ç√∫", "")


def judge(labels: np.ndarray, langs: Sequence[str], ref_scores: np.ndarray, ref_threshold: float,
          scores: np.ndarray, threshold: float, drift: float,
          drift_limit: float | None = MAX_BATCH_DRIFT) -> dict[str, Any]:
    """Every criterion of the gate for one variant on one split: ``{"version", "passed", "criteria",
    "reported", "by_lang"}`` (JSON-ready). ``drift`` is the variant's measured batch drift;
    ``drift_limit`` None reports it without gating (a bundle meant for GPU providers)."""
    y = np.asarray(labels).astype(bool)
    ref_scores, scores = np.asarray(ref_scores, np.float64), np.asarray(scores, np.float64)
    cmp = against_reference(ref_scores, ref_threshold, scores, threshold)
    f1_ref, f1 = at_threshold(y, ref_scores, ref_threshold)["f1"], at_threshold(y, scores, threshold)["f1"]
    auc_ref, auc = roc_auc(y, ref_scores), roc_auc(y, scores)
    criteria = {
        "batch_independence": {"value": drift, "limit": drift_limit,
                               "passed": bool(drift_limit is None or drift <= drift_limit)},
        "f1": {"reference": f1_ref, "value": f1, "change": f1 - f1_ref, "max_drop": MAX_F1_DROP,
               "passed": bool(f1_ref - f1 <= MAX_F1_DROP)},
        "roc_auc": {"reference": auc_ref, "value": auc, "change": auc - auc_ref, "max_drop": MAX_AUC_DROP,
                    "passed": bool(auc_ref - auc <= MAX_AUC_DROP)},
        "confident_kept": {"value": cmp["confident_kept"], "limit": MIN_CONFIDENT, "band": cmp["band"],
                           "pairs": cmp["confident_pairs"], "flips": cmp["confident_flips"],
                           "passed": bool(cmp["confident_kept"] >= MIN_CONFIDENT)},
    }
    reported = {**cmp, "ece_change": expected_calibration_error(scores, y) - expected_calibration_error(ref_scores, y)}
    by_lang = {}
    lang_arr = np.asarray(list(langs))
    for lang in sorted(set(lang_arr.tolist())):
        sel = lang_arr == lang
        c = against_reference(ref_scores[sel], ref_threshold, scores[sel], threshold)
        by_lang[lang] = {"pairs": int(sel.sum()),
                         "f1_change": at_threshold(y[sel], scores[sel], threshold)["f1"]
                         - at_threshold(y[sel], ref_scores[sel], ref_threshold)["f1"],
                         "roc_auc_change": roc_auc(y[sel], scores[sel]) - roc_auc(y[sel], ref_scores[sel]),
                         "confident_kept": c["confident_kept"], "confident_flips": c["confident_flips"],
                         "agreement": c["agreement"]}
    return {"version": GATE_VERSION, "passed": all(c["passed"] for c in criteria.values()), "criteria": criteria,
            "reported": reported, "by_lang": by_lang}


def failures(verdict: dict[str, Any]) -> list[str]:
    """The criteria a verdict fails, in words."""
    c = verdict["criteria"]
    out = []
    if not c["batch_independence"]["passed"]:
        out.append(f"a pair's score moves by {c['batch_independence']['value']:.2g} with its batch "
                   f"(allowed {c['batch_independence']['limit']:g})")
    if not c["f1"]["passed"]:
        out.append(f"F1 {c['f1']['value']:.4f} vs fp32 {c['f1']['reference']:.4f} (allowed drop {MAX_F1_DROP})")
    if not c["roc_auc"]["passed"]:
        out.append(f"ROC-AUC {c['roc_auc']['value']:.4f} vs fp32 {c['roc_auc']['reference']:.4f} "
                   f"(allowed drop {MAX_AUC_DROP})")
    if not c["confident_kept"]["passed"]:
        k = c["confident_kept"]
        out.append(f"{k['flips']} of {k['pairs']} confident pairs decided otherwise than fp32 ({k['value']:.2%} kept, "
                   f"needs {MIN_CONFIDENT:.1%})")
    return out


def batch_drift(embed_texts: Callable[[list[str]], np.ndarray], embed_pictures: Callable[[np.ndarray], np.ndarray],
                head: Callable[[np.ndarray, np.ndarray], np.ndarray], texts: list[str], pictures: np.ndarray,
                seed: int = 0) -> float:
    """The largest change of a pair's score with its company: pair ``k`` is ``(texts[k], pictures[k])``;
    each text and picture embedded alone (batch 1), all together in one batch, and in shuffled batches
    of five beside the odd companions; each pair's score taken alone and in one head batch."""
    n = len(texts)
    if n != len(pictures) or n == 0:
        raise ValueError("batch_drift needs as many pictures as texts, at least one")
    rng = np.random.default_rng(seed)
    alone_t = np.concatenate([embed_texts([t]) for t in texts])
    alone_i = np.concatenate([embed_pictures(pictures[k : k + 1]) for k in range(n)])
    variants_t, variants_i = [embed_texts(list(texts))], [embed_pictures(pictures)]
    odd_pics = np.stack([np.zeros_like(pictures[0]), rng.standard_normal(pictures[0].shape).astype(pictures.dtype)])
    for _ in range(2):
        order = rng.permutation(n)
        t_out, i_out = np.empty_like(alone_t), np.empty_like(alone_i)
        for k in range(0, n, 5):
            idx = order[k : k + 5]
            t = embed_texts([*ODD_TEXTS[: 1 + k % 3], *(texts[i] for i in idx)])
            t_out[idx] = t[1 + k % 3 :]
            im = embed_pictures(np.concatenate([odd_pics[: 1 + k % 2], pictures[idx]]))
            i_out[idx] = im[1 + k % 2 :]
        variants_t.append(t_out)
        variants_i.append(i_out)
    alone = np.array([head(alone_t[k : k + 1], alone_i[k : k + 1])[0] for k in range(n)], np.float64).ravel()
    worst = 0.0
    for t, i in zip(variants_t, variants_i):
        worst = max(worst, float(np.abs(np.asarray(head(t, i), np.float64).ravel() - alone).max()))
    return worst


def gate_line(m: Manifest) -> str:
    q = m.quantization
    if q is None:
        return f"{m.root} is not a quantized bundle"
    g = q.gate
    size, src = m.size_bytes, q.source_bytes
    branches = ", ".join(f"{p} {q.branches[p]}" for p in BRANCHES)
    return (f"{branches}: test {g.describe()}, size {src / 1e6:.1f} MB -> {size / 1e6:.1f} MB ({size / src:.0%})"
            + q.kernel_clause())


def format_table(table: list[dict[str, Any]], chosen: dict[str, Any] | None = None) -> str:
    head = (f"{'text':<13} {'image':<16} {'head':<5} {'val F1':>7} {'dF1':>6} {'dAUC':>7} {'conf':>7} "
            f"{'agree':>7} {'drift':>7} {'text ms':>8} {'image ms':>8} {'MB':>7} {'text b64':>9} {'image b64':>9}")
    lines = [head]
    for r in table:
        mark = " *" if chosen is not None and r["files"] == chosen["files"] else ""
        lat, gr, c = r["latency_ms"], r["graphs"], r["val_gate"]["criteria"]
        ok = "" if r["val_passes"] else " x " + ",".join(k for k, v in c.items() if not v["passed"])
        b64 = r["latency_ms_b64"]
        lines.append(f"{gr['text']:<13} {gr['image']:<16} {gr['head']:<5} {r['val_f1']:7.3f} "
                     f"{r['val_f1_change'] * 100:+6.2f} {c['roc_auc']['change']:+7.4f} "
                     f"{c['confident_kept']['value']:7.2%} {r['val_agreement']:7.2%} "
                     f"{c['batch_independence']['value']:7.0e} {lat['text']:8.2f} {lat['image']:8.2f} "
                     f"{r['bytes'] / 1e6:7.1f} {b64['text']:9.1f} {b64['image']:9.1f}{mark}{ok}")
    band = table[0]["val_gate"]["reported"]
    lines.append(f"val split; threshold at fp32's share of positive decisions; conf = confident decisions (fp32 score "
                 f"more than {band['band']} from its threshold; {1 - band['in_band_share']:.1%} of pairs) equal to "
                 "fp32's; agree = all decisions equal to fp32's; drift = largest change of a pair's score with its "
                 "batch; latency: median of 100 runs (batch 1) and of 10 runs (b64: batch 64) per graph in one "
                 "process, 2 threads; chosen per branch: the fastest at batch 1 and 64 together (product of the time "
                 f"ratios to fp32) among those that pass; x = outside the gate (drift {MAX_BATCH_DRIFT:g}, F1 "
                 f"-{MAX_F1_DROP * 100:g} pts, ROC-AUC -{MAX_AUC_DROP:g}, {MIN_CONFIDENT:.1%} of confident decisions), "
                 "with the criteria it fails; * = chosen")
    return "\n".join(lines)
