"""The transformer training loop: `train(cfg)` for LoRA, full fine-tuning and training from scratch.

Flat, top to bottom (code-style-anchors.md §5.16): setup -> model -> optimizer/EMA -> stages (data, cache)
-> resume -> loop (micro-batches, loss, step, log, validate, checkpoint) -> export.

Dimension legend: B batch (per rank), G global micro-batch (B x world), C latent channels, T latent frames,
h/w latent height/width, F/H/W pixel frames/height/width, L text tokens, D text width.

Reproducibility design. Every random number of a training sample (timestep draw, noise, posterior sample,
caption dropout, crop/start) comes from a generator seeded by (seed, step, micro-step, global sample index).
So the numbers do not depend on the world size or on how a run was interrupted: 2 processes x B equals
1 process x 2B, and resume == uninterrupted, as long as the global data order is the same (the sampler yields
global batches; ranks slice them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cinegen.train import checkpoint as ckpt
from cinegen.train.cache import CachedData, FeatureCache, encoder_fingerprint, fingerprint_module, precompute
from cinegen.train.config import StageConfig, TrainConfig, to_dict, to_yaml
from cinegen.train.data import (
    BatchSampler,
    ClipDataset,
    PackSampler,
    bucket_batch_sizes,
    bucket_spec,
    latent_mask,
    load_pixels_and_masks,
    load_records,
)
from cinegen.train.metrics import dit_forward_flops, linear_params, measure_matmul_peak
from cinegen.train.objectives import (
    Objective,
    draw_history,
    noisy_input,
    objective_fraction,
    objective_loss,
    region_weights,
    with_history,
)
from cinegen.train.optim import EMA, build_optimizer, build_scheduler, lr_factor
from cinegen.train.parallel import DistInfo, all_reduce_mean, barrier, init_distributed, parallelize, unwrap
from cinegen.train.progress import CountBar, MetricsLogger

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# Components
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Components:
    """What training needs. Tests inject tiny ones; `load_components` builds them from the config."""

    transformer: nn.Module
    vae: nn.Module | None  # encode_moments / scale / unscale / decode
    text_encoder: Any | None  # .encode(list[str]) -> (B, L, D)
    schedule: Any  # cinegen.sampling.NoiseScheduleConfig of the objective (exported with the model)
    text_model: nn.Module | None = None  # for export (T5EncoderModel)
    tokenizer: Any = None


def vae_component_dir(path: str | Path) -> Path:
    """The VAE's own folder: `path/vae/` in a model folder, else `path` (a component folder with config.json)."""
    root = Path(path)
    return root / "vae" if (root / "vae" / "config.json").is_file() else root


def load_vae_folder(path: str | Path) -> nn.Module:
    """A VAE from `path/vae/` (model folder) or `path/` (component folder with config.json)."""
    from cinegen.models.io import load_module_weights, read_json, read_weights
    from cinegen.models.vae import CogVideoXVAE, VAEConfig

    folder = vae_component_dir(path)
    vae = CogVideoXVAE(VAEConfig.from_dict(read_json(folder / "config.json")))
    load_module_weights(vae, read_weights(folder), folder)
    return vae.eval().requires_grad_(False)


def init_transformer(transformer: nn.Module, root: Path) -> None:
    """Copy the weights of `root/transformer/` (a model folder) or `root/` (a component folder) into
    `transformer`, strictly: every key and shape must match the configured architecture."""
    from cinegen.models.io import load_module_weights, read_weights

    folder = root / "transformer" if (root / "transformer").is_dir() else root
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"model.transformer_init: no transformer folder at {root}")
    load_module_weights(transformer, read_weights(folder), folder)


def training_schedule(cfg: TrainConfig, folder_schedule: Any | None) -> Any:
    """The noise schedule of the objective: the model folder's for v-pred fine-tuning, else from the config."""
    from cinegen.models.presets import cogvideox_scheduler, flow_scheduler

    o = cfg.objective
    if o.kind == "flow":
        return flow_scheduler(o.shift)
    if folder_schedule is not None and folder_schedule.kind != "flow" and cfg.model.transformer_preset is None:
        return folder_schedule
    return cogvideox_scheduler(o.snr_shift_scale)


