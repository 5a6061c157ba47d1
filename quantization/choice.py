"""How ``ticor quantize`` chooses among candidate graphs: each candidate's speed against fp32
(:func:`speed_key`), the threshold that keeps fp32's operating point (:func:`matched_threshold`),
and what goes back to fp32 when branches that pass alone fail together (:func:`settle`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ticor._console import say
from ticor.bundle import BRANCHES
from ticor.quantization.gate import failures


@dataclass(frozen=True)
class Graph:
    """One candidate graph of one branch: ``name`` is what the table and ``--text``/``--image`` use."""

    branch: str
    name: str
    file: str  # in the work directory


def speed_key(row: dict[str, Any], fp32_row: dict[str, Any], part: str) -> float:
    """How a candidate's ``part`` graph compares with fp32 at batch 1 and at batch 64 together
    (the product of the two time ratios: a graph faster at one size and slower at the other
    does not win on the size that flatters it)."""
    ratio = row["latency_ms"][part] / fp32_row["latency_ms"][part]
    if "latency_ms_b64" in row:
        ratio *= row["latency_ms_b64"][part] / fp32_row["latency_ms_b64"][part]
    return ratio


def matched_threshold(scores: np.ndarray, rate: float) -> float:
    """The threshold at which ``scores`` flag the fraction ``rate`` of pairs (fp32's operating point).

    Quantization shifts scores a little; re-fitting by maximum F1 instead can jump to another
    point of a flat F1 curve and change many decisions for nothing (measured: 98.5% vs 99.7% of
    validation decisions kept for the same int8 text graph).
    """
    if not 0.0 < rate < 1.0:
        return float(np.min(scores)) if rate >= 1.0 else float(np.max(scores)) + 1e-6
    return float(np.quantile(scores, 1.0 - rate))


def settle(chosen: dict[str, Graph], fp32: dict[str, Graph], asked: dict[str, str], table: list[dict[str, Any]],
           row_for: Any, quiet: bool = True) -> tuple[dict[str, Graph], dict[str, Any]]:
    """The graphs to write and their val row. Each branch's graph kept the gate on val alone
    (its row in ``table``, the other branches fp32); together they may not: then, while they do
    not, of the branches chosen automatically the one whose graph gains least time
    (:func:`speed_key`) goes back to fp32, down to one quantized branch, which the test gate
    judges alone. A branch forced by the user (``asked``) stays. Rows made here join ``table``."""
    chosen = dict(chosen)
    row = row_for(chosen)
    while True:
        if row["files"] not in [r["files"] for r in table]:
            table.append(row)
        quantized = [p for p in BRANCHES if chosen[p].name != "fp32"]
        auto = [p for p in quantized if asked.get(p, "auto") == "auto"]
        if row["val_passes"] or len(quantized) < 2 or not auto:
            return chosen, row

        def alone(part: str) -> dict[str, Any]:
            return next(r for r in table if r["graphs"][part] == chosen[part].name
                        and all(r["graphs"][o] == "fp32" for o in BRANCHES if o != part))

        back = max(auto, key=lambda p: speed_key(alone(p), table[0], p))
        say(quiet, f"ticor quantize: {row['variant']} fails the gate on val together "
                   f"({'; '.join(failures(row['val_gate']))}): the {back} branch goes back to fp32")
        chosen[back] = fp32[back]
        row = row_for(chosen)
