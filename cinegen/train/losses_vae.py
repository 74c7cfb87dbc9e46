"""VAE training losses: reconstruction, KL, Movie Gen outlier penalty, 3D patch GAN, optional perceptual.

Dimension legend: B batch, C channels, F pixel frames, H/W pixels, T latent frames, h/w latent height/width.

- reconstruction: mean L1 or L2 between decoded and source pixels (both in [-1, 1]).
- KL (LDM / diffusers DiagonalGaussian.kl): 0.5·Σ(μ² + σ² − 1 − log σ²) summed over latent elements and
  averaged over the batch; used with a tiny weight (1e-6) so the latent stays close to a unit Gaussian scale.
- outlier penalty loss (Movie Gen §3.1.1): the VAE learns to store global information in a few high-norm
  latent "spots"; OPL = mean over positions of Σ_c max(|z − mean(z)| − r·std(z), 0), with mean/std per sample
  and channel over (T, h, w), r = 3. It penalises only values more than r standard deviations out.
- 3D patch discriminator: strided Conv3d stack over (C, F, H, W) producing a grid of real/fake logits (one per
  spatio-temporal patch); hinge losses (d: relu(1 − D(x)) + relu(1 + D(x̂)); g: −D(x̂)).
- perceptual: VGG16 feature distance per frame, from a torchvision-layout `features.*` state dict the user
  supplies locally (no downloads); ImageNet normalisation, layers relu1_2, relu2_2, relu3_3, relu4_3.
- coverage channels (`loss.mask_channels` K): the first K channels of the posterior mean are trained (MSE) to a
  fixed code of the clip's region mask, `mask_code`: per latent frame the mean mask of its frames (frame 0
  alone, then groups of the temporal compression), mapped to [-1, 1], and per s x s latent cell (s the spatial
  compression) its K lowest-frequency orthonormal 2D DCT-II coefficients divided by s (the first is the cell's
  mean). The latent then holds the objects' coverage in channels of its own, free of their colours; a diffusion
  transformer draws a shape there the same way whatever its colours. `smoothness_penalty` (total variation,
  `loss.smooth_weight`) on the other channels keeps edges out of them, so the decoder takes its edges from the
  coverage.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def recon_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    d = recon.float() - target.float()
    if kind == "l1":
        return d.abs().mean()
    if kind == "l2":
        return (d**2).mean()
    raise ValueError(f"unknown reconstruction loss {kind!r}")


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, 1)) summed over latent elements, mean over the batch."""
    kl = 0.5 * (mean.float() ** 2 + logvar.float().exp() - 1.0 - logvar.float())
    return kl.flatten(1).sum(1).mean()


