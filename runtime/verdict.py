"""A quantization gate's verdict (version 2 of the manifest's gate record) in words.

The verdict is the JSON ``ticor.quantization.gate.judge`` writes: ``criteria`` (batch
independence, F1, ROC-AUC, confident decisions kept, each with its value and limit), ``reported``
(the figures beside them) and ``by_lang``. ``ticor quantize`` prints this line and ``ticor info``
repeats it from the bundle, so both read it here, in the runtime.
"""

from __future__ import annotations

from typing import Any


def describe_verdict(verdict: dict[str, Any]) -> str:
    """A gate verdict (version 2) in one line: each criterion's figure, then what is reported beside it."""
    c, r = verdict["criteria"], verdict["reported"]
    gated = "" if c["batch_independence"]["limit"] else " (reported)"
    return (f"F1 {c['f1']['reference']:.4f} -> {c['f1']['value']:.4f} ({c['f1']['change'] * 100:+.2f} pts), "
            f"ROC-AUC {c['roc_auc']['change']:+.4f}, confident decisions kept {c['confident_kept']['value']:.2%} "
            f"({c['confident_kept']['flips']} of {c['confident_kept']['pairs']} flipped; "
            f"{r['in_band_share']:.1%} of pairs within {r['band']} of the threshold), all decisions "
            f"{r['agreement']:.2%} ({r['match_lost']} matches lost, {r['match_gained']} gained), batch drift "
            f"{c['batch_independence']['value']:.1g}{gated}, |score change| p99.9 {r['abs_diff_p999']:.3f}, "
            f"ECE {r['ece_change']:+.3f}")


def describe_v1(gate: dict[str, Any]) -> str:
    """A version-1 gate record (bundles written before the batch-independence gate) in one line."""
    return (f"F1 {gate['fp32_test_f1']:.4f} -> {gate['test_f1']:.4f} ({gate['f1_change'] * 100:+.2f} pts), decisions "
            f"agree on {gate['agreement']:.2%} (gate version 1: F1 and {gate['min_agreement'] or 0:.0%} of decisions)")


def describe_by_lang(verdict: dict[str, Any]) -> str:
    """The verdict per language, one clause each (``ticor info``, ``ticor quantize``)."""
    return "; ".join(f"{lang or '?'} ({b['pairs']} pairs): F1 {b['f1_change'] * 100:+.2f} pts, ROC-AUC "
                     f"{b['roc_auc_change']:+.4f}, confident kept {b['confident_kept']:.2%} "
                     f"({b['confident_flips']} flipped), all decisions {b['agreement']:.2%}"
                     for lang, b in verdict.get("by_lang", {}).items())
