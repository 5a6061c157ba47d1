"""``ticor score --engine ray``: the same per-row contract and output as the local scorer, on Ray Data.

Pipeline (:func:`build_pipeline`, shared by the command line and :func:`score_dataset`): rows are
normalised, pictures are read, decoded and preprocessed in Ray tasks that ask for half a CPU
(that request keeps Ray from fusing them into the actors), and an actor pool
(``ActorPoolStrategy``) runs the graphs, one :class:`~ticor.matcher.Matcher` per actor,
created inside the actor from the bundle path (sessions cannot be pickled), so every worker
verifies the bundle's sha256 itself; intra-op threads = the actor's CPUs, inter-op 1.

The command line reads the input row by row exactly as the local engine does (ids, row numbers
and bad-row statuses come out the same) into Parquet staging files, which Ray reads sharded.
Ray writes Parquet part files into ``OUTPUT.ticor-ray-parts/``; when every row is scored they
are stitched, in input order, into ``OUTPUT`` (JSONL, CSV or Parquet by extension, the same
columns as the local engine) and the parts folder is removed. Resume: a rerun reads the part
files already there (a part that cannot be read whole, left by a crash, is deleted first) and
scores only the ids not in them; new parts carry the new write's uuid in their names, so nothing
is overwritten or duplicated. ``state.json`` there ties the parts to one input and one bundle.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ticor.bundle import read_manifest
from ticor.errors import MissingDependencyError, UsageError
from ticor.preprocess import ImageSpec
from ticor.resume import STATE, open_parts, run_identity
from ticor.tables import COLUMNS, Columns, output_format, read_rows, write_output

RAY_LINE = "pip install 'ticor[cpu,ray]'"
DECODE_CPUS = 0.5


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(f"--engine ray needs Ray: {RAY_LINE}") from None
    return ray


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ticor-ray-parts")


def _normalise(batch: dict[str, np.ndarray], text_col: str, image_col: str, id_col: str) -> dict[str, np.ndarray]:
    """Ray task for a user's own Dataset: the columns the pipeline reads (``index`` -1: order is theirs)."""
    n = len(batch[id_col])
    texts = batch.get(text_col, np.array([None] * n, dtype=object))
    status = np.array(["" if t is not None else "bad_input" for t in texts], dtype=object)
    error = np.array([None if t is not None else f"no {text_col!r} value" for t in texts], dtype=object)
    return {"id": np.array([str(x) for x in batch[id_col]], dtype=object), "index": np.full(n, -1),
            "text": texts, "image": batch[image_col], "status": status, "error": error}


def _prepare_batch(batch: dict[str, np.ndarray], image_spec: ImageSpec) -> dict[str, Any]:
    """Ray task: read, decode and preprocess each row's picture (errors become the row's status)."""
    from ticor.errors import InputError
    from ticor.inputs import clean_text, open_image, picture_pixels

    blank = np.zeros(3 * image_spec.size * image_spec.size, np.float32)
    n = len(batch["id"])
    pixels, status, error, texts, flags = [], [], [], [], []
    for i in range(n):
        st, err = batch["status"][i], batch["error"][i]
        px = None
        text = None
        fl = ""
        if not st:
            try:
                c = clean_text(batch["text"][i])
                text, fl = c.text, ",".join(c.flags)
                path = str(batch["image"][i])
                px = picture_pixels(open_image(path, image_spec), image_spec, path).ravel()
                st, err = "ok", None
            except InputError as exc:
                st, err = exc.kind, str(exc)
        pixels.append(px if px is not None else blank)
        status.append(st)
        error.append(err)
        texts.append(text or "")
        flags.append(fl)
    return {"id": batch["id"], "index": batch["index"], "text": np.array(texts, dtype=object),
            "pixels": np.stack(pixels), "status": np.array(status, dtype=object),
            "error": np.array(error, dtype=object),
            "flags": np.array(flags, dtype=object)}


