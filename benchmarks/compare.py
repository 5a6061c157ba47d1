"""``ticor bench --compare RUN_A RUN_B ...``: saved runs side by side, as ratios to the first.

Each RUN is a ``results.json`` or the folder holding it (schema versions
:data:`~ticor.benchmarks.report.READABLE_SCHEMAS`). Rows are the figures every run has for the
same variant (fresh and cached pair, branch latencies at batch 1 and the largest common batch,
cold start, peak RSS, size, F1, ROC-AUC, the matmul peak); columns are the runs, each with its
ratio to the first. Writes ``compare.md`` and ``compare.png`` (when matplotlib is installed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ticor._deps import PLOT_LINE
from ticor.errors import UsageError
from ticor.paths import cache_path


def load_run(path: str | Path) -> dict[str, Any]:
    from ticor.benchmarks.report import READABLE_SCHEMAS

    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise UsageError(f"{path}: no results.json there (a folder written by `ticor bench`, or the file)")
    try:
        r = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{p}: not a JSON file ({exc})") from None
    if not isinstance(r, dict) or r.get("schema_version") not in READABLE_SCHEMAS:
        raise UsageError(f"{p}: not a ticor bench result this version reads (schema_version "
                         f"{r.get('schema_version') if isinstance(r, dict) else None!r}; reads {READABLE_SCHEMAS})")
    r["_path"] = str(p)
    return r


def _get(d: Any, *keys: str) -> float | None:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None


def _figures(r: dict[str, Any], n: str, big: str | None, name: str) -> list[tuple[str, bool, float | None]]:
    """``(label, lower is better, value)`` of one variant in one run."""
    rows: list[tuple[str, bool, float | None]] = [
        ("fresh pair p50 ms", True, _get(r, "end_to_end", name, "fresh_pair", "p50_ms")),
        ("fresh pair, 12 MP JPEG, p50 ms", True, _get(r, "end_to_end", name, "fresh_pair_12mp_jpeg", "p50_ms")),
        ("cached pair p50 ms", True, _get(r, "end_to_end", name, "cached_pair", "p50_ms"))]
    for part in ("text", "image"):
        for bs in dict.fromkeys(["1", big]):
            if bs is not None:
                rows.append((f"{part} batch {bs} p50 ms", True, _get(r, "branches", name, part, n, bs, "p50_ms")))
    size = _get(r, "variants", name, "size_bytes")
    rows += [("cold start s", True, _get(r, "cold", name, "cold_start_s")),
             ("peak RSS MB", True, _get(r, "cold", name, "peak_rss_mb")),
             ("size MB", True, size / 1e6 if size else None),
             ("F1", False, _get(r, "quality", name, "overall", "f1")),
             ("ROC-AUC", False, _get(r, "quality", name, "overall", "roc_auc"))]
    return rows


def common_rows(runs: list[dict[str, Any]]) -> list[tuple[str, bool, list[float | None]]]:
    """``(label, lower is better, value per run)`` for every figure the first run has and another shares."""
    n = [str(r["settings"]["threads"][-1]) for r in runs]
    common_bs = set.intersection(*[{str(b) for b in r["settings"]["batch_sizes"]} for r in runs])
    big = str(max(int(b) for b in common_bs)) if common_bs else None
    out: list[tuple[str, bool, list[float | None]]] = []
    for name in runs[0]["variants"]:
        per_run = [_figures(r, n[i], big, name) for i, r in enumerate(runs)]
        for k, (label, lower, first) in enumerate(per_run[0]):
            vals = [first] + [p[k][2] for p in per_run[1:]]
            if first is not None and any(v is not None for v in vals[1:]):
                out.append((f"{name}: {label}", lower, vals))
    for kind in ("fp32", "int8"):
        vals = [_get(r, "limit", "matmul_peak", n[i], f"{kind}_gops") for i, r in enumerate(runs)]
        if vals[0] is not None:
            out.append((f"machine: {kind} matmul peak G(FL)OP/s", False, vals))
    return out


def labels(runs: list[dict[str, Any]]) -> list[str]:
    out = []
    for i, r in enumerate(runs):
        out.append(f"{chr(65 + i) if i < 26 else i}: {Path(r['_path']).parent.name}")
    return out


def format_compare(runs: list[dict[str, Any]], rows: list[tuple[str, bool, list[float | None]]]) -> str:
    names = labels(runs)
    lines = ["runs:"]
    for name, r in zip(names, runs):
        m = r.get("machine", {})
        bundles = ", ".join(b.get("model_version", "?") for b in m.get("bundles", [])) or \
            ", ".join(r.get("variants", {}))
        lines.append(f"  {name}  {r.get('created', '?')}  {m.get('cpu')} ({m.get('cores')} cores"
                     f"{', ' + str(m['memory_gb']) + ' GB' if m.get('memory_gb') else ''}), "
                     f"onnxruntime {m.get('onnxruntime')}, ticor {m.get('ticor')}, threads "
                     f"{r['settings']['threads'][-1]}, {'quick' if r.get('quick') else 'full'}; bundles: {bundles}; "
                     f"inputs: {r['settings'].get('inputs', 'the dataset test split')}")
    head = "| figure | " + " | ".join(n.split(":")[0] for n in names) + " |"
    lines += ["", head, "|" + "---|" * (len(names) + 1)]
    for label, lower, vals in rows:
        cells = []
        base = vals[0]
        for i, v in enumerate(vals):
            if v is None:
                cells.append("–")
            elif i == 0 or not base:
                cells.append(f"{v:.4g}")
            else:
                cells.append(f"{v:.4g} ({v / base:.2f}x)")
        lines.append(f"| {label} {'(lower is better)' if lower else '(higher is better)'} | " + " | ".join(cells)
                     + " |")
    lines += ["", "ratios are each run's figure over run A's; medians (p50) of interleaved timed runs in each run"]
    if len({r["settings"].get("inputs") for r in runs}) > 1:
        lines.append("the runs had different inputs (see above): their quality figures are not comparable")
    return "\n".join(lines) + "\n"


def plot_compare(runs: list[dict[str, Any]], rows: list[tuple[str, bool, list[float | None]]],
                 out: Path) -> Path | None:
    """One plot: each run's ratio to run A per figure (log scale), speed-ups to the right."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = labels(runs)
    shown = [(label, lower, vals) for label, lower, vals in rows if vals[0]]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(shown) * max(1, len(runs) - 1) + 1)))
    h = 0.8 / max(1, len(runs) - 1)
    for j in range(1, len(runs)):
        ys, xs = [], []
        for k, (_, lower, vals) in enumerate(shown):
            v = vals[j]
            if v is None or not v:
                continue
            # better-than-A is > 1 for every figure: A/B when lower is better, B/A otherwise
            ys.append(k + (j - 1) * h)
            xs.append(vals[0] / v if lower else v / vals[0])
        ax.barh(ys, [x - 1 for x in xs], height=h, label=names[j], left=1)  # from 1: worse goes left
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks([k + 0.4 - h / 2 for k in range(len(shown))], [s[0] for s in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"better than {names[0]} → (x, log scale)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "compare.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def compare_main(paths: list[str], out: Path | None) -> int:
    if len(paths) < 2:
        raise UsageError("--compare needs at least two runs")
    runs = [load_run(p) for p in paths]
    rows = common_rows(runs)
    if not rows:
        raise UsageError("the runs have no figure in common (no variant of the first run appears in the others)")
    text = format_compare(runs, rows)
    out = out or cache_path("bench", f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("# ticor bench --compare\n\n" + text, encoding="utf-8")
    plot = plot_compare(runs, rows, out)
    print(text, end="")
    print(f"written: {out / 'compare.md'}" + (f", {plot}" if plot else f" (no plot: {PLOT_LINE})"))
    return 0

