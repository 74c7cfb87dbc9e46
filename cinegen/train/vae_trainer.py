"""VAE training loop: `train_vae(cfg)` (`cinegen train-vae CONFIG.yaml`).

Dimension legend: B batch (per rank), F/H/W pixel frames/height/width, C latent channels, T/h/w latent sizes.

Per step: pixels (B, 3, F, H, W) in [-1, 1] -> posterior (mean, logvar) -> z = mean + σ·eps -> decode ->
    L = recon(x̂, x) + w_kl·KL + w_opl·OPL(mean) + w_p·perceptual + w_gan·g_hinge(D(x̂))      (generator side)
        + w_mask·MSE(mean[:, :K], mask_code(mask)) + w_tv·TV(mean[:, K:])          (coverage channels, K > 0)
    L_D = d_hinge(D(x), D(x̂.detach()))                                                      (discriminator)
With `loss.latent_noise` s > 0 the decoder reads z + s·rms_c·ε (rms_c each channel's RMS over the batch): it learns
to ignore latent errors of that size, as a diffusion sample leaves them.
The VAE and the 3D patch discriminator live in one `VAEWithDiscriminator` module with one AdamW (separate
param groups, the discriminator at `loss.disc_lr`): both sides take their gradient from the same batch and step
together, so checkpoints, resume and DDP/FSDP stay the same code as for the transformer. The GAN terms start at
`loss.gan_start_step`. Metrics: PSNR, SSIM, flicker of the training batch every log step, and of a fixed
validation batch (the first clips of the manifest, deterministic frames/crops) every `validation.every` steps
with a side-by-side contact sheet.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cinegen.models.latent_norm import channel_rms
from cinegen.train import checkpoint as ckpt
from cinegen.train.cache import DECODER_SIDE
from cinegen.train.config import VAETrainConfig, to_dict
from cinegen.train.data import (
    BatchSampler,
    ClipDataset,
    bucket_spec,
    load_pixels,
    load_pixels_and_masks,
    load_records,
)
from cinegen.train.losses_vae import (
    PatchDiscriminator3D,
    VGGPerceptual,
    d_hinge_loss,
    g_hinge_loss,
    kl_loss,
    mask_code,
    outlier_penalty,
    recon_loss,
    smoothness_penalty,
)
from cinegen.train.metrics import video_metrics
from cinegen.train.optim import EMA, build_scheduler, param_groups
from cinegen.train.parallel import DistInfo, all_reduce_mean, barrier, parallelize
from cinegen.train.progress import MetricsLogger
from cinegen.train.trainer import sample_generator, start_run

log = logging.getLogger(__name__)


class VAEWithDiscriminator(nn.Module):
    """Holds the trained VAE and (optionally) its discriminator, so one optimizer/checkpoint covers both."""

    def __init__(self, vae: nn.Module, disc: nn.Module | None) -> None:
        super().__init__()
        self.vae = vae
        self.disc = disc

    def forward(
        self, x: torch.Tensor, eps: torch.Tensor | None, noise: torch.Tensor | None = None, noise_scale: float = 0.0
    ) -> tuple[torch.Tensor, ...]:
        """x (B, 3, F, H, W) -> (reconstruction, mean, logvar); eps (B, C, T, h, w) samples the posterior; `noise`
        (same shape) is added at `noise_scale` x each channel's RMS over the batch (`loss.latent_noise`)."""
        mean, logvar = self.vae.encode_moments(x)  # (B, C, T, h, w) each
        z = mean if eps is None else mean + torch.exp(0.5 * logvar) * eps
        if noise is not None and noise_scale > 0:
            rms = channel_rms(mean.detach()).to(mean.dtype).view(1, -1, 1, 1, 1)  # (1, C, 1, 1, 1)
            z = z + noise_scale * rms * noise
        return self.vae.decode(z), mean, logvar


def freeze_encoder(vae: nn.Module) -> None:
    """`model.trainable: decoder`: only the decoder and post_quant_conv keep gradients."""
    for name, child in vae.named_children():
        if name not in DECODER_SIDE:
            child.requires_grad_(False)


def build_vae(cfg: VAETrainConfig) -> nn.Module:
    from cinegen.models.presets import get_preset
    from cinegen.models.vae import CogVideoXVAE, VAEConfig

    m = cfg.model
    if m.path is not None:
        from cinegen.train.trainer import load_vae_folder

        vae = load_vae_folder(m.path)
        if m.vae:
            raise ValueError("model.vae overrides apply to a new VAE (preset), not to one loaded from model.path")
        return vae
    base = get_preset(m.preset).vae.to_dict() if m.preset else {}
    over = dict(m.vae)
    if "block_out_channels" in over:  # one block type per level unless given
        n = len(over["block_out_channels"])
        over.setdefault("down_block_types", ["CogVideoXDownBlock3D"] * n)
        over.setdefault("up_block_types", ["CogVideoXUpBlock3D"] * n)
    return CogVideoXVAE(VAEConfig.from_dict({**base, **over}))


