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
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ticor.bundle import (
    BRANCHES,
    GRAPH_IO,
    HEAD_INPUTS,
    HEAD_OUTPUT,
    IMAGE_INPUT,
    IMAGE_OUTPUT,
    TEXT_INPUTS,
    TEXT_OUTPUT,
    Manifest,
    check_declared_io,
    check_session_io,
    read_manifest,
)
from ticor.calibration import OperatingPoint, recalibrate
from ticor.embcache import DEFAULT_MAX_BYTES, EmbeddingCache, content_key
from ticor.errors import BundleError, InputError, UsageError
from ticor.inputs import ImageInput, clean_text, decode, is_image_bytes, open_image, picture_pixels, read_source
from ticor.paths import bundle_dir, cache_path, embeddings_db
from ticor.preprocess import UnknownChars, encode_texts, load_tokenizer
from ticor.results import Match, PreparedBatch, PreparedImages, Ranked, Ranking
from ticor.sessions import SessionConfig, create_session, resolve_providers, session_io, threads_from_env

__all__ = ["Match", "Matcher", "PreparedBatch", "Ranked", "Ranking", "default_bundle"]

#: Default picture-decoding threads per Matcher (see ``Matcher.load``); measured in docs/runtime.md.
DECODE_THREADS = min(4, os.cpu_count() or 1)
TEXT_BATCH = 64
IMAGE_BATCH = 16
HEAD_BATCH = 4096


def default_bundle() -> Path:
    """The bundle the main command builds: ``CACHE/bundles/multilingual-int8``."""
    return bundle_dir()