def load_components(cfg: TrainConfig) -> Components:
    """Fine-tune: everything from `model.path`. Scratch: a fresh transformer from a preset (+ overrides), the
    VAE and text encoder from `model.path` or `model.vae_path` / `model.text_encoder_path`."""
    from cinegen.models.io import load_model_folder
    from cinegen.models.presets import get_preset
    from cinegen.models.text import TextEncoder, load_t5, load_tokenizer
    from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig, init_dit_weights

    m = cfg.model
    scratch = m.transformer_preset is not None or bool(m.transformer)
    if m.init != "default" and (not scratch or m.transformer_init is not None):
        raise ValueError("model.init sets the initial values of a from-scratch transformer; this run loads them")
    bundle = None
    if m.path is not None:
        bundle = load_model_folder(
            m.path, device="cpu", dtype=torch.float32, load_text_encoder=m.text_encoder_path is None
        )
    if scratch:
        base = get_preset(m.transformer_preset).transformer.to_dict() if m.transformer_preset else {}
        t_cfg = TransformerConfig.from_dict({**base, **m.transformer})
        transformer: nn.Module = CogVideoXTransformer(t_cfg)
        if m.transformer_init is not None:
            init_transformer(transformer, Path(m.transformer_init))
        elif m.init == "dit":
            init_dit_weights(transformer)
    elif bundle is not None:
        transformer = bundle.transformer
    else:
        raise ValueError("model: give `path` (fine-tune) or `transformer_preset`/`transformer` (from scratch)")
    if m.vae_path is not None:
        vae = load_vae_folder(m.vae_path)
    elif bundle is not None:
        vae = bundle.vae
    else:
        raise ValueError("model: no VAE; give `path` or `vae_path`")
    max_len = transformer.config.max_text_seq_length
    text_model, tokenizer = (bundle.text_encoder, bundle.tokenizer) if bundle is not None else (None, None)
    if m.text_encoder_path is not None:
        root = Path(m.text_encoder_path)
        text_model, tokenizer = load_t5(root / "text_encoder"), load_tokenizer(root / "tokenizer")
    if text_model is None:
        raise ValueError("model: no text encoder; give `path` or `text_encoder_path`")
    dtype = getattr(torch, m.frozen_dtype)
    text_model = text_model.to(dtype)
    vae = vae.to(dtype)
    return Components(
        transformer=transformer,
        vae=vae,
        text_encoder=TextEncoder(text_model, tokenizer, max_len),
        schedule=training_schedule(cfg, bundle.scheduler if bundle is not None else None),
        text_model=text_model,
        tokenizer=tokenizer,
    )


def make_objective(cfg: TrainConfig, schedule: Any) -> Objective:
    o = cfg.objective
    if len(o.timestep_range) != 2:
        raise ValueError(f"objective.timestep_range must be [lo, hi], got {o.timestep_range}")
    alphas = None
    if o.kind == "vpred":
        from cinegen.sampling import alphas_cumprod

        alphas = alphas_cumprod(schedule)
    return Objective(
        kind=o.kind,
        timesteps=o.timesteps,
        logit_mean=o.logit_mean,
        logit_std=o.logit_std,
        shift=o.shift,
        num_train_timesteps=schedule.num_train_timesteps,
        alphas_cumprod=alphas,
        temporal_weight=o.temporal_weight,
        history_prob=o.history_prob,
        timestep_range=(float(o.timestep_range[0]), float(o.timestep_range[1])),
    )


# ------------------------------------------------------------------------------------------------------------
# Stages and data
# ------------------------------------------------------------------------------------------------------------


def resolve_stages(cfg: TrainConfig) -> list[StageConfig]:
    """Stages with every field filled from `data`/`optim`; no stages = one stage of `train.steps`."""
    d = cfg.data
    stages = cfg.train.stages or [StageConfig(steps=cfg.train.steps)]
    out = [
        StageConfig(
            steps=s.steps,
            height=s.height or d.height,
            width=s.width or d.width,
            num_frames=s.num_frames or d.num_frames,
            batch_size=s.batch_size or d.batch_size,
            lr=s.lr if s.lr is not None else cfg.optim.lr,
        )
        for s in stages
    ]
    if cfg.train.stages and sum(s.steps for s in out) != cfg.train.steps:
        raise ValueError(f"train.steps={cfg.train.steps} but the stages sum to {sum(s.steps for s in out)} steps")
    return out


@dataclass
class StageData:
    ds: ClipDataset
    sampler: BatchSampler | PackSampler
    cached: CachedData | None


def build_stage_data(
    cfg: TrainConfig, stage: StageConfig, comps: Components, info: DistInfo, run_dir: Path
) -> StageData:
    if cfg.data.manifest is None:
        raise ValueError("data.manifest is not set")
    records = load_records(cfg.data.manifest, cfg.data.format, cfg.data.root)
    t_cfg = unwrap(comps.transformer).config
    assert stage.height and stage.width and stage.num_frames
    spec = bucket_spec(
        cfg.data,
        stage.height,
        stage.width,
        stage.num_frames,
        vae_spatial=getattr(getattr(comps.vae, "config", None), "spatial_compression", None) or 8,
        vae_temporal=getattr(t_cfg, "temporal_compression_ratio", 4),
        patch=t_cfg.patch_size,
        patch_t=t_cfg.patch_size_t or 1,
    )
    ds = ClipDataset(records, spec, cfg.data.buckets, cfg.data.image_repeat, cfg.data.video_repeat)
    if cfg.objective.mask_weight <= 0:
        raise ValueError(f"objective.mask_weight must be > 0, got {cfg.objective.mask_weight}")
    if cfg.objective.mask_weight != 1.0 and not ds.has_masks:
        raise ValueError(
            f"objective.mask_weight is {cfg.objective.mask_weight} but no clip of {cfg.data.manifest} has a `mask`"
        )
    cached = None
    if cfg.data.cache:
        if comps.vae is None or comps.text_encoder is None:
            raise ValueError("data.cache needs the VAE and the text encoder")
        cache = FeatureCache(Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "cache")
        vae = comps.vae

        def encode_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            p = next(vae.parameters())
            return vae.encode_moments(x.to(p.device, p.dtype))

        bar = CountBar("caching latents") if info.is_main and cfg.log.progress else None  # none if all cached
        cached = precompute(
            ds,
            cache,
            encode_moments,
            encoder_fingerprint(vae),
            comps.text_encoder.encode,
            fingerprint_module(comps.text_encoder.model) + f"|L={comps.text_encoder.max_length}",
            rank=info.rank,
            world=info.world,
            barrier=barrier,
            mask_grid=(spec.vae_temporal, spec.vae_spatial) if cfg.objective.mask_weight != 1.0 else None,
            progress=bar,
        )
        if bar is not None:
            bar.close()
    groups = {k: [j for j in v if cached is None or cached.ok[j]] for k, v in ds.groups().items()}
    groups = {k: v for k, v in groups.items() if v}
    global_batch = stage.batch_size * info.world  # type: ignore[operator]
    if cfg.data.pack and cfg.objective.history_prob > 0:
        raise ValueError("objective.history_prob needs bucketed batches, not data.pack")
    if cfg.data.pack and cfg.data.batch_by_tokens:
        raise ValueError("data.batch_by_tokens and data.pack exclude each other (packs already fill the token budget)")
    if cfg.data.pack:  # clips of every shape share sequences of up to the token budget
        text_len = t_cfg.max_text_seq_length
        tokens = {j: text_len + spec.tokens(*_fhw(ds.bucket(j))) for v in groups.values() for j in v}
        budget = cfg.data.token_budget or text_len + spec.budget()
        sampler: BatchSampler | PackSampler = PackSampler(tokens, budget, global_batch, seed=cfg.train.seed)
    else:
        sizes = None
        if cfg.data.batch_by_tokens:
            text_len = t_cfg.max_text_seq_length
            seq = {k: text_len + spec.tokens(*_fhw(ds.bucket(v[0]))) for k, v in groups.items()}
            # from the global batch, so the plan (and a run's data) does not depend on the world size
            sizes = bucket_batch_sizes(seq, global_batch)
            log.info("batch by tokens: global batch per bucket %s", sizes)
        sampler = BatchSampler(groups, global_batch, seed=cfg.train.seed, sizes=sizes)
    return StageData(ds, sampler, cached)


