"""Video reconstruction metrics (PSNR, SSIM, flicker) and training throughput accounting (FLOPs, MFU).

Dimension legend: B batch, C channels (3), F frames, H/W pixels. Videos are (B, C, F, H, W) in [-1, 1] unless
stated; metrics map them to [0, 1] first (data range 1).

- PSNR = 10·log10(1 / MSE) per video, averaged over the batch.
- SSIM (Wang et al. 2004): per frame, 11x11 Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, computed on each
  channel and averaged (the common `skimage`/`pytorch-msssim` setting with `gaussian_weights=True`).
- flicker: temporal stability of a reconstruction *relative to its source*: mean |x[f+1] − x[f]| of the
  reconstruction minus the same for the source (0 = exactly as steady as the source; > 0 = added flicker),
  reported with both absolute parts.
- FLOPs/MFU (fast-inference.md §5.2, §5.4): train FLOPs ≈ 3 × forward; MFU = model FLOP/s over the measured
  matmul peak of this device and dtype.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(recon: torch.Tensor, source: torch.Tensor) -> float:
    """Mean PSNR (dB) over the batch of (B, C, F, H, W) videos in [-1, 1]."""
    mse = ((_unit(recon) - _unit(source)) ** 2).flatten(1).mean(1).clamp_min(1e-10)  # (B,)
    return float((10 * torch.log10(1.0 / mse)).mean())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()  # (size, size)


def ssim_frames(a: torch.Tensor, b: torch.Tensor, win: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM of image batches (N, C, H, W) in [0, 1] -> (N,). Valid-region filtering (no padding)."""
    c = a.shape[1]
    w = _gaussian_window(win, sigma).to(a.device)[None, None].expand(c, 1, win, win)  # (C, 1, k, k)
    if a.shape[-1] < win or a.shape[-2] < win:  # tiny frames: shrink the window, keep it odd
        k = min(a.shape[-1], a.shape[-2]) | 1
        k = k if k <= min(a.shape[-1], a.shape[-2]) else k - 2
        w = _gaussian_window(k, sigma * k / win).to(a.device)[None, None].expand(c, 1, k, k)

    def filt(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = filt(a), filt(b)
    saa = filt(a * a) - mu_a**2
    sbb = filt(b * b) - mu_b**2
    sab = filt(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return m.flatten(1).mean(1)


def ssim(recon: torch.Tensor, source: torch.Tensor) -> float:
    """Mean SSIM over all frames of (B, C, F, H, W) videos in [-1, 1]."""
    a = _unit(recon).permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B, C, F, H, W) -> (B*F, C, H, W)
    b = _unit(source).permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B*F, C, H, W)
    return float(ssim_frames(a, b).mean())


def temporal_change(x: torch.Tensor) -> float:
    """Mean absolute difference of consecutive frames of (B, C, F, H, W) in [-1, 1], on the [0, 1] scale."""
    u = _unit(x)
    if u.shape[2] < 2:
        return 0.0
    return float((u[:, :, 1:] - u[:, :, :-1]).abs().mean())


def flicker(recon: torch.Tensor, source: torch.Tensor) -> dict[str, float]:
    r, s = temporal_change(recon), temporal_change(source)
    return {"flicker": r - s, "flicker_recon": r, "flicker_source": s}


def video_metrics(recon: torch.Tensor, source: torch.Tensor) -> dict[str, float]:
    return {"psnr": psnr(recon, source), "ssim": ssim(recon, source), **flicker(recon, source)}


# ------------------------------------------------------------------------------------------ throughput / MFU


def dit_forward_flops(linear_params: int, layers: int, width: int, tokens: int) -> int:
    """FLOPs_fwd ≈ 2·P_lin·S + 4·L·D·S² (fast-inference.md §5.2), per sample."""
    return 2 * linear_params * tokens + 4 * layers * width * tokens * tokens


def linear_params(module: torch.nn.Module) -> int:
    """Parameters of per-token Linear layers (weights only; biases are negligible)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


_PEAK_CACHE: dict[tuple[str, str, int, int], float] = {}


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 1024, reps: int = 5) -> float:
    """Achievable dense matmul FLOP/s of this device and dtype (best of `reps` n x n x n products)."""
    key = (str(device), str(dtype), n, reps)
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    # A private generator: the global RNG state (checkpointed for exact resume) must not depend on whether
    # this process measured the peak already.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    torch.mm(a, b)  # warm up
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    peak = 2 * n**3 / best
    _PEAK_CACHE[key] = peak
    return peak
