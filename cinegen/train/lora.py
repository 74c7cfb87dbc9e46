"""LoRA fine-tuning through `peft`, saved in the PEFT/diffusers format; merge/unmerge without peft.

File format (what diffusers' `CogVideoXLoraLoaderMixin.save_lora_weights` writes and `load_lora_weights` reads):
`pytorch_lora_weights.safetensors` with keys `transformer.<module path>.lora_A.weight` (r, in) and
`...lora_B.weight` (out, r), and the adapter config (r, lora_alpha, target_modules, ...) as JSON in the
safetensors metadata under `lora_adapter_metadata`, each key prefixed `transformer.`. Without that metadata
diffusers would assume alpha = r; with it, our alpha round-trips exactly.

Merging is plain math (W += scale · alpha / r · B @ A) so cinegen's pipeline can apply a LoRA file
(`--lora PATH --lora-scale S`) without importing peft; `unmerge_lora` subtracts the same deltas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cinegen.train.config import LoraConfig

LORA_FILE = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"
PREFIX = "transformer"
ADAPTER = "default"


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Freeze `model` and inject trainable LoRA adapters into the target Linear layers (in place)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    model.requires_grad_(False)
    peft_cfg = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.targets),
        init_lora_weights=True,
    )
    inject_adapter_in_model(peft_cfg, model, adapter_name=ADAPTER)
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
        n += "lora_" in name
    if n == 0:
        raise ValueError(f"LoRA targets {cfg.targets} matched no layer of {type(model).__name__}")
    return model


def lora_metadata(cfg: LoraConfig) -> dict[str, Any]:
    """The adapter config as diffusers stores it (LoraConfig kwargs)."""
    return {
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": sorted(cfg.targets),
        "bias": "none",
        "use_dora": False,
        "use_rslora": False,
        "init_lora_weights": True,
    }


def without_adapter_name(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft keys `<module>.lora_A.default.weight` -> the file's `<module>.lora_A.weight`."""
    tag = f".{ADAPTER}."
    return {k.replace(tag, "."): v for k, v in state.items()}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter weights with peft's adapter name removed: `<module>.lora_A.weight` / `<module>.lora_B.weight`."""
    return without_adapter_name(
        {name: p.detach().cpu().contiguous() for name, p in model.state_dict().items() if "lora_" in name}
    )


def save_lora(state: dict[str, torch.Tensor], cfg: LoraConfig, folder: str | Path) -> Path:
    """Write `folder/pytorch_lora_weights.safetensors` in the diffusers layout."""
    from safetensors.torch import save_file

    from cinegen.fsutil import atomic_path

    meta = {f"{PREFIX}.{k}": v for k, v in lora_metadata(cfg).items()}
    tensors = {f"{PREFIX}.{k}": v.float().contiguous() for k, v in state.items()}
    path = Path(folder) / LORA_FILE
    with atomic_path(path) as tmp:  # creates the folder
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return path


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """-> (adapter weights keyed `<module>.lora_A.weight`, config with at least r and lora_alpha)."""
    from safetensors import safe_open

    p = Path(path)
    if p.is_dir():
        p = p / LORA_FILE
    if not p.is_file():
        raise FileNotFoundError(f"LoRA file not found: {p}")
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    prefix = f"{PREFIX}."
    state = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix) or "." in k}
    cfg: dict[str, Any] = {}
    if METADATA_KEY in meta:
        raw = json.loads(meta[METADATA_KEY])
        cfg = {k.removeprefix(prefix): v for k, v in raw.items()}
    if "r" not in cfg:  # no metadata: diffusers' convention, alpha = rank (inferred from the A shapes)
        a = next((v for k, v in state.items() if k.endswith("lora_A.weight")), None)
        if a is None:
            raise ValueError(f"{p}: no lora_A weights")
        cfg = {"r": a.shape[0], "lora_alpha": a.shape[0]}
    return state, cfg


@dataclass
class MergedLora:
    """What `merge_lora` added, so `unmerge_lora` can take it out again."""

    deltas: dict[str, torch.Tensor]


@torch.no_grad()
def merge_lora(
    model: nn.Module,
    lora: str | Path | dict[str, torch.Tensor],
    scale: float = 1.0,
    alpha_over_rank: float | None = None,
) -> MergedLora:
    """Add scale · (alpha / r) · B @ A to every targeted Linear weight of a plain (peft-free) model."""
    if isinstance(lora, dict):
        state, ratio = lora, 1.0 if alpha_over_rank is None else alpha_over_rank
    else:
        state, cfg = read_lora(lora)
        ratio = float(cfg["lora_alpha"]) / float(cfg["r"])
    modules = dict(model.named_modules())
    deltas: dict[str, torch.Tensor] = {}
    for key, a in state.items():
        if not key.endswith(".lora_A.weight"):
            continue
        mod_name = key[: -len(".lora_A.weight")]
        b = state.get(f"{mod_name}.lora_B.weight")
        target = modules.get(mod_name)
        if b is None or not isinstance(target, nn.Linear):
            raise ValueError(f"LoRA key {key!r} has no matching Linear layer (or lora_B) in the model")
        delta = scale * ratio * (b.float() @ a.float())  # (out, r) @ (r, in) -> (out, in)
        if delta.shape != target.weight.shape:
            raise ValueError(f"LoRA {mod_name}: delta {tuple(delta.shape)} vs weight {tuple(target.weight.shape)}")
        target.weight.add_(delta.to(target.weight.device, target.weight.dtype))
        deltas[mod_name] = delta
    if not deltas:
        raise ValueError("the LoRA state holds no lora_A/lora_B pairs")
    return MergedLora(deltas)


@torch.no_grad()
def unmerge_lora(model: nn.Module, merged: MergedLora) -> None:
    modules = dict(model.named_modules())
    for name, delta in merged.deltas.items():
        w = modules[name].weight
        w.sub_(delta.to(w.device, w.dtype))


@torch.no_grad()
def unload_peft(model: nn.Module, merge: bool = True) -> nn.Module:
    """Replace every peft LoRA layer by its base Linear (merged first when `merge`): a plain model again,
    whose state dict has the original (diffusers) key names."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            if merge:
                module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model
