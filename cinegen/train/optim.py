"""AdamW, learning-rate schedules and EMA (small pure pieces; the schedule is a function of the step only).

- Weight decay applies to matrices (dim >= 2) only; biases, norms and embeddings' 1-D params are exempt
  (the nanoGPT / lingua convention).
- `lr_factor(step, ...)`: linear warmup to 1, then constant, cosine or linear decay to `min_lr_ratio`. A pure
  function of the step, so resuming needs no scheduler state beyond the step count (we still checkpoint the
  LambdaLR state for completeness).
- EMA (DiT `update_ema`): shadow = decay·shadow + (1 − decay)·param, over trainable parameters only, in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from cinegen.train.config import OptimConfig


def param_groups(named: Iterable[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for _, p in named:
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(model.named_parameters(), cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    # foreach=False: the single-tensor path gives bit-identical results however parameters are grouped or
    # sharded (FSDP/DDP parity tests), at a small speed cost that is irrelevant next to the model.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, foreach=False)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base LR at optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
    raise ValueError(f"unknown LR schedule {schedule!r}")


def build_scheduler(
    opt: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
    )


class EMA:
    """Exponential moving average of the trainable parameters (fp32 shadow copies, keyed by parameter name)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state is missing {sorted(missing)[:3]}")
        for k in self.shadow:
            self.shadow[k].copy_(state[k])