def save_vae_folder(vae: nn.Module, folder: Path) -> Path:
    """`folder/vae/{config.json, diffusion_pytorch_model.safetensors}` (diffusers AutoencoderKLCogVideoX)."""
    from safetensors.torch import save_file

    from cinegen.fsutil import atomic_path, atomic_write
    from cinegen.models.io import DIFFUSERS_VERSION

    out = folder / "vae"
    with atomic_write(out / "config.json") as f:
        f.write(json.dumps({**vae.config.to_dict(), "_diffusers_version": DIFFUSERS_VERSION}, indent=2) + "\n")
    state = {k: v.detach().float().cpu().contiguous() for k, v in vae.state_dict().items()}
    with atomic_path(out / "diffusion_pytorch_model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    return out


@dataclass
class VAETrainResult:
    step: int
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    checkpoint: Path | None = None
    export: Path | None = None


def train_vae(cfg: VAETrainConfig, vae: nn.Module | None = None, stop_at: int | None = None) -> VAETrainResult:
    # ---- setup ----------------------------------------------------------------------------------------------
    info, run_dir, autocast = start_run(cfg)
    lc = cfg.loss

    # ---- model ------------------------------------------------------------------------------------------------
    vae = vae if vae is not None else build_vae(cfg)
    disc = PatchDiscriminator3D(3, lc.disc_channels, lc.disc_layers) if lc.gan_weight > 0 else None
    raw = VAEWithDiscriminator(vae, disc).to(info.device).train().requires_grad_(True)
    if cfg.model.trainable == "decoder":
        if cfg.parallel.strategy == "fsdp":
            raise ValueError("model.trainable=decoder: use parallel.strategy none or ddp (FSDP shards frozen parts)")
        freeze_encoder(raw.vae)
    perceptual = None
    if lc.perceptual_weight > 0:
        if not lc.perceptual_weights_path:
            raise ValueError("loss.perceptual_weight > 0 needs loss.perceptual_weights_path (local VGG16 weights)")
        perceptual = VGGPerceptual.from_file(lc.perceptual_weights_path).to(info.device)
    model = parallelize(raw, cfg.parallel, info)

    # ---- optimizer: VAE groups at optim.lr, discriminator at loss.disc_lr ---------------------------------------
    o = cfg.optim
    groups = param_groups(raw.vae.named_parameters(), o.weight_decay)
    if disc is not None:
        groups.append({"params": list(raw.disc.parameters()), "weight_decay": 0.0, "lr": lc.disc_lr})
    opt = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, foreach=False)
    total = cfg.train.steps
    sched = build_scheduler(opt, o, total)
    max_norm = o.grad_clip if o.grad_clip > 0 else float("inf")  # inf: measure, do not clip
    ema = EMA(raw.vae, o.ema_decay) if o.ema else None

    # ---- data -------------------------------------------------------------------------------------------------
    d = cfg.data
    if d.manifest is None:
        raise ValueError("data.manifest is not set")
    spec = bucket_spec(
        d,
        d.height,
        d.width,
        d.num_frames,
        vae_spatial=vae.config.spatial_compression,
        vae_temporal=int(vae.config.temporal_compression_ratio),
        patch=1,
    )
    ds = ClipDataset(load_records(d.manifest, d.format, d.root), spec, d.buckets, d.image_repeat, d.video_repeat)
    # a frozen encoder (model.trainable=decoder): the losses on its latents have no gradient (and a normalised
    # VAE's channels are no longer in the units of the coverage code), so only the reconstruction is trained
    enc_losses = cfg.model.trainable == "all"
    K = check_mask_channels(lc.mask_channels, vae.config.latent_channels, ds) if enc_losses else 0
    B = d.batch_size
    sampler = BatchSampler(ds.groups(), B * info.world, seed=cfg.train.seed)
    val_idx = _validation_indices(ds, B)  # same batch size as training: reuses the conv kernels already set up

    # ---- resume -----------------------------------------------------------------------------------------------
    ckpt_dir = run_dir / "checkpoints"
    step = 0
    path = ckpt.resume_path(ckpt_dir, cfg.checkpoint.resume)
    if path is not None:
        state = ckpt.load_checkpoint(path, raw, opt, sched, ema)
        step = state["step"]
        sampler.load_state_dict(state["sampler"])
    metrics = MetricsLogger(run_dir, cfg.log, info.is_main, resume_step=step, total_steps=total, prefix="vae")
    result = VAETrainResult(step=step)

    # ---- loop -------------------------------------------------------------------------------------------------
    while step < total:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        gan_on = disc is not None and step >= lc.gan_start_step
        sums: dict[str, torch.Tensor] = {}
        last = None
        for micro in range(o.grad_accum):
            _, global_idx = sampler.next()
            local = global_idx[info.rank * B : (info.rank + 1) * B]
            first_g = micro * B * info.world + info.rank * B
            gens = [sample_generator(cfg.train.seed, step, micro, first_g + i) for i in range(len(local))]
            seeds = [int(torch.randint(0, 2**62, (), generator=g)) for g in gens]
            rngs = [random.Random(s) if d.random_crop else None for s in seeds]
            xs, ms, w = load_pixels_and_masks(ds, local, rngs, masks=K > 0)
            x = torch.stack(xs).to(info.device)  # (B, 3, F, H, W)
            shape = (vae.config.latent_channels, *_latent_shape(vae, x.shape[2:]))
            eps = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(info.device)
            noise = None
            if lc.latent_noise > 0:  # drawn after eps from the same per-sample generators: resumes bit-exactly
                noise = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(info.device)
            with autocast():
                recon, mean, logvar = model(x, eps, noise, lc.latent_noise)
            parts = {
                "recon": recon_loss(
                    recon * w.view(-1, 1, 1, 1, 1).to(recon), x * w.view(-1, 1, 1, 1, 1).to(x), lc.recon
                ),
            }
            loss = parts["recon"]
            if enc_losses:
                parts["kl"] = kl_loss(mean, logvar)
                loss = loss + lc.kl_weight * parts["kl"]
            if K > 0:  # coverage channels: a failed clip (weight 0) has no mask and stands in as empty
                m = torch.stack([x.new_zeros(x.shape[2:]) if mi is None else mi.to(x) for mi in ms])  # (B, F, H, W)
                code = mask_code(m, K, int(vae.config.temporal_compression_ratio), vae.config.spatial_compression)
                per = (mean[:, :K].float() - code).square().flatten(1).mean(1)  # (B,)
                parts["mask"] = (per * w.to(per)).sum() / w.sum().clamp_min(1)
                loss = loss + lc.mask_weight * parts["mask"]
            if enc_losses and lc.smooth_weight > 0 and mean.shape[1] > K:  # K = all channels: none left to smooth
                parts["smooth"] = smoothness_penalty(mean[:, K:])
                loss = loss + lc.smooth_weight * parts["smooth"]
            if enc_losses and lc.outlier_weight > 0:
                parts["opl"] = outlier_penalty(mean, lc.outlier_r)
                loss = loss + lc.outlier_weight * parts["opl"]
            if perceptual is not None:
                parts["perceptual"] = perceptual(recon, x)
                loss = loss + lc.perceptual_weight * parts["perceptual"]
            if gan_on:
                # generator side: gradients reach the VAE through recon, never the discriminator (frozen copy of
                # its parameters via functional_call; toggling requires_grad would upset DDP)
                frozen = {n: p.detach() for n, p in raw.disc.named_parameters()}
                with autocast():
                    parts["g_adv"] = g_hinge_loss(torch.func.functional_call(raw.disc, frozen, (recon,)))
                loss = loss + lc.gan_weight * parts["g_adv"]
                with autocast():
                    parts["d_loss"] = d_hinge_loss(raw.disc(x), raw.disc(recon.detach()))
                loss = loss + parts["d_loss"]  # only the discriminator sees this term (recon is detached)
            elif disc is not None:
                loss = loss + 0.0 * sum(p.sum() for p in raw.disc.parameters())  # keep DDP/FSDP grads defined
            (loss / o.grad_accum).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, torch.zeros((), device=info.device)) + v.detach() / o.grad_accum
            sums["loss"] = sums.get("loss", torch.zeros((), device=info.device)) + loss.detach() / o.grad_accum
            last = (recon.detach(), x)
        values = {k: float(all_reduce_mean(v)) for k, v in sums.items()}
        ckpt.check_finite(values["loss"], step + 1, ckpt_dir, what="VAE loss")
        gnorm = torch.nn.utils.clip_grad_norm_([p for p in raw.vae.parameters() if p.grad is not None], max_norm)
        if disc is not None:
            torch.nn.utils.clip_grad_norm_(list(raw.disc.parameters()), max_norm)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(raw.vae)
        step += 1
        result.losses.append(values["loss"])
        dt = time.perf_counter() - t0
        values.update(grad_norm=float(ckpt._full(gnorm)), lr=sched.get_last_lr()[0], it_per_s=1 / dt)
        if cfg.log.every > 0 and step % cfg.log.every == 0 and last is not None:
            values.update({f"train/{k}": v for k, v in video_metrics(*last).items()})
        metrics.step(step, values)
        if cfg.validation.every > 0 and step % cfg.validation.every == 0:
            result.metrics = _validate_vae(raw, ds, val_idx, step, run_dir, info, metrics, autocast)
        if cfg.checkpoint.every > 0 and (step % cfg.checkpoint.every == 0 or step == total):
            state = {
                "sampler": sampler.state_dict(),
                "stage": 0,
                "world_size": info.world,
                "config": to_dict(cfg),
                "model_config": vae.config.to_dict(),
                "loss": values["loss"],
                "skipped": dict(ds.skips.counts),
            }
            result.checkpoint = ckpt.save_checkpoint(
                ckpt_dir, step, raw, opt, sched, ema, state, cfg.checkpoint.keep_last
            )
        if stop_at is not None and step >= stop_at:
            break
    metrics.close()
    result.step = step
    result.skipped = dict(ds.skips.counts)
    if step >= total:
        result.metrics = _validate_vae(raw, ds, val_idx, step, run_dir, info, metrics, autocast)
        if cfg.checkpoint.export:
            # Collective under FSDP (every rank gathers), then rank 0 writes.
            if ema is not None:
                sd = ckpt.ema_weights(ema)
            else:
                full = ckpt.trainable_state(raw)
                sd = {k.removeprefix("vae."): v for k, v in full.items() if k.startswith("vae.")}
            if cfg.model.trainable == "decoder":  # the frozen encoder as loaded, the fine-tuned decoder
                sd = {**{k: v.detach().cpu() for k, v in raw.vae.state_dict().items()}, **sd}
            if info.is_main:
                export_vae = build_vae_like(vae)
                export_vae.load_state_dict(sd, strict=True)
                result.export = save_vae_folder(export_vae, run_dir / "model").parent
            barrier()
    return result


