"""The worked example of ``ticor adapt``: its learning curve on a domain the base never saw.

``python -m ticor.benchmarks.adapt [--example DIR] [--bundle FP32] [--out DIR] [--sizes 100,300,1000,2000]``:
for each size N, ``ticor adapt EXAMPLE/adapt-N.csv`` run as a user runs it (a child process, timed
from reading the pairs to the written bundle), then the base bundle and every adapted one scored
on ``EXAMPLE/test.csv``, whose concepts adaptation never saw (``ticor eval``'s metrics at each
bundle's own threshold). Also: ``--calibrate-only`` on the largest file, and the label-less
``captions.csv``. ``--variants`` instead runs the largest file with the default recipe beside
other choices of what trains (:data:`VARIANTS`). Run each on an empty ``CACHE/adapt`` for the
seconds to be those of a fresh run. Writes ``adapt.json`` and ``adapt.md`` into OUT and prints the table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ticor.paths import bundle_dir, cache_path


def test_metrics(bundle: Path, test: Path) -> dict[str, Any]:
    from ticor.pair_eval import bundle_metrics, read_labelled

    out = bundle_metrics(bundle, read_labelled(str(test)))
    o = out["overall"]
    return {"f1": o["f1"], "roc_auc": o["roc_auc"], "precision": o["precision"], "recall": o["recall"],
            "accuracy": o["accuracy"], "recall@1": (out.get("retrieval") or {}).get("recall@1"),
            "by_negative": {k: v["f1"] for k, v in out["by_negative"].items()}, "pairs": o["n"]}


#: What trains, measured against the default recipe (``ticor.training.adapt.SMALL_DATA``).
VARIANTS: dict[str, dict[str, float] | None] = {
    "projections and head only": {"lr_text": 0.0, "lr_image": 0.0},
    "a third of the learning rates": {"lr_text": 2e-5, "lr_image": 1e-4, "lr_new": 7e-4},
    "no replay": None,
}


def run_adapt(pairs: Path, bundle: Path, out: Path, extra: list[str], recipe: dict[str, float] | None = None
              ) -> dict[str, Any]:
    """``ticor adapt`` as a user runs it (a child process; ``recipe``: the small-data recipe changed)."""
    code = ("import dataclasses, sys; import ticor.training.adapt as a; from ticor.cli import main; "
            f"a.SMALL_DATA = dataclasses.replace(a.SMALL_DATA, **{recipe!r}); sys.exit(main(sys.argv[1:]))"
            if recipe else "import sys; from ticor.cli import main; sys.exit(main(sys.argv[1:]))")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code, "adapt", str(pairs), "--bundle", str(bundle), "--out",
                           str(out), "--json", str(out) + ".json", "--quiet", *extra], capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                "seconds": seconds}
    rec = json.loads(Path(str(out) + ".json").read_text())["record"]
    return {"seconds": round(seconds, 1), "record": rec}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ticor.benchmarks.adapt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--example", default=str(cache_path("examples", "icons")), help="ticor data icons' folder")
    ap.add_argument("--bundle", default=str(bundle_dir(precision="fp32")), help="the base fp32 bundle")
    ap.add_argument("--out", default=str(cache_path("bench", "adapt")), help="where the bundles and report go")
    ap.add_argument("--sizes", default="100,300,1000,2000", help="which adapt-N.csv files (default all)")
    ap.add_argument("--variants", action="store_true", help="instead of the curve, what trains, on the largest file: "
                                                           "the default recipe beside projections and head only, "
                                                           "lower learning rates and no replay")
    args = ap.parse_args(argv)
    ex, base, out = Path(args.example), Path(args.bundle), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = ex / "test.csv"
    rows: list[dict[str, Any]] = [{"name": "base", "pairs": 0, "test": test_metrics(base, test)}]
    print(f"base: {rows[0]['test']}", file=sys.stderr)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    largest = ex / f"adapt-{sizes[-1]}.csv"
    runs: list[tuple[str, Path, list[str]]]
    if args.variants:
        runs = [(f"tuned on {largest.name}", largest, [])]
        runs += [(f"{v} on {largest.name}", largest, ["--replay", "0"] if v == "no replay" else []) for v in VARIANTS]
    else:
        runs = [(f"tuned on adapt-{n}.csv", ex / f"adapt-{n}.csv", []) for n in sizes]
        runs += [(f"calibrated only on {largest.name}", largest, ["--calibrate-only"]),
                 ("tuned on captions.csv (no labels)", ex / "captions.csv", [])]
    for name, pairs, extra in runs:
        target = out / name.split(" on ")[0].replace(" ", "-") / pairs.stem
        got = run_adapt(pairs, base, target, extra, VARIANTS.get(name.split(" on ")[0]))
        row: dict[str, Any] = {"name": name, "pairs": len(pairs.read_text(encoding="utf-8").splitlines()) - 1,
                              **got}
        if "error" not in got:
            row["test"] = test_metrics(target, test)
        rows.append(row)
        print(f"{name}: {row.get('test', row.get('error'))} ({got['seconds']:.0f} s)", file=sys.stderr)
    (out / "adapt.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    table = render(rows)
    (out / "adapt.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0


def render(rows: list[dict[str, Any]]) -> str:
    b = rows[0]["test"]
    lines = ["| bundle | pairs | held out | WiSE alpha | precision | test F1 | test ROC-AUC | F1 vs random / hard "
             "negatives | recall@1 | base's test F1 (retention) | seconds |",
             "|---|---:|---:|---:|---|---:|---:|---|---:|---|---:|",
             f"| base | – | – | – | fp32 | {b['f1']:.3f} | {b['roc_auc']:.3f} | "
             f"{b['by_negative'].get('random', 0):.3f} / {b['by_negative'].get('hard', 0):.3f} | "
             f"{b['recall@1']:.3f} | – | – |"]
    for r in rows[1:]:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['pairs']} | – | – | – | refused: {r['error']} | | | | | "
                         f"{r['seconds']:.0f} |")
            continue
        rec, t = r["record"], r["test"]
        ret = rec.get("retention")
        ret_s = f"{ret['base_f1']:.3f} -> {ret['adapted_f1']:.3f}" if ret else "–"
        alpha = f"{rec['wise']['alpha']:.2f}" if rec.get("wise") else "–"
        precision = "int8" if rec.get("int8") == "passed the gate" else ("fp32 (int8 refused)" if rec.get("int8")
                                                                        else "fp32")
        lines.append(f"| {r['name']} | {r['pairs']} | {rec['parts']['val']} | {alpha} | {precision} | {t['f1']:.3f} | "
                     f"{t['roc_auc']:.3f} | {t['by_negative'].get('random', 0):.3f} / "
                     f"{t['by_negative'].get('hard', 0):.3f} | {t['recall@1']:.3f} | {ret_s} | {r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
