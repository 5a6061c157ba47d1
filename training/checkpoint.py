"""Trained weights and resumable checkpoints (safetensors).

A checkpoint holds the trainable weights, the optimiser moments, the step, the elapsed time,
the validation history and the best point so far; an interrupted run resumes from it with the
same batches and dropout masks. ``trained.safetensors`` holds only the trained weights, laid
over the pretrained backbones by :func:`load_trained`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ticor.errors import UsageError
from ticor.training.model import MatchModel


def _trainable_names(model: MatchModel) -> list[str]:
    wanted = {id(p) for p in model.trainable_parameters()}
    return [n for n, p in model.named_parameters() if id(p) in wanted]


def trained_file_state(model: MatchModel) -> dict[str, torch.Tensor]:
    """What ``trained.safetensors`` holds: the trained weights and the buffers training made."""
    return {**trainable_state(model), **{k: v.detach().clone() for k, v in model.stored_buffers().items()}}


def trainable_state(model: MatchModel) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in _trainable_names(model)}


def assign(model: MatchModel, tensors: dict[str, torch.Tensor]) -> None:
    """Copy named tensors into the model's parameters, in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, v in tensors.items():
            params[n].copy_(v)


def save_checkpoint(path: Path, model: MatchModel, opt: torch.optim.Optimizer, step: int, key: str,
                     elapsed: float, progress: dict[str, Any], best: dict[str, torch.Tensor] | None) -> None:
    tensors = {f"model.{n}": t for n, t in trainable_state(model).items()}
    tensors.update({f"best.{n}": t for n, t in (best or {}).items()})
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                n = names[id(p)]
                tensors[f"opt.{n}.exp_avg"] = st["exp_avg"]
                tensors[f"opt.{n}.exp_avg_sq"] = st["exp_avg_sq"]
                tensors[f"opt.{n}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"step": str(step), "key": key, "elapsed": f"{elapsed:.3f}",
                        "progress": json.dumps(progress)})
    tmp.replace(path)


def load_checkpoint(path: Path, model: MatchModel, opt: torch.optim.Optimizer, key: str
                     ) -> tuple[int, float, dict[str, Any], dict[str, torch.Tensor] | None]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if meta.get("key") != key:
        return 0, 0.0, {}, None
    tensors = load_file(str(path))
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} or None
    assign(model, {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            n = names[id(p)]
            if f"opt.{n}.exp_avg" in tensors:
                opt.state[p] = {"exp_avg": tensors[f"opt.{n}.exp_avg"].clone(),
                                "exp_avg_sq": tensors[f"opt.{n}.exp_avg_sq"].clone(),
                                "step": tensors[f"opt.{n}.step"].reshape(()).clone()}
    return int(meta["step"]), float(meta.get("elapsed", 0.0)), json.loads(meta.get("progress", "{}")), best


def load_trained(model: MatchModel, path: Path) -> None:
    """Overlay the trained weights (``trained.safetensors``) on the pretrained backbones."""
    tensors = load_file(str(path))
    buffers = model.stored_buffers()
    missing = (set(_trainable_names(model)) | set(buffers)) - set(tensors)
    unknown = set(tensors) - set(dict(model.named_parameters())) - set(buffers)
    if missing or unknown:
        raise UsageError(f"{path} does not fit this preset (missing {sorted(missing)[:3]}, "
                         f"unknown {sorted(unknown)[:3]})")
    assign(model, {k: v for k, v in tensors.items() if k not in buffers})
    for name, buf in buffers.items():
        buf.copy_(tensors[name])
