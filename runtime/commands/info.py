"""``ticor info``: a bundle's manifest, its files verified, and the providers it would run on."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ticor.commands._help import describe as help_text
from ticor.verdict import describe_by_lang

if TYPE_CHECKING:
    from ticor.bundle import Manifest


def register(sub: Any) -> None:
    info = sub.add_parser("info", help="print a bundle's manifest (files verified)", **help_text("info"))
    info.add_argument("bundle", help="bundle directory")
    info.add_argument("--json", action="store_true", help="the manifest as JSON")
    info.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the files")
    info.set_defaults(handler=run)


def provider_report(precision: str) -> dict[str, Any]:
    from ticor._deps import onnxruntime_status
    from ticor.sessions import available_providers, resolve_providers

    if not onnxruntime_status().ok:
        return {"available": [], "auto": [], "why": "onnxruntime is not installed correctly (ticor --version)"}
    auto, why = resolve_providers("auto", precision)
    return {"available": available_providers(), "auto": auto, "why": why}


def describe(m: Manifest, verified: bool) -> str:
    """The manifest as readable text (``ticor info``)."""
    from ticor.bundle import BRANCHES

    lines = [
        f"bundle      {m.root}",
        f"preset      {m.preset} — {m.description}",
        f"precision   {m.precision}    model version {m.model_version}",
        f"created by  {m.created_by}",
        f"threshold   {m.threshold:.4f} ({m.threshold_source})",
        f"embedding   {m.embedding_dim} dims",
        "",
        "files (size and sha256 verified)" if verified else "files (not verified)",
    ]
    q = m.quantization
    if q is not None and q.branches:
        g = q.gate
        lines.insert(4, "branches    " + ", ".join(f"{p} {q.branches[p]}" for p in BRANCHES if p in q.branches)
                     + f"\n            gate on test ({'passed' if g.passed else 'failed'}): {g.describe()}"
                     + q.kernel_clause())
        if g.criteria is not None:
            lines.insert(5, f"            per language: {describe_by_lang(g.criteria)}")
    for name, f in sorted(m.files.items()):
        lines.append(f"  {name:<16} {f.bytes / 1e6:9.2f} MB  {f.sha256[:16]}…")
    lines.append(f"  {'total':<16} {m.size_bytes / 1e6:9.2f} MB")
    lines.append("")
    lines.append("graphs")
    for part in BRANCHES:
        gs = m.graphs[part]
        ins = ", ".join(f"{i.name} {i.dtype}[{','.join(map(str, i.shape))}]" for i in gs.inputs)
        outs = ", ".join(f"{o.name} {o.dtype}[{','.join(map(str, o.shape))}]" for o in gs.outputs)
        lines.append(f"  {part:<6} {gs.file} opset {gs.opset}: {ins} -> {outs}")
    t, im = m.text_spec, m.image_spec
    lines += [
        "",
        (f"text        tokenizer {m.tokenizer}, prefix {t.prefix!r}, "
         f"max length {t.max_length}, pad {t.pad_token}"),
        (f"image       {im.size}x{im.size} {im.layout} {im.dtype}, fit {im.fit}, "
         f"resize {im.resize_filter}, background {tuple(im.background)}, "
         f"EXIF transpose {im.exif_transpose}"),
        f"            mean {tuple(im.mean)} std {tuple(im.std)}",
    ]
    v = m.vocabulary
    if v is not None and v.trim:
        lines.append(f"vocabulary  {v.model}, {v.pieces:,} pieces: trimmed from {v.trim['original_pieces']:,} to "
                     f"the scripts {', '.join(v.scripts)} (original tokenizer {v.trim['original_sha256'][:16]}…); "
                     "characters of other scripts become unknown and are flagged")
        h = v.heldout or {}
        if h.get("identical"):
            cos = h["cosine_of_differing"]
            lines.append("            held-out text tokenized identically: " + ", ".join(
                f"{lang} {share:.2%} of {h['texts'][lang]:,}" for lang, share in h["identical"].items())
                + (f"; the others' cosine to the untrimmed branch >= {cos['min']:.4f}" if cos.get("min") else ""))
    elif v is not None:
        lines.append(f"vocabulary  {v.model}, {v.pieces:,} pieces (not trimmed)")
    if m.dataset is not None:
        lines += ["", f"trained on  dataset {m.dataset.dataset_sha256[:16]}… pairs "
                      + ", ".join(f"{k} {v}" for k, v in m.dataset.pairs.items())]
    for src in m.base_weights:
        lines.append(f"  from      {src['asset']} {src['file']} ({src['license']})")
    if "test" in m.metrics:
        from ticor.metrics import table

        rows = [(f"{m.preset} {m.precision} (bundle, test)", m.metrics["test"])]
        if m.training is not None and m.training.baseline_test:
            rows.append(("article baseline (frozen concat)", m.training.baseline_test))
        lines += ["", "test split metrics (threshold from val)", table(rows)]
        photo_lines = []
        for split in ("val", "test"):
            p = m.metrics.get(split, {}).get("by_family", {}).get("photo")
            if p:
                r = p.get("retrieval", {})
                found = (f"caption->photo R@1 {r['recall@1']:.3f}, R@5 {r['recall@5']:.3f} ({r['texts']} captions "
                         f"among {r['images']} photos), " if r else "")
                photo_lines.append(f"  {split:<5} {found}ROC-AUC {p['roc_auc']:.3f}, F1 {p['f1']:.3f} "
                                   f"(precision {p['precision']:.3f}, recall {p['recall']:.3f}; {p['n']} pairs)")
        if photo_lines:
            lines += ["", "photos (held-out photographs, captions in en and zh)", *photo_lines]
    c = m.score_calibration
    if c is not None and c.note:
        lines += ["", f"calibration none: {c.note}"]
    elif c is not None:
        lines += ["", f"calibration {c.method} on {c.fitted_on} ({c.pairs} pairs, base rate {c.base_rate:.2f}): "
                      f"score = sigmoid({c.a:.3f} * logit + {c.b:.3f}), in the head graph; expected calibration error "
                  + ", ".join(f"{s} {e['before']:.3f} -> {e['after']:.3f}" for s, e in c.ece.items())]
    else:
        lines += ["", "calibration none (scores are the head's raw output; re-export with this version to calibrate)"]
    if m.operating_curve is not None:
        lines += ["", f"operating points ({m.operating_curve.split}; `--threshold`, `--min-precision`, "
                      "`--min-recall` choose one)",
                  f"  {'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} {'flagged':>7}"]
        pts = list(m.operating_curve.points)
        def nearest(t: float) -> float:
            return float(min(pts, key=lambda p: abs(p["threshold"] - t))["threshold"])

        here = nearest(m.threshold)
        picks = {here} | {nearest(t) for t in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)}
        for p in pts:
            if p["threshold"] in picks:
                mark = "  <- the bundle's threshold" if p["threshold"] == here else ""
                lines.append(f"  {p['threshold']:9.4f} {p['precision']:9.3f} {p['recall']:7.3f} {p['f1']:6.3f} "
                             f"{p['flagged']:7.1%}{mark}")
    if m.adaptation is not None:
        lines += ["", *adaptation_lines(m.adaptation)]
    return "\n".join(lines)


def adaptation_lines(a: dict[str, Any]) -> list[str]:
    """``ticor adapt``'s record: where the bundle came from and what it did on the held-out pairs."""
    p, parts = a["pairs"], a["parts"]
    left = ", ".join(f"{k} {v}" for k, v in p["left_out"].items()) or "none"
    out = [f"adaptation  {'calibrated' if a['mode'] == 'calibrate' else 'tuned'} from {a['base']['model_version']} "
           f"({a['base']['precision']}) on {p['path']} (sha256 {p['sha256'][:16]}…)",
           f"  rows      {p['rows']} read, {p['used']} used, left out: {left}",
           f"  parts     training {parts['train']}, validation {parts['val']} ({parts['val_matching']} matching, "
           f"{parts['val_drawn']} drawn non-matches): {parts['how']}"
           + (f"; {parts['replay']} pairs of the base's train split replayed" if parts.get("replay") else "")]
    b, n = a["before"]["overall"], a["after"]["overall"]
    out.append(f"  held-out  F1 {b['f1']:.3f} -> {n['f1']:.3f}, ROC-AUC {b['roc_auc']:.3f} -> {n['roc_auc']:.3f}, "
               f"accuracy {b['accuracy']:.3f} -> {n['accuracy']:.3f} (base vs this bundle, each at its threshold)")
    if a.get("wise"):
        out.append(f"  WiSE-FT   alpha {a['wise']['alpha']:.2f} (chosen on the validation part)")
    if a.get("int8"):
        out.append(f"  int8      {a['int8']}")
    if a.get("retention"):
        r = a["retention"]
        out.append(f"  retention the base's own test split: F1 {r['base_f1']:.4f} -> {r['adapted_f1']:.4f}")
    if a.get("recalibration"):
        r = a["recalibration"]
        out.append(f"  score     sigmoid({r['a']:.3f} * logit(head) + {r['b']:.3f}), applied by the runtime after the "
                   f"head graph; calibration error {r['ece']['before']:.3f} -> {r['ece']['after']:.3f}")
    return out


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ticor.bundle import read_manifest

    m = read_manifest(Path(args.bundle), verify=not args.no_verify)
    providers = provider_report(m.precision)
    if args.json:
        print(json.dumps(dict(m.to_json(), runtime_providers=providers), indent=2, sort_keys=True,
                         ensure_ascii=False))
    else:
        print(describe(m, verified=not args.no_verify))
        print(f"\nproviders   available here: {', '.join(providers['available']) or 'none'}")
        print(f"            this bundle with providers=auto: {', '.join(providers['auto'])} ({providers['why']})")
    return 0