def rank_slice(n: int, world: int, rank: int) -> tuple[int, int]:
    """[lo, hi) of rank's share of a global micro-batch of n rows: n // world each, the first n % world ranks
    one more (an even split whenever world divides n)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def _fhw(b: Any) -> tuple[int, int, int]:
    return b.num_frames, b.height, b.width


# ------------------------------------------------------------------------------------------------------------
# One micro-batch
# ------------------------------------------------------------------------------------------------------------


def sample_generator(seed: int, step: int, micro: int, g: int | str) -> torch.Generator:
    """The generator of global sample g at (step, micro-step): independent of world size and resumption."""
    h = hashlib.sha256(f"{seed}/{step}/{micro}/{g}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


@dataclass
class Clips:
    """Clean latents and text of some clips (shapes may differ between clips in frame-pack mode)."""

    x0: list[torch.Tensor]  # (T, C, h, w) each, scaled, on the device
    text: list[torch.Tensor]  # (L, D) each
    noise: list[torch.Tensor]  # (T, C, h, w) each
    weight: torch.Tensor  # (N,) 0 for clips that failed to load (live decoding only)
    region: list[torch.Tensor | None] | None = None  # (T, 1, h, w) loss weight maps (objective.mask_weight)


def load_clips(
    data: StageData,
    local: list[int],
    comps: Components,
    cfg: TrainConfig,
    gens: list[torch.Generator],
    device: torch.device,
) -> Clips:
    """Latents (posterior sample) + text (with caption dropout) + noise for dataset items `local`, every random
    number drawn from that item's generator in a fixed order."""
    drop = [bool(torch.rand((), generator=g) < cfg.objective.caption_dropout) for g in gens]
    py_seeds = [int(torch.randint(0, 2**62, (), generator=g)) for g in gens]
    captions = ["" if d else data.ds.record(j).text for j, d in zip(local, drop, strict=True)]
    weight = torch.ones(len(local))  # cached items are all usable (the sampler only draws `cached.ok` ones)
    vae = comps.vae
    use_masks = cfg.objective.mask_weight != 1.0
    masks: list[torch.Tensor | None] = [None] * len(local)  # latent masks (T, h, w)
    if data.cached is not None:
        moments = [data.cached.latents(j) for j in local]  # (C, T, h, w) each
        texts = [data.cached.text(c) for c in captions]  # (L, D) each
        if use_masks:
            masks = [data.cached.mask(j) for j in local]
    else:
        rngs = [random.Random(s) if cfg.data.random_crop else None for s in py_seeds]  # None: centred
        # (3, F, H, W) each, failed clips weigh 0; pixel masks (F, H, W) on the clips' frames and crops
        pixels, pixel_masks, weight = load_pixels_and_masks(data.ds, local, rngs, masks=use_masks)
        spec = data.ds.spec
        masks = [None if m is None else latent_mask(m, spec.vae_temporal, spec.vae_spatial) for m in pixel_masks]
        p = next(vae.parameters())
        moments = [None] * len(local)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(pixels):
            by_shape.setdefault(tuple(x.shape), []).append(i)
        with torch.no_grad():
            for idx in by_shape.values():  # one VAE call per shape
                mean, logvar = vae.encode_moments(torch.stack([pixels[i] for i in idx]).to(p.device, p.dtype))
                for k, i in enumerate(idx):
                    moments[i] = (mean[k].float().cpu(), logvar[k].float().cpu())  # (C, T, h, w)
            texts = list(comps.text_encoder.encode(captions).float().cpu())  # (L, D) each
    t_cfg = unwrap(comps.transformer).config
    pt = t_cfg.patch_size_t or 1
    x0s, noises, region = [], [], []
    for g, (mean, logvar), m in zip(gens, moments, masks, strict=True):
        eps = torch.randn(mean.shape, generator=g)  # posterior sample, as DiagonalGaussian.sample()
        z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * eps  # (C, T, h, w)
        x0 = vae.scale(z.to(device)).permute(1, 0, 2, 3)  # (C, T, h, w) -> (T, C, h, w)
        w_map = None if m is None else region_weights(m, cfg.objective.mask_weight)[:, None].to(device)  # (T, 1, h, w)
        if x0.shape[0] % pt:  # CogVideoX 1.5: pad to whole temporal patches with copies of the first latent
            pad = pt - x0.shape[0] % pt
            x0 = torch.cat([x0[:1].expand(pad, -1, -1, -1), x0])  # (T + pad, C, h, w)
            w_map = None if w_map is None else torch.cat([w_map[:1].expand(pad, -1, -1, -1), w_map])
        if w_map is not None and (w_map.shape[0], *w_map.shape[2:]) != (x0.shape[0], *x0.shape[2:]):
            raise ValueError(f"region mask {tuple(w_map.shape)} does not match the latents {tuple(x0.shape)}")
        x0s.append(x0.contiguous())
        noises.append(torch.randn(x0.shape, generator=g).to(device))
        region.append(w_map)
    texts_d = [t.to(device, torch.float32) for t in texts]
    return Clips(x0s, texts_d, noises, weight.to(device), region if use_masks else None)


