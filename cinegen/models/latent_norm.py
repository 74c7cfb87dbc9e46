"""Per-channel latent normalisation folded into a VAE's weights (exact; diffusers-loadable).

The transformer sees ẑ = scaling_factor · z, one factor for all channels. A small VAE's channels can have very
different spreads (the Shapes VAE of release 4: per-channel RMS of ẑ from 0.31 to 1.81 over 400 clips), so at
any timestep the noise drowns the quiet channels long before the loud ones. Rescaling channel c by
k_c = 1 / RMS_c gives every channel unit RMS in the transformer's space.

`fold_channel_scale(vae, k)` builds that rescaling into the weights, so nothing else changes (the diffusers
`AutoencoderKLCogVideoX` and CogVideoX pipelines load the result as they are):

- encoder: the posterior mean of channel c is multiplied by k_c (the rows of `encoder.conv_out` that produce
  it, weight and bias) and its log-variance moves by 2 log k_c (the bias of its log-variance row);
- decoder: every weight that reads the latent is divided by k_c along input channel c: `decoder.conv_in` and
  the `conv_y` / `conv_b` of every SpatialNorm (they read the latent resized by interpolation, which is linear).

Only scales are folded, no offsets: the decoder's convs zero-pad in space, so a per-channel shift would not fold
exactly at the borders. With k > 0, decode(k · z) of the new VAE equals decode(z) of the old one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cinegen.models.vae import CogVideoXVAE, SpatialNorm3D

__all__ = ["channel_rms", "fold_channel_scale", "latent_reading_convs", "normalize_vae_folder"]


def channel_rms(latents: Tensor) -> Tensor:
    """Root mean square per channel of latents (N, C, ...) -> (C,) float32."""
    if latents.dim() < 2:
        raise ValueError(f"latents must be (N, C, ...), got shape {tuple(latents.shape)}")
    x = latents.float().transpose(0, 1).reshape(latents.shape[1], -1)  # (C, N * ...)
    return x.pow(2).mean(dim=1).sqrt()


def latent_reading_convs(vae: CogVideoXVAE) -> list[nn.Conv3d]:
    """Every conv of the decoder whose input channels are the latent's: conv_in and the SpatialNorms'."""
    convs = [vae.decoder.conv_in.conv]
    for m in vae.decoder.modules():
        if isinstance(m, SpatialNorm3D):
            convs += [m.conv_y.conv, m.conv_b.conv]
    return convs


@torch.no_grad()
def fold_channel_scale(vae: CogVideoXVAE, k: Tensor) -> CogVideoXVAE:
    """Multiply latent channel c by k[c] inside `vae` (in place, see the module docstring); returns `vae`."""
    C = vae.config.latent_channels
    if vae.quant_conv is not None or vae.post_quant_conv is not None:
        raise ValueError("fold_channel_scale supports VAEs without quant_conv / post_quant_conv (CogVideoX's)")
    k = torch.as_tensor(k, dtype=torch.float64).flatten()
    if k.shape != (C,):
        raise ValueError(f"k must have one value per latent channel ({C}), got shape {tuple(k.shape)}")
    if not bool((k > 0).all()) or not bool(torch.isfinite(k).all()):
        raise ValueError("k must be finite and positive")
    out = vae.encoder.conv_out.conv  # (2C, c_in, kt, kh, kw): rows [mean; logvar]
    if out.bias is None:  # a bias-free conv_out cannot move the log-variance: refuse before changing anything
        raise ValueError("encoder.conv_out has no bias; the log-variance cannot be rescaled")
    w, b = out.weight.double(), out.bias.double()
    w[:C] *= k.view(C, 1, 1, 1, 1)
    b[:C] *= k
    b[C:] += 2.0 * k.log()  # var' = k^2 var
    out.weight.copy_(w)
    out.bias.copy_(b)
    for conv in latent_reading_convs(vae):  # (c_out, C, ...): input channel c now carries k_c z_c
        conv.weight.copy_(conv.weight.double() / k.view(1, C, *([1] * (conv.weight.dim() - 2))))
    return vae


def _media_frames(path: Path, kind: str) -> np.ndarray:
    """uint8 (F, H, W, 3) of a manifest item: a video, or an image as one frame."""
    if kind == "image":
        from PIL import Image

        with Image.open(path) as im:
            return np.array(im.convert("RGB"))[None]
    from cinegen.video import read_video

    return read_video(path).frames


@torch.no_grad()
def normalize_vae_folder(
    src: str | Path,
    out: str | Path,
    manifest: str | Path,
    n: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Measure the per-channel RMS of the transformer-space latents (`vae.scale(vae.encode(x))`) of the first
    `n` items of `manifest`, fold k = 1 / RMS into the VAE of `src` (a model folder or a VAE folder) and write
    `out/vae/`. The scaling factor is kept, so the folded VAE's channels have unit RMS in the transformer's
    space. Returns (out/vae, stats); the stats (the measured RMS per channel) also go to
    `out/vae/channel_rms.json`."""
    from cinegen.data.manifest import read_manifest
    from cinegen.train.trainer import load_vae_folder
    from cinegen.train.vae_trainer import save_vae_folder
    from cinegen.video import frames_to_tensor

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    manifest = Path(manifest)
    records = read_manifest(manifest)[:n]
    if not records:
        raise ValueError(f"{manifest}: no items")
    vae = load_vae_folder(src)
    sq = torch.zeros(vae.config.latent_channels, dtype=torch.float64)
    count = 0
    for i, r in enumerate(records):
        x = frames_to_tensor(_media_frames(manifest.parent / r.path, r.type))[None]  # (1, 3, F, H, W)
        z = vae.scale(vae.encode(x.to(vae.device, vae.dtype)))  # (1, C, T, h, w)
        sq += z.double().pow(2).sum(dim=(0, 2, 3, 4))
        count += z[:, 0].numel()
        if progress is not None:
            progress(i + 1, len(records))
    before = (sq / count).sqrt().float()  # (C,) RMS per channel
    fold_channel_scale(vae, 1.0 / before)
    folder = save_vae_folder(vae, Path(out))
    stats = {"rms_before": [round(float(v), 5) for v in before], "items": len(records), "manifest": str(manifest)}
    (folder / "channel_rms.json").write_text(json.dumps(stats, indent=1) + "\n")
    return folder, stats
