"""CogVideoX 3D causal VAE, weight-compatible with diffusers `AutoencoderKLCogVideoX`.

The reference behaviour reproduced here is `shared/reference/diffusers-cogvideox.md` §3: causal 3D
convolutions that replicate the first frame in time, an explicit causal-conv cache carried between frame
chunks, per-chunk GroupNorm statistics (so the chunking is part of the numerics: encode 8 frames at a time
with the remainder in the first chunk, decode 2 latent frames at a time with the remainder in the first
chunk), the odd-T special cases of temporal down/upsampling and of the spatial norm, and spatial tiling with
linear blending (§3.6).

On top of the reference it adds Movie Gen style temporal tiling for long videos and is lighter in memory:
decoded chunks and tiles are written into a preallocated output (no list + cat), 1x1x1 convs keep no cache
(the reference clones their whole input), cache entries are freed as soon as the next chunk has read them,
tiled decoding keeps only the blend margins of neighbouring tiles, the spatial norm and the activations work
in place when no gradient is needed, and the up/downsamplers fuse their padding or upsampling with the
reference's per-frame layout change instead of copying twice.

Dimension legend
    B batch, C channels, F pixel frames, T latent frames (or the frames of whatever the current layer sees),
    H, W pixel height / width, h, w latent height / width (H / 8, W / 8 for the published configs).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cinegen.sampling.steps import GeneratorArg, randn_like_reference

__all__ = [
    "VAEConfig",
    "SpatialTiling",
    "TemporalTiling",
    "ConvCache",
    "CogVideoXVAE",
    "frame_chunks",
    "window_starts",
    "temporal_windows",
    "window_frame_range",
    "temporal_blend_weights",
    "ENCODE_FRAME_BATCH",
    "DECODE_LATENT_BATCH",
]

# Frame batching of the reference (§3.5): encode 8 pixel frames per call ("1 second of video"), decode 2
# latent frames per call; the remainder joins the first chunk (49 frames -> 9 + 5*8, 13 latents -> 3 + 5*2).
# The VAE was trained this way, so other values change (and degrade) the output.
ENCODE_FRAME_BATCH = 8
DECODE_LATENT_BATCH = 2


# ------------------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VAEConfig:
    """Field names and defaults are the diffusers `AutoencoderKLCogVideoX` config.json keys (CogVideoX-2b)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("CogVideoXDownBlock3D",) * 4
    up_block_types: tuple[str, ...] = ("CogVideoXUpBlock3D",) * 4
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
    latent_channels: int = 16
    layers_per_block: int = 3
    act_fn: str = "silu"
    norm_eps: float = 1e-6
    norm_num_groups: int = 32
    temporal_compression_ratio: float = 4
    sample_height: int = 480
    sample_width: int = 720
    scaling_factor: float = 1.15258426
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = False
    use_post_quant_conv: bool = False
    invert_scale_latents: bool = False

    def __post_init__(self) -> None:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"down_block_types, up_block_types and block_out_channels must have the same length, got "
                f"{len(self.down_block_types)}, {len(self.up_block_types)} and {n}"
            )
        bad = [t for t in self.down_block_types if t != "CogVideoXDownBlock3D"]
        bad += [t for t in self.up_block_types if t != "CogVideoXUpBlock3D"]
        if bad:
            raise ValueError(f"unsupported block types {bad}; only CogVideoXDownBlock3D / CogVideoXUpBlock3D exist")
        if self.act_fn not in _ACTIVATIONS:
            raise ValueError(f"act_fn {self.act_fn!r} not in {sorted(_ACTIVATIONS)}")
        ratio = self.temporal_compression_ratio
        if ratio < 1 or 2 ** int(math.log2(ratio)) != ratio:
            raise ValueError(f"temporal_compression_ratio must be a power of two, got {ratio}")
        bad_ch = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad_ch:
            raise ValueError(f"block_out_channels {bad_ch} not divisible by norm_num_groups {self.norm_num_groups}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VAEConfig:
        """Build from a diffusers config.json dict: "_" keys are ignored, unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in names)
        if unknown:
            raise ValueError(f"unknown VAE config keys: {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """diffusers config.json dict (tuples as lists)."""
        out: dict[str, Any] = {"_class_name": "AutoencoderKLCogVideoX"}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @property
    def spatial_compression(self) -> int:
        """Pixels per latent along H and W: one 2x step per block but the last (8 when published)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_levels(self) -> int:
        """Number of 2x temporal steps actually built: log2(ratio), capped by the blocks that resample."""
        return min(int(math.log2(self.temporal_compression_ratio)), len(self.block_out_channels) - 1)


@dataclass(frozen=True)
class SpatialTiling:
    """Tiled encode/decode in H and W (diffusers `enable_tiling`, §3.6). Sizes are in pixels."""

    tile_sample_min_height: int
    tile_sample_min_width: int
    overlap_height: float = 1 / 6
    overlap_width: float = 1 / 5


@dataclass(frozen=True)
class TemporalTiling:
    """Movie Gen style temporal tiling of the decoder.

    The latent video is cut into windows of `window` latent frames that share `overlap` latent frames with
    their neighbour; each window is decoded on its own (own conv cache, causal start) and the overlapping
    pixel frames are blended linearly. `window` must be odd so that every window decodes like a native 1 + 4k
    frame clip, and `overlap` >= 1 because a window starting at latent a > 0 renders that latent as one frame
    only (see `window_frame_range`): with overlap 0 the three frames before it would be missing.
    """

    window: int
    overlap: int

    def __post_init__(self) -> None:
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"TemporalTiling.window must be odd and >= 3 (latent frames), got {self.window}")
        if not 1 <= self.overlap < self.window:
            raise ValueError(f"TemporalTiling.overlap must be in [1, window), got {self.overlap}")