def seq_tokens(t_cfg: Any, x0: torch.Tensor, text_len: int) -> int:
    """Transformer sequence length of one clip (T, C, h, w): text + video tokens."""
    pt = t_cfg.patch_size_t or 1
    return text_len + (x0.shape[0] // pt) * (x0.shape[2] // t_cfg.patch_size) * (x0.shape[3] // t_cfg.patch_size)


def bucket_micro_loss(
    model: nn.Module,
    objective: Objective,
    data: StageData,
    local: list[int],
    comps: Components,
    cfg: TrainConfig,
    step: int,
    micro: int,
    first_g: int,
    total_g: int,
    device: torch.device,
    autocast: Callable[[], Any],
) -> tuple[torch.Tensor, int]:
    """Summed per-sample losses of one bucketed micro-batch (B clips of one shape) and its token count."""
    gens = [sample_generator(cfg.train.seed, step, micro, first_g + i) for i in range(len(local))]
    u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in gens])
    z = torch.stack([torch.randn((), generator=g, dtype=torch.float64) for g in gens])
    clips = load_clips(data, local, comps, cfg, gens, device)
    x0, noise, text = torch.stack(clips.x0), torch.stack(clips.noise), torch.stack(clips.text)  # (B, ...)
    index = torch.arange(first_g, first_g + len(local))  # position in the optimizer step's global batch
    frac = objective_fraction(objective, u, z, index, total_g)
    noisy = noisy_input(objective, x0, noise, frac.to(device))
    region = None
    if clips.region is not None:  # clips without a mask weigh 1 everywhere
        ones = [torch.ones_like(x[:, :1]) for x in clips.x0]  # (T, 1, h, w)
        region = torch.stack([o if r is None else r for o, r in zip(ones, clips.region, strict=True)])
    if objective.history_prob > 0:  # own generators: the main stream (timesteps, noise) stays as without history
        pt = unwrap(comps.transformer).config.patch_size_t or 1
        hist = [
            draw_history(
                sample_generator(cfg.train.seed, step, micro, f"{first_g + i}/history"),
                objective.history_prob,
                x0.shape[1],
                pt,
            )
            for i in range(len(local))
        ]
        noisy, region = with_history(objective, x0, noise, noisy, frac.to(device), hist, region)
    with autocast():
        pred = model(noisy.x_t, text, noisy.timestep)  # (B, T, C, h, w)
    per = objective_loss(objective, pred, x0, noise, noisy, region)  # (B,); region (B, T, 1, h, w) or None
    tokens = seq_tokens(unwrap(comps.transformer).config, x0[0], text.shape[1]) * len(local)
    return (per * clips.weight).sum(), tokens


def pack_micro_loss(
    packed: Any,
    objective: Objective,
    data: StageData,
    rows: list[list[int]],
    comps: Components,
    cfg: TrainConfig,
    step: int,
    micro: int,
    first_g: int,
    total_g: int,
    device: torch.device,
    autocast: Callable[[], Any],
) -> tuple[torch.Tensor, int]:
    """Summed per-row losses of packed sequences (each row: clips of different shapes, one shared timestep);
    a row's loss is the mean over its clips."""
    total = torch.zeros((), device=device)
    tokens = 0
    for r, clip_idx in enumerate(rows):
        g_row = sample_generator(cfg.train.seed, step, micro, first_g + r)
        u = torch.rand((1,), generator=g_row, dtype=torch.float64)
        z = torch.randn((1,), generator=g_row, dtype=torch.float64)
        gens = [sample_generator(cfg.train.seed, step, micro, f"{first_g + r}/{k}") for k in range(len(clip_idx))]
        clips = load_clips(data, clip_idx, comps, cfg, gens, device)
        frac = objective_fraction(objective, u, z, torch.tensor([first_g + r]), total_g).to(device)
        noisy = [noisy_input(objective, x[None], n[None], frac) for x, n in zip(clips.x0, clips.noise, strict=True)]
        with autocast():
            preds = packed([n.x_t[0] for n in noisy], clips.text, noisy[0].timestep[0])  # (T_i, C, h_i, w_i) each
        regions = clips.region if clips.region is not None else [None] * len(preds)
        losses = torch.cat(
            [
                objective_loss(objective, p[None], x[None], n[None], nz, None if r is None else r[None])
                for p, x, n, nz, r in zip(preds, clips.x0, clips.noise, noisy, regions, strict=True)
            ]
        )  # (k,)
        total = total + (losses * clips.weight).sum() / clips.weight.sum().clamp_min(1.0)
        t_cfg = unwrap(comps.transformer).config
        tokens += sum(seq_tokens(t_cfg, x, t.shape[0]) for x, t in zip(clips.x0, clips.text, strict=True))
    return total, tokens


