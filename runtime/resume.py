"""What a resumable scoring run was started from, and the refusal to resume from anything else.

Both engines of ``ticor score`` keep a ``state.json`` beside their committed output. It records
the input (path and sha256), the columns, the picture root and the bundle (model version and
file hashes). A rerun resumes only when every one of these is the same; otherwise it refuses
and names what differs, so rows from two inputs or two bundles never end up in one output.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ticor._files import sha256_file
from ticor.bundle import Manifest
from ticor.errors import UsageError
from ticor.tables import Columns

STATE = "state.json"
STATE_VERSION = 1


def run_identity(input_path: str, cols: Columns, image_root: Path | None, manifest: Manifest,
                 threshold: float | None = None) -> dict[str, Any]:
    """What a resumable run was started from; a threshold other than the bundle's is part of it
    (the ``match`` column depends on it)."""
    ident = {
        "version": STATE_VERSION,
        "input": str(Path(input_path).resolve()),
        "input_sha256": sha256_file(Path(input_path)),
        "columns": [cols.id, cols.text, cols.image],
        "image_root": str(image_root.resolve()) if image_root else None,
        "bundle_model_version": manifest.model_version,
        "bundle_files": {k: v.sha256 for k, v in manifest.files.items()},
    }
    if threshold is not None and threshold != manifest.threshold:
        ident["threshold"] = threshold
    return ident


def check_resumable(folder: Path, ident: dict[str, Any], what: str) -> None:
    """Raise :class:`UsageError` unless ``folder/state.json`` records exactly ``ident``.

    ``what`` names the folder in the message (``OUTPUT``, the run being resumed)."""
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{folder} is not a ticor score run (no readable {STATE}); "
                         "remove it or pass --overwrite") from None
    if state != ident:
        diff = sorted(k for k in ident if state.get(k) != ident[k])
        raise UsageError(f"{what}: a previous run from another {', '.join(diff)} is in {folder}; "
                         "refusing to resume into it (pass --overwrite to start over)")


def open_parts(parts: Path, out: Path, ident: dict[str, Any], overwrite: bool) -> bool:
    """Make or reopen the parts folder of the run that writes ``out``; ``True`` when resuming.

    ``overwrite`` starts over; a finished ``out`` without parts is refused, and so are parts
    left by a run from another input or bundle."""
    if overwrite:
        shutil.rmtree(parts, ignore_errors=True)
        out.unlink(missing_ok=True)
    elif out.exists() and not parts.exists():
        raise UsageError(f"{out} exists; pass --overwrite to score again")
    if parts.exists():
        check_resumable(parts, ident, str(out))
        return True
    parts.mkdir(parents=True)
    write_state(parts, ident)
    return False


def write_state(folder: Path, ident: dict[str, Any]) -> None:
    """``folder/state.json``, written to a temporary file, flushed and renamed."""
    write_atomic(folder / STATE, json.dumps(ident, indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
