"""The runtime facade: load a bundle once, then score, embed and rank.

>>> m = Matcher.load("~/.cache/ticor/bundles/multilingual-int8")    # doctest: +SKIP
>>> m.score("a red apple", "apple.png")                             # doctest: +SKIP
Match(score=0.93, match=True, status='ok', error=None, flags=())

``load`` verifies the bundle before any session exists (manifest schema, size and sha256 of
every file, graph input/output names against the names the exporter writes), creates the three
sessions once under a lock, then checks each session's inputs and outputs (names and dtypes)
and providers. ``score``, ``score_batch``, ``embed_*`` and ``rank`` are safe to call from many
threads at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ticor.bundle import (
    GRAPH_FILES,
    HEAD_INPUTS,
    HEAD_OUTPUT,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    TEXT_INPUTS,
    TEXT_OUTPUT,
    TOKENIZER,
    BundleError,
    Manifest,
    read_manifest,
)
from ticor.embcache import DEFAULT_MAX_BYTES, EmbeddingCache, content_key
from ticor.errors import UsageError
from ticor.inputs import ImageInput, InputError, clean_text, decode, open_image, picture_pixels, read_source
from ticor.paths import cache_dir
from ticor.preprocess import encode_texts, load_tokenizer
from ticor.sessions import SessionConfig, create_session, resolve_providers, threads_from_env

__all__ = ["Match", "Matcher", "PreparedBatch", "Ranked", "Ranking", "default_bundle"]

TEXT_BATCH = 64
IMAGE_BATCH = 16
HEAD_BATCH = 4096
_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}


def default_bundle() -> Path:
    """The bundle the main command builds: ``CACHE/bundles/multilingual-int8``."""
    return cache_dir() / "bundles" / "multilingual-int8"


@dataclass(frozen=True)
class Match:
    """One pair's result. ``score`` is the match probability; ``None`` with ``status`` != ``ok``."""

    score: float | None
    match: bool | None
    status: str = "ok"
    error: str | None = None
    flags: tuple[str, ...] = ()  # about the text: "empty", "cut", "replaced"


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


