"""Model folders in the diffusers layout: load, save, validate.

A CogVideoX folder (as published, or as cinegen writes it)::

    model_index.json                    which class each component is
    transformer/config.json             + diffusion_pytorch_model.safetensors  (or sharded: *.safetensors.index.json)
    vae/config.json                     + diffusion_pytorch_model.safetensors
    text_encoder/config.json            + model.safetensors (T5EncoderModel, loaded through transformers)
    tokenizer/                          T5 sentencepiece or byte-level ByT5 tokenizer files
    scheduler/scheduler_config.json     CogVideoXDDIMScheduler / CogVideoXDPMScheduler / FlowMatchEulerDiscreteScheduler

Every failure names the file (and key) at fault, before any compute.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cinegen.fsutil import atomic_write
from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig
from cinegen.models.vae import CogVideoXVAE, VAEConfig
from cinegen.sampling.schedules import NoiseScheduleConfig

__all__ = [
    "ModelFolderError",
    "ModelBundle",
    "load_model_folder",
    "save_model_folder",
    "read_json",
    "read_weights",
    "load_module_weights",
    "default_dtype",
    "variant_name",
    "DIFFUSERS_VERSION",
]

DIFFUSERS_VERSION = "0.42.1"  # written into configs; the version our parity tests run against
WEIGHTS_STEM = "diffusion_pytorch_model"


class ModelFolderError(ValueError):
    """A model folder is missing a file, has a corrupt file, or its weights do not match its config."""


@dataclass
class ModelBundle:
    """Everything a pipeline needs, loaded from one folder."""

    transformer: CogVideoXTransformer
    vae: CogVideoXVAE
    text_encoder: nn.Module | None
    tokenizer: Any
    scheduler: NoiseScheduleConfig
    root: Path | None = None
    pipeline_class: str = "CogVideoXPipeline"


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFolderError(f"missing file: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{path}: invalid JSON ({e})") from e


def _load_safetensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelFolderError(f"missing weights file: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # SafetensorError, OSError on truncation, ...
        raise ModelFolderError(f"{path}: corrupt or unreadable safetensors file ({e})") from e


def read_weights(folder: Path, stem: str = WEIGHTS_STEM, variant: str | None = None) -> dict[str, torch.Tensor]:
    """All tensors of one component: single file or shards listed in `{stem}.safetensors.index.json`."""
    name = f"{stem}.{variant}" if variant else stem
    single, index = folder / f"{name}.safetensors", folder / f"{name}.safetensors.index.json"
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        weight_map: dict[str, str] = read_json(index).get("weight_map", {})
        if not weight_map:
            raise ModelFolderError(f"{index}: no weight_map")
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            tensors = _load_safetensors(folder / shard)
            for key in tensors:
                if weight_map.get(key) != shard:
                    raise ModelFolderError(f"{folder / shard}: key {key!r} is not listed for this shard in {index}")
            out.update(tensors)
        missing = sorted(set(weight_map) - set(out))
        if missing:
            raise ModelFolderError(f"{index}: keys listed but absent from their shards, e.g. {missing[:3]}")
        return out
    raise ModelFolderError(f"no weights in {folder}: expected {single.name} or {index.name}")


def load_module_weights(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with an error naming the file and the first offending keys (and shapes)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} total)")
        if unexpected:
            more = " ..." if len(unexpected) > 5 else ""
            parts.append(f"unexpected keys {unexpected[:5]}{more} ({len(unexpected)} total)")
        raise ModelFolderError(f"{source}: weights do not match the config: " + "; ".join(parts))
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ModelFolderError(
                f"{source}: key {k!r} has shape {tuple(v.shape)}, the config expects {tuple(expected[k].shape)}"
            )
    module.load_state_dict(state, strict=True)


def variant_name(cfg: TransformerConfig) -> str:
    """Human name of the CogVideoX variant a transformer config describes."""
    i2v = cfg.is_i2v
    if cfg.patch_size_t is not None:
        return "CogVideoX1.5" + ("-I2V" if i2v else "")
    if cfg.use_learned_positional_embeddings:
        return "CogVideoX-5b-I2V-like"
    if cfg.use_rotary_positional_embeddings:
        return "CogVideoX-5b-like" + ("-I2V" if i2v else "")
    return "CogVideoX-2b-like" + ("-I2V" if i2v else "")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AMX or AVX512-BF16), where bf16 is several times fp32 speed."""
    cap = torch.backends.cpu.get_cpu_capability().upper()
    return "AMX" in cap or "AVX512_BF16" in cap