# ------------------------------------------------------------------------------------------------------------
# Pure helpers: chunking, temporal windows, blending
# ------------------------------------------------------------------------------------------------------------


def frame_chunks(num_frames: int, batch: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the reference frame batching: chunks of `batch`, remainder in the first.

    Frames: 9 / 8 -> [(0, 9)]; 17 / 8 -> [(0, 9), (9, 17)]; 5 / 8 -> [(0, 5)].
    Latents: 5 / 2 -> [(0, 3), (3, 5)]; 4 / 2 -> [(0, 2), (2, 4)].
    """
    n = max(num_frames // batch, 1)
    r = num_frames % batch
    return [(batch * i + (0 if i == 0 else r), min(batch * (i + 1) + r, num_frames)) for i in range(n)]


def _down_frames(t: int) -> int:
    """Frames after one temporal 2x downsample: odd T keeps frame 0 and pools the rest (§3.2)."""
    return 1 + (t - 1) // 2 if t % 2 else t // 2


def _up_frames(t: int) -> int:
    """Frames after one temporal 2x upsample: odd T > 1 keeps frame 0 single, T == 1 stays 1 (§3.2)."""
    if t == 1:
        return 1
    return 1 + 2 * (t - 1) if t % 2 else 2 * t


def window_starts(total: int, window: int, overlap: int) -> list[int]:
    """First frame of each of the equal-length windows that cover [0, total): every `window - overlap` frames,
    the last one pulled back to end at `total` (so it may overlap its neighbour by more). One window when
    total <= window. (Shared by the decoder's temporal tiling and the long-video denoising windows.)"""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if total <= window:
        return [0]
    return list(range(0, total - window, window - overlap)) + [total - window]


def temporal_windows(num_latents: int, tiling: TemporalTiling) -> list[tuple[int, int]]:
    """[start, end) latent windows of equal length `tiling.window` covering [0, num_latents) (`window_starts`).

    A video no longer than one window is the single window [0, num_latents).
    """
    w = tiling.window
    if num_latents <= w:
        return [(0, num_latents)]
    return [(s, s + w) for s in window_starts(num_latents, w, tiling.overlap)]


def window_frame_range(start: int, end: int, ratio: int = 4) -> tuple[int, int]:
    """Global pixel frames [f0, f1) rendered by decoding latent window [start, end) on its own (odd length).

    In the full causal decode latent 0 renders frame 0 and latent t >= 1 renders frames 4t-3 .. 4t. A window
    decoded alone renders its first latent as a single frame and every later latent as 4 frames. We align the
    window at its end: its last 4 * (end - start - 1) frames are the global frames of latents start+1 ..
    end-1, so its first frame stands for global frame 4 * start (the last frame of latent `start`). Hence two
    windows sharing `k` latents share 4k - 3 pixel frames.
    """
    f0 = ratio * start
    return f0, f0 + ratio * (end - start - 1) + 1


def temporal_blend_weights(num_latents: int, tiling: TemporalTiling, ratio: int = 4) -> Tensor:
    """Blend weights (n_windows, F) float64 of temporal tiling; every column sums to 1.

    Windows are laid down in order; where a new window overlaps the frames written so far (P frames), the new
    window ramps in as y / P and everything already written ramps out as 1 - y / P (y = 0 .. P-1), the same
    linear blend as the reference spatial tiling (§3.6). The ramp gives weight 0 to a window's first frame,
    the one rendered from a mid-video latent as if it were a video start.
    """
    windows = temporal_windows(num_latents, tiling)
    frames = [window_frame_range(s, e, ratio) for s, e in windows]
    total = frames[-1][1]
    weights = torch.zeros(len(windows), total, dtype=torch.float64)
    written = 0
    for k, (f0, f1) in enumerate(frames):
        p = written - f0
        ramp = torch.arange(p, dtype=torch.float64) / p if p > 0 else torch.zeros(0, dtype=torch.float64)
        weights[:k, f0:written] *= 1 - ramp
        weights[k, f0:written] = ramp
        weights[k, written:f1] = 1.0
        written = f1
    return weights


def _blend_ramp(extent: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """(1 - y/E, y/E) for y < E, computed in float64 then cast: the same numbers as the reference's Python
    float scalars (which are rounded to the tensor dtype inside `tensor * scalar`)."""
    y = torch.arange(extent, dtype=torch.float64) / extent
    return (1 - y).to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


def _blend_into(a_tail: Tensor, b: Tensor, extent: int, dim: int) -> None:
    """Blend neighbour `a` (only its last rows/cols, `a_tail`) into the start of `b` along `dim`, in place.

    Reference `blend_v`/`blend_h` (§3.6): b[y] = a[-E + y] * (1 - y/E) + b[y] * (y/E), E = min(|a|, |b|,
    extent). `a_tail` holds the last min(|a|, extent) entries of `a`, so min over it is the same E.
    """
    e = min(a_tail.shape[dim], b.shape[dim], extent)
    if e <= 0:
        return
    w_a, w_b = _blend_ramp(e, b.dtype, b.device)
    shape = [1] * b.dim()
    shape[dim] = e
    a_part = a_tail.narrow(dim, a_tail.shape[dim] - e, e)
    b_part = b.narrow(dim, 0, e)
    b_part.copy_(a_part * w_a.view(shape) + b_part * w_b.view(shape))  # ramps (E,) -> (1, .., E, .., 1) on `dim`


def _tiles(size: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) of the reference tile loop `range(0, size, stride)`, each tile clipped to the input."""
    return [(i, min(i + tile, size)) for i in range(0, size, stride)]


# ------------------------------------------------------------------------------------------------------------
# Causal-conv cache
# ------------------------------------------------------------------------------------------------------------


@dataclass
class ConvCache:
    """State of every causal conv carried from one frame chunk to the next.

    `previous` maps a conv's name (its module path inside the encoder or decoder, e.g.
    "up_blocks.0.resnets.1.conv2") to the last k_t - 1 frames of its padded input in the previous chunk; this
    chunk's convs read it and write their own tails into `current`. `advance()` starts the next chunk with
    `current` as its `previous`. Keeping the two maps apart (instead of overwriting one) lets gradient
    checkpointing recompute a chunk later and still read the state that chunk originally saw.

    Without autograd an entry is dropped as soon as it is read, so at most one chunk's state is alive; with
    `record=False` (the last chunk) nothing is written at all.
    """

    previous: dict[str, Tensor] = field(default_factory=dict)
    current: dict[str, Tensor] = field(default_factory=dict)
    record: bool = True

    def read(self, key: str) -> Tensor | None:
        if torch.is_grad_enabled():  # a checkpoint recompute may read it again
            return self.previous.get(key)
        return self.previous.pop(key, None)

    def write(self, key: str, tail: Tensor) -> None:
        if self.record:
            self.current[key] = tail.clone()  # clone: a view would keep the whole padded input alive

    def advance(self, record: bool = True) -> ConvCache:
        return ConvCache(previous=self.current, record=record)

    def num_frames(self) -> dict[str, int]:
        """Frames held per conv in `current` (k_t - 1 = 2 for every CogVideoX causal conv)."""
        return {k: v.shape[2] for k, v in self.current.items()}


def _chunked_caches(n: int) -> Iterator[ConvCache]:
    """One ConvCache per chunk of an n-chunk loop, each reading what the previous one wrote."""
    cache = ConvCache(record=n > 1)
    for k in range(n):
        if k:
            cache = cache.advance(record=k < n - 1)
        yield cache


def _run_chunked(
    x: Tensor, batch: int, run: Callable[[Tensor, ConvCache], Tensor], out_frames: Callable[[int], int]
) -> Tensor:
    """`run(chunk, cache)` over the reference frame chunks of x (B, C, T, ...) with one carried conv cache; the
    outputs are written into one preallocated (B, C', sum of out_frames(chunk length), ...) tensor (no cat)."""
    chunks = frame_chunks(x.shape[2], batch)
    out: Tensor | None = None
    t0 = 0
    for (s, e), cache in zip(chunks, _chunked_caches(len(chunks)), strict=True):
        y = run(x[:, :, s:e], cache)  # (B, C', T_out_chunk, ...)
        if len(chunks) == 1:
            return y
        if out is None:
            total = sum(out_frames(b - a) for a, b in chunks)
            out = y.new_empty(*y.shape[:2], total, *y.shape[3:])  # (B, C', T_out, ...)
        out[:, :, t0 : t0 + y.shape[2]] = y
        t0 += y.shape[2]
        del y  # free the chunk's output before the next chunk runs
    assert out is not None
    return out


# ------------------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------------------


def _silu(x: Tensor, inplace: bool) -> Tensor:
    return F.silu(x, inplace=inplace)


def _mish(x: Tensor, inplace: bool) -> Tensor:
    return F.mish(x, inplace=inplace)


def _relu(x: Tensor, inplace: bool) -> Tensor:
    return F.relu(x, inplace=inplace)


def _gelu(x: Tensor, inplace: bool) -> Tensor:
    return F.gelu(x)


# diffusers `get_activation` names ("swish" == "silu").
_ACTIVATIONS: dict[str, Callable[[Tensor, bool], Tensor]] = {
    "silu": _silu,
    "swish": _silu,
    "mish": _mish,
    "relu": _relu,
    "gelu": _gelu,
}


def _no_autograd() -> bool:
    """In-place activations / norms are only safe when autograd records nothing."""
    return not torch.is_grad_enabled()


def conv3d(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """`conv(x)` for (B, C, T, H, W) x, with PyTorch's CPU kernel choice mended for inference.

    PyTorch (2.13, `use_mkldnn` in aten/src/ATen/native/ConvUtils) routes a float32 CPU conv3d with batch 1 and a
    small C*T*H input to its native `slow_conv3d` kernel, ~5x slower than oneDNN on an AVX-512 CPU (measured
    0.31 s vs 0.06 s for five (1, 16, 4, 98, 98) x (16, 16, 3, 3, 3) convs): a one-clip decode is mostly such
    convs. Without autograd we call oneDNN directly (outputs agree to float32 rounding, ~1e-6 relative);
    training, other dtypes and other devices take the ordinary path.
    """
    if (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and isinstance(conv.padding, tuple)
        and conv.padding_mode == "zeros"
    ):
        return torch.mkldnn_convolution(
            x.contiguous(), conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups
        )
    return conv(x)


class CausalConv3d(nn.Module):
    """Conv3d, causal in time: pads k_t - 1 frames in front (previous chunk's tail, else frame 0 repeated) and
    zero-pads H and W inside the conv (reference `CogVideoXCausalConv3d` with pad_mode "first"). Weights live
    in `.conv` to match the reference keys."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        k = kernel_size
        self.conv = nn.Conv3d(in_channels, out_channels, k, stride=(stride, 1, 1), padding=(0, k // 2, k // 2))
        self.time_pad = k - 1
        self.cache_key = ""  # module path, assigned by the owning Encoder3D / Decoder3D

    def pad(self, x: Tensor, cache: ConvCache | None) -> Tensor:
        """(B, C, T, H, W) -> (B, C, k_t - 1 + T, H, W); stores the new tail in `cache`."""
        if self.time_pad == 0:  # 1x1x1 convs have no temporal context: no padding, no cache
            return x
        head = cache.read(self.cache_key) if cache is not None else None
        if head is None:  # video start: replicate the first frame
            head = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)  # (B, C, k_t - 1, H, W)
        x = torch.cat([head, x], dim=2)  # (B, C, k_t - 1 + T, H, W)
        if cache is not None:
            cache.write(self.cache_key, x[:, :, -self.time_pad :])
        return x

    def forward(self, x: Tensor, cache: ConvCache | None = None) -> Tensor:
        return conv3d(self.conv, self.pad(x, cache))


class Downsample3D(nn.Module):
    """Optional 2x temporal average pool (odd T keeps frame 0), then a stride-2 3x3 conv per frame after
    padding one zero row/column at the bottom/right (reference `CogVideoXDownsample3D`)."""

    def __init__(self, channels: int, compress_time: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)
        self.compress_time = compress_time

    def forward(self, x: Tensor) -> Tensor:
        if self.compress_time and x.shape[2] > 1:
            if x.shape[2] % 2:
                # (a + b) / 2 over frame pairs 1:, frame 0 kept: (B, C, T, H, W) -> (B, C, 1 + (T-1)//2, H, W)
                rest = F.avg_pool3d(x[:, :, 1:], kernel_size=(2, 1, 1), stride=(2, 1, 1))
                x = torch.cat([x[:, :, :1], rest], dim=2)
            else:
                x = F.avg_pool3d(x, kernel_size=(2, 1, 1), stride=(2, 1, 1))  # (B, C, T/2, H, W)
        # Per-frame conv2d in the reference's (B*T, C, H, W) layout: for this strided conv a (1, 3, 3) conv3d
        # picks a different CPU kernel (differences ~1e-6), so we keep the layout and fuse the zero pad into
        # its copy.
        b, c, t, h, w = x.shape
        xp = x.new_zeros(b, t, c, h + 1, w + 1)  # (B, T, C, H+1, W+1): one zero row/col at the bottom/right
        xp[:, :, :, :h, :w] = x.transpose(1, 2)  # (B, C, T, H, W) -> (B, T, C, H, W)
        y = self.conv(xp.view(b * t, c, h + 1, w + 1))  # (B*T, C, H//2, W//2)
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)  # (B, C, T, H//2, W//2)


class Upsample3D(nn.Module):
    """2x nearest upsampling in H, W (and T when `compress_time`: odd T > 1 keeps frame 0 single, T == 1
    stays), then a 3x3 conv per frame (reference `CogVideoXUpsample3D`)."""

    def __init__(self, channels: int, compress_time: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.compress_time = compress_time

    def forward(self, x: Tensor) -> Tensor:
        # Work in the reference's per-frame (B*T, C, H, W) layout (a (1, 3, 3) conv3d would pick another CPU
        # kernel, differences ~1e-6), but upsample after the layout change so only the small input is copied.
        # Nearest 2x in T is a plain frame repeat, so repeat_interleave reproduces the reference's 3D interpolate.
        b, c, t, h, w = x.shape
        xt = x.transpose(1, 2)  # (B, T, C, h, w) view
        if self.compress_time and t > 1 and t % 2:
            rest = xt[:, 1:].repeat_interleave(2, dim=1)  # (B, 2(T-1), C, h, w)
            xt = torch.cat([xt[:, :1], rest], dim=1)  # (B, 1 + 2(T-1), C, h, w)
        elif self.compress_time and t > 1:
            xt = xt.repeat_interleave(2, dim=1)  # (B, 2T, C, h, w)
        t = xt.shape[1]
        y = F.interpolate(xt.reshape(b * t, c, h, w), scale_factor=2.0)  # (B*T', C, 2h, 2w)
        y = self.conv(y)  # (B*T', C, 2h, 2w)
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)  # (B, C, T', 2h, 2w)


class SpatialNorm3D(nn.Module):
    """GroupNorm(f) * conv_y(zq) + conv_b(zq), zq = the decoder's input latents resized to f (nearest); for
    odd T_f > 1 the first latent frame is resized to frame 0 alone and the rest to the other frames (§3.2)."""

    def __init__(self, f_channels: int, zq_channels: int, groups: int) -> None:
        super().__init__()
        self.norm_layer = nn.GroupNorm(groups, f_channels, eps=1e-6)  # eps fixed in the reference
        self.conv_y = CausalConv3d(zq_channels, f_channels, kernel_size=1)
        self.conv_b = CausalConv3d(zq_channels, f_channels, kernel_size=1)

    def forward(self, f: Tensor, zq: Tensor) -> Tensor:
        t = f.shape[2]
        if t > 1 and t % 2:
            first = F.interpolate(zq[:, :, :1], size=(1, *f.shape[-2:]))  # (B, C_lat, 1, H, W)
            rest = F.interpolate(zq[:, :, 1:], size=(t - 1, *f.shape[-2:]))  # (B, C_lat, T-1, H, W)
            zq = torch.cat([first, rest], dim=2)  # (B, C_lat, T, H, W)
        else:
            zq = F.interpolate(zq, size=f.shape[-3:])  # (B, C_lat, T, H, W)
        out = self.norm_layer(f)
        if _no_autograd():  # same ops in the same order, one full-size temporary at a time
            out.mul_(self.conv_y(zq))
            return out.add_(self.conv_b(zq))
        return out * self.conv_y(zq) + self.conv_b(zq)


class ResnetBlock3D(nn.Module):
    """norm1 -> act -> conv1 -> norm2 -> act -> conv2, plus a (1x1x1 conv) shortcut (reference
    `CogVideoXResnetBlock3D`; no time embedding, dropout 0). `zq_channels` makes the norms SpatialNorm3D."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        eps: float,
        act_fn: str,
        zq_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.norm1: nn.Module
        self.norm2: nn.Module
        if zq_channels is None:
            self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
            self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        else:
            self.norm1 = SpatialNorm3D(in_channels, zq_channels, groups)
            self.norm2 = SpatialNorm3D(out_channels, zq_channels, groups)
        self.conv1 = CausalConv3d(in_channels, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels)
        self.conv_shortcut = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.act = _ACTIVATIONS[act_fn]
        self.spatial = zq_channels is not None

    def forward(self, x: Tensor, zq: Tensor | None, cache: ConvCache | None) -> Tensor:
        # Written as a chain of reassignments of `h` so each intermediate is freed as soon as the next exists.
        inplace = _no_autograd()
        h = self.norm1(x, zq) if self.spatial else self.norm1(x)
        h = self.act(h, inplace)
        h = self.conv1.pad(h, cache)
        h = self.conv1.conv(h)
        h = self.norm2(h, zq) if self.spatial else self.norm2(h)
        h = self.act(h, inplace)
        h = self.conv2.pad(h, cache)
        h = self.conv2.conv(h)
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return h.add_(shortcut) if inplace else h + shortcut


def _run_resnets(resnets: nn.ModuleList, h: Tensor, zq: Tensor | None, cache: ConvCache | None, ckpt: bool) -> Tensor:
    for resnet in resnets:
        if ckpt and torch.is_grad_enabled():
            # Non-reentrant checkpoint: the recompute reads `cache.previous`, which ConvCache never overwrites.
            h = checkpoint(resnet, h, zq, cache, use_reentrant=False)
        else:
            h = resnet(h, zq, cache)
    return h


class DownBlock3D(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: VAEConfig, add_downsample: bool, compress_time: bool) -> None:
        super().__init__()
        g, eps, act = cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn
        self.resnets = nn.ModuleList(
            ResnetBlock3D(cin if i == 0 else cout, cout, g, eps, act) for i in range(cfg.layers_per_block)
        )
        self.downsamplers = nn.ModuleList([Downsample3D(cout, compress_time)]) if add_downsample else None

    def forward(self, h: Tensor, cache: ConvCache | None, ckpt: bool = False) -> Tensor:
        h = _run_resnets(self.resnets, h, None, cache, ckpt)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
        return h


class MidBlock3D(nn.Module):
    def __init__(self, channels: int, cfg: VAEConfig, zq_channels: int | None) -> None:
        super().__init__()
        g, eps, act = cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn
        self.resnets = nn.ModuleList(ResnetBlock3D(channels, channels, g, eps, act, zq_channels) for _ in range(2))

    def forward(self, h: Tensor, zq: Tensor | None, cache: ConvCache | None, ckpt: bool = False) -> Tensor:
        return _run_resnets(self.resnets, h, zq, cache, ckpt)


class UpBlock3D(nn.Module):
    def __init__(self, cin: int, cout: int, cfg: VAEConfig, add_upsample: bool, compress_time: bool) -> None:
        super().__init__()
        g, eps, act, zc = cfg.norm_num_groups, cfg.norm_eps, cfg.act_fn, cfg.latent_channels
        self.resnets = nn.ModuleList(
            ResnetBlock3D(cin if i == 0 else cout, cout, g, eps, act, zc) for i in range(cfg.layers_per_block + 1)
        )
        self.upsamplers = nn.ModuleList([Upsample3D(cout, compress_time)]) if add_upsample else None

    def forward(self, h: Tensor, zq: Tensor, cache: ConvCache | None, ckpt: bool = False) -> Tensor:
        h = _run_resnets(self.resnets, h, zq, cache, ckpt)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h)
        return h


def _name_causal_convs(root: nn.Module) -> None:
    """Give every causal conv its module path as cache key (unique within the encoder or the decoder)."""
    for name, module in root.named_modules():
        if isinstance(module, CausalConv3d):
            module.cache_key = name


class Encoder3D(nn.Module):
    """(B, C_in, F, H, W) chunk -> (B, 2 * C_lat, T, h, w) posterior parameters (reference
    `CogVideoXEncoder3D`)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch = cfg.block_out_channels
        levels = int(math.log2(cfg.temporal_compression_ratio))
        self.conv_in = CausalConv3d(cfg.in_channels, ch[0])
        self.down_blocks = nn.ModuleList(
            DownBlock3D(ch[i - 1] if i else ch[0], ch[i], cfg, i < len(ch) - 1, i < levels) for i in range(len(ch))
        )
        self.mid_block = MidBlock3D(ch[-1], cfg, None)
        self.norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[-1], eps=1e-6)  # eps fixed in the reference
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels)
        self.act = _ACTIVATIONS["silu"]  # the reference's conv_act is always SiLU
        self.gradient_checkpointing = False
        _name_causal_convs(self)

    def forward(self, x: Tensor, cache: ConvCache | None = None) -> Tensor:
        ckpt = self.gradient_checkpointing
        h = self.conv_in(x, cache)
        for block in self.down_blocks:
            h = block(h, cache, ckpt)
        h = self.mid_block(h, None, cache, ckpt)
        h = self.norm_out(h)
        h = self.act(h, _no_autograd())
        h = self.conv_out.pad(h, cache)
        return self.conv_out.conv(h)


class Decoder3D(nn.Module):
    """(B, C_lat, T, h, w) chunk -> (B, C_out, F, H, W) (reference `CogVideoXDecoder3D`)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch = tuple(reversed(cfg.block_out_channels))
        levels = int(math.log2(cfg.temporal_compression_ratio))
        zc = cfg.latent_channels
        self.conv_in = CausalConv3d(zc, ch[0])
        self.mid_block = MidBlock3D(ch[0], cfg, zc)
        self.up_blocks = nn.ModuleList(
            UpBlock3D(ch[i - 1] if i else ch[0], ch[i], cfg, i < len(ch) - 1, i < levels) for i in range(len(ch))
        )
        self.norm_out = SpatialNorm3D(ch[-1], zc, cfg.norm_num_groups)
        self.conv_out = CausalConv3d(ch[-1], cfg.out_channels)
        self.act = _ACTIVATIONS["silu"]
        self.gradient_checkpointing = False
        _name_causal_convs(self)

    def forward(self, z: Tensor, cache: ConvCache | None = None) -> Tensor:
        ckpt = self.gradient_checkpointing
        h = self.conv_in(z, cache)
        h = self.mid_block(h, z, cache, ckpt)
        for block in self.up_blocks:
            h = block(h, z, cache, ckpt)
        h = self.norm_out(h, z)
        h = self.act(h, _no_autograd())
        h = self.conv_out.pad(h, cache)
        return self.conv_out.conv(h)


# ------------------------------------------------------------------------------------------------------------
# The VAE
# ------------------------------------------------------------------------------------------------------------


class CogVideoXVAE(nn.Module):
    """CogVideoX 3D causal VAE: video (B, 3, F, H, W) in [-1, 1] <-> latents (B, C_lat, T, h, w).

    State-dict keys equal diffusers `AutoencoderKLCogVideoX` (§3.4), so weights load both ways with
    strict=True. Latents returned by `encode` / taken by `decode` are unscaled; `scale` / `unscale` map to and
    from the space the transformer sees.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder3D(config)
        self.decoder = Decoder3D(config)
        # Reference quirk kept for weight compatibility: the quant convs are sized by out_channels, not latents.
        oc = config.out_channels
        self.quant_conv = nn.Conv3d(2 * oc, 2 * oc, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv3d(oc, oc, 1) if config.use_post_quant_conv else None
        self.spatial_tiling: SpatialTiling | None = None

    # ---- options -------------------------------------------------------------------------------------------

    @property
    def gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.encoder.gradient_checkpointing = bool(value)
        self.decoder.gradient_checkpointing = bool(value)

    def enable_tiling(
        self,
        tile_sample_min_height: int | None = None,
        tile_sample_min_width: int | None = None,
        tile_overlap_factor_height: float | None = None,
        tile_overlap_factor_width: float | None = None,
    ) -> None:
        """Spatial tiling as diffusers `enable_tiling`: defaults half the sample size, overlaps 1/6 and 1/5."""
        self.spatial_tiling = SpatialTiling(
            tile_sample_min_height or self.config.sample_height // 2,
            tile_sample_min_width or self.config.sample_width // 2,
            tile_overlap_factor_height or 1 / 6,
            tile_overlap_factor_width or 1 / 5,
        )

    def disable_tiling(self) -> None:
        self.spatial_tiling = None

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv_in.conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.conv_in.conv.weight.device

    # ---- latent conventions (§3.7)
    # ---------------------------------------------------------------------------

    def scale(self, z: Tensor) -> Tensor:
        """Unscaled posterior latents -> the latent space the transformer sees (z * scaling_factor)."""
        return z * self.config.scaling_factor

    def unscale(self, z: Tensor) -> Tensor:
        """Transformer latents -> unscaled latents for `decode` (z / scaling_factor)."""
        return z / self.config.scaling_factor

    def scale_image_latents(self, z: Tensor) -> Tensor:
        """I2V conditioning latents: CogVideoX 1.5 I2V (invert_scale_latents) divides where others multiply."""
        if self.config.invert_scale_latents:
            return z / self.config.scaling_factor
        return z * self.config.scaling_factor

    @staticmethod
    def frames_to_latents(num_frames: int, ratio: int = 4) -> int:
        """1 + 4k pixel frames -> 1 + k latent frames."""
        if num_frames < 1 or (num_frames - 1) % ratio:
            raise ValueError(
                f"num_frames must be 1 + {ratio}k (1, {1 + ratio}, {1 + 2 * ratio}, ...), got {num_frames}"
            )
        return (num_frames - 1) // ratio + 1

    @staticmethod
    def latents_to_frames(num_latents: int, ratio: int = 4) -> int:
        """1 + k latent frames -> 1 + 4k pixel frames."""
        if num_latents < 1:
            raise ValueError(f"num_latents must be >= 1, got {num_latents}")
        return ratio * (num_latents - 1) + 1

    # ---- encode
    # ----------------------------------------------------------------------------------------------

    def encode_moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C_in, F, H, W) in [-1, 1] -> posterior (mean, logvar), each (B, C_lat, T, h, w); logvar clamped
        to [-30, 20] as diffusers `DiagonalGaussianDistribution`."""
        self._check_input(video, self.config.in_channels, "video")
        with self._autograd_context(video):
            h = self._encode_params(video.to(self.dtype))  # (B, 2 * C_lat, T, h, w)
        mean, logvar = h.chunk(2, dim=1)  # 2 x (B, C_lat, T, h, w)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, video: Tensor) -> Tensor:
        """Posterior mean (unscaled latents) (B, C_lat, T, h, w)."""
        return self.encode_moments(video)[0].contiguous()

    def sample_posterior(self, video: Tensor, generator: GeneratorArg = None) -> Tensor:
        """mean + std * noise, the noise drawn as diffusers `latent_dist.sample(generator)` draws it."""
        mean, logvar = self.encode_moments(video)
        noise = randn_like_reference(mean.shape, generator, mean.device, mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def _encode_params(self, x: Tensor) -> Tensor:
        t = self.spatial_tiling
        if t is not None and (x.shape[-1] > t.tile_sample_min_width or x.shape[-2] > t.tile_sample_min_height):
            return self._tiled(x, encode=True)
        return self._encode_frames(x)

    def _encode_frames(self, x: Tensor) -> Tensor:
        """Frame-batched encode of (B, C_in, F, H, W) with one conv cache (§3.5)."""

        def run(xc: Tensor, cache: ConvCache) -> Tensor:
            h = self.encoder(xc, cache)  # (B, 2 * C_lat, T_chunk, h, w)
            return self.quant_conv(h) if self.quant_conv is not None else h

        return _run_chunked(x, ENCODE_FRAME_BATCH, run, self._encoded_frames)

    # ---- decode
    # ----------------------------------------------------------------------------------------------

    def decode(self, z: Tensor, temporal_tiling: TemporalTiling | None = None) -> Tensor:
        """Unscaled latents (B, C_lat, T, h, w) -> video (B, C_out, F, H, W) in about [-1, 1].

        F = 1 + 4(T-1) for odd T (the native layout). Even T follows the reference: chunks of 2 latents decode
        to 8 frames each, so F = 4T. With `temporal_tiling` and T > window, F = 1 + 4(T-1) always.
        """
        self._check_input(z, self.config.latent_channels, "latents")
        with self._autograd_context(z):
            z = z.to(self.dtype)
            if temporal_tiling is None or z.shape[2] <= temporal_tiling.window:
                return self._decode_spatial(z)
            return self._decode_temporal_tiles(z, temporal_tiling)

    def _decode_spatial(self, z: Tensor) -> Tensor:
        t = self.spatial_tiling
        if t is not None:
            s = self.config.spatial_compression
            if z.shape[-1] > int(t.tile_sample_min_width / s) or z.shape[-2] > int(t.tile_sample_min_height / s):
                return self._tiled(z, encode=False)
        return self._decode_frames(z)

    def _decode_frames(self, z: Tensor) -> Tensor:
        """Frame-batched decode of (B, C_lat, T, h, w) with one conv cache (§3.5)."""

        def run(zc: Tensor, cache: ConvCache) -> Tensor:  # (B, C_lat, T_chunk, h, w) -> (B, C_out, F_chunk, H, W)
            if self.post_quant_conv is not None:
                zc = self.post_quant_conv(zc)
            return self.decoder(zc, cache)

        return _run_chunked(z, DECODE_LATENT_BATCH, run, self._decoded_frames)

    def _decode_temporal_tiles(self, z: Tensor, tiling: TemporalTiling) -> Tensor:
        """Decode overlapping latent windows independently and blend their shared pixel frames linearly."""
        ratio = int(self.config.temporal_compression_ratio)
        windows = temporal_windows(z.shape[2], tiling)
        weights = temporal_blend_weights(z.shape[2], tiling, ratio)  # (n_windows, F) float64
        out: Tensor | None = None
        for k, (s, e) in enumerate(windows):
            x = self._decode_spatial(z[:, :, s:e])  # (B, C_out, F_window, H, W)
            f0, f1 = window_frame_range(s, e, ratio)
            assert x.shape[2] == f1 - f0
            w = weights[k, f0:f1].to(device=x.device, dtype=x.dtype).view(1, 1, -1, 1, 1)  # (F_w,) -> (1, 1, F_w, 1, 1)
            if out is None:
                out = x.new_zeros(*x.shape[:2], weights.shape[1], *x.shape[3:])  # (B, C_out, F, H, W)
            if _no_autograd():
                out[:, :, f0:f1].add_(x.mul_(w))
            else:
                out[:, :, f0:f1] += x * w
            del x
        assert out is not None
        return out

    # ---- spatial tiling (§3.6)
    # -------------------------------------------------------------------------------

    def _tiled(self, x: Tensor, encode: bool) -> Tensor:
        """Tiled encode (pixels in) or decode (latents in) with the reference tile / stride / blend math.

        Tiles start every `stride` rows/cols of the input and span `tile` of them; each is run on its own
        (frame-batched, own conv cache), blended into its upper and left neighbours over `blend` output
        rows/cols and cropped to `keep`. Unlike the reference, which holds every tile until the end, we hold
        only the blend margins of the previous row and of the left tile, and write kept parts into the output
        at once.
        """
        cfg, t = self.config, self.spatial_tiling
        assert t is not None
        s = cfg.spatial_compression
        sample_tile = (t.tile_sample_min_height, t.tile_sample_min_width)
        latent_tile = (int(sample_tile[0] / s), int(sample_tile[1] / s))
        factors = (t.overlap_height, t.overlap_width)
        tile_in, tile_out = (sample_tile, latent_tile) if encode else (latent_tile, sample_tile)
        stride = tuple(int(tile_in[d] * (1 - factors[d])) for d in range(2))
        blend = tuple(int(tile_out[d] * factors[d]) for d in range(2))
        keep = tuple(tile_out[d] - blend[d] for d in range(2))
        if min(stride) <= 0:
            raise ValueError(f"tile size {sample_tile} too small for overlap {factors}")
        run = self._encode_frames if encode else self._decode_frames

        def out_len(n: int) -> int:  # output rows of an n-row input tile
            if not encode:
                return n * s
            for _ in range(len(cfg.block_out_channels) - 1):
                n //= 2
            return n

        rows = _tiles(x.shape[-2], tile_in[0], stride[0])
        cols = _tiles(x.shape[-1], tile_in[1], stride[1])
        out_h = sum(min(keep[0], out_len(b - a)) for a, b in rows)
        out_w = sum(min(keep[1], out_len(b - a)) for a, b in cols)

        out: Tensor | None = None
        above: list[Tensor] = []  # bottom `blend[0]` rows of each finished tile of the previous row
        y0 = 0
        for i0, i1 in rows:
            current: list[Tensor] = []
            left: Tensor | None = None  # right `blend[1]` cols of the finished tile to the left
            x0 = 0
            for j, (j0, j1) in enumerate(cols):
                tile = run(x[:, :, :, i0:i1, j0:j1])  # (B, C_out, T, tile_h, tile_w)
                if above:
                    _blend_into(above[j], tile, blend[0], dim=3)
                if left is not None:
                    _blend_into(left, tile, blend[1], dim=4)
                if out is None:
                    out = tile.new_empty(*tile.shape[:3], out_h, out_w)  # (B, C_out, T, H_out, W_out)
                kept = tile[:, :, :, : keep[0], : keep[1]]
                out[:, :, :, y0 : y0 + kept.shape[3], x0 : x0 + kept.shape[4]] = kept
                x0 += kept.shape[4]
                current.append(tile[:, :, :, -blend[0] :].clone() if blend[0] else tile[:, :, :, :0])
                left = tile[:, :, :, :, -blend[1] :].clone() if blend[1] else None
                del tile, kept
            y0 += min(keep[0], out_len(i1 - i0))
            above = current
        assert out is not None
        return out

    # ---- helpers
    # ---------------------------------------------------------------------------------------------

    def _encoded_frames(self, f: int) -> int:
        for _ in range(self.config.temporal_levels):
            f = _down_frames(f)
        return f

    def _decoded_frames(self, t: int) -> int:
        for _ in range(self.config.temporal_levels):
            t = _up_frames(t)
        return t

    def _autograd_context(self, x: Tensor) -> contextlib.AbstractContextManager[Any]:
        """no_grad when nothing needs a gradient, which also enables the in-place paths. (Not inference_mode:
        its tensors could not be saved for backward later, e.g. latents fed to a trained transformer.)"""
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return contextlib.nullcontext()
        return torch.no_grad()

    @staticmethod
    def _check_input(x: Tensor, channels: int, what: str) -> None:
        if x.dim() != 5 or x.shape[1] != channels or min(x.shape[2:]) < 1:
            raise ValueError(f"{what} must be (B, {channels}, frames, height, width), got {tuple(x.shape)}")

    def forward(self, video: Tensor, sample_posterior: bool = False, generator: GeneratorArg = None) -> Tensor:
        """Reconstruction: decode(posterior sample or mean)."""
        z = self.sample_posterior(video, generator) if sample_posterior else self.encode(video)
        return self.decode(z)