class _ScoreActor:
    """One Matcher per actor, loaded (and sha256-verified) inside the worker."""

    def __init__(self, bundle: str, provider: str | None, threads: int, threshold: float | None = None) -> None:
        from ticor.matcher import Matcher

        self.m = Matcher.load(bundle, providers=provider, threads=threads, inter_op_threads=1, threshold=threshold)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n = len(batch["id"])
        ok = [i for i in range(n) if batch["status"][i] == "ok"]
        score = np.full(n, np.nan)
        if ok:
            size = self.m.manifest.image_spec.size
            iv = self.m.embed_pixels(np.stack([np.asarray(batch["pixels"][i], np.float32).reshape(3, size, size)
                                               for i in ok]))
            tv = self.m.embed_texts([str(batch["text"][i]) for i in ok])  # already cleaned: cleaning again is a no-op
            score[ok] = self.m.head(tv, iv)
        match = [bool(score[i] >= self.m.threshold) if batch["status"][i] == "ok" else None for i in range(n)]
        flags = [",".join(f for f in (str(batch["flags"][i]), *self.m.text_flags(str(batch["text"][i]))) if f)
                 if i in ok else batch["flags"][i] for i in range(n)]
        return {"id": batch["id"], "index": batch["index"],
                "score": [float(score[i]) if batch["status"][i] == "ok" else None for i in range(n)],
                "match": match, "status": batch["status"], "error": batch["error"], "flags": flags}


def build_pipeline(ds: Any, bundle: str | Path, *, actors: int = 1, cpus_per_actor: int = 1, gpus_per_actor: float = 0,
                   batch_size: int = 64, provider: str | None = None, threshold: float | None = None) -> Any:
    """Decoding tasks then the actor pool, over a Dataset with ``id``, ``index``, ``text``, ``image``,
    ``status`` and ``error`` columns (``status`` empty for rows still to score)."""
    ray = _ray()
    if actors < 1 or cpus_per_actor < 1 or gpus_per_actor < 0 or batch_size < 1:
        raise UsageError("actors, cpus_per_actor and batch_size must be at least 1, gpus_per_actor at least 0")
    spec = read_manifest(bundle).image_spec  # verified here once; every actor verifies again
    prepared = ds.map_batches(_prepare_batch, fn_kwargs={"image_spec": spec}, batch_size=batch_size,
                              batch_format="numpy", num_cpus=DECODE_CPUS)
    return prepared.map_batches(
        _ScoreActor, fn_constructor_kwargs={"bundle": str(bundle), "provider": provider, "threads": cpus_per_actor,
                                          "threshold": threshold},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
        batch_size=batch_size, batch_format="numpy")


def score_dataset(ds: Any, bundle: str | Path, *, text_col: str = "text", image_col: str = "image",
                  id_col: str = "id", actors: int = 1, cpus_per_actor: int = 1, gpus_per_actor: float = 0,
                  batch_size: int = 64, provider: str | None = None, threshold: float | None = None) -> Any:
    """Score a Ray Dataset you already have (columns ``id``, ``text``, ``image`` path; names can be
    mapped). Returns a lazy Dataset with ``id``, ``score``, ``match``, ``status``, ``error``,
    ``flags`` (``index`` is -1: row order is yours); write it wherever you like."""
    normalised = ds.map_batches(_normalise, fn_kwargs={"text_col": text_col, "image_col": image_col,
                                                       "id_col": id_col}, batch_format="numpy")
    return build_pipeline(normalised, bundle, actors=actors, cpus_per_actor=cpus_per_actor,
                          gpus_per_actor=gpus_per_actor, batch_size=batch_size, provider=provider,
                          threshold=threshold)