def check_mask_channels(k: int, latent_channels: int, ds: ClipDataset) -> int:
    """`loss.mask_channels` checked against the VAE and the data: every clip needs a `mask`."""
    if not 0 <= k <= latent_channels:
        raise ValueError(f"loss.mask_channels must be in 0..{latent_channels} (the VAE's latent channels), got {k}")
    if k > 0:
        missing = sorted({ds.record(j).path for j in range(len(ds)) if not ds.record(j).mask})
        if missing:
            raise ValueError(
                f"loss.mask_channels={k} needs a `mask` column on every clip; {len(missing)} have none, e.g. "
                f"{missing[0]} (`cinegen world render` writes object masks; `cinegen data stills` carries them)"
            )
    return k


def build_vae_like(vae: nn.Module) -> nn.Module:
    from cinegen.models.vae import CogVideoXVAE

    return CogVideoXVAE(vae.config)


def _latent_shape(vae: nn.Module, fhw: Any) -> tuple[int, int, int]:
    f, h, w = (int(v) for v in fhw)
    s = vae.config.spatial_compression
    return vae.frames_to_latents(f, int(vae.config.temporal_compression_ratio)), h // s, w // s


def _validation_indices(ds: ClipDataset, n: int) -> list[int]:
    """The first n dataset items of the largest bucket (a fixed, same-shape validation batch)."""
    groups = ds.groups()
    if not groups:
        return []
    key = max(groups, key=lambda k: len(groups[k]))
    return groups[key][:n]


