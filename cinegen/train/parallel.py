"""Distributed setup and `parallelize(model, cfg)`: DDP / FSDP2 and activation checkpointing from outside the model
(DESIGN.md §4.6; lingua `parallelize_model`, torchtitan `parallelize.py`). Model files never import
torch.distributed.

- `init_distributed`: reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); gloo on CPU, nccl on CUDA.
- activation checkpointing: every `transformer_blocks[i]` (or VAE down/up block) runs under non-reentrant
  `torch.utils.checkpoint`; the module tree and state-dict keys are unchanged.
- FSDP2: `fully_shard` on every block, then on the root (per-parameter DTensor sharding on dim 0).
- DDP: the usual wrapper; the trainer keeps a handle on the raw module for checkpoints.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from cinegen.train.config import ParallelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(pref: str, local_rank: int = 0) -> torch.device:
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(cfg: ParallelConfig, device_pref: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = cfg.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    if world > 1 and cfg.strategy == "none":
        raise ValueError(f"WORLD_SIZE={world} but parallel.strategy is 'none'; use ddp or fsdp")
    return DistInfo(rank, world, local_rank, device)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= dist.get_world_size()
    return x


def checkpointed_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks activation checkpointing and FSDP wrap (transformer blocks or VAE stages)."""
    if hasattr(model, "transformer_blocks"):
        return list(model.transformer_blocks)
    blocks: list[nn.Module] = []
    for part in ("encoder", "decoder"):
        sub = getattr(model, part, None)
        for name in ("down_blocks", "up_blocks"):
            blocks.extend(getattr(sub, name, []) if sub is not None else [])
    return blocks


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Run each block's forward under non-reentrant checkpointing (recomputed in backward). Returns the count."""
    blocks = checkpointed_blocks(model)
    for block in blocks:
        if getattr(block, "_cinegen_ckpt", False):
            continue
        inner = block.forward

        @functools.wraps(inner)
        def run(*args, _inner=inner, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        block.forward = run  # instance attribute: module tree and state dict unchanged
        block._cinegen_ckpt = True
    if hasattr(model, "gradient_checkpointing"):
        model.gradient_checkpointing = False  # ours replaces the model's own switch; never checkpoint twice
    return len(blocks)


def parallelize(model: nn.Module, cfg: ParallelConfig, info: DistInfo) -> nn.Module:
    """Apply activation checkpointing, then DDP or FSDP2. Returns the module to call (maybe a DDP wrapper)."""
    if cfg.gradient_checkpointing:
        n = apply_activation_checkpointing(model)
        log.info("activation checkpointing on %d blocks", n)
    if info.world == 1 or cfg.strategy == "none":
        return model
    if cfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    if cfg.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(info.device.type, (info.world,))
        for block in checkpointed_blocks(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    raise ValueError(f"unknown parallel strategy {cfg.strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    return (
        model.module if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel) else model
    )