def _stage(input_path: str, cols: Columns, image_root: Path | None, staging: Path, skip_ids: set[str],
           rows_per_file: int = 20000) -> int:
    """The input, read like the local engine does, into Parquet files Ray reads in parallel."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    staging.mkdir(parents=True, exist_ok=True)
    buf: list[dict[str, Any]] = []
    n = k = 0

    def flush() -> None:
        nonlocal buf, k
        if buf:
            pq.write_table(pa.Table.from_pylist(buf), str(staging / f"in-{k:06d}.parquet"))
            k += 1
            buf = []

    for row in read_rows(input_path, cols, image_root):
        if row.id in skip_ids:
            continue
        buf.append({"id": row.id, "index": row.index,
                    "text": row.text if isinstance(row.text, str) else (None if row.text is None else str(row.text)),
                    "image": row.image, "status": row.problem[0] if row.problem else "",
                    "error": row.problem[1] if row.problem else None})
        n += 1
        if len(buf) >= rows_per_file:
            flush()
    flush()
    return n


def _part_files(parts: Path) -> list[Path]:
    return sorted(p for p in parts.glob("*.parquet") if p.is_file())


def _done_ids(parts: Path) -> set[str]:
    """Ids in the part files already written; unreadable (partial) parts are deleted."""
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for p in _part_files(parts):
        try:
            got = pq.read_table(str(p), columns=["id"]).column("id").to_pylist()
        except Exception:  # noqa: BLE001 - any failure to read the whole part means it is partial
            p.unlink()
            continue
        ids.update(str(x) for x in got)
    return ids


def read_parts(parts: Path) -> list[dict[str, Any]]:
    """Every row of a parts folder, in input order (by the ``index`` column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _part_files(parts)
    if not files:
        return []
    table = pa.concat_tables([pq.read_table(str(p)) for p in files], promote_options="default").sort_by("index")
    return table.select(["index", *COLUMNS]).to_pylist()


def score_with_ray(input_path: str, out: Path, bundle: Path, cols: Columns, image_root: Path | None,
                   address: str | None = None, actors: int = 1, cpus_per_actor: int = 1, gpus_per_actor: float = 0,
                   batch_size: int = 64, provider: str | None = None, overwrite: bool = False,
                   threshold: float | None = None) -> dict[str, Any]:
    """Score ``input_path`` into the file ``out`` on Ray (resumable); returns a summary."""
    ray = _ray()
    fmt = output_format(str(out))
    if input_path == "-":
        raise UsageError("--engine ray reads a file, not stdin")
    parts = _parts_dir(out)
    ident = run_identity(input_path, cols, image_root, read_manifest(bundle), threshold)
    open_parts(parts, out, ident, overwrite)
    done = _done_ids(parts)
    t0 = time.monotonic()
    staging = parts / f".staging-{uuid.uuid4().hex[:8]}"
    try:
        todo = _stage(input_path, cols, image_root, staging, done)
        if todo:
            if not ray.is_initialized():
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    # the actors' CPUs plus one for the decoding tasks (else the actors take every CPU and the
                    # tasks feeding them never get one)
                    import os

                    ray.init(num_cpus=max(os.cpu_count() or 1, actors * cpus_per_actor + 1), include_dashboard=False,
                             log_to_driver=False)
            ray.data.DataContext.get_current().enable_progress_bars = sys.stderr.isatty()
            scored = build_pipeline(ray.data.read_parquet(str(staging)), bundle, actors=actors,
                                    cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                                    batch_size=batch_size, provider=provider, threshold=threshold)
            scored.write_parquet(str(parts))  # part names carry Ray's per-write uuid: a rerun never overwrites one
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rows = read_parts(parts)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    stitched = parts / ".rows.jsonl"
    with stitched.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({k: r[k] for k in COLUMNS}, ensure_ascii=False) + "\n")
    write_output([stitched], out, fmt)
    shutil.rmtree(parts)
    return {"rows_scored": todo, "rows_already_done": len(done), "seconds": time.monotonic() - t0,
            "engine": "ray", "address": address or "local", "counts": counts}


__all__ = ["RAY_LINE", "STATE", "build_pipeline", "read_parts", "score_dataset", "score_with_ray"]