@torch.no_grad()
def _validate_vae(
    raw: VAEWithDiscriminator,
    ds: ClipDataset,
    idx: list[int],
    step: int,
    run_dir: Path,
    info: DistInfo,
    metrics: MetricsLogger,
    autocast: Any,
) -> dict[str, float]:
    if not idx:
        return {}
    was = raw.training
    raw.eval()
    try:
        xs, w = load_pixels(ds, idx, [None] * len(idx))  # centred start and crop
        x, keep = torch.stack(xs), w > 0
        if not bool(keep.any()):
            return {}
        x = x[keep].to(info.device)
        with autocast():
            recon, _, _ = raw(x, None)
        recon = recon.float().clamp(-1, 1)
        m = video_metrics(recon, x)
        if info.is_main:
            metrics.write(step, {f"val/{k}": v for k, v in m.items()})
            _save_side_by_side(x, recon, run_dir / "samples" / f"step_{step:08d}.png")
        return m
    finally:
        raw.train(was)


def _save_side_by_side(x: torch.Tensor, recon: torch.Tensor, path: Path) -> None:
    """Source (top) and reconstruction (bottom) frames of the first validation clip as a PNG contact sheet."""
    from cinegen.video import Video

    both = torch.cat([x[0], recon[0]], dim=2)  # (3, F, H, W) x 2 -> (3, F, 2H, W)
    Video.from_tensor(both).save(path, label="top: source, bottom: reconstruction")  # .png: contact sheet
