"""Strict typed run configs: one YAML file + dot-list overrides -> a dataclass tree.

The loader is generic (any dataclass tree works), in the spirit of lingua's `dataclass_from_dict(strict=True)`:

    cfg = load_config(TrainConfig, "configs/scratch-small.yaml", ["optim.lr=3e-4", "train.steps=200"])

Rules (DESIGN.md §4.3):
- an unknown key is an error that names its full path (``optim.lrr``) and the valid keys at that level;
- a value of the wrong type is an error that names the path, the expected type and the value;
- override values are parsed as YAML scalars/flow collections (``a.b=[1,2]``, ``x=null``, ``flag=true``);
- list items are addressed by index (``train.stages.1.steps=100``);
- ``1e-4`` (which YAML 1.1 reads as a string) is accepted for float fields.

The run configs of the training engine (transformer and VAE) are defined at the bottom of this file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not match the dataclass schema."""


# ------------------------------------------------------------------------------------------------------------
# Generic loader
# ------------------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Convert a YAML value to the annotated type `tp`, raising ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}: {value!r} matches none of {_type_name(tp)} ({'; '.join(errors)})")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return [_convert(v, item_tp, f"{path}.{i}") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}.{i}") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(_convert(v, a, f"{path}.{i}") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, path): _convert(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-4" as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{path}: expected a path, got {value!r}")
    raise ConfigError(f"{path}: unsupported annotation {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError naming the path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s} (valid keys{' of ' + path if path else ''}: "
            f"{', '.join(sorted(fields))})"
        )
    kwargs = {k: _convert(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from e


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-able data (Paths become strings, tuples lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=None, width=110)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], parsed value). The value is read as YAML (``[1, 2]``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
    return key.split("."), value


def apply_override(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set data[k0][k1]...[kn] = value, creating mappings on the way; integer keys index lists."""
    node: Any = data
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            try:
                idx = int(k)
                node[idx]  # noqa: B018  (bounds check)
            except (ValueError, IndexError) as e:
                raise ConfigError(f"override {'.'.join(keys)}: {k!r} is not a valid index") from e
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {'.'.join(keys[:i])} is not a mapping")
        if last:
            node[k] = value
        else:
            if node.get(k) is None:
                node[k] = {}
            node = node[k]


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read `path` (YAML; None = all defaults), apply dot-list `overrides`, and build `cls` strictly."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text())
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    for item in overrides:
        keys, value = parse_override(item)
        apply_override(data, keys, value)
    return from_dict(cls, data)


# ------------------------------------------------------------------------------------------------------------
# Run configs of the training engine
# ------------------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """Where the model comes from.

    Fine-tune: `path` names a diffusers-layout folder (CogVideoX-2b/5b, or one cinegen wrote).
    From scratch: `transformer_preset` (cinegen.models.presets) and/or `transformer` (TransformerConfig fields,
    applied over the preset) build a fresh transformer; the VAE and text encoder still come from `path` or from
    `vae_path` / `text_encoder_path`.
    """

    path: str | None = None
    transformer_preset: str | None = None
    transformer: dict[str, Any] = field(default_factory=dict)
    vae_path: str | None = None
    text_encoder_path: str | None = None
    # Warm start: initialise the transformer built from `transformer_preset`/`transformer` with the weights of
    # this model folder's `transformer/` (strict). Unlike `path`, the run keeps its own objective and noise
    # schedule (e.g. continue a model under a new SNR shift) and is exported as a from-scratch model.
    transformer_init: str | None = None
    # dtype of the frozen parts (VAE, text encoder) while precomputing; the trained weights stay fp32.
    frozen_dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass
class ObjectiveConfig:
    """The training objective (fast-inference.md §4)."""

    kind: Literal["vpred", "flow"] = "vpred"
    # uniform: t ~ U; explicit_uniform: stratified over ranks and batch (CogVideoX); logit_normal: SD3/Movie Gen.
    timesteps: Literal["uniform", "explicit_uniform", "logit_normal"] = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0  # flow only: sigma' = s*sigma / (1 + (s-1)*sigma) (SD3 shift)
    # v-pred schedule when training from scratch (a fine-tuned folder brings its own scheduler config).
    snr_shift_scale: float = 3.0
    num_train_timesteps: int = 1000
    caption_dropout: float = 0.1  # probability of an empty caption (for classifier-free guidance)


@dataclass
class StageConfig:
    """One stage of progressive training: resolution and frame count change between stages."""

    steps: int
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    batch_size: int | None = None
    lr: float | None = None


@dataclass
class DataConfig:
    manifest: str | None = None
    # auto: by extension/content; manifest: cinegen manifest; cogvideo: prompt.txt + videos.txt (give the folder
    # or prompt.txt); easyanimate: JSON list; opensora: CSV with path,text,num_frames,...
    format: Literal["auto", "manifest", "cogvideo", "easyanimate", "opensora"] = "auto"
    root: str | None = None  # base folder for relative clip paths (default: the manifest's folder)
    height: int = 480
    width: int = 720
    num_frames: int = 49
    fps: float | None = None  # target frame rate for frame sampling (None = the clip's own rate)
    batch_size: int = 1  # per rank, per micro-step
    buckets: bool = True  # aspect x duration buckets; False = every clip resized/cropped to height x width
    aspect_ratios: list[float] = field(
        default_factory=lambda: [0.5, 0.5625, 0.667, 0.75, 1.0, 1.333, 1.5, 1.778, 2.0]
    )  # h / w
    frame_counts: list[int] | None = None  # allowed clip lengths (4k+1); None = all from 1 (images) up to num_frames
    token_budget: int | None = None  # latent tokens per clip; None = tokens of height x width x num_frames
    max_area_scale: float = 1.0  # shorter clips may grow up to this x (height*width) pixels under the budget
    min_bucket_size: int = 1  # buckets with fewer clips than this are dropped (with a warning)
    random_crop: bool = False  # random crop position and start frame (live decoding; cached entries are centred)
    pack: bool = False  # multi-resolution frame pack instead of bucketing
    image_repeat: int = 1
    video_repeat: int = 1
    cache: bool = True  # precompute VAE moments and text embeddings
    cache_dir: str | None = None  # default: <run_dir>/cache


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 1e-4
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # 0 disables
    grad_accum: int = 1
    ema: bool = False
    ema_decay: float = 0.999


@dataclass
class LoraConfig:
    enabled: bool = False
    rank: int = 64
    alpha: float = 64.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])


@dataclass
class ParallelConfig:
    strategy: Literal["none", "ddp", "fsdp"] = "none"
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    gradient_checkpointing: bool = False


@dataclass
class CheckpointConfig:
    every: int = 500
    keep_last: int = 3
    resume: str | None = "auto"  # auto: latest in run_dir; a path; null: start fresh
    export: bool = True  # write a diffusers-layout model folder (or LoRA file) at the end


@dataclass
class LogConfig:
    every: int = 10
    tensorboard: bool = True
    progress: bool = True


@dataclass
class ValidationConfig:
    every: int = 0  # 0 disables
    prompts: list[str] = field(default_factory=list)
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int = 20
    guidance: float = 6.0
    seed: int = 0
    fps: float = 8.0


@dataclass
class RunConfig:
    run_dir: str = "runs/train"
    seed: int = 0
    steps: int = 1000  # total optimizer steps (the sum of stage steps when stages are given)
    stages: list[StageConfig] = field(default_factory=list)
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"  # auto: cuda if available, else cpu


@dataclass
class TrainConfig:
    """`cinegen train CONFIG.yaml key=value ...`"""

    train: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


@dataclass
class VAELossConfig:
    recon: Literal["l1", "l2"] = "l1"
    kl_weight: float = 1e-6
    outlier_weight: float = 0.0  # Movie Gen outlier penalty loss on the latent mean
    outlier_r: float = 3.0
    gan_weight: float = 0.0  # 0 disables the 3D patch discriminator
    gan_start_step: int = 0
    disc_lr: float = 1e-4
    disc_channels: int = 32
    disc_layers: int = 3
    perceptual_weight: float = 0.0
    perceptual_weights_path: str | None = None  # torchvision-layout VGG16 state dict (local file)


@dataclass
class VAEModelConfig:
    path: str | None = None  # a VAE folder (config.json + safetensors) or a model folder with vae/
    preset: str | None = None
    vae: dict[str, Any] = field(default_factory=dict)  # VAEConfig fields over the preset


@dataclass
class VAETrainConfig:
    """`cinegen train-vae CONFIG.yaml key=value ...`"""

    train: RunConfig = field(default_factory=RunConfig)
    model: VAEModelConfig = field(default_factory=VAEModelConfig)
    loss: VAELossConfig = field(default_factory=VAELossConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(height=64, width=64, num_frames=9, cache=False))
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    validation: ValidationConfig = field(default_factory=lambda: ValidationConfig(every=0))