# ------------------------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_video(
    model: nn.Module,
    comps: Components,
    text: torch.Tensor,
    uncond: torch.Tensor,
    num_frames: int,
    height: int,
    width: int,
    steps: int,
    guidance: float,
    seed: int,
    autocast: Callable[[], Any],
) -> torch.Tensor:
    """Generate one clip with the training model -> pixels (1, 3, F, H, W) in [-1, 1]. text/uncond (1, L, D)."""
    from cinegen.sampling import SamplerSpec, cfg_batched, make_plan, sample

    cfg_t = unwrap(model).config
    vae = comps.vae
    spatial = getattr(vae.config, "spatial_compression", None) or 8
    T = (num_frames - 1) // cfg_t.temporal_compression_ratio + 1
    C = cfg_t.in_channels
    device = text.device
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((1, T, C, height // spatial, width // spatial), generator=g).to(device)
    plan = make_plan(SamplerSpec.for_schedule(comps.schedule, steps), comps.schedule)
    emb = torch.cat([uncond, text])  # (2, L, D)

    def denoise(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        with autocast():
            out = model(torch.cat([x, x]), emb, t.expand(2)).float()  # (2, T, C, h, w)
        return cfg_batched(out, guidance)  # (1, T, C, h, w)

    z = sample(denoise, latents, plan, generator=g)
    p = next(vae.parameters())
    x = vae.decode(vae.unscale(z.permute(0, 2, 1, 3, 4).to(p.device, p.dtype)))  # (1, 3, F, H, W)
    return x.float().clamp(-1, 1)


def save_validation(videos: list[torch.Tensor], prompts: list[str], out_dir: Path, fps: float) -> list[Path]:
    from cinegen.video import Video

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (x, prompt) in enumerate(zip(videos, prompts, strict=True)):
        video = Video.from_tensor(x, fps)  # (1, 3, F, H, W) -> (F, H, W, 3) uint8
        stem = out_dir / f"{i:02d}"
        video.save(stem.with_suffix(".mp4"))
        video.save(stem.with_suffix(".png"))
        (out_dir / f"{i:02d}.txt").write_text(prompt + "\n")
        paths += [stem.with_suffix(".mp4"), stem.with_suffix(".png")]
    return paths


# ------------------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------------------


def export(
    cfg: TrainConfig, raw: nn.Module, comps: Components, ema: EMA | None, run_dir: Path, info: DistInfo
) -> Path | None:
    """LoRA: `run_dir/lora/pytorch_lora_weights.safetensors`. Full: `run_dir/model/` (diffusers layout; EMA
    weights when EMA is on). Collective under FSDP."""
    weights = ckpt.ema_weights(ema) if ema is not None else ckpt.trainable_state(raw)
    if not info.is_main:
        barrier()
        return None
    path = save_export(cfg, comps, weights, run_dir / ("lora" if cfg.lora.enabled else "model"))
    barrier()
    return path


def save_export(
    cfg: TrainConfig,
    comps: Components | None,
    weights: dict[str, torch.Tensor],
    out: Path,
    defaults: dict[str, Any] | None = None,
) -> Path:
    """Write trained weights as the run's export: LoRA adapters (`out/pytorch_lora_weights.safetensors`) or a
    full model folder `out` (the transformer with `weights`, the run's VAE, text encoder and noise schedule, and
    `defaults` as its `_cinegen_defaults`)."""
    if cfg.lora.enabled:
        from cinegen.train.lora import save_lora, without_adapter_name

        return save_lora(without_adapter_name(weights), cfg.lora, out)
    from cinegen.models.io import ModelBundle, save_model_folder
    from cinegen.models.transformer import CogVideoXTransformer

    assert comps is not None  # a full export needs the run's VAE, text encoder and schedule
    fresh = CogVideoXTransformer(unwrap(comps.transformer).config)
    fresh.load_state_dict(weights, strict=True)
    bundle = ModelBundle(
        transformer=fresh,
        vae=comps.vae.float(),
        text_encoder=comps.text_model,
        tokenizer=comps.tokenizer,
        scheduler=comps.schedule,
    )
    return save_model_folder(bundle, out, defaults=defaults)


def generation_defaults(folder: Path) -> dict[str, Any]:
    """The `_cinegen_defaults` of model folder `folder` (how it samples: steps, guidance, prompt enhancer...)."""
    from cinegen.models.io import read_generation_defaults

    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no model_index.json)")
    raw = read_generation_defaults(folder)
    if not raw:
        raise ValueError(f"{folder}: its model_index.json has no _cinegen_defaults to copy")
    return dict(raw)


def export_checkpoint(
    run_dir: Path,
    step: int | None = None,
    out: Path | None = None,
    ema: bool = True,
    vae: Path | None = None,
    defaults_from: Path | None = None,
) -> Path:
    """Export a training checkpoint of `run_dir` (its latest, or `step`) as the run would at its end, to `out`
    (default `run_dir/export-step_N`): EMA weights when the checkpoint has them and `ema`, else the raw ones.
    The run's config is the one stored in the checkpoint; its model paths resolve from the working directory.

    Full exports only: `vae` (model or VAE folder) replaces the run's VAE, e.g. by a decoder fine-tuned since the
    run started; its encoder must be the run's bit for bit (same fingerprint), so the latent space is the one the
    transformer learned. `defaults_from` copies another model folder's `_cinegen_defaults` (sampler, steps,
    guidance, prompt enhancer) into the export, which otherwise samples with the reference model's defaults."""
    from safetensors.torch import load_file

    from cinegen.config import from_dict

    ckpts = ckpt.list_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        raise FileNotFoundError(f"{run_dir}: no checkpoints under {run_dir / 'checkpoints'}")
    by_step = {int(ckpt.STEP_RE.match(c.name).group(1)): c for c in ckpts}  # type: ignore[union-attr]
    if step is not None and step not in by_step:
        raise FileNotFoundError(f"{run_dir}: no checkpoint of step {step} (have {sorted(by_step)})")
    path = by_step[step] if step is not None else ckpts[-1]
    state = json.loads((path / "state.json").read_text())
    cfg = from_dict(TrainConfig, state["config"])
    if cfg.lora.enabled and (vae is not None or defaults_from is not None):
        raise ValueError(f"{run_dir}: a LoRA run exports adapters only; --vae and --defaults-from need a full run")
    defaults = generation_defaults(defaults_from) if defaults_from is not None else None
    name = "ema.safetensors" if ema and (path / "ema.safetensors").is_file() else "model.safetensors"
    weights = load_file(str(path / name))
    comps = None
    if not cfg.lora.enabled:  # (the warm start would be overwritten: skip loading it)
        comps = load_components(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, transformer_init=None)))
        if vae is not None:
            comps = dataclasses.replace(comps, vae=_same_encoder_vae(comps.vae, vae))
    out = out if out is not None else run_dir / f"export-{path.name}"
    log.info("exporting %s (%s) to %s", path, name, out)
    return save_export(cfg, comps, weights, out, defaults)


