"""Scores that mean what they say: Platt scaling, calibration error, and operating points.

- :func:`fit_platt` fits ``p = sigmoid(a * logit + b)`` to labelled logits by maximum
  likelihood (Newton's method on the two parameters), as done once at export on the val split.
- :func:`expected_calibration_error` and :func:`reliability` measure how far scores are from
  the observed match rate (equal-width bins).
- :func:`operating_curve` samples precision and recall against the threshold on a split; a
  bundle stores it, and :func:`choose_threshold` turns ``threshold=``, ``min_precision=`` or
  ``min_recall=`` into a threshold and says which one it gave.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ticor.errors import UsageError

BINS = 15
CURVE_POINTS = 201


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """``(a, b)`` minimising the log loss of ``sigmoid(a * logits + b)`` against ``labels``."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(z) != len(y) or not len(z):
        raise ValueError("fit_platt needs one label per logit")
    if y.min() == y.max():
        raise ValueError("fit_platt needs both matching and non-matching pairs")
    def loss(a: float, b: float) -> float:
        t = a * z + b
        return float(np.sum(np.logaddexp(0.0, t) - y * t))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(iterations):
        p = platt(z, a, b)
        w = np.maximum(p * (1 - p), 1e-12)
        g = np.array([np.sum((p - y) * z), np.sum(p - y)])
        h = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        scale = 1.0
        while scale > 1e-8:  # backtrack until the loss goes down (Newton alone can overshoot)
            na, nb = a - scale * step[0], b - scale * step[1]
            new = loss(na, nb)
            if new <= current:
                break
            scale /= 2
        else:
            break
        a, b = na, nb
        done = current - new < 1e-12 * max(1.0, abs(current))
        current = new
        if done:
            break
    return float(a), float(b)


def platt(logits: np.ndarray, a: float, b: float) -> np.ndarray:
    """``sigmoid(a * logits + b)``, without overflow."""
    return 0.5 * (1.0 + np.tanh(0.5 * (a * np.asarray(logits, dtype=np.float64) + b)))


def recalibrate(scores: np.ndarray, a: float, b: float) -> np.ndarray:
    """A second Platt map on calibrated float32 scores, ``sigmoid(a * logit(p) + b)`` (``ticor adapt
    --calibrate-only``: the head graph is kept, the runtime applies this after it). Scores that
    rounded to 0 or 1 in float32 are taken at the nearest representable value."""
    p = np.clip(np.asarray(scores, dtype=np.float64), np.float32(1e-38), 1.0 - 2.0**-24)
    return platt(np.log(p) - np.log1p(-p), a, b).astype(np.float32)


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def reliability(scores: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict[str, float | None]]:
    """Per equal-width score bin: its edges, pair count, mean score and observed match rate."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    idx = np.minimum((s * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        sel = idx == k
        n = int(sel.sum())
        out.append({"lo": k / bins, "hi": (k + 1) / bins, "n": n,
                    "mean_score": float(s[sel].mean()) if n else None,
                    "match_rate": float(y[sel].mean()) if n else None})
    return out


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Pair-weighted mean |mean score − match rate| over equal-width bins."""
    n = len(scores)
    if not n:
        return float("nan")
    total = 0.0
    for b in reliability(scores, labels, bins):
        if b["n"] and b["mean_score"] is not None and b["match_rate"] is not None:
            total += b["n"] / n * abs(b["mean_score"] - b["match_rate"])
    return total


def operating_curve(scores: np.ndarray, labels: np.ndarray, points: int = CURVE_POINTS) -> list[dict[str, float]]:
    """Precision, recall and F1 of ``score >= threshold`` at ``points`` thresholds: the split's
    score quantiles (so every region of the curve is sampled), ascending."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    thresholds = np.unique(np.quantile(s, np.linspace(0, 1, points)))
    pos = int(y.sum())
    out = []
    for t in thresholds:
        flagged = s >= t
        tp = int((flagged & y).sum())
        fp = int((flagged & ~y).sum())
        prec = tp / (tp + fp) if tp + fp else 1.0
        rec = tp / pos if pos else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out.append({"threshold": float(t), "precision": prec, "recall": rec, "f1": f1,
                    "flagged": float(flagged.mean())})
    return out


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    how: str  # e.g. "the bundle's threshold", "min_precision=0.9 on val: precision 0.903, recall 0.551"


def choose_threshold(default: float, curve: list[dict[str, float]] | None, split: str = "val",
                     threshold: float | None = None, min_precision: float | None = None,
                     min_recall: float | None = None) -> OperatingPoint:
    """The threshold for one of ``threshold=``, ``min_precision=``, ``min_recall=`` (at most one;
    none: the bundle's ``default``). ``min_precision`` takes the lowest stored threshold whose
    precision on ``split`` reaches it (the most recall at that precision); ``min_recall`` the
    highest whose recall reaches it (the most precision at that recall)."""
    given = [(k, v) for k, v in (("threshold", threshold), ("min_precision", min_precision),
                                 ("min_recall", min_recall)) if v is not None]
    if len(given) > 1:
        both = " and ".join(k for k, _ in given)
        raise UsageError(f"give one of threshold, min_precision and min_recall, not {both}")
    for k, v in given:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise UsageError(f"{k} must be a number between 0 and 1, not {v!r}")
    if not given:
        return OperatingPoint(float(default), "the bundle's threshold")
    key, value = given[0]
    value = float(value)
    if key == "threshold":
        return OperatingPoint(value, "asked")
    if not curve:
        raise UsageError(f"{key}= needs the bundle's operating curve, which this bundle does not store "
                         "(re-export it with this version)")
    if key == "min_precision":
        ok = [p for p in curve if p["precision"] >= value and p["recall"] > 0]
        if not ok:
            best = max(p["precision"] for p in curve)
            raise UsageError(f"no threshold reaches precision {value:g} on {split} (the best is {best:.3f})")
        p = min(ok, key=lambda q: q["threshold"])
    else:
        ok = [p for p in curve if p["recall"] >= value]
        if not ok:
            raise UsageError(f"no threshold reaches recall {value:g} on {split}")
        p = max(ok, key=lambda q: q["threshold"])
    return OperatingPoint(p["threshold"], f"{key}={value:g} on {split}: precision {p['precision']:.3f}, "
                                          f"recall {p['recall']:.3f}")


# ---------------------------------------------------------------- the records a bundle stores
Json = dict[str, Any]


@dataclass(frozen=True)
class ScoreCalibration:
    """Platt scaling of the head's logit, ``sigmoid(a * logit + b)``, fitted on ``fitted_on`` at
    export and built into the head graph: scores are match probabilities at that split's
    ``base_rate``. ``ece``: split -> expected calibration error ``before``/``after``;
    ``reliability``: split -> equal-width bins (calibrated scores)."""

    method: str
    a: float
    b: float
    fitted_on: str
    pairs: int
    base_rate: float
    ece: dict[str, dict[str, float]]
    reliability: dict[str, list[Json]]
    note: str = ""  # why the map is the identity, when it is

    def to_json(self) -> Json:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Json) -> ScoreCalibration:
        return cls(**d)


@dataclass(frozen=True)
class OperatingCurve:
    """Precision, recall, F1 and the share of pairs flagged against the threshold, on ``split``,
    at the split's score quantiles (ascending thresholds): what ``min_precision=`` and
    ``min_recall=`` choose from."""

    split: str
    points: tuple[Json, ...]

    def to_json(self) -> Json:
        return {"split": self.split, "points": list(self.points)}

    @classmethod
    def from_json(cls, d: Json) -> OperatingCurve:
        return cls(d["split"], tuple(d["points"]))
