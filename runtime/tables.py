"""Row input and output for the batch scorer: CSV, TSV, JSONL, Parquet, stdin; streamed.

Input rows come out one at a time (Parquet in record batches), never the whole file in
memory. Output rows are dicts with the fixed columns :data:`COLUMNS`.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticor.errors import MissingDependencyError, UsageError

COLUMNS = ("id", "score", "match", "status", "error", "flags")
INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PARQUET_LINE = "pip install 'ticor[parquet]'"
#: A CSV/TSV cell larger than this is its row's ``bad_input`` (a caption is cut to 4,096 characters anyway).
MAX_CELL_BYTES = 64 << 20
csv.field_size_limit(MAX_CELL_BYTES)


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    image: str = "image"
    id: str = "id"
    extra: tuple[str, ...] = ()  # more columns to carry on each row (``ticor eval``: label, lang, slices)


@dataclass(frozen=True)
class Row:
    index: int  # 0-based position in the input
    id: str
    text: Any
    image: str | None
    problem: tuple[str, str] | None = None  # (status, error) found while reading the row
    fields: dict[str, Any] = field(default_factory=dict)  # the ``Columns.extra`` values present in the row


def input_format(path: str) -> str:
    if path == "-":
        return "jsonl"
    fmt = INPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: unknown input format; use one of {', '.join(INPUT_FORMATS)} (or - for JSONL "
                         "on stdin)")
    return fmt


def output_format(path: str | None) -> str:
    if path is None or path == "-":
        return "jsonl"
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: unknown output format; use one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError(f"Parquet needs pyarrow: {PARQUET_LINE}") from None
    return pyarrow


def _resolve(image: Any, root: Path) -> str | None:
    if image is None:
        return None
    if not isinstance(image, str):
        image = str(image)
    if not image.strip():
        return None
    p = Path(image)
    return str(p if p.is_absolute() else root / p)


def _undecodable(value: str) -> bytes | str:
    """Text read with ``surrogateescape``: its bytes when some were not UTF-8 (so the text path
    decodes them with replacement and flags the row ``replaced``), else the text itself."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate written as a JSON escape: the text path replaces it
        return value
    return raw if not value.isascii() and any("\udc80" <= ch <= "\udcff" for ch in value) else value


def printable(value: str) -> str:
    """``value`` with lone surrogates (undecodable bytes, bad escapes) replaced, safe to write as UTF-8."""
    try:
        raw = value.encode("utf-8", "surrogateescape")  # undecodable input bytes back as they were
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


def _make_row(index: int, record: dict, cols: Columns, root: Path) -> Row:
    raw_id = record.get(cols.id)
    rid = str(index + 1) if raw_id is None or str(raw_id) == "" else printable(str(raw_id))
    text = record.get(cols.text)
    if isinstance(text, str):
        text = _undecodable(text)
    image = _resolve(record.get(cols.image), root)
    problem = None
    if text is None:
        problem = ("bad_input", f"row {index + 1}: no {cols.text!r} value")
    elif image is None:
        problem = ("bad_input", f"row {index + 1}: no {cols.image!r} value")
    fields = {c: record[c] for c in cols.extra if record.get(c) is not None}
    return Row(index, rid, text, image, problem, fields)


def check_header(path: str, fmt: str, cols: Columns) -> None:
    """Fail (exit 2, before any output) when the text or image column is missing."""
    if path == "-" or fmt == "jsonl":
        return  # JSON lines name their fields per row; a missing field is that row's status
    if fmt == "parquet":
        names = set(_pyarrow().parquet.ParquetFile(path).schema_arrow.names)
    else:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
            names = set(next(csv.reader(fh, delimiter="\t" if fmt == "tsv" else ","), []))
    missing = [c for c in (cols.text, cols.image) if c not in names]
    if missing:
        raise UsageError(f"{path}: no column {missing[0]!r} (columns: {', '.join(sorted(names)) or 'none'}); "
                         "map yours with --text-col/--image-col")