def default_dtype(cfg: TransformerConfig, device: torch.device) -> torch.dtype:
    """Compute dtype for the transformer (and text encoder) when the user names none.

    - CUDA: CogVideoX-2b (sin-cos positions, no RoPE) was trained in fp16 and is published in fp16; the 5B family
      (RoPE) was trained in bf16 and overflows in fp16 (black/NaN videos, see reference §9.2): bf16.
    - CPU: bf16 where the CPU has native bf16 matmul (AMX: ~7x fp32), else fp32 (emulated bf16 is slower than fp32).
    """
    if device.type == "cuda":
        if not cfg.use_rotary_positional_embeddings and not cfg.use_learned_positional_embeddings:
            return torch.float16
        return torch.bfloat16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.float32


def _read_config(cls: Any, path: Path) -> Any:
    """`cls.from_dict` of a JSON config; a missing file, bad JSON or a bad key is a ModelFolderError naming it."""
    try:
        return cls.from_dict(read_json(path))
    except ModelFolderError:
        raise
    except ValueError as e:
        raise ModelFolderError(f"{path}: {e}") from e


def _build(cls: type[nn.Module], cfg: Any, state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """Construct without spending time on random init (meta device), then assign the loaded tensors."""
    with torch.device("meta"):
        module = cls(cfg)
    expected = module.state_dict()  # built once: it is a fresh dict of every tensor on each call
    if expected.keys() == state.keys() and all(tuple(expected[k].shape) == tuple(v.shape) for k, v in state.items()):
        module.load_state_dict(state, strict=True, assign=True)
        if not any(t.is_meta for t in list(module.parameters()) + list(module.buffers())):
            return module
    # Slow, always-correct path (also produces the precise error message on a mismatch).
    module = cls(cfg)
    load_module_weights(module, state, source)
    return module


def load_model_folder(
    path: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    load_text_encoder: bool = True,
) -> ModelBundle:
    """Load a diffusers-layout CogVideoX folder. dtype=None picks `default_dtype`; the VAE runs in fp32 on CPU."""
    from cinegen.models.text import load_t5, load_tokenizer

    root = Path(path)
    if not root.is_dir():
        raise ModelFolderError(f"model folder not found: {root}")
    index = read_json(root / "model_index.json")
    for comp in ("transformer", "vae", "scheduler"):
        if comp not in index:
            raise ModelFolderError(f"{root / 'model_index.json'}: no {comp!r} component")
    device = torch.device(device) if device is not None else torch.device("cpu")

    t_cfg = _read_config(TransformerConfig, root / "transformer" / "config.json")
    v_cfg = _read_config(VAEConfig, root / "vae" / "config.json")
    s_cfg = _read_config(NoiseScheduleConfig, root / "scheduler" / "scheduler_config.json")

    dtype = dtype or default_dtype(t_cfg, device)
    transformer = _build(CogVideoXTransformer, t_cfg, read_weights(root / "transformer"), root / "transformer")
    transformer = transformer.to(device=device, dtype=dtype).eval().requires_grad_(False)
    # The VAE is kept in fp32 on CPU (the reference ships it in fp32 "for better quality"; bf16 conv3d on CPU has
    # no speed advantage), and in the model dtype on accelerators to save memory.
    vae_dtype = torch.float32 if device.type == "cpu" else dtype
    vae = _build(CogVideoXVAE, v_cfg, read_weights(root / "vae"), root / "vae")
    vae = vae.to(device=device, dtype=vae_dtype).eval().requires_grad_(False)

    text_encoder, tokenizer = None, None
    if load_text_encoder:
        if "text_encoder" not in index or "tokenizer" not in index:
            raise ModelFolderError(f"{root / 'model_index.json'}: no text_encoder/tokenizer component")
        text_encoder = load_t5(root / "text_encoder", dtype=dtype).to(device)
        tokenizer = load_tokenizer(root / "tokenizer")
    return ModelBundle(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=s_cfg,
        root=root,
        pipeline_class=str(index.get("_class_name", "CogVideoXPipeline")),
    )


def _save_safetensors(module: nn.Module, folder: Path, max_shard_bytes: int) -> None:
    """Write `diffusion_pytorch_model.safetensors`, sharded with an index above `max_shard_bytes`."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    total = sum(v.numel() * v.element_size() for v in state.values())
    if total <= max_shard_bytes:
        save_file(state, str(folder / f"{WEIGHTS_STEM}.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"{WEIGHTS_STEM}-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _write_json(folder / f"{WEIGHTS_STEM}.safetensors.index.json", index)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as f:  # creates the parent folder; readers never see half a file
        f.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_component_folder(module: nn.Module, cfg: Any, folder: Path, max_shard_bytes: int = 5 * 1024**3) -> Path:
    """One diffusers component folder: `config.json` (cfg.to_dict()) and the module's safetensors weights."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", {**cfg.to_dict(), "_diffusers_version": DIFFUSERS_VERSION})
    _save_safetensors(module, folder, max_shard_bytes)
    return folder


def read_generation_defaults(root: str | Path) -> dict[str, Any] | None:
    """The `_cinegen_defaults` that `save_model_folder` wrote into root/model_index.json (None: the folder has none)."""
    return read_json(Path(root) / "model_index.json").get("_cinegen_defaults") or None


def save_model_folder(
    bundle: ModelBundle,
    path: str | Path,
    max_shard_bytes: int = 5 * 1024**3,
    defaults: dict[str, Any] | None = None,
) -> Path:
    """Write the diffusers layout, loadable by cinegen and by diffusers' CogVideoX pipeline classes.

    `defaults` (generation defaults, see `cinegen.pipeline.PipelineDefaults`) go under `_cinegen_defaults` in
    model_index.json, which is written last, so a folder with an index is complete.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    t_cfg, v_cfg = bundle.transformer.config, bundle.vae.config
    pipeline_class = "CogVideoXImageToVideoPipeline" if t_cfg.is_i2v else bundle.pipeline_class
    sched = bundle.scheduler.to_dict()
    components: dict[str, Any] = {
        "_class_name": pipeline_class,
        "_diffusers_version": DIFFUSERS_VERSION,
        "scheduler": ["diffusers", sched["_class_name"]],
        "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLCogVideoX"],
    }
    for sub, module in (("transformer", bundle.transformer), ("vae", bundle.vae)):
        save_component_folder(module, t_cfg if sub == "transformer" else v_cfg, root / sub, max_shard_bytes)
    _write_json(root / "scheduler" / "scheduler_config.json", {**sched, "_diffusers_version": DIFFUSERS_VERSION})
    if bundle.text_encoder is not None:
        bundle.text_encoder.save_pretrained(str(root / "text_encoder"), safe_serialization=True)
        components["text_encoder"] = ["transformers", type(bundle.text_encoder).__name__]
    if bundle.tokenizer is not None:
        bundle.tokenizer.save_pretrained(str(root / "tokenizer"))
        components["tokenizer"] = ["transformers", type(bundle.tokenizer).__name__]
    if defaults:
        components["_cinegen_defaults"] = dict(defaults)
    _write_json(root / "model_index.json", components)
    return root