class Matcher:
    """A loaded bundle. Create with :meth:`load`."""

    def __init__(self, manifest: Manifest, sessions: dict[str, Any], config: SessionConfig,
                 cache: EmbeddingCache | None) -> None:
        self.manifest = manifest
        self._sessions = sessions
        self.config = config
        self._cache = cache
        self._tok = load_tokenizer(manifest.root / TOKENIZER, manifest.text_spec)
        self._text_spec = manifest.text_spec
        self._image_spec = manifest.image_spec
        self.dim = int(manifest.data["embedding_dim"])
        self.threshold = manifest.threshold
        files = manifest.data["files"]
        specs = {p: repr(sorted(manifest.data[p]["spec"].items())) for p in ("text", "image")}
        self._scope = {"text": content_key((files[GRAPH_FILES["text"]]["sha256"] + files[TOKENIZER]["sha256"]
                                            + specs["text"]).encode()),
                       "image": content_key((files[GRAPH_FILES["image"]]["sha256"] + specs["image"]).encode())}

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, bundle: str | os.PathLike | None = None, *, providers: str | Sequence[str] | None = None,
             threads: int | None = None, inter_op_threads: int | None = None, optimization: str = "all",
             memory_arena: bool = True, optimized_cache: bool | str | os.PathLike = False,
             cache: bool | str | os.PathLike = False, cache_max_bytes: int = DEFAULT_MAX_BYTES) -> Matcher:
        """Verify and load ``bundle`` (default: :func:`default_bundle`).

        providers: ``"auto"`` (default; ``TICOR_PROVIDER`` if set), ``"cpu"``, ``"cuda"``,
            ``"tensorrt"``, an onnxruntime provider name, or a list in priority order.
        threads: intra-op threads per session (default ``TICOR_THREADS``, else onnxruntime's).
        optimization: ``disable``, ``basic``, ``extended`` or ``all`` graph optimizations.
        optimized_cache: keep optimized graphs (``True``: ``CACHE/optimized``) for a faster next load.
        cache: persistent embedding cache (``True``: ``CACHE/embeddings.sqlite``, or a file path).
        """
        root = Path(os.path.expanduser(str(bundle))) if bundle is not None else default_bundle()
        if not root.is_dir():
            hint = " (run `make run` or `ticor quantize` to build it)" if bundle is None else ""
            raise BundleError(f"{root}: no such bundle directory{hint}")
        m = read_manifest(root, verify=True)
        _check_declared_io(m)
        names, chosen_by = resolve_providers(list(providers) if isinstance(providers, (list, tuple)) else providers,
                                             m.precision)
        opt_dir = None
        if optimized_cache:
            opt_dir = cache_dir() / "optimized" if optimized_cache is True else Path(optimized_cache)
        config = SessionConfig(providers=tuple(names), intra_op_threads=threads if threads is not None
                               else threads_from_env(), inter_op_threads=inter_op_threads,
                               optimization=optimization, memory_arena=memory_arena, optimized_dir=opt_dir,
                               chosen_by=chosen_by)
        sessions = {}
        for part, f in GRAPH_FILES.items():
            sessions[part] = create_session(root / f, m.data["files"][f]["sha256"], config)
            _check_session_io(root / f, sessions[part], m.data["graphs"][part])
        store = None
        if cache:
            store = EmbeddingCache(cache_dir() / "embeddings.sqlite" if cache is True else Path(cache),
                                   cache_max_bytes)
        return cls(m, sessions, config, store)

    @property
    def providers(self) -> dict[str, list[str]]:
        """What each graph actually runs on (from onnxruntime, after load)."""
        return {part: list(s.get_providers()) for part, s in self._sessions.items()}

    @property
    def bundle(self) -> Path:
        return self.manifest.root

    # ---------------------------------------------------------------- embeddings
    def embed_texts(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """``[N, dim]`` float32 text embeddings (L2-normalised). Raises :class:`InputError` for a non-text."""
        if isinstance(texts, (str, bytes)):
            raise UsageError("embed_texts takes a list of texts; wrap a single text in a list")
        cleaned = [clean_text(t).text for t in texts]
        return self._text_vectors(cleaned)

    def _text_vectors(self, cleaned: list[str]) -> np.ndarray:
        out = np.empty((len(cleaned), self.dim), np.float32)
        if not cleaned:
            return out
        keys = [content_key(t.encode("utf-8")) for t in cleaned]
        known = (self._cache.get_many(self._scope["text"], list(dict.fromkeys(keys)), self.dim)
                 if self._cache is not None else {})
        todo = {}
        for i, k in enumerate(keys):
            if k in known:
                out[i] = known[k]
            else:
                todo.setdefault(k, []).append(i)
        if todo:
            firsts = sorted(todo, key=lambda k: len(cleaned[todo[k][0]]))  # similar lengths share a batch
            fresh = []
            for s in range(0, len(firsts), TEXT_BATCH):
                chunk = firsts[s : s + TEXT_BATCH]
                ids, mask = encode_texts(self._tok, [cleaned[todo[k][0]] for k in chunk], self._text_spec)
                vecs = self._sessions["text"].run([TEXT_OUTPUT], {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})[0]
                for k, v in zip(chunk, vecs):
                    out[todo[k]] = v
                    fresh.append((k, v))
            if self._cache is not None:
                self._cache.put_many(self._scope["text"], fresh)
        return out

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """``[N, dim]`` float32 picture embeddings. Raises :class:`InputError` for the first bad picture."""
        vecs, errors = self._image_vectors(list(images))
        if errors:
            i, err = next(iter(errors.items()))
            raise InputError(err.kind, f"image {i}: {err}")
        return vecs

    def _image_vectors(self, images: list[Any]) -> tuple[np.ndarray, dict[int, InputError]]:
        return self._run_images(self._prepare_images(images))

    def _prepare_images(self, images: list[Any]) -> PreparedImages:
        """Read, hash, look up the cache, decode and preprocess what is missing (no graph runs)."""
        errors: dict[int, InputError] = {}
        keys: dict[int, str] = {}
        sources: dict[int, Any] = {}
        seen: dict[str, int] = {}  # a path given many times in one batch is read once
        for i, src in enumerate(images):
            path = os.fspath(src) if isinstance(src, (str, os.PathLike)) else None
            if path is not None and path in seen:
                j = seen[path]
                if j in errors:
                    errors[i] = errors[j]
                else:
                    keys[i], sources[i] = keys[j], sources[j]
                continue
            if path is not None:
                seen[path] = i
            try:
                data, name = read_source(src)
                if data is None:  # in-memory picture: hash the prepared pixels
                    arr = picture_pixels(open_image(src), self._image_spec, name)
                    keys[i], sources[i] = content_key(arr.tobytes()), arr
                else:
                    keys[i], sources[i] = content_key(data), (data, name)
            except InputError as exc:
                errors[i] = exc
        known = (self._cache.get_many(self._scope["image"], list(dict.fromkeys(keys.values())), self.dim)
                 if self._cache is not None else {})
        todo: dict[str, list[int]] = {}
        for i, k in keys.items():
            if k not in known:
                todo.setdefault(k, []).append(i)
        ready: list[tuple[str, np.ndarray]] = []
        for k, idx in todo.items():
            src = sources[idx[0]]
            try:
                arr = src if isinstance(src, np.ndarray) else picture_pixels(decode(*src), self._image_spec, src[1])
            except InputError as exc:
                for i in idx:
                    errors[i] = exc
                continue
            ready.append((k, arr))
        return PreparedImages(len(images), keys, known, todo, ready, dict(sorted(errors.items())))

    def _run_images(self, p: PreparedImages) -> tuple[np.ndarray, dict[int, InputError]]:
        out = np.zeros((p.n, self.dim), np.float32)
        for i, k in p.keys.items():
            if k in p.known:
                out[i] = p.known[k]
        fresh = []
        for s in range(0, len(p.ready), IMAGE_BATCH):
            chunk = p.ready[s : s + IMAGE_BATCH]
            vecs = self._sessions["image"].run([IMAGE_OUTPUT], {IMAGE_INPUT: np.stack([a for _, a in chunk])})[0]
            for (k, _), v in zip(chunk, vecs):
                out[p.todo[k]] = v
                fresh.append((k, v))
        if self._cache is not None and fresh:
            self._cache.put_many(self._scope["image"], fresh)
        return out, p.errors

    def head(self, text_vectors: np.ndarray, image_vectors: np.ndarray) -> np.ndarray:
        """Match probabilities ``[N]`` for aligned rows of embeddings (the head graph alone)."""
        a = np.ascontiguousarray(text_vectors, dtype=np.float32)
        b = np.ascontiguousarray(image_vectors, dtype=np.float32)
        if a.ndim != 2 or a.shape != b.shape or a.shape[1] != self.dim:
            raise UsageError(f"head needs two [N, {self.dim}] arrays, got {a.shape} and {b.shape}")
        if not len(a):
            return np.empty((0,), np.float32)
        return np.concatenate([
            self._sessions["head"].run([HEAD_OUTPUT], {HEAD_INPUTS[0]: a[s : s + HEAD_BATCH],
                                                       HEAD_INPUTS[1]: b[s : s + HEAD_BATCH]})[0]
            for s in range(0, len(a), HEAD_BATCH)])

    # ---------------------------------------------------------------- scoring
    def score(self, text: str | bytes, image: ImageInput) -> Match:
        """One pair. A bad picture or a non-text raises :class:`InputError` (its ``kind`` says why)."""
        r = self.score_batch([(text, image)])[0]
        if r.status != "ok":
            raise InputError(r.status, r.error or r.status)
        return r

    def score_batch(self, pairs: Iterable[tuple[str | bytes, ImageInput]]) -> list[Match]:
        """One :class:`Match` per pair, in order; a bad text or picture is that pair's status."""
        return self.finish(self.prepare(pairs))

    def prepare(self, pairs: Iterable[tuple[str | bytes, ImageInput]]) -> PreparedBatch:
        """The CPU work of :meth:`score_batch` before any graph runs: text cleaning, picture
        reading, hashing, cache look-ups, decoding and preprocessing. Pass the result to
        :meth:`finish`; a pipeline can prepare the next batch while the current one finishes."""
        pairs = list(pairs)
        texts: list[str | None] = []
        flags: list[tuple[str, ...]] = []
        errors: dict[int, InputError] = {}
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise UsageError(f"pair {i} must be a (text, image) tuple, not {type(pair).__name__}")
            try:
                c = clean_text(pair[0])
                texts.append(c.text)
                flags.append(c.flags)
            except InputError as exc:
                texts.append(None)
                flags.append(())
                errors[i] = exc
        return PreparedBatch(texts, flags, errors, self._prepare_images([p[1] for p in pairs]))

    def finish(self, batch: PreparedBatch) -> list[Match]:
        """Run the graphs for a batch from :meth:`prepare`: one :class:`Match` per pair, in order."""
        status = dict(batch.errors)
        iv, image_errors = self._run_images(batch.images)
        for i, exc in image_errors.items():
            status.setdefault(i, exc)
        n = len(batch.texts)
        good = [i for i in range(n) if i not in status]
        tv = self._text_vectors([batch.texts[i] for i in good])  # type: ignore[misc]
        probs = self.head(tv, iv[good]) if good else np.empty(0, np.float32)
        scored = dict(zip(good, probs))
        out: list[Match] = []
        for i in range(n):
            if i in scored:
                p = float(scored[i])
                out.append(Match(p, p >= self.threshold, "ok", None, batch.flags[i]))
            else:
                out.append(Match(None, None, status[i].kind, str(status[i]), batch.flags[i]))
        return out

    def rank(self, query: str | bytes | ImageInput, candidates: Sequence[Any], k: int = 10) -> Ranking:
        """The ``k`` best ``candidates`` for ``query``: pictures for a text query (``str``/``bytes``
        decoded as text), texts for a picture query. Uses cached embeddings and the head alone."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UsageError(f"k must be a positive integer, not {k!r}")
        if isinstance(candidates, (str, bytes)):
            raise UsageError("candidates must be a list")
        candidates = list(candidates)
        failed: list[tuple[int, str, str]] = []
        if isinstance(query, (str, bytes)) and not _looks_like_image_bytes(query):
            q = self._text_vectors([clean_text(query).text])[0]
            cv, errors = self._image_vectors(candidates)
            failed = [(i, e.kind, str(e)) for i, e in errors.items()]
            usable = [i for i in range(len(candidates)) if i not in errors]
            probs = self.head(np.repeat(q[None], len(usable), 0), cv[usable])
        else:
            qv, errors = self._image_vectors([query])
            if errors:
                raise errors[0]
            cleaned = []
            usable = []
            for i, t in enumerate(candidates):
                try:
                    cleaned.append(clean_text(t).text)
                    usable.append(i)
                except InputError as exc:
                    failed.append((i, exc.kind, str(exc)))
            tv = self._text_vectors(cleaned)
            probs = self.head(tv, np.repeat(qv, len(usable), 0))
        order = np.argsort(-probs, kind="stable")[:k]
        hits = [Ranked(usable[j], float(probs[j]), bool(probs[j] >= self.threshold)) for j in order]
        return Ranking(hits, failed)

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def _looks_like_image_bytes(b: str | bytes) -> bool:
    if isinstance(b, str):
        return False
    return b[:3] == b"\xff\xd8\xff" or b[:8] == b"\x89PNG\r\n\x1a\n" or b[:4] in (b"GIF8", b"RIFF") or b[:2] == b"BM"


def _check_declared_io(m: Manifest) -> None:
    """The manifest's graph names must be the ones this runtime feeds (before any session)."""
    want = {"text": (list(TEXT_INPUTS), [TEXT_OUTPUT]), "image": ([IMAGE_INPUT], [IMAGE_OUTPUT]),
            "head": (list(HEAD_INPUTS), [HEAD_OUTPUT])}
    for part, (ins, outs) in want.items():
        g = m.data["graphs"].get(part)
        if g is None:
            raise BundleError(f"{m.path}: no {part} graph declared")
        if [i["name"] for i in g["inputs"]] != ins or [o["name"] for o in g["outputs"]] != outs:
            raise BundleError(f"{m.path}: the {part} graph declares inputs {[i['name'] for i in g['inputs']]} "
                              f"and outputs {[o['name'] for o in g['outputs']]}; this runtime feeds {ins} -> {outs}")


def _check_session_io(path: Path, sess: Any, declared: dict[str, Any]) -> None:
    got_in = [(i.name, _DTYPES.get(i.type, i.type)) for i in sess.get_inputs()]
    got_out = [(o.name, _DTYPES.get(o.type, o.type)) for o in sess.get_outputs()]
    want_in = [(i["name"], i["dtype"]) for i in declared["inputs"]]
    want_out = [(o["name"], o["dtype"]) for o in declared["outputs"]]
    if got_in != want_in or got_out != want_out:
        raise BundleError(f"{path}: the graph has inputs {got_in} and outputs {got_out}, the manifest declares "
                          f"{want_in} -> {want_out} (graphs from another build?)")
