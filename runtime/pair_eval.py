"""Metrics of a bundle on a user's own labelled pairs (``ticor eval``): torch-free.

A pair file (CSV, TSV, JSONL or Parquet, read by :mod:`ticor.tables`) has ``text``, ``image``
and ``label`` columns (1/0, true/false) and optionally ``lang``, ``negative`` (the kind of a
non-matching pair: ``random``, ``hard``...), ``family`` (the caption's domain, e.g. ``photo``:
reported apart, with recall@k among that family's own pictures), a ``group`` column and any
slice columns.

- :func:`read_labelled` reads it; a row with no text, no picture or a label that is not 0/1
  is *excluded* with its reason, never a crash.
- :func:`score_labelled` embeds each distinct text and picture once with a
  :class:`~ticor.Matcher` and scores every pair with the head; a picture that cannot be read
  excludes its rows (status ``missing``, ``corrupt``...). When several pictures share
  captions it also scores every caption against every picture for recall@k.
- :func:`eval_report` gives accuracy, precision, recall, F1 and ROC-AUC at the bundle's
  threshold (and at any threshold asked), per language, per negative kind and per slice,
  caption→picture recall@1/5/10, and the F1-best threshold on this file (optimistic, labelled
  so). The ``metrics`` block has the same shape and numbers as the bundle manifest's
  ``metrics.test`` when the file holds the test split's pairs.

Recall@k truth: a caption matches the pictures of its ``label`` 1 rows (captions equal up to
case, width and punctuation count as one, :func:`ticor.evaluation.norm_text`). With a
``group`` column (what each row's *picture* shows, e.g. a concept id) it matches every picture
of its groups: those of its ``text_group`` column (the caption's own concepts; a list in
JSONL/Parquet) when given, else those of its matching pictures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ticor._files import sha256_file
from ticor.calibration import expected_calibration_error, reliability
from ticor.errors import InputError, UsageError
from ticor.evaluation import norm_text, rank_matrix
from ticor.inputs import clean_text
from ticor.metrics import Rank, at_threshold, best_threshold, evaluate, rank_families, roc_auc
from ticor.tables import Columns, check_header, input_format, read_rows

if TYPE_CHECKING:
    from ticor.matcher import Matcher

REPORT_SCHEMA = 1
#: Above this many caption×picture head calls the recall@k matrix is skipped (and the report says so).
MAX_RANK_PAIRS = 25_000_000
IMAGE_CHUNK = 512
_TRUE = {"1", "true", "yes", "1.0"}
_FALSE = {"0", "false", "no", "0.0"}


@dataclass(frozen=True)
class LabelledPair:
    row: int  # 1-based row number in the file
    id: str
    text: str
    image: str
    label: int
    lang: str | None = None
    negative: str | None = None
    family: str | None = None
    group: str | None = None
    text_groups: tuple[str, ...] = ()
    slices: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Excluded:
    row: int
    id: str
    status: str
    error: str


@dataclass
class PairFile:
    path: str
    sha256: str | None
    pairs: list[LabelledPair]
    excluded: list[Excluded]
    slice_cols: tuple[str, ...]
    rows: int


def parse_label(value: Any) -> int | None:
    """1 or 0 for a match label (1/0, true/false, yes/no, as numbers, booleans or text), else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value) if value in (0, 1) else None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return 1
        if v in _FALSE:
            return 0
    return None