class Matcher:
    """A loaded bundle. Create with :meth:`load`."""

    def __init__(self, manifest: Manifest, sessions: dict[str, Any], config: SessionConfig,
                 cache: EmbeddingCache | None, decode_threads: int = 1,
                 operating_point: OperatingPoint | None = None) -> None:
        self.manifest = manifest
        self._sessions = sessions
        self.config = config
        self._cache = cache
        self.decode_threads = decode_threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._tok = load_tokenizer(manifest.tokenizer_path, manifest.text_spec)
        vocab = manifest.vocabulary
        self._unknown = UnknownChars(self._tok, vocab.unk_id, vocab.covered) if vocab is not None else None
        self._text_spec = manifest.text_spec
        self._image_spec = manifest.image_spec
        self.dim = manifest.embedding_dim
        #: On a GPU provider the image graph only sees batches of 1 and IMAGE_BATCH (a shorter last chunk
        #: is padded): CUDA's first run at each new batch size took 2-8 s on an H200 (cuDNN's convolution
        #: set-up; docs/studies/gpu.md), so a scoring run whose chunks ended at 15 different sizes spent minutes
        #: there. On the CPU a new shape costs nothing and padding would only add work.
        self._fixed_image_shapes = config.providers[0] != "CPUExecutionProvider"
        #: How ``threshold`` was chosen (``threshold=``, ``min_precision=``, ``min_recall=`` or the bundle's).
        self.operating_point = operating_point or OperatingPoint(manifest.threshold, "the bundle's threshold")
        self.threshold = self.operating_point.threshold
        files = manifest.files
        specs = {"text": repr(sorted(manifest.text_spec.to_json().items())),
                 "image": repr(sorted(manifest.image_spec.to_json().items()))}
        self._scope = {"text": content_key((files[GRAPH_IO["text"].file].sha256 + files[manifest.tokenizer].sha256
                                            + specs["text"]).encode()),
                       "image": content_key((files[GRAPH_IO["image"].file].sha256 + specs["image"]).encode())}

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, bundle: str | os.PathLike | None = None, *, providers: str | Sequence[str] | None = None,
             threads: int | None = None, inter_op_threads: int | None = None, optimization: str = "all",
             spinning: bool = False, memory_arena: bool = True, optimized_cache: bool | str | os.PathLike = False,
             cache: bool | str | os.PathLike = False, cache_max_bytes: int = DEFAULT_MAX_BYTES,
             decode_threads: int | None = None, threshold: float | None = None,
             min_precision: float | None = None, min_recall: float | None = None) -> Matcher:
        """Verify and load ``bundle`` (default: :func:`default_bundle`).

        providers: ``"auto"`` (default; ``TICOR_PROVIDER`` if set), ``"cpu"``, ``"cuda"``,
            ``"tensorrt"``, an onnxruntime provider name, or a list in priority order.
        threads: intra-op threads per session (default ``TICOR_THREADS``, else onnxruntime's).
        spinning: let the sessions' worker threads spin-wait between nodes (default off: the three
            sessions' spinning pools take the cores from each other; see
            :class:`~ticor.sessions.SessionConfig`).
        optimization: ``disable``, ``basic``, ``extended`` or ``all`` graph optimizations.
        optimized_cache: keep optimized graphs (``True``: ``CACHE/optimized``) for a faster next load.
        cache: persistent embedding cache (``True``: ``CACHE/embeddings.sqlite``, or a file path).
        decode_threads: pictures of one batch decoded and prepared in parallel (Pillow releases
            the GIL while it decodes and resizes); default :data:`DECODE_THREADS`, 1 for none.
        threshold, min_precision, min_recall: the operating point (at most one): a threshold on
            the score, or the lowest threshold whose precision on the bundle's val split reaches
            ``min_precision``, or the highest whose recall reaches ``min_recall`` (from the
            bundle's stored curve). Default: the bundle's threshold. :attr:`operating_point` says
            which threshold it gave and why.
        """
        if decode_threads is None:
            decode_threads = DECODE_THREADS
        if not isinstance(decode_threads, int) or isinstance(decode_threads, bool) or decode_threads < 1:
            raise UsageError(f"decode_threads must be a positive integer, not {decode_threads!r}")
        root = Path(os.path.expanduser(str(bundle))) if bundle is not None else default_bundle()
        if not root.is_dir():
            hint = " (run `make run` or `ticor quantize` to build it)" if bundle is None else ""
            raise BundleError(f"{root}: no such bundle directory{hint}")
        m = read_manifest(root, verify=True)
        check_declared_io(m)
        point = m.operating_point(threshold=threshold, min_precision=min_precision, min_recall=min_recall)
        names, chosen_by = resolve_providers(providers if providers is None or isinstance(providers, str)
                                             else list(providers), m.precision)
        opt_dir = None
        if optimized_cache:
            opt_dir = cache_path("optimized") if optimized_cache is True else Path(optimized_cache)
        config = SessionConfig(providers=tuple(names), intra_op_threads=threads if threads is not None
                               else threads_from_env(), inter_op_threads=inter_op_threads,
                               optimization=optimization, spinning=spinning, memory_arena=memory_arena,
                               optimized_dir=opt_dir,
                               chosen_by=chosen_by)
        sessions = {}
        for part in BRANCHES:
            path = m.graph_path(part)
            sessions[part] = create_session(path, m.files[path.name].sha256, config)
            check_session_io(path, *session_io(sessions[part]), m.graphs[part])
        store = None
        if cache:
            store = EmbeddingCache(embeddings_db() if cache is True else Path(cache), cache_max_bytes)
        return cls(m, sessions, config, store, decode_threads, point)

    @property
    def providers(self) -> dict[str, list[str]]:
        """What each graph actually runs on (from onnxruntime, after load)."""
        return {part: list(s.get_providers()) for part, s in self._sessions.items()}

    @property
    def bundle(self) -> Path:
        return self.manifest.root

    # ---------------------------------------------------------------- branches, for pipelines and benchmarks
    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` of cleaned texts, as the text graph takes them."""
        return encode_texts(self._tok, list(texts), self._text_spec)

    def prepare_picture(self, image: ImageInput) -> np.ndarray:
        """The image graph's ``[3, size, size]`` input for one picture. Raises :class:`InputError`."""
        data, name = read_source(image)
        decoded = open_image(image) if data is None else decode(data, name, self._image_spec)
        return picture_pixels(decoded, self._image_spec, name)

    def run_branch(self, part: str, *arrays: np.ndarray) -> np.ndarray:
        """One call of one graph on prepared inputs, in :data:`~ticor.bundle.GRAPH_IO` order
        (text: ids, mask; image: pixels; head: text and picture embeddings). No cache, no chunking."""
        if part not in BRANCHES:
            raise UsageError(f"part must be one of {', '.join(BRANCHES)}, not {part!r}")
        spec = GRAPH_IO[part]
        if len(arrays) != len(spec.inputs):
            raise UsageError(f"the {part} graph takes {len(spec.inputs)} arrays ({', '.join(spec.input_names)}), "
                             f"got {len(arrays)}")
        return self._sessions[part].run(spec.output_names, dict(zip(spec.input_names, arrays)))[0]

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``[N, dim]`` picture embeddings of prepared ``[N, 3, size, size]`` float32 pixels."""
        size = self._image_spec.size
        px = np.ascontiguousarray(pixels, dtype=np.float32)
        if px.ndim != 4 or px.shape[1:] != (3, size, size):
            raise UsageError(f"pixels must be [N, 3, {size}, {size}], got {px.shape}")
        if not len(px):
            return np.empty((0, self.dim), np.float32)
        out = []
        for s in range(0, len(px), IMAGE_BATCH):
            chunk = px[s : s + IMAGE_BATCH]
            n = len(chunk)
            if self._fixed_image_shapes and 1 < n < IMAGE_BATCH:
                chunk = np.concatenate([chunk, np.zeros((IMAGE_BATCH - n, *chunk.shape[1:]), np.float32)])
            out.append(self._sessions["image"].run([IMAGE_OUTPUT], {IMAGE_INPUT: chunk})[0][:n])
        return np.concatenate(out)

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
        todo: dict[str, list[int]] = {}
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
                ids, mask = self.tokenize([cleaned[todo[k][0]] for k in chunk])
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

    def try_embed_images(self, images: Sequence[ImageInput]) -> tuple[np.ndarray, dict[int, InputError]]:
        """``([N, dim] embeddings, {index: InputError})``: every picture that can be read is
        embedded; a bad one is reported by its index (its row of the array is zeros)."""
        return self._image_vectors(list(images))

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
                    arr = picture_pixels(open_image(src, self._image_spec), self._image_spec, name)
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
        def pixels(k: str) -> np.ndarray | InputError:
            src = sources[todo[k][0]]
            if isinstance(src, np.ndarray):
                return src
            try:
                return picture_pixels(decode(src[0], src[1], self._image_spec), self._image_spec, src[1])
            except InputError as exc:
                return exc

        pool = self._decode_pool() if len(todo) > 1 else None
        done = list(pool.map(pixels, todo)) if pool is not None else [pixels(k) for k in todo]
        ready: list[tuple[str, np.ndarray]] = []
        for k, got in zip(todo, done):
            if isinstance(got, InputError):
                for i in todo[k]:
                    errors[i] = got
            else:
                ready.append((k, got))
        return PreparedImages(len(images), keys, known, todo, ready, dict(sorted(errors.items())))

    def _run_images(self, p: PreparedImages) -> tuple[np.ndarray, dict[int, InputError]]:
        out = np.zeros((p.n, self.dim), np.float32)
        for i, k in p.keys.items():
            if k in p.known:
                out[i] = p.known[k]
        fresh = []
        if p.ready:
            vecs = self.embed_pixels(np.stack([a for _, a in p.ready]))
            for (k, _), v in zip(p.ready, vecs):
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
        p = np.concatenate([
            self._sessions["head"].run([HEAD_OUTPUT], {HEAD_INPUTS[0]: a[s : s + HEAD_BATCH],
                                                       HEAD_INPUTS[1]: b[s : s + HEAD_BATCH]})[0]
            for s in range(0, len(a), HEAD_BATCH)])
        recal = self.manifest.recalibration
        if recal is None:
            return p
        return recalibrate(p, *recal)

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
                flags.append(c.flags + self.text_flags(c.text))
            except InputError as exc:
                texts.append(None)
                flags.append(())
                errors[i] = exc
        return PreparedBatch(texts, flags, errors, self._prepare_images([p[1] for p in pairs]))

    def text_flags(self, text: str) -> tuple[str, ...]:
        """What the tokenizer makes of a cleaned text worth saying: ``unknown_chars:<share>``
        when characters of it can only become the unknown token (a script the bundle's
        vocabulary does not keep). The pair is scored all the same."""
        return self._unknown.flags(text) if self._unknown is not None else ()

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
        if isinstance(query, str) or (isinstance(query, bytes) and not is_image_bytes(query)):
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

    def _decode_pool(self) -> ThreadPoolExecutor | None:
        if self.decode_threads < 2:
            return None
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="ticor-decode")
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._cache is not None:
            self._cache.close()