def outlier_penalty(z: torch.Tensor, r: float = 3.0) -> torch.Tensor:
    """Movie Gen OPL on latents (B, C, T, h, w): mean over positions of Σ_c relu(|z − μ| − r·σ)."""
    z = z.float()
    mu = z.mean(dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
    sd = z.std(dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
    excess = F.relu((z - mu).abs() - r * sd)  # (B, C, T, h, w)
    return excess.sum(1).mean()


class PatchDiscriminator3D(nn.Module):
    """3D patch GAN: (B, 3, F, H, W) -> logits (B, 1, F', H', W'). Time is downsampled once, space each layer."""

    def __init__(self, in_channels: int = 3, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv3d(in_channels, channels, (3, 4, 4), (1, 2, 2), (1, 1, 1)), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            c_out = min(channels * 2**i, 8 * channels)
            stride_t = 2 if i == 1 else 1
            mods += [
                nn.Conv3d(c, c_out, (3, 4, 4), (stride_t, 2, 2), (1, 1, 1), bias=False),
                nn.GroupNorm(min(32, c_out // 4) or 1, c_out),
                nn.LeakyReLU(0.2),
            ]
            c = c_out
        mods.append(nn.Conv3d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def d_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


# torchvision vgg16 `features` layout: conv widths and max-pools ("M"); indices match `features.{i}.weight`.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M"]
_TAPS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3 (indices in `features`)


class VGGPerceptual(nn.Module):
    """Frame-wise VGG16 feature distance (mean squared, summed over the four taps)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        self.features = nn.Sequential(*layers[: _TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> VGGPerceptual:
        """Load torchvision `vgg16` weights (a .pth state dict or .safetensors) from a local file."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"perceptual loss weights not found: {p}")
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
        m = cls()
        own = m.features.state_dict()
        sub = {k.removeprefix("features."): v for k, v in state.items() if k.removeprefix("features.") in own}
        missing = sorted(set(own) - set(sub))
        if missing:
            raise ValueError(f"{p}: not a torchvision vgg16 state dict (missing features.{missing[0]})")
        m.features.load_state_dict(sub, strict=True)
        return m.eval()

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """recon/target (B, 3, F, H, W) in [-1, 1] -> scalar."""
        a = recon.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B, 3, F, H, W) -> (B*F, 3, H, W)
        b = target.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*F, 3, H, W)
        a = ((a.float() + 1) / 2 - self.mean) / self.std
        b = ((b.float() + 1) / 2 - self.mean) / self.std
        loss = a.new_zeros(())
        for i, layer in enumerate(self.features):
            a, b = layer(a), layer(b)
            if i in _TAPS:
                loss = loss + F.mse_loss(a, b)
        return loss


def dct_basis(size: int, k: int) -> torch.Tensor:
    """The `k` lowest-frequency orthonormal 2D DCT-II basis images of a size x size patch, (k, size²) flattened
    row-major (y, x): ordered by u + v, then by the vertical frequency u, so the first is the constant."""
    if not 1 <= k <= size * size:
        raise ValueError(f"k must be in 1..{size * size} for {size}x{size} patches, got {k}")
    n = torch.arange(size, dtype=torch.float64)
    u = torch.arange(size, dtype=torch.float64)[:, None]
    c = torch.cos(torch.pi * (2 * n + 1) * u / (2 * size)) * (2 / size) ** 0.5  # (size, size): [u, x]
    c[0] /= 2**0.5
    order = sorted(((a, b) for a in range(size) for b in range(size)), key=lambda ab: (ab[0] + ab[1], ab[0]))[:k]
    return torch.stack([torch.outer(c[a], c[b]).flatten() for a, b in order]).float()  # (k, size²)


def latent_frame_means(mask: torch.Tensor, temporal: int) -> torch.Tensor:
    """(B, F, H, W) -> (B, T, H, W): the mean of each causal latent frame's pixel frames (frame 0 alone, then
    groups of `temporal`; F = 1 + temporal·(T − 1))."""
    f = mask.shape[1]
    if (f - 1) % temporal:
        raise ValueError(f"{f} frames do not fill latent frames of {temporal} (need 1 + {temporal}·N)")
    rest = mask[:, 1:].unflatten(1, ((f - 1) // temporal, temporal)).mean(2)  # (B, T - 1, H, W)
    return torch.cat([mask[:, :1], rest], 1)


def mask_code(mask: torch.Tensor, k: int, temporal: int, spatial: int) -> torch.Tensor:
    """Region masks (B, F, H, W) in [0, 1] -> the coverage code (B, k, T, h, w) the first k latent channels learn:
    per latent frame the mean mask (`latent_frame_means`) in [-1, 1], per spatial x spatial cell its k
    lowest-frequency DCT coefficients (`dct_basis`) / spatial, so channel 0 is the cell's mean, in [-1, 1]."""
    b, _, h, w = mask.shape
    m = latent_frame_means(mask.float(), temporal) * 2 - 1  # (B, T, H, W)
    t = m.shape[1]
    cells = F.pixel_unshuffle(m.reshape(b * t, 1, h, w), spatial)  # (B*T, s², h, w), channel = y·s + x
    basis = dct_basis(spatial, k).to(cells)  # (k, s²)
    code = torch.einsum("kp,nphw->nkhw", basis, cells) / spatial  # (B*T, k, h, w)
    return code.unflatten(0, (b, t)).transpose(1, 2)  # (B, k, T, h, w)


def coverage_from_code(code: torch.Tensor, spatial: int) -> torch.Tensor:
    """The inverse of `mask_code` per latent frame: (B, k, T, h, w) -> coverage (B, T, H, W) in [0, 1] (exact for
    k = spatial²; fewer coefficients give the least-squares low-pass coverage)."""
    b, k, t, h, w = code.shape
    basis = dct_basis(spatial, k).to(code)  # (k, s²)
    cells = torch.einsum("kp,nkhw->nphw", basis, code.transpose(1, 2).reshape(b * t, k, h, w) * spatial)
    m = F.pixel_shuffle(cells, spatial)  # (B*T, 1, H, W)
    return ((m[:, 0] + 1) / 2).clamp(0, 1).unflatten(0, (b, t))


def smoothness_penalty(z: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of latents (B, C, T, h, w): mean |difference| of spatial neighbours, both axes."""
    z = z.float()
    return (z[..., 1:, :] - z[..., :-1, :]).abs().mean() + (z[..., 1:] - z[..., :-1]).abs().mean()
