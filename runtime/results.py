"""The typed values passed between the runtime's stages and returned to callers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ticor.errors import InputError


@dataclass(frozen=True)
class Match:
    """One pair's result. ``score`` is the match probability; ``None`` with ``status`` != ``ok``."""

    score: float | None
    match: bool | None
    status: str = "ok"
    error: str | None = None
    flags: tuple[str, ...] = ()  # about the text: "empty", "cut", "replaced", "unknown_chars:<share>"


@dataclass(frozen=True)
class Ranked:
    index: int  # position in the candidates given to ``rank``
    score: float
    match: bool


@dataclass(frozen=True)
class Ranking:
    hits: list[Ranked]  # best first, at most k
    failed: list[tuple[int, str, str]]  # (index, status, error) of candidates that could not be used


@dataclass(frozen=True)
class PreparedImages:
    n: int
    keys: dict[int, str]  # index -> content key (absent: the picture failed)
    known: dict[str, np.ndarray]  # content key -> cached vector
    todo: dict[str, list[int]]  # content key -> indices still to embed
    ready: list[tuple[str, np.ndarray]]  # (content key, prepared pixels) to run through the image graph
    errors: dict[int, InputError]


@dataclass(frozen=True)
class PreparedBatch:
    """A batch after :meth:`Matcher.prepare`, before :meth:`Matcher.finish`."""

    texts: list[str | None]
    flags: list[tuple[str, ...]]
    errors: dict[int, InputError]
    images: PreparedImages