def read_rows(path: str, cols: Columns, image_root: Path | None, skip: int = 0) -> Iterator[Row]:
    """Stream the input's rows from position ``skip`` on."""
    fmt = input_format(path)
    root = image_root if image_root is not None else (Path.cwd() if path == "-" else Path(path).resolve().parent)
    if fmt == "parquet":
        pf = _pyarrow().parquet.ParquetFile(path)
        wanted = [c for c in dict.fromkeys((cols.id, cols.text, cols.image, *cols.extra)) if c in pf.schema_arrow.names]
        index = 0
        for batch in pf.iter_batches(batch_size=4096, columns=wanted):
            for record in batch.to_pylist():
                if index >= skip:
                    yield _make_row(index, record, cols, root)
                index += 1
        return
    if path == "-":
        fh = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    else:
        fh = open(path, encoding="utf-8", errors="surrogateescape",  # noqa: SIM115 - closed by the `with` below
                  newline="" if fmt in ("csv", "tsv") else None)
    with fh:
        if fmt in ("csv", "tsv"):
            reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
            index = 0
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # one broken record (an oversized cell): that row's status, then go on
                    if index >= skip:
                        yield Row(index, str(index + 1), None, None,
                                  ("bad_input", f"row {index + 1} (line {reader.line_num}): {exc} "
                                                f"({MAX_CELL_BYTES >> 20} MiB)"))
                    index += 1
                    continue
                if index >= skip:
                    yield _make_row(index, record, cols, root)
                index += 1
        index = 0
        for line in fh:
            if not line.strip():
                continue
            if index >= skip:
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    record = f"bad JSON ({exc})"
                if isinstance(record, dict):
                    yield _make_row(index, record, cols, root)
                else:
                    why = record if isinstance(record, str) and record.startswith("bad JSON") else "not a JSON object"
                    yield Row(index, str(index + 1), None, None, ("bad_input", f"row {index + 1}: {why}"))
            index += 1


def check_unique_ids(path: str, cols: Columns) -> None:
    """Refuse (exit 2, before any output) an input in which two rows have the same id."""
    first: dict[str, int] = {}
    for row in read_rows(path, cols, Path("/")):
        if row.id in first:
            raise UsageError(f"{path}: rows {first[row.id] + 1} and {row.index + 1} have the same id {row.id!r}; "
                             "ids must be unique (drop the id column to number the rows)")
        first[row.id] = row.index


def count_rows(path: str) -> int | None:
    """Rows in the input, for progress (``None`` for stdin); a quick line count for text formats."""
    if path == "-":
        return None
    fmt = input_format(path)
    if fmt == "parquet":
        return _pyarrow().parquet.ParquetFile(path).metadata.num_rows
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            n += chunk.count(b"\n")
    return max(0, n - 1) if fmt in ("csv", "tsv") else n


def write_output(shards: list[Path], out: Path, fmt: str) -> None:
    """Stitch committed JSONL shards into ``out`` (its format), via a temporary file and a rename."""
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "jsonl":
            with tmp.open("wb") as dst:
                for s in shards:
                    with s.open("rb") as src:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                dst.flush()
        elif fmt == "csv":
            with tmp.open("w", encoding="utf-8", newline="") as dst:
                w = csv.DictWriter(dst, fieldnames=list(COLUMNS))
                w.writeheader()
                for s in shards:
                    with s.open(encoding="utf-8") as src:
                        for line in src:
                            w.writerow(json.loads(line))
        else:
            pa = _pyarrow()
            schema = pa.schema([("id", pa.string()), ("score", pa.float64()), ("match", pa.bool_()),
                                ("status", pa.string()), ("error", pa.string()), ("flags", pa.string())])
            with pa.parquet.ParquetWriter(str(tmp), schema) as writer:
                for s in shards:
                    with s.open(encoding="utf-8") as src:
                        rows = [json.loads(line) for line in src]
                    if rows:
                        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
