"""Self-describing training checkpoints (DESIGN.md §4.7) and resume.

One folder per step, written to `step_XXXXXXXX.tmp/` and renamed when complete (a crash mid-write never
replaces a good checkpoint; only the last `keep_last` complete ones are kept):

    checkpoints/step_00000100/
        model.safetensors       trainable weights, unsharded (the whole transformer, or only the LoRA adapters)
        ema.safetensors         EMA shadow weights (when EMA is on)
        optimizer.pt            AdamW state keyed by parameter name (full tensors; loaded with weights_only=True)
        rng.pt                  torch / cuda / python / numpy RNG states
        state.json              step, LR scheduler, data-sampler position, run config, model config, metrics

Sharded (FSDP2) models are gathered through `torch.distributed.checkpoint.state_dict` full state dicts, so a
checkpoint is the same file whatever the world size or strategy, and can be resumed under another one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cinegen.train.parallel import barrier

log = logging.getLogger(__name__)

STEP_RE = re.compile(r"^step_(\d{8})$")


class NonFiniteLossError(RuntimeError):
    """Raised when the loss is NaN or inf; the run stops and the last good checkpoint is left untouched."""


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _full(t: Any) -> Any:
    """A DTensor (FSDP2 shard) as its full tensor; anything else unchanged."""
    full = getattr(t, "full_tensor", None)
    return full() if callable(full) else t


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors of the trainable parameters, by name. Collective under FSDP."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    if dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = model.state_dict()
    return {k: _full(v).detach().cpu().contiguous() for k, v in sd.items() if k in names}


def ema_weights(ema: Any) -> dict[str, torch.Tensor]:
    """Full (unsharded) EMA shadow tensors on the CPU, by name. Collective under FSDP: call on every rank."""
    return {k: _full(v).detach().cpu().contiguous() for k, v in ema.state_dict().items()}


def optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimizer state keyed by parameter name, full tensors. Collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(
        model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=dist.is_initialized())
    )


def rng_state() -> dict[str, Any]:
    # Plain tensors/lists only, so the file loads with torch.load(weights_only=True).
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and STEP_RE.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_RE.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def resume_path(ckpt_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from: `checkpoint.resume` "auto" = the latest in `ckpt_dir`, a path, or None."""
    if resume == "auto":
        return latest_checkpoint(ckpt_dir)
    return Path(resume) if resume else None


def check_finite(loss: float, step: int, ckpt_dir: Path, what: str = "loss") -> None:
    """Raise NonFiniteLossError (naming the last good checkpoint) when `loss` is NaN or inf."""
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"{what} is {loss} at step {step}; stopping. The last good checkpoint is "
            f"{latest_checkpoint(ckpt_dir) or '(none yet)'} and was left intact."
        )


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    scheduler: Any,
    ema: Any | None,
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Collective: every rank calls it; rank 0 writes. Returns the final folder."""
    from safetensors.torch import save_file

    weights = trainable_state(model)
    opt_state = optimizer_state(model, opt)
    ema_state = ema_weights(ema) if ema else None
    final = ckpt_dir / f"step_{step:08d}"
    if _is_main():
        tmp = ckpt_dir / f"step_{step:08d}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        meta = {"format": "pt", "step": str(step)}
        save_file(weights, str(tmp / "model.safetensors"), metadata=meta)
        if ema_state is not None:
            save_file(ema_state, str(tmp / "ema.safetensors"), metadata=meta)
        torch.save(opt_state, tmp / "optimizer.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        full_state = {"step": step, "scheduler": scheduler.state_dict(), **state}
        (tmp / "state.json").write_text(json.dumps(full_state, indent=1, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        log.info("saved checkpoint %s", final)
    barrier()
    return final


def load_checkpoint(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, scheduler: Any, ema: Any | None
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler, EMA and RNG; returns state.json. Collective under FSDP."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "model.safetensors"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != trainable:
        missing, extra = sorted(trainable - set(weights)), sorted(set(weights) - trainable)
        raise ValueError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, extra {extra[:3]})")
    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=opts)
    opt_state = torch.load(path / "optimizer.pt", weights_only=True)
    set_optimizer_state_dict(model, opt, opt_state, options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema_file = path / "ema.safetensors"
        if not ema_file.is_file():
            raise ValueError(f"{path}: EMA is enabled but the checkpoint has no ema.safetensors")
        full = load_file(str(ema_file))
        ema.load_state_dict({k: _shard_like(v, ema.shadow[k]) for k, v in full.items() if k in ema.shadow})
    set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    log.info("resumed from %s (step %d)", path, state["step"])
    return state


def _shard_like(full: torch.Tensor, ref: Any) -> Any:
    """Distribute a full tensor like `ref` (a DTensor shard under FSDP2), or return it as is."""
    spec = getattr(ref, "device_mesh", None)
    if spec is None:
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(ref.dtype), ref.device_mesh, ref.placements)
