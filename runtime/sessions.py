"""onnxruntime sessions: execution providers chosen explicitly, options documented, no fallback.

Providers. ``cpu``, ``cuda``, ``tensorrt`` or any onnxruntime provider name
(``"OpenVINOExecutionProvider"``...). A provider that this onnxruntime build does not offer
is an error, and so is a session that came up without it. ``auto`` picks CUDA for fp16
bundles when the CUDA provider is available, else CPU, and :attr:`SessionConfig.describe`
says what it picked. GPU providers keep the CPU provider behind them for the few nodes they
do not implement (onnxruntime's own partitioning); ``Matcher.providers`` lists both.

Options (:class:`SessionConfig`): intra-op and inter-op threads, whether their worker threads
spin-wait, graph optimization level, the CPU memory arena, and a directory where optimized
graphs are kept so a later load skips the optimization passes. Explicit arguments win over the
environment (``TICOR_THREADS``, ``TICOR_PROVIDER``); onnxruntime's own defaults apply only when
neither is set.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticor.errors import ProviderError, TicorError, UsageError

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
OPT_LEVELS = ("disable", "basic", "extended", "all")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_providers(asked: str | list[str] | None, precision: str) -> tuple[list[str], str]:
    """``(providers in priority order, how they were chosen)``. Raises :class:`ProviderError`."""
    if asked is None:
        asked = os.environ.get("TICOR_PROVIDER") or "auto"
    names = [asked] if isinstance(asked, str) else list(asked)
    if not names:
        raise UsageError("providers must not be empty")
    have = available_providers()
    if names == ["auto"]:
        if precision == "fp16" and "CUDAExecutionProvider" in have:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"], "auto: fp16 bundle and CUDA available"
        why = "int8/fp32 bundles run best on CPU" if precision != "fp16" else "CUDA not available"
        return ["CPUExecutionProvider"], f"auto: {why}"
    full = []
    for n in names:
        if not isinstance(n, str):
            raise UsageError(f"a provider must be a string, not {type(n).__name__}")
        p = ALIASES.get(n.lower(), n)
        if p not in have:
            raise ProviderError(f"execution provider {n!r} ({p}) is not available in this onnxruntime build; "
                                f"available: {', '.join(have)}")
        full.append(p)
    if full[-1] != "CPUExecutionProvider" and "CPUExecutionProvider" not in full:
        full.append("CPUExecutionProvider")  # for nodes a GPU provider leaves to the CPU, never instead of it
    return full, "asked"


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are made. ``None`` threads: ``TICOR_THREADS`` if set, else onnxruntime's choice.

    ``spinning``: whether a session's worker threads spin-wait for work between nodes
    (onnxruntime's own default is on). Off here: a Matcher holds three sessions (text, image,
    head), each with its own pool, and their spinning workers take the cores from the session
    that runs. Measured on 2 cores with the int8 bundle, each setting in its own process
    (``python -m ticor.benchmarks.runtime --threads``, 3 rounds): a fresh pair at batch 1 took
    9.8–14.5 ms with spinning against 6.2–7.3 ms without, and the three graphs at batch 64
    245–253 ms against 165–174 ms.
    """

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    optimization: str = "all"
    spinning: bool = False
    memory_arena: bool = True
    optimized_dir: Path | None = None  # keep optimized graphs here (fast cold start)
    chosen_by: str = "asked"
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimization not in OPT_LEVELS:
            raise UsageError(f"optimization must be one of {', '.join(OPT_LEVELS)}, not {self.optimization!r}")
        for name, v in (("intra_op_threads", self.intra_op_threads), ("inter_op_threads", self.inter_op_threads)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UsageError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(self.spinning, bool):
            raise UsageError(f"spinning must be True or False, not {self.spinning!r}")

    def describe(self) -> str:
        return f"{', '.join(self.providers)} ({self.chosen_by})"


def threads_from_env() -> int | None:
    raw = os.environ.get("TICOR_THREADS")
    if raw is None or raw == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        raise UsageError(f"TICOR_THREADS must be a positive integer, not {raw!r}") from None
    if n < 1:
        raise UsageError(f"TICOR_THREADS must be a positive integer, not {raw!r}")
    return n


_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}


def session_io(sess: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A session's ``(name, numpy dtype)`` inputs and outputs."""
    return ([(i.name, _DTYPES.get(i.type, i.type)) for i in sess.get_inputs()],
            [(o.name, _DTYPES.get(o.type, o.type)) for o in sess.get_outputs()])


def _spinning(opts: Any, on: bool) -> None:
    """Whether the intra-op and inter-op workers of ``opts``' session spin-wait for work."""
    for pool in ("intra_op", "inter_op"):
        opts.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if on else "0")


def plain_cpu_session(path: Path | str | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with default options, for the build side and benchmarks (graphs
    there are checked by what made them; the runtime's :func:`create_session` is for bundles).
    Worker threads do not spin, as in the runtime, so graphs timed side by side are timed alike."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    _spinning(opts, False)
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_LOCK = threading.Lock()


def create_session(path: Path, sha256: str, config: SessionConfig) -> Any:
    """One ``InferenceSession`` for the graph at ``path`` (already verified against ``sha256``).

    With ``config.optimized_dir`` the optimized graph is saved on first load and reused by
    later loads under a key of the graph's sha256, onnxruntime version, providers, optimization
    level and CPU flags; sessions are created under a process-wide lock.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if config.intra_op_threads is not None:
        opts.intra_op_num_threads = config.intra_op_threads
    if config.inter_op_threads is not None:
        opts.inter_op_num_threads = config.inter_op_threads
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if config.inter_op_threads > 1 else \
            ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = config.memory_arena
    _spinning(opts, config.spinning)
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts.graph_optimization_level = levels[config.optimization]
    model = path
    if config.optimized_dir is not None and config.providers == ("CPUExecutionProvider",):
        key = hashlib.sha256("\n".join([sha256, ort.__version__, ",".join(config.providers), config.optimization,
                                        _cpu_flags()]).encode()).hexdigest()[:32]
        cached = Path(config.optimized_dir) / f"{path.stem}-{key}.onnx"
        if cached.is_file():
            model = cached
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        else:
            cached.parent.mkdir(parents=True, exist_ok=True)
            opts.optimized_model_filepath = str(cached.with_suffix(f".{os.getpid()}.tmp"))
    options = [config.provider_options.get(p, {}) for p in config.providers]
    with _LOCK:
        try:
            sess = ort.InferenceSession(str(model), opts, providers=list(config.providers),
                                        provider_options=options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types; re-raised with the file named
            if model != path:  # a bad cached optimized graph: drop it, build from the bundle graph
                Path(model).unlink(missing_ok=True)
                return create_session(path, sha256, config)
            raise TicorError(f"{path}: onnxruntime could not load it with {', '.join(config.providers)}: "
                             f"{str(exc).strip()[:500]}") from None
    if opts.optimized_model_filepath:
        tmp = Path(opts.optimized_model_filepath)
        if tmp.is_file():
            os.replace(tmp, tmp.with_suffix("").with_suffix(".onnx"))
    got = sess.get_providers()
    if got[0] != config.providers[0]:
        raise ProviderError(f"{path}: asked for {config.providers[0]} but onnxruntime runs it on {got[0]} "
                            "(refusing to fall back silently)")
    return sess
