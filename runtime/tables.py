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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ticor.errors import MissingDependencyError, UsageError

COLUMNS = ("id", "score", "match", "status", "error", "flags")
INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PARQUET_LINE = "pip install 'ticor[parquet]'"


@dataclass(frozen=True)
class Columns:
    text: str = "text"
    image: str = "image"
    id: str = "id"


@dataclass(frozen=True)
class Row:
    index: int  # 0-based position in the input
    id: str
    text: Any
    image: str | None
    problem: tuple[str, str] | None = None  # (status, error) found while reading the row


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


def _pyarrow():
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


def _make_row(index: int, record: dict, cols: Columns, root: Path) -> Row:
    raw_id = record.get(cols.id)
    rid = str(index + 1) if raw_id is None or str(raw_id) == "" else str(raw_id)
    text = record.get(cols.text)
    image = _resolve(record.get(cols.image), root)
    problem = None
    if text is None:
        problem = ("bad_input", f"row {index + 1}: no {cols.text!r} value")
    elif image is None:
        problem = ("bad_input", f"row {index + 1}: no {cols.image!r} value")
    return Row(index, rid, text, image, problem)


def check_header(path: str, fmt: str, cols: Columns) -> None:
    """Fail (exit 2, before any output) when the text or image column is missing."""
    if path == "-" or fmt == "jsonl":
        return  # JSON lines name their fields per row; a missing field is that row's status
    if fmt == "parquet":
        names = set(_pyarrow().parquet.ParquetFile(path).schema_arrow.names)
    else:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
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
        wanted = [c for c in (cols.id, cols.text, cols.image) if c in pf.schema_arrow.names]
        index = 0
        for batch in pf.iter_batches(batch_size=4096, columns=wanted):
            for record in batch.to_pylist():
                if index >= skip:
                    yield _make_row(index, record, cols, root)
                index += 1
        return
    if path == "-":
        fh = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    else:
        fh = open(path, encoding="utf-8", errors="replace",  # noqa: SIM115 - closed by the `with` below
                  newline="" if fmt in ("csv", "tsv") else None)
    with fh:
        if fmt in ("csv", "tsv"):
            reader = csv.DictReader(fh, delimiter="\t" if fmt == "tsv" else ",")
            for index, record in enumerate(reader):
                if index >= skip:
                    yield _make_row(index, record, cols, root)
            return
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