def _value(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _values(v: Any) -> tuple[str, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(x for x in (_value(y) for y in v) if x is not None)
    x = _value(v)
    return () if x is None else (x,)


def read_labelled(path: str, cols: Columns | None = None, image_root: Path | None = None, label_col: str = "label",
                  slice_cols: Sequence[str] = (), group_col: str | None = "group",
                  text_group_col: str | None = "text_group", unlabelled: bool = False) -> PairFile:
    """Read a labelled pair file; bad rows are returned in ``excluded`` with their reason.
    ``unlabelled``: a file without the label column is a list of captioned pictures, every row a
    match (``ticor adapt``); with the column, its labels are read as usual."""
    cols = cols or Columns()
    if path != "-" and not Path(path).is_file():
        raise UsageError(f"{path}: no such pair file")
    fmt = input_format(path)
    check_header(path, fmt, cols)
    groups = [c for c in (group_col, text_group_col) if c]
    extra = tuple(dict.fromkeys((label_col, "lang", "negative", "family", *slice_cols, *groups)))
    reader_cols = Columns(text=cols.text, image=cols.image, id=cols.id, extra=extra)
    pairs: list[LabelledPair] = []
    excluded: list[Excluded] = []
    n = 0
    saw_label = False
    for r in read_rows(path, reader_cols, image_root):
        n += 1
        if r.problem is not None:
            excluded.append(Excluded(r.index + 1, r.id, r.problem[0], r.problem[1]))
            continue
        raw = r.fields.get(label_col)
        saw_label = saw_label or raw is not None
        label = 1 if unlabelled and raw is None else parse_label(raw)
        if label is None:
            excluded.append(Excluded(r.index + 1, r.id, "bad_label",
                                     f"row {r.index + 1}: {label_col!r} is {raw!r}, not 1/0 or true/false"))
            continue
        try:
            cleaned = clean_text(r.text)
        except InputError as exc:
            excluded.append(Excluded(r.index + 1, r.id, exc.kind, f"row {r.index + 1}: {exc}"))
            continue
        if "empty" in cleaned.flags:
            excluded.append(Excluded(r.index + 1, r.id, "bad_input", f"row {r.index + 1}: the caption is empty"))
            continue
        text = cleaned.text
        pairs.append(LabelledPair(
            row=r.index + 1, id=r.id, text=text, image=str(r.image), label=label,
            lang=_value(r.fields.get("lang")), negative=_value(r.fields.get("negative")),
            family=_value(r.fields.get("family")), group=_value(r.fields.get(group_col)) if group_col else None,
            text_groups=_values(r.fields.get(text_group_col)) if text_group_col else (),
            slices={c: v for c in slice_cols if (v := _value(r.fields.get(c))) is not None}))
    if n and not saw_label and not unlabelled:
        raise UsageError(f"{path}: no {label_col!r} column (a labelled pair file needs one; map yours with "
                         "--label-col)")
    sha = None if path == "-" else sha256_file(Path(path))
    return PairFile(path, sha, pairs, excluded, tuple(slice_cols), n)


@dataclass
class Scored:
    """The scored pairs (bad pictures already excluded) and, when computed, the recall@k matrix."""

    pairs: list[LabelledPair]
    scores: np.ndarray
    excluded: list[Excluded]
    rank: Rank | None
    rank_note: str | None
    texts: list[str]
    images: list[str]


def retrieval_truth(pairs: Sequence[LabelledPair], texts: list[str], images: list[str]) -> list[set[int]]:
    """For each caption, the indexes (into ``images``) of the pictures it matches."""
    ii = {p: i for i, p in enumerate(images)}
    group_of: dict[str, str] = {}
    members: dict[str, set[int]] = defaultdict(set)
    for p in pairs:
        if p.group is not None and p.image not in group_of:
            group_of[p.image] = p.group
            members[p.group].add(ii[p.image])
    direct: dict[str, set[int]] = defaultdict(set)
    text_groups: dict[str, set[str]] = defaultdict(set)
    for p in pairs:
        key = norm_text(p.text)
        if p.label == 1:
            direct[key].add(ii[p.image])
        text_groups[key].update(p.text_groups)
    out = []
    for t in texts:
        key = norm_text(t)
        hit = set(direct[key])
        gs = set(text_groups[key]) or {g for i in direct[key] if (g := group_of.get(images[i])) is not None}
        for g in gs:
            hit |= members.get(g, set())
        out.append(hit)
    return out


class Embedder(Protocol):
    """What scoring needs: :class:`~ticor.Matcher` is one; the benchmark wraps its other engines."""

    dim: int

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def try_embed_images(self, images: Sequence[str]) -> tuple[np.ndarray, dict[int, InputError]]: ...

    def head(self, text_vectors: np.ndarray, image_vectors: np.ndarray) -> np.ndarray: ...


TruthFn = Callable[[list[str], list[str]], list[set[int]]]


def score_labelled(matcher: Matcher | Embedder, pf: PairFile, with_rank: bool = True,
                   max_rank_pairs: int = MAX_RANK_PAIRS, truth_fn: TruthFn | None = None) -> Scored:
    """Embed every distinct text and picture once, score each pair, and (``with_rank``) every
    caption that has a matching picture against every picture (truth: :func:`retrieval_truth`,
    or ``truth_fn(captions, pictures)``)."""
    excluded = list(pf.excluded)
    images = sorted({p.image for p in pf.pairs})
    iv = np.zeros((len(images), matcher.dim), np.float32)
    bad: dict[str, InputError] = {}
    for s in range(0, len(images), IMAGE_CHUNK):
        chunk = images[s : s + IMAGE_CHUNK]
        vecs, errors = matcher.try_embed_images(chunk)
        iv[s : s + len(chunk)] = vecs
        for i, exc in errors.items():
            bad[chunk[i]] = exc
    kept = []
    for p in pf.pairs:
        if p.image in bad:
            excluded.append(Excluded(p.row, p.id, bad[p.image].kind, f"row {p.row}: {bad[p.image]}"))
        else:
            kept.append(p)
    excluded.sort(key=lambda e: e.row)
    good_images = [p for p in images if p not in bad]
    keep_rows = [i for i, p in enumerate(images) if p not in bad]
    iv = iv[keep_rows]
    texts = sorted({p.text for p in kept})
    tv = matcher.embed_texts(texts) if texts else np.empty((0, matcher.dim), np.float32)
    ti = {t: i for i, t in enumerate(texts)}
    ii = {p: i for i, p in enumerate(good_images)}
    scores = (matcher.head(tv[[ti[p.text] for p in kept]], iv[[ii[p.image] for p in kept]]).astype(np.float64)
              if kept else np.empty(0))
    rank, note = None, None
    if with_rank:
        truth = (truth_fn or (lambda t, i: retrieval_truth(kept, t, i)))(texts, good_images)
        ranked = [i for i, t in enumerate(truth) if t]
        if len(good_images) < 2 or not ranked:
            note = "not computed: it needs at least two pictures and a caption with a matching picture"
        elif len(ranked) * len(good_images) > max_rank_pairs:
            note = (f"not computed: {len(ranked)} captions × {len(good_images)} pictures is more than "
                    f"{max_rank_pairs:,} head calls")
        else:
            matrix = rank_matrix(matcher.head, tv[ranked], iv, chunk=max(1, 65536 // len(good_images)))
            rows = [{"text": p.text, "image": p.image, "label": p.label, "family": p.family} for p in kept]
            rank = (matrix, [truth[i] for i in ranked], *rank_families(rows, [texts[i] for i in ranked], good_images))
    return Scored(kept, scores, excluded, rank, note, texts, good_images)


def _rows(pairs: Sequence[LabelledPair]) -> list[dict[str, Any]]:
    return [{"text": p.text, "image": p.image, "label": p.label, "lang": p.lang, "negative": p.negative,
             "family": p.family} for p in pairs]


def bundle_metrics(bundle: Path, pf: PairFile) -> dict[str, Any]:
    """``ticor eval``'s metrics (recall@k and ``pf``'s slices included) of ``bundle`` on ``pf`` at the
    bundle's own threshold, on the CPU provider without the embedding cache, with that threshold."""
    from ticor.matcher import Matcher

    m = Matcher.load(bundle, providers="cpu", cache=False)
    try:
        scored = score_labelled(m, pf, with_rank=True)
        return {"threshold": m.threshold, **metrics_at(scored, m.threshold, pf.slice_cols)}
    finally:
        m.close()


def metrics_at(scored: Scored, threshold: float, slice_cols: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`ticor.metrics.evaluate` at ``threshold`` (overall, per language, per negative kind,
    recall@k), plus ``by_slice``: one block per value of each slice column."""
    out = evaluate(_rows(scored.pairs), scored.scores, threshold, scored.rank)
    labels = np.array([p.label for p in scored.pairs])
    by_slice: dict[str, dict[str, Any]] = {}
    for col in slice_cols:
        values = sorted({p.slices[col] for p in scored.pairs if col in p.slices})
        by_slice[col] = {}
        for v in values:
            sel = np.array([p.slices.get(col) == v for p in scored.pairs])
            by_slice[col][v] = {**at_threshold(labels[sel], scored.scores[sel], threshold),
                                "roc_auc": roc_auc(labels[sel], scored.scores[sel])}
    if slice_cols:
        out["by_slice"] = by_slice
    return out


def eval_report(matcher: Matcher, pf: PairFile, scored: Scored, thresholds: Sequence[float] = ()) -> dict[str, Any]:
    """Everything ``ticor eval`` prints and writes (``--json``)."""
    m = matcher.manifest
    labels = np.array([p.label for p in scored.pairs])
    report: dict[str, Any] = {
        "schema": f"ticor-eval/{REPORT_SCHEMA}",
        "file": pf.path, "file_sha256": pf.sha256, "rows": pf.rows, "scored": len(scored.pairs),
        "positives": int(labels.sum()) if len(labels) else 0,
        "bundle": {"path": str(m.root), "model_version": m.model_version, "precision": m.precision,
                   "threshold": m.threshold, "threshold_source": m.threshold_source,
                   "providers": matcher.providers["text"]},
        "excluded": {"count": len(scored.excluded),
                     "by_status": dict(sorted(_count(e.status for e in scored.excluded).items())),
                     "rows": [vars(e) for e in scored.excluded[:200]]},
        "metrics": None, "operating_points": [], "retrieval_note": scored.rank_note,
    }
    if not scored.pairs:
        return report
    threshold = matcher.threshold
    report["threshold"] = {"value": threshold, "how": matcher.operating_point.how}
    report["metrics"] = metrics_at(scored, threshold, pf.slice_cols)
    sc = m.score_calibration
    report["calibration"] = {"ece": expected_calibration_error(scored.scores, labels),
                             "base_rate": float(labels.mean()), "mean_score": float(scored.scores.mean()),
                             "reliability": reliability(scored.scores, labels),
                             "bundle": ({"method": sc.method, "fitted_on": sc.fitted_on, "base_rate": sc.base_rate}
                                        if sc and sc.method != "none" else None)}
    points = [{"name": matcher.operating_point.how, "threshold": threshold, **report["metrics"]["overall"]}]
    auc = report["metrics"]["overall"]["roc_auc"]
    for t in thresholds:
        points.append({"name": "also at", "threshold": float(t), **at_threshold(labels, scored.scores, float(t)),
                       "roc_auc": auc})
    if m.operating_curve is not None:  # the bundle's own operating points at 90% precision and 90% recall
        for key in ("min_precision", "min_recall"):
            try:
                op = m.operating_point(**{key: 0.9})
            except UsageError:
                continue
            points.append({"name": f"bundle's {op.how}", "threshold": op.threshold,
                           **at_threshold(labels, scored.scores, op.threshold), "roc_auc": auc})
    if 0 < labels.sum() < len(labels):
        t = best_threshold(labels, scored.scores)
        points.append({"name": "F1-best on this file (fitted here: optimistic)", "threshold": t,
                       **at_threshold(labels, scored.scores, t), "roc_auc": report["metrics"]["overall"]["roc_auc"]})
    report["operating_points"] = points
    return report


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for x in items:
        out[x] += 1
    return dict(out)


def _f(x: Any, w: int = 6) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a".rjust(w)
    return f"{x:{w}.3f}"


def format_report(r: dict[str, Any]) -> str:
    """The text table ``ticor eval`` prints."""
    b = r["bundle"]
    lines = [f"ticor eval: {r['file']}: {r['rows']} rows, {r['scored']} scored ({r['positives']} matching), "
             f"{r['excluded']['count']} excluded",
             f"bundle {b['model_version']} ({b['precision']})"]
    if r.get("threshold"):
        lines.append(f"threshold {r['threshold']['value']:.4f} ({r['threshold']['how']})")
    if r["excluded"]["count"]:
        lines.append("excluded: " + ", ".join(f"{k} {v}" for k, v in r["excluded"]["by_status"].items())
                     + "; first: " + r["excluded"]["rows"][0]["error"])
    mt = r["metrics"]
    if mt is None:
        lines.append("no pair could be scored")
        return "\n".join(lines) + "\n"
    head = f"{'slice':<28} {'n':>7} {'pos':>6} {'acc':>6} {'prec':>6} {'rec':>6} {'F1':>6} {'AUC':>6}"
    lines += ["", head, "-" * len(head)]

    def row(name: str, blk: dict[str, Any], pos: int | None = None) -> None:
        p = "" if pos is None else str(pos)
        lines.append(f"{name:<28} {blk['n']:>7} {p:>6} {_f(blk['accuracy'])} {_f(blk['precision'])} "
                     f"{_f(blk['recall'])} {_f(blk['f1'])} {_f(blk['roc_auc'])}")

    row("all", mt["overall"], r["positives"])
    for lang, blk in mt.get("by_lang", {}).items():
        row(f"lang={lang}", blk)
    for kind, blk in mt.get("by_negative", {}).items():
        row(f"negative={kind} (+matching)", blk)
    for fam, blk in mt.get("by_family", {}).items():
        row(f"family={fam}", blk)
    for col, values in mt.get("by_slice", {}).items():
        for v, blk in values.items():
            row(f"{col}={v}"[:28], blk)
    lines.append("")
    ret = mt.get("retrieval")
    if ret:
        lines.append(f"caption→picture recall@1 {ret['recall@1']:.3f}  @5 {ret['recall@5']:.3f}  "
                     f"@10 {ret['recall@10']:.3f}  ({ret['texts']} captions × {ret['images']} pictures)")
        for fam, blk in mt.get("by_family", {}).items():
            fr = blk.get("retrieval")
            if fr:
                lines.append(f"  family={fam}: recall@1 {fr['recall@1']:.3f}  @5 {fr['recall@5']:.3f}  "
                             f"@10 {fr['recall@10']:.3f} among its own {fr['images']} pictures "
                             f"({fr['texts']} captions)")
    else:
        lines.append(f"caption→picture recall@k: {r['retrieval_note']}")
    cal = r.get("calibration")
    if cal:
        fitted = (f"the bundle's scores are calibrated on its {cal['bundle']['fitted_on']} split (base rate "
                  f"{cal['bundle']['base_rate']:.2f})" if cal["bundle"] else "the bundle's scores are not calibrated")
        lines.append(f"calibration here: expected calibration error {cal['ece']:.3f}; mean score "
                     f"{cal['mean_score']:.3f} vs match rate {cal['base_rate']:.3f}; {fitted}")
    lines.append("operating points:")
    for p in r["operating_points"]:
        lines.append(f"  threshold {p['threshold']:.4f}  precision {p['precision']:.3f}  recall {p['recall']:.3f}  "
                     f"F1 {p['f1']:.3f}  ({p['name']})")
    return "\n".join(lines) + "\n"
