"""``ticor score --engine ray``: the same per-row contract as the local scorer, on Ray Data.

Pipeline: the input is read row by row exactly as the local engine reads it (ids, row numbers
and bad-row statuses come out the same) into Parquet staging files, which Ray reads sharded;
pictures are read, decoded and preprocessed in Ray tasks; an actor pool
(``ActorPoolStrategy``) runs the graphs, one :class:`~ticor.matcher.Matcher` per actor,
created inside the actor from the bundle path (sessions cannot be pickled), so every worker
verifies the bundle's sha256 itself; intra-op threads = the actor's CPUs, inter-op 1.

Output: a directory (``OUTPUT``, named ``*.parquet`` or ``*.jsonl``) of part files. Resume: a
rerun reads the part files already there (a part file that cannot be read whole, left by a
crash, is deleted first), and scores only the ids that are not in them; new parts carry the
new write's uuid in their names, so nothing is overwritten or duplicated. ``state.json`` in the directory ties it to one input
and one bundle, as for the local engine.
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

from ticor.errors import MissingDependencyError, UsageError
from ticor.tables import Columns, read_rows

RAY_LINE = "pip install 'ticor[cpu,ray]'"
STATE = "state.json"


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependencyError(f"--engine ray needs Ray: {RAY_LINE}") from None
    return ray


def _prepare_batch(batch: dict[str, np.ndarray], image_spec: dict[str, Any]) -> dict[str, Any]:
    """Ray task: read, decode and preprocess each row's picture (errors become the row's status)."""
    from ticor.inputs import InputError, clean_text, open_image, picture_pixels
    from ticor.preprocess import ImageSpec

    spec = ImageSpec.from_json(image_spec)
    blank = np.zeros(3 * spec.size * spec.size, np.float32)
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
                px = picture_pixels(open_image(path), spec, path).ravel()
                st, err = "ok", None
            except InputError as exc:
                st, err = exc.kind, str(exc)
        pixels.append(px if px is not None else blank)
        status.append(st)
        error.append(err)
        texts.append(text or "")
        flags.append(fl)
    return {"id": batch["id"], "index": batch["index"], "text": np.array(texts, dtype=object),
            "pixels": np.stack(pixels), "status": np.array(status, dtype=object), "error": np.array(error, dtype=object),
            "flags": np.array(flags, dtype=object)}


class _ScoreActor:
    """One Matcher per actor, loaded (and sha256-verified) inside the worker."""

    def __init__(self, bundle: str, provider: str | None, threads: int) -> None:
        from ticor.matcher import Matcher

        self.m = Matcher.load(bundle, providers=provider, threads=threads, inter_op_threads=1)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from ticor.bundle import IMAGE_INPUT, IMAGE_OUTPUT

        n = len(batch["id"])
        ok = [i for i in range(n) if batch["status"][i] == "ok"]
        score = np.full(n, np.nan)
        if ok:
            size = self.m.manifest.image_spec.size
            px = np.stack([np.asarray(batch["pixels"][i], np.float32).reshape(3, size, size) for i in ok])
            iv = np.concatenate([self.m._sessions["image"].run([IMAGE_OUTPUT], {IMAGE_INPUT: px[s : s + 16]})[0]
                                 for s in range(0, len(px), 16)])
            tv = self.m._text_vectors([str(batch["text"][i]) for i in ok])
            score[ok] = self.m.head(tv, iv)
        match = [bool(score[i] >= self.m.threshold) if batch["status"][i] == "ok" else None for i in range(n)]
        return {"id": batch["id"], "index": batch["index"],
                "score": [float(score[i]) if batch["status"][i] == "ok" else None for i in range(n)],
                "match": match, "status": batch["status"], "error": batch["error"], "flags": batch["flags"]}


def score_dataset(ds, bundle: str | Path, *, text_col: str = "text", image_col: str = "image", id_col: str = "id",
                  actors: int = 1, cpus_per_actor: int = 1, gpus_per_actor: float = 0, batch_size: int = 64,
                  provider: str | None = None):
    """Score a Ray Dataset you already have (columns ``id``, ``text``, ``image`` path; names can be
    mapped). Returns a lazy Dataset with ``id``, ``score``, ``match``, ``status``, ``error``,
    ``flags`` (``index`` is -1: row order is yours); write it wherever you like."""
    from ticor.bundle import read_manifest

    ray = _ray()
    m = read_manifest(bundle)

    def normalise(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch[id_col])
        texts = batch.get(text_col, np.array([None] * n, dtype=object))
        status = np.array(["" if t is not None else "bad_input" for t in texts], dtype=object)
        error = np.array([None if t is not None else f"no {text_col!r} value" for t in texts], dtype=object)
        return {"id": np.array([str(x) for x in batch[id_col]], dtype=object), "index": np.full(n, -1),
                "text": texts, "image": batch[image_col], "status": status, "error": error}

    prepared = ds.map_batches(normalise, batch_format="numpy").map_batches(
        _prepare_batch, fn_kwargs={"image_spec": m.data["image"]["spec"]}, batch_size=batch_size,
        batch_format="numpy")
    return prepared.map_batches(
        _ScoreActor, fn_constructor_kwargs={"bundle": str(bundle), "provider": provider, "threads": cpus_per_actor},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
        batch_size=batch_size, batch_format="numpy")


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


def _parts(out: Path, pattern: str) -> list[Path]:
    """The part files in an output directory (never ``state.json`` or the staging folder)."""
    return sorted(p for p in out.glob(pattern) if p.is_file() and p.name != STATE)


def _done_ids(out: Path, fmt: str) -> set[str]:
    """Ids in the part files already written; unreadable (partial) parts are deleted."""
    import pyarrow.parquet as pq

    ids: set[str] = set()
    for p in _parts(out, "*.parquet" if fmt == "parquet" else "*.json"):
        try:
            if fmt == "parquet":
                got = pq.read_table(str(p), columns=["id"]).column("id").to_pylist()
            else:
                got = [json.loads(line)["id"] for line in p.read_text(encoding="utf-8").splitlines()]
        except Exception:  # noqa: BLE001 - any failure to read the whole part means it is partial
            p.unlink()
            continue
        ids.update(str(x) for x in got)
    return ids


def score_with_ray(input_path: str, out: Path, bundle: Path, cols: Columns, image_root: Path | None,
                   address: str | None = None, actors: int = 1, cpus_per_actor: int = 1, gpus_per_actor: float = 0,
                   batch_size: int = 64, provider: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Score ``input_path`` into the part-file directory ``out`` on Ray; returns a summary."""
    from ticor.bundle import read_manifest
    from ticor.scorer import _identity

    ray = _ray()
    fmt = {".parquet": "parquet", ".jsonl": "jsonl"}.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"{out}: with --engine ray the output is a directory named *.parquet or *.jsonl")
    if input_path == "-":
        raise UsageError("--engine ray reads a file, not stdin")
    if actors < 1 or cpus_per_actor < 1 or gpus_per_actor < 0:
        raise UsageError("--actors and --cpus-per-actor must be at least 1, --gpus-per-actor at least 0")
    m = read_manifest(bundle)  # verified here once; every actor verifies again
    ident = _identity(input_path, cols, image_root, m)
    if overwrite and out.exists():
        shutil.rmtree(out)
    if out.exists():
        try:
            state = json.loads((out / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UsageError(f"{out} exists and is not a ticor ray output; pass --overwrite") from None
        if state != ident:
            diff = sorted(k for k in ident if state.get(k) != ident[k])
            raise UsageError(f"{out}: written from another {', '.join(diff)}; refusing to resume into it "
                             "(pass --overwrite to start over)")
    else:
        out.mkdir(parents=True)
        (out / STATE).write_text(json.dumps(ident, indent=2) + "\n", encoding="utf-8")
    done = _done_ids(out, fmt)
    t0 = time.monotonic()
    staging = out / f".staging-{uuid.uuid4().hex[:8]}"
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
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = sys.stderr.isatty()
            data = ray.data.read_parquet(str(staging))
            # its own CPU request keeps decoding in tasks: Ray would otherwise fuse it into the actors
            prepared = data.map_batches(_prepare_batch, fn_kwargs={"image_spec": m.data["image"]["spec"]},
                                        batch_size=batch_size, batch_format="numpy", num_cpus=0.5)
            scored = prepared.map_batches(
                _ScoreActor, fn_constructor_kwargs={"bundle": str(bundle), "provider": provider,
                                                    "threads": cpus_per_actor},
                compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
                batch_size=batch_size, batch_format="numpy")
            if fmt == "parquet":  # part names carry Ray's per-write uuid: a rerun never overwrites a part
                scored.write_parquet(str(out))
            else:
                scored.write_json(str(out))  # JSON lines, one *.json part per block
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"rows_scored": todo, "rows_already_done": len(done), "seconds": time.monotonic() - t0,
            "engine": "ray", "address": address or "local"}


def status_counts(out: Path) -> dict[str, int]:
    """How many rows of each status a Ray output directory holds."""
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for p in _parts(out, "*.parquet"):
        for st in pq.read_table(str(p), columns=["status"]).column("status").to_pylist():
            counts[st] = counts.get(st, 0) + 1
    for p in _parts(out, "*.json"):
        for line in p.read_text(encoding="utf-8").splitlines():
            st = json.loads(line)["status"]
            counts[st] = counts.get(st, 0) + 1
    return counts


def read_output(out: Path) -> list[dict[str, Any]]:
    """Every row of a Ray output directory, in input order (by the ``index`` column)."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for p in _parts(out, "*.parquet"):
        rows += pq.read_table(str(p)).to_pylist()
    for p in _parts(out, "*.json"):
        rows += [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines()]
    return sorted(rows, key=lambda r: r["index"])