def _same_encoder_vae(run_vae: nn.Module, path: Path) -> nn.Module:
    """The VAE of `path`, checked to encode exactly as `run_vae` does (the latent space the transformer learned)."""
    vae = load_vae_folder(path)
    if encoder_fingerprint(vae) != encoder_fingerprint(run_vae):
        raise ValueError(
            f"{path}: its VAE encodes differently from the run's (another encoder or latent scaling), so the "
            "transformer would denoise latents of another space; only a decoder fine-tuned on the run's frozen "
            "encoder can replace it"
        )
    return vae


# ------------------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    checkpoint: Path | None = None
    export: Path | None = None


def _autocast_factory(precision: str, device: torch.device) -> Callable[[], Any]:
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return lambda: torch.autocast(device_type=device.type, enabled=False)


def start_run(cfg: Any) -> tuple[DistInfo, Path, Callable[[], Any]]:
    """Setup shared by the transformer and VAE loops: process group, the run folder with the resolved
    config.yaml (rank 0), the seed of model (and LoRA) init, and the autocast factory of `train.precision`."""
    info = init_distributed(cfg.parallel, cfg.train.device)
    run_dir = Path(cfg.train.run_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    barrier()
    torch.manual_seed(cfg.train.seed)
    return info, run_dir, _autocast_factory(cfg.train.precision, info.device)


def train(cfg: TrainConfig, components: Components | None = None, stop_at: int | None = None) -> TrainResult:
    """Run (or resume) a training run. `stop_at` ends the process after that step (tests use it to simulate a
    crash between checkpoints)."""
    with contextlib.ExitStack() as run_ctx:  # run-scoped patches (frame pack) are undone on any exit
        return _train(cfg, components, stop_at, run_ctx)


def _train(
    cfg: TrainConfig, components: Components | None, stop_at: int | None, run_ctx: contextlib.ExitStack
) -> TrainResult:
    # ---- setup ---------------------------------------------------------------------------------------------
    info, run_dir, autocast = start_run(cfg)

    # ---- model ---------------------------------------------------------------------------------------------
    comps = components or load_components(cfg)
    raw = comps.transformer.to(info.device, torch.float32).train()
    if cfg.lora.enabled:
        from cinegen.train.lora import apply_lora

        apply_lora(raw, cfg.lora)
    else:
        raw.requires_grad_(True)
    if comps.vae is not None:
        comps.vae.to(info.device).eval().requires_grad_(False)
    if comps.text_encoder is not None and hasattr(comps.text_encoder, "model"):
        comps.text_encoder.model.to(info.device)
    n_train = sum(p.numel() for p in raw.parameters() if p.requires_grad)
    log.info("trainable parameters: %.3fM (%s)", n_train / 1e6, "LoRA" if cfg.lora.enabled else "full")
    model = parallelize(raw, cfg.parallel, info)
    objective = make_objective(cfg, comps.schedule)
    packed, proxy = None, None
    if cfg.data.pack:
        from cinegen.train.framepack import PackedForward, _blocks_take_mask, masked_attention

        if info.world > 1:
            raise ValueError("data.pack runs in one process for now (the packed forward bypasses the DDP/FSDP root)")
        if not _blocks_take_mask(raw):
            proxy = run_ctx.enter_context(masked_attention())
        packed = PackedForward(raw, proxy)

    # ---- optimizer, schedule, EMA --------------------------------------------------------------------------
    stages = resolve_stages(cfg)
    total = sum(s.steps for s in stages)
    opt = build_optimizer(raw, cfg.optim)
    sched = build_scheduler(opt, cfg.optim, total)
    params = [p for p in raw.parameters() if p.requires_grad]
    max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")  # inf: measure, do not clip
    ema = EMA(raw, cfg.optim.ema_decay) if cfg.optim.ema else None

    # ---- resume --------------------------------------------------------------------------------------------
    ckpt_dir = run_dir / "checkpoints"
    step, sampler_state, stage_at_ckpt = 0, None, 0
    path = ckpt.resume_path(ckpt_dir, cfg.checkpoint.resume)
    if path is not None:
        state = ckpt.load_checkpoint(path, raw, opt, sched, ema)
        step, sampler_state, stage_at_ckpt = state["step"], state["sampler"], state["stage"]
    if cfg.train.stop_at is not None:
        if not 0 < cfg.train.stop_at <= total:
            raise ValueError(f"train.stop_at must be in 1..{total} (train.steps), got {cfg.train.stop_at}")
        if step >= cfg.train.stop_at:
            log.info("train.stop_at %d: the run is already at step %d; nothing to do", cfg.train.stop_at, step)
            return TrainResult(step=step)
    metrics = MetricsLogger(run_dir, cfg.log, info.is_main, resume_step=step, total_steps=total)

    # validation prompts are encoded once (the text encoder may be dropped after caching)
    val = cfg.validation
    val_emb = None
    if val.every > 0 and val.prompts:
        with torch.no_grad():
            val_emb = comps.text_encoder.encode(list(val.prompts) + [""]).float()

    # ---- loop over stages ----------------------------------------------------------------------------------
    result = TrainResult(step=step)
    # MFU denominator: the measured matmul peak of this device at the compute dtype (fast-inference.md §5.4)
    peak = measure_matmul_peak(info.device, torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32)
    n_lin, t_cfg = linear_params(raw), raw.config
    # Data of every remaining stage is prepared (and its features cached) up front, so that the frozen VAE and
    # text encoder can leave the accelerator before the first step.
    bounds = [sum(s.steps for s in stages[:i]) for i in range(len(stages) + 1)]  # stage i: [bounds[i], bounds[i+1])
    stage_data = {
        si: build_stage_data(cfg, stage, comps, info, run_dir)
        for si, stage in enumerate(stages)
        if step < bounds[si + 1]
    }
    if cfg.data.cache:
        _offload_frozen(comps, keep_vae=val_emb is not None)
    for si, stage in enumerate(stages):
        stage_end = bounds[si + 1]
        if si not in stage_data:
            continue
        for g in opt.param_groups:  # progressive stages may change the base LR; the schedule keeps its shape
            g["initial_lr"] = stage.lr
            g["lr"] = stage.lr * lr_factor(
                step, total, cfg.optim.warmup_steps, cfg.optim.schedule, cfg.optim.min_lr_ratio
            )
        sched.base_lrs = [stage.lr for _ in opt.param_groups]
        data = stage_data.pop(si)
        if sampler_state is not None and si == stage_at_ckpt:
            data.sampler.load_state_dict(sampler_state)
        log.info(
            "stage %d: %d steps at %sx%sx%s, %d clips, skipped %s",
            si,
            stage.steps,
            stage.num_frames,
            stage.height,
            stage.width,
            len(data.ds),
            dict(data.ds.skips.counts),
        )
        # image-video joint training: rank 0 logs each kind's mean sample loss since the last metrics record
        track_kinds = info.is_main and packed is None and len(data.ds.kinds) > 1
        by_kind: dict[str, list[float]] = {}  # kind -> [sum of sample losses, samples]
        while step < stage_end:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=info.device)
            tokens = 0
            accum = cfg.optim.grad_accum
            # The step's micro-batches up front: with data.batch_by_tokens a short bucket's micro-batch has more
            # rows than B, and the stratified timesteps run over the whole step's global batch.
            micros = [data.sampler.next()[1] for _ in range(accum)]
            total_g = sum(len(m) for m in micros)
            rows = total_g / info.world  # mean rows per rank in the step (a short bucket may not split evenly)
            local_rows, offset = 0, 0  # offset: the micro-batch's first row in the step's global batch
            for micro, global_idx in enumerate(micros):
                lo, hi = rank_slice(len(global_idx), info.world, info.rank)
                local = global_idx[lo:hi]
                local_rows += hi - lo
                first_g = offset + lo
                offset += len(global_idx)
                args = (objective, data, local, comps, cfg, step, micro, first_g, total_g, info.device)
                # gradient sync only on the last micro-step: DDP `no_sync`, FSDP2 `set_requires_gradient_sync`
                last = micro == accum - 1
                if hasattr(model, "set_requires_gradient_sync"):
                    model.set_requires_gradient_sync(last)
                with model.no_sync() if not last and hasattr(model, "no_sync") else contextlib.nullcontext():
                    if packed is not None:
                        loss, n_tok = pack_micro_loss(packed, *args, autocast)
                    else:
                        loss, n_tok = bucket_micro_loss(model, *args, autocast)
                    sample_sum = loss.detach()  # this rank's summed sample losses
                    # DDP averages the ranks' gradients: dividing every rank's sum by the mean row count makes
                    # that average the mean over the step's global batch, also for uneven splits
                    loss = loss / rows
                    loss.backward()
                    if proxy is not None:
                        proxy.mask = None
                loss_sum += loss.detach()
                tokens += n_tok
                if track_kinds and local:
                    kind = "image" if data.ds.bucket(local[0]).is_image else "video"
                    by_kind.setdefault(kind, [0.0, 0])
                    by_kind[kind][0] += float(sample_sum)
                    by_kind[kind][1] += len(local)
            loss_val = float(all_reduce_mean(loss_sum))
            ckpt.check_finite(loss_val, step + 1, ckpt_dir)
            gnorm = float(ckpt._full(torch.nn.utils.clip_grad_norm_(params, max_norm)))
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(raw)
            step += 1
            result.losses.append(loss_val)
            dt = time.perf_counter() - t0

            # ---- observability ----
            tok_global = tokens * info.world
            seq = tokens // max(1, local_rows)  # mean tokens per row on this rank
            flops = 3 * dit_forward_flops(n_lin, t_cfg.num_layers, t_cfg.inner_dim, seq) * total_g
            kind_means = {}
            if track_kinds and metrics.writes(step):
                kind_means = {f"loss_{k}": v[0] / v[1] for k, v in sorted(by_kind.items()) if v[1]}
                by_kind.clear()
            metrics.step(
                step,
                {
                    "loss": loss_val,
                    "lr": sched.get_last_lr()[0],
                    "grad_norm": gnorm,
                    "tokens_per_s": tok_global / dt,
                    "it_per_s": 1.0 / dt,
                    "mfu": flops / dt / (peak * info.world),
                    "stage": si,
                    "epoch": data.sampler.epoch,
                    "skipped": data.ds.skips.total,
                    **kind_means,
                },
            )
            if val_emb is not None and step % val.every == 0:
                _validate(cfg, model, raw, comps, ema, val_emb, step, run_dir, info, autocast)
            planned_stop = step == cfg.train.stop_at
            if (cfg.checkpoint.every > 0 and (step % cfg.checkpoint.every == 0 or step == total)) or planned_stop:
                state = {
                    "sampler": data.sampler.state_dict(),
                    "stage": si,
                    "world_size": info.world,
                    "config": to_dict(cfg),
                    "model_config": _model_config(raw),
                    "loss": loss_val,
                    "skipped": dict(data.ds.skips.counts),
                }
                result.checkpoint = ckpt.save_checkpoint(
                    ckpt_dir, step, raw, opt, sched, ema, state, cfg.checkpoint.keep_last
                )
            if (stop_at is not None and step >= stop_at) or planned_stop:
                if planned_stop:
                    log.info(
                        "train.stop_at: stopped at step %d of %d (checkpoint written; re-run to go on)", step, total
                    )
                result.step = step
                metrics.close()
                return result
        result.skipped = dict(data.ds.skips.counts)
        if info.is_main and data.ds.skips.items:
            (run_dir / f"skipped_stage{si}.json").write_text(json.dumps(data.ds.skips.items, indent=1))
        sampler_state = None
    metrics.close()
    result.step = step
    if cfg.checkpoint.export:
        result.export = export(cfg, raw, comps, ema, run_dir, info)
    return result


