"""``ticor score``: millions of (text, image) rows through a bundle, resumable, nothing lost.

With ``-o OUTPUT`` the rows are committed in shards under ``OUTPUT.ticor-parts/``: each shard
is written to a temporary file, flushed to disk and renamed, and its name carries the input
row range it covers, so the committed rows are always a whole prefix of the input. Killed at
any moment, the same command resumes after the last committed shard: no row lost, none
duplicated. ``state.json`` there records what the rows came from (input sha256, columns,
bundle model version and file hashes); another input or bundle refuses to resume into it.
When the input is done the shards are stitched into OUTPUT (temporary file + rename) and the
parts directory is removed. Without ``-o`` the rows stream to stdout as JSON lines (no resume).

Decoding and preprocessing of the next batch (a worker thread) overlap with inference of the
current one; at most two batches are in flight, so memory stays flat whatever the input size.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ticor.errors import ScoreFailed, UsageError
from ticor.matcher import Matcher
from ticor.results import Match
from ticor.resume import open_parts, run_identity
from ticor.tables import (
    Columns,
    Row,
    check_header,
    check_unique_ids,
    count_rows,
    input_format,
    output_format,
    printable,
    read_rows,
    write_output,
)


@dataclass
class Summary:
    rows: int = 0
    ok: int = 0
    failed: Counter = field(default_factory=Counter)
    resumed_from: int = 0
    seconds: float = 0.0
    providers: str = ""

    def line(self) -> str:
        bad = sum(self.failed.values())
        kinds = ", ".join(f"{n} {k}" for k, n in self.failed.most_common())
        rate = (self.rows - self.resumed_from) / self.seconds if self.seconds > 0 else 0.0
        resumed = f", resumed after {self.resumed_from}" if self.resumed_from else ""
        return (f"ticor score: {self.rows} rows ({self.ok} ok, {bad} failed{': ' + kinds if kinds else ''}){resumed} "
                f"in {self.seconds:.1f} s, {rate:.0f} rows/s, providers {self.providers}")


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".ticor-parts")


def _shards(parts: Path) -> list[tuple[int, int, Path]]:
    found: list[tuple[int, int, Path]] = []
    for p in parts.glob("shard-*.jsonl"):
        try:
            _, first, last = p.stem.split("-")
            found.append((int(first), int(last), p))
        except ValueError:
            continue
    found.sort()
    end = 0
    good = []
    for a, b, p in found:  # a contiguous prefix; anything else is not ours
        if a != end:
            break
        good.append((a, b, p))
        end = b
    return good


def _result_row(row: Row, m: Match) -> dict[str, Any]:
    return {"id": row.id, "score": m.score, "match": m.match, "status": m.status,
            "error": printable(m.error) if m.error is not None else None, "flags": ",".join(m.flags)}


class _Progress:
    def __init__(self, stream: TextIO, total: int | None, start: int) -> None:
        self.on = stream.isatty()
        self.stream, self.total, self.start = stream, total, start
        self.t0 = time.monotonic()
        self.last = 0.0

    def update(self, done: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.on or (now - self.last < 0.5 and not final):
            return
        self.last = now
        rate = (done - self.start) / max(now - self.t0, 1e-9)
        eta = ""
        if self.total and rate > 0:
            eta = f", ETA {max(self.total - done, 0) / rate:.0f} s"
        of = f"/{self.total}" if self.total else ""
        self.stream.write(f"\r{done}{of} rows, {rate:.0f} rows/s, {failed} failed{eta}   ")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def score_file(matcher: Matcher, input_path: str, out: Path | None, cols: Columns, image_root: Path | None,
               batch_size: int = 64, shard_rows: int = 4096, max_failures: int | None = None,
               overwrite: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None) -> Summary:
    """Score every row of ``input_path`` into ``out`` (or stdout); see the module docstring."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if batch_size < 1 or shard_rows < 1:
        raise UsageError("--batch-size and --shard-rows must be positive")
    fmt_in = input_format(input_path)
    if input_path != "-" and not Path(input_path).is_file():
        raise UsageError(f"{input_path}: no such input file")
    if input_path != "-":
        check_header(input_path, fmt_in, cols)
        check_unique_ids(input_path, cols)
    summary = Summary(providers=", ".join(matcher.providers["text"]))
    start = 0
    parts = None
    if out is not None:
        fmt_out = output_format(str(out))
        if input_path == "-":
            raise UsageError("reading stdin, write to stdout (no -o): a stream cannot be resumed")
        parts = _parts_dir(out)
        ident = run_identity(input_path, cols, image_root, matcher.manifest, matcher.threshold)
        out.parent.mkdir(parents=True, exist_ok=True)
        if open_parts(parts, out, ident, overwrite):
            shards = _shards(parts)
            start = shards[-1][1] if shards else 0
            for _, _, p in shards:  # counts of what is already committed
                with p.open(encoding="utf-8") as fh:
                    for line in fh:
                        st = json.loads(line)["status"]
                        if st == "ok":
                            summary.ok += 1
                        else:
                            summary.failed[st] += 1
            for leftover in parts.glob(".tmp-*"):
                leftover.unlink()
    summary.rows = summary.resumed_from = start

    progress = _Progress(stderr, count_rows(input_path) if input_path != "-" else None, start)
    t0 = time.monotonic()
    pending: list[dict[str, Any]] = []
    pending_start = start

    def commit() -> None:
        nonlocal pending, pending_start
        if not pending:
            return
        end = pending_start + len(pending)
        if parts is None:
            for r in pending:
                stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
            stdout.flush()
        else:
            _commit_shard(parts, pending_start, end, pending)
        pending, pending_start = [], end

    seen: dict[str, int] = {}  # stdin cannot be checked before it is read: a repeated id is that row's status

    def batches() -> Iterator[list[Row]]:
        batch: list[Row] = []
        for row in read_rows(input_path, cols, image_root, skip=start):
            if input_path == "-":
                if row.id in seen and row.problem is None:
                    row = Row(row.index, row.id, None, None, ("bad_input", f"row {row.index + 1}: id {row.id!r} "
                                                               f"was already used by row {seen[row.id] + 1}"))
                seen.setdefault(row.id, row.index)
            batch.append(row)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def prepare(rows: list[Row]) -> tuple[list[Row], Any]:
        usable = [r for r in rows if r.problem is None]
        return rows, matcher.prepare([(r.text, r.image or "") for r in usable])  # usable rows have both

    previous = signal.getsignal(signal.SIGTERM)
    if threading_main():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ticor-prepare") as pool:
            it = batches()
            nxt: Future | None = None
            first = next(it, None)
            if first is not None:
                nxt = pool.submit(prepare, first)
            while nxt is not None:
                rows, prepared = nxt.result()
                following = next(it, None)
                nxt = pool.submit(prepare, following) if following is not None else None
                results = iter(matcher.finish(prepared))
                for row in rows:
                    if row.problem is not None:
                        res = Match(None, None, row.problem[0], row.problem[1])
                    else:
                        res = next(results)
                    if res.status == "ok":
                        summary.ok += 1
                    else:
                        summary.failed[res.status] += 1
                    pending.append(_result_row(row, res))
                summary.rows += len(rows)
                if parts is None or len(pending) >= shard_rows:
                    commit()
                progress.update(summary.rows, sum(summary.failed.values()))
                if max_failures is not None and sum(summary.failed.values()) > max_failures:
                    commit()
                    raise ScoreFailed(f"stopped: {sum(summary.failed.values())} failed rows is over --max-failures "
                                      f"{max_failures} ({dict(summary.failed)}); {summary.rows} rows committed")
            commit()
    except KeyboardInterrupt:
        pending.clear()  # only whole shards count; the rows after the last one are scored again on resume
        summary.seconds = time.monotonic() - t0
        progress.update(summary.rows, sum(summary.failed.values()), final=True)
        raise
    finally:
        if threading_main():
            signal.signal(signal.SIGTERM, previous)
    progress.update(summary.rows, sum(summary.failed.values()), final=True)
    if parts is not None and out is not None:
        try:
            write_output([p for _, _, p in _shards(parts)], out, fmt_out)
        except OSError as exc:
            raise ScoreFailed(f"could not write {out} ({exc.strerror or exc}); all {summary.rows} rows are committed "
                              f"in {parts}: free space and run the same command to finish") from None
        shutil.rmtree(parts)
    summary.seconds = time.monotonic() - t0
    return summary


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: Any) -> None:  # SIGTERM behaves like Ctrl-C: committed shards stay
    raise KeyboardInterrupt


def _commit_shard(parts: Path, start: int, end: int, rows: list[dict[str, Any]]) -> None:
    final = parts / f"shard-{start:012d}-{end:012d}.jsonl"
    tmp = parts / f".tmp-{final.name}"
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(final)
        dfd = os.open(parts, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ScoreFailed(f"could not write {final.name} ({exc.strerror or exc}); the partial shard was discarded, "
                          f"the {start} rows committed before it are kept: free space and run again to resume") \
            from None
