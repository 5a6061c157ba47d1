"""A persistent, bounded embedding cache shared safely by several processes (SQLite, WAL mode).

Keys are ``(bundle identity, branch, sha256 of the input's content)``: the cleaned text's
UTF-8 bytes, or a picture's file bytes (the decoded pixels for in-memory images). The bundle
identity is the sha256 of the branch graph plus its preprocessing settings, so another bundle,
even a re-quantized one, never reads this bundle's vectors. The file lives at
``CACHE/embeddings.sqlite`` unless a path is given. When the file grows over ``max_bytes`` the
least recently used rows are dropped.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ticor.errors import UsageError

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB


def content_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class EmbeddingCache:
    """``get_many``/``put_many`` of float32 vectors; thread- and process-safe."""

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1 << 16:
            raise UsageError(f"the embedding cache needs at least 64 KiB, not {max_bytes} bytes")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (scope TEXT NOT NULL, key TEXT NOT NULL, "
                         "vec BLOB NOT NULL, used REAL NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID")
        self._db.execute("CREATE INDEX IF NOT EXISTS emb_used ON emb (used)")

    def get_many(self, scope: str, keys: list[str], dim: int) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if not keys:
            return found
        with self._lock:
            for s in range(0, len(keys), 500):
                part = keys[s : s + 500]
                rows = self._db.execute(
                    f"SELECT key, vec FROM emb WHERE scope = ? AND key IN ({','.join('?' * len(part))})",
                    [scope, *part]).fetchall()
                for k, blob in rows:
                    v = np.frombuffer(blob, dtype=np.float32)
                    if v.shape == (dim,):
                        found[k] = v
            stale = list(found)
            if stale:  # LRU touch, one statement per chunk; rows touched in the last minute are left alone
                now = time.time()
                for s in range(0, len(stale), 500):
                    part = stale[s : s + 500]
                    self._db.execute(f"UPDATE emb SET used = ? WHERE scope = ? AND used < ? AND key IN "
                                     f"({','.join('?' * len(part))})", [now, scope, now - 60, *part])
        return found

    def put_many(self, scope: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        now = time.time()
        rows = [(scope, k, np.ascontiguousarray(v, dtype=np.float32).tobytes(), now) for k, v in items]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO emb (scope, key, vec, used) VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._trim()

    def _trim(self) -> None:
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        pages = self._db.execute("PRAGMA page_count").fetchone()[0] - self._db.execute(
            "PRAGMA freelist_count").fetchone()[0]
        if page * pages <= self.max_bytes:
            return
        n = self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
        drop = max(1, n - int(n * 0.8 * self.max_bytes / (page * pages)))
        self._db.execute("DELETE FROM emb WHERE (scope, key) IN (SELECT scope, key FROM emb ORDER BY used LIMIT ?)",
                         (drop,))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