def _offload_frozen(comps: Components, keep_vae: bool) -> None:
    """After caching, the text encoder (validation prompts are pre-encoded) and, without validation, the VAE
    are not needed on the accelerator: move them to CPU memory."""
    te = getattr(comps.text_encoder, "model", None)
    moved = False
    for m in (te, None if keep_vae else comps.vae):
        if m is not None and next(m.parameters()).device.type != "cpu":
            m.to("cpu")
            moved = True
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _model_config(raw: nn.Module) -> dict[str, Any]:
    c = getattr(raw, "config", None)
    if c is None:
        return {}
    return c.to_dict() if hasattr(c, "to_dict") else dataclasses.asdict(c)


def _validate(
    cfg: TrainConfig,
    model: nn.Module,
    raw: nn.Module,
    comps: Components,
    ema: EMA | None,
    val_emb: torch.Tensor,
    step: int,
    run_dir: Path,
    info: DistInfo,
    autocast: Callable[[], Any],
) -> None:
    """Sample every validation prompt (EMA weights when on) -> run_dir/samples/step_XXXXXXXX/*.mp4|png.
    All ranks run it (FSDP forwards are collective); rank 0 writes."""
    v = cfg.validation
    backup = None
    if ema is not None:
        backup = {n: p.detach().clone() for n, p in raw.named_parameters() if n in ema.shadow}
        ema.copy_to(raw)
    was_training = raw.training
    raw.eval()
    try:
        device = info.device
        uncond = val_emb[-1:].to(device)
        videos = []
        for i in range(len(v.prompts)):
            videos.append(
                sample_video(
                    model,
                    comps,
                    val_emb[i : i + 1].to(device),
                    uncond,
                    v.num_frames or cfg.data.num_frames,
                    v.height or cfg.data.height,
                    v.width or cfg.data.width,
                    v.steps,
                    v.guidance,
                    v.seed + i,
                    autocast,
                )
            )
        if info.is_main:
            save_validation(videos, list(v.prompts), run_dir / "samples" / f"step_{step:08d}", v.fps)
    finally:
        raw.train(was_training)
        if backup is not None:
            with torch.no_grad():
                for n, p in raw.named_parameters():
                    if n in backup:
                        p.copy_(backup[n])
