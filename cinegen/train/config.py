"""Run configs of the training engine (transformer and VAE): dataclass trees read by `cinegen.config`'s strict
loader from one YAML file + dot-list overrides, e.g.

    cfg = load_config(TrainConfig, "configs/scratch-small.yaml", ["optim.lr=3e-4", "train.steps=200"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# the loader, re-exported: `from cinegen.train.config import TrainConfig, load_config`
from cinegen.config import ConfigError as ConfigError
from cinegen.config import from_dict as from_dict
from cinegen.config import load_config as load_config
from cinegen.config import to_dict as to_dict
from cinegen.config import to_yaml as to_yaml

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
    # Initial values of a from-scratch transformer (no `path`, no `transformer_init`): "default" keeps the
    # modules' own (PyTorch) init, "dit" is DiT's adaLN-Zero (`cinegen.models.transformer.init_dit_weights`).
    init: Literal["default", "dit"] = "default"
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
    # Region-weighted loss: latent cells inside a clip's mask (manifest `mask`) weigh this much, the rest 1, each
    # clip's loss normalised by its total weight; 1 = masks unused. E.g. 4 for small objects on large backgrounds.
    mask_weight: float = 1.0
    # Temporal-difference term λ (cinegen.train.objectives): loss += λ·mean of the squared frame-to-frame change of
    # the residual; same optimum, more weight on what moves. 0 = off (the reference objective).
    temporal_weight: float = 0.0
    # History frames (cinegen.train.objectives): with this probability a clip's first latent frames are noised
    # less and carry no loss, so the rest is predicted from them and the caption. 0 = off.
    history_prob: float = 0.0
    # Train only on the timestep fractions [lo, hi) (cinegen.train.objectives.Objective.timestep_range), e.g.
    # [0, 0.1] for a low-noise refiner fine-tune. [0, 1] = all timesteps (the reference objective).
    timestep_range: list[float] = field(default_factory=lambda: [0.0, 1.0])


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
    # Image-video joint training: buckets of shorter sequences (images, short clips) take proportionally more
    # clips per step (batch_size x longest / own sequence, text included), so every step carries about as many
    # tokens as a batch of the longest bucket. False = batch_size clips in every bucket.
    batch_by_tokens: bool = False
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
    # End this run early at step N with a checkpoint (the LR schedule stays that of `steps`; re-running with a
    # larger or no stop_at resumes from it). None = run to `steps`.
    stop_at: int | None = None
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
    # coverage channels: the first `mask_channels` latent channels learn `losses_vae.mask_code` of each clip's
    # region mask (manifest `mask` column, e.g. `cinegen world render`'s object masks); 0 = off
    mask_channels: int = 0
    mask_weight: float = 1.0  # MSE between those channels' posterior mean and the code
    smooth_weight: float = 0.0  # total variation of the other channels' posterior mean (edges left to coverage)
    latent_noise: float = 0.0  # the decoder reads z + latent_noise x (channel RMS) x N(0, 1): robust to sample noise


@dataclass
class VAEModelConfig:
    path: str | None = None  # a VAE folder (config.json + safetensors) or a model folder with vae/
    preset: str | None = None
    vae: dict[str, Any] = field(default_factory=dict)  # VAEConfig fields over the preset
    # "decoder": the encoder (and quant_conv) stay frozen, so latents cached from this VAE stay valid while the
    # decoder (and post_quant_conv) fine-tune; the export holds the whole VAE
    trainable: Literal["all", "decoder"] = "all"


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
