"""Pure math for the CogVideoX transformer: timestep sinusoids, 3D sin-cos tables, 3D RoPE, modulation.

Every function here is small, stateless and reproduces one reference behaviour of the diffusers CogVideoX
implementation (see `shared/reference/diffusers-cogvideox.md` §2.6-§2.8), including its numerical quirks:
float32 positions fed into float64 sin-cos math, the `stop*(n-1)/n` RoPE linspace end point, banker's rounding
in the crop region, and RoPE rotation computed in float32.

Dimension legend
    B batch, C channels, T latent frames (or temporal token groups), H, W latent height / width,
    h, w token grid height / width (H // p, W // p), L tokens, D width, N heads, K head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "timestep_embedding",
    "sincos_1d",
    "sincos_3d_table",
    "resize_crop_region",
    "rope_1d",
    "rope_3d",
    "rope_pairs",
    "rope_complex",
    "rotate_pairs",
    "apply_rope",
    "modulate",
]


def timestep_embedding(
    t: Tensor, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0, max_period: float = 10000.0
) -> Tensor:
    """Sinusoidal timestep features `(B,) -> (B, dim)` float32 (DDPM style, as diffusers `Timesteps`).

    freqs_i = exp(-ln(max_period) * i / (dim//2 - freq_shift)); output [cos, sin] when `flip_sin_to_cos`
    (CogVideoX), else [sin, cos]; an odd `dim` is zero-padded by one column.
    """
    if t.ndim != 1:
        raise ValueError(f"timesteps must be 1-D (B,), got shape {tuple(t.shape)}")
    half = dim // 2
    # arange in float32 then divide: the same rounding as the reference.
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device)
    exponent = exponent / (half - freq_shift)
    args = t[:, None].float() * torch.exp(exponent)[None, :]  # (B, half)
    sin, cos = torch.sin(args), torch.cos(args)
    emb = torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)  # (B, 2*half)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """1D sin-cos features of positions `(M,) -> (M, dim)` in float64, laid out [sin | cos].

    omega_i = 1 / 10000^(i / (dim/2)); the positions are promoted to float64 as given (the reference builds
    them in float32 first, which `sincos_3d_table` reproduces).
    """
    if dim % 2 != 0:
        raise ValueError(f"sin-cos dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device)
    omega = 1.0 / 10000 ** (omega / (dim / 2.0))  # (dim/2,)
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]  # (M, dim/2) outer product
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, dim)


def sincos_3d_table(
    dim: int,
    grid_h: int,
    grid_w: int,
    frames: int,
    spatial_interp: float = 1.875,
    temporal_interp: float = 1.0,
    device: torch.device | None = None,
) -> Tensor:
    """CogVideoX 3D sin-cos absolute position table `(frames*grid_h*grid_w, dim)` in float64.

    Token order is (t, h, w) row-major. Features per token: [temporal (dim/4) | w-part (3dim/8) | h-part
    (3dim/8)], exactly the reference `get_3d_sincos_pos_embed` layout (its meshgrid puts the w coordinate
    first). Positions are `arange / interpolation_scale` computed in float32, as the reference does.
    """
    if dim % 16 != 0:
        raise ValueError(f"3D sin-cos needs dim divisible by 16, got {dim}")
    dim_s, dim_t = 3 * dim // 4, dim // 4
    pos_h = torch.arange(grid_h, dtype=torch.float32, device=device) / spatial_interp
    pos_w = torch.arange(grid_w, dtype=torch.float32, device=device) / spatial_interp
    pos_t = torch.arange(frames, dtype=torch.float32, device=device) / temporal_interp
    emb_t = sincos_1d(dim_t, pos_t)  # (T, dim/4)
    emb_w = sincos_1d(dim_s // 2, pos_w)  # (w, 3dim/8)
    emb_h = sincos_1d(dim_s // 2, pos_h)  # (h, 3dim/8)
    table = torch.cat(
        [
            emb_t[:, None, None, :].expand(frames, grid_h, grid_w, dim_t),
            emb_w[None, None, :, :].expand(frames, grid_h, grid_w, dim_s // 2),
            emb_h[None, :, None, :].expand(frames, grid_h, grid_w, dim_s // 2),
        ],
        dim=-1,
    )  # (T, h, w, dim)
    return table.reshape(frames * grid_h * grid_w, dim)  # (T*h*w, dim)


def resize_crop_region(grid_h: int, grid_w: int, base_h: int, base_w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a (grid_h, grid_w) token grid sits inside the (base_h, base_w) training grid, for 1.0 RoPE.

    Fit the grid's aspect ratio into the base grid and centre it; Python `round` (banker's rounding) as the
    reference `get_resize_crop_region_for_grid`. Returns ((top, left), (bottom, right)).
    """
    if grid_h / grid_w > base_h / base_w:
        rh, rw = base_h, int(round(base_h / grid_h * grid_w))
    else:
        rw, rh = base_w, int(round(base_w / grid_w * grid_h))
    top = int(round((base_h - rh) / 2.0))
    left = int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def rope_1d(dim: int, pos: Tensor, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Per-pair RoPE angles for positions `(M,)`: (cos, sin) each `(M, dim/2)` float32.

    freqs_j = 1 / theta^(2j/dim) in float32 (reference `get_1d_rotary_pos_embed`); pair j rotates features
    (2j, 2j+1). The reference repeats each column twice (`repeat_interleave`); `rope_3d` does that.
    """
    if dim % 2 != 0:
        raise ValueError(f"RoPE axis dim must be even, got {dim}")
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=pos.device) / dim))
    angles = pos.to(torch.float32)[:, None] * freqs[None, :]  # (M, dim/2) outer product
    return angles.cos(), angles.sin()


def rope_pairs(
    head_dim: int,
    grid_h: int,
    grid_w: int,
    frames: int,
    crop: tuple[tuple[int, int], tuple[int, int]] | None = None,
    grid_type: str = "linspace",
    max_size: tuple[int, int] | None = None,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """3D RoPE per rotation pair: (cos, sin) each `(frames*grid_h*grid_w, head_dim/2)` float32.

    Head-dim split: t gets K/4, h and w get 3K/8 each (16/24/24 for K=64), concatenated [t | h | w] per token
    in (t, h, w) order. Positions (reference `get_3d_rotary_pos_embed`):
      - "linspace" (CogVideoX 1.0): h = linspace(top, bottom*(h-1)/h, h), w likewise from the crop region
        (`resize_crop_region`); the end point `stop*(n-1)/n` is the reference quirk. crop=None means the
        grid fills the base grid, ((0, 0), (grid_h, grid_w)), i.e. integer positions.
      - "slice" (CogVideoX 1.5): integer positions 0..n-1; `max_size` (base_h, base_w) must cover the grid.
    """
    dim_t, dim_h, dim_w = head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3
    if dim_t + dim_h + dim_w != head_dim or dim_t % 2 or dim_h % 2:
        raise ValueError(f"3D RoPE needs head_dim divisible by 16 (t/h/w split K/4, 3K/8, 3K/8), got {head_dim}")
    f32 = torch.float32
    if grid_type == "linspace":
        (top, left), (bottom, right) = crop if crop is not None else ((0, 0), (grid_h, grid_w))
        pos_h = torch.linspace(top, bottom * (grid_h - 1) / grid_h, grid_h, device=device, dtype=f32)
        pos_w = torch.linspace(left, right * (grid_w - 1) / grid_w, grid_w, device=device, dtype=f32)
        pos_t = torch.linspace(0, frames * (frames - 1) / frames, frames, device=device, dtype=f32)
    elif grid_type == "slice":
        if max_size is not None and (grid_h > max_size[0] or grid_w > max_size[1]):
            raise ValueError(
                f"token grid {grid_h}x{grid_w} exceeds the RoPE table {max_size[0]}x{max_size[1]} "
                "(sample_height//patch_size x sample_width//patch_size); use a smaller resolution"
            )
        pos_h = torch.arange(grid_h, device=device, dtype=f32)
        pos_w = torch.arange(grid_w, device=device, dtype=f32)
        pos_t = torch.arange(frames, device=device, dtype=f32)
    else:
        raise ValueError(f"grid_type must be 'linspace' or 'slice', got {grid_type!r}")
    parts = [rope_1d(dim_t, pos_t, theta), rope_1d(dim_h, pos_h, theta), rope_1d(dim_w, pos_w, theta)]
    size = (frames, grid_h, grid_w)
    out = []
    for i in range(2):  # 0: cos, 1: sin
        t_, h_, w_ = (p[i] for p in parts)
        table = torch.cat(
            [
                t_[:, None, None, :].expand(*size, dim_t // 2),
                h_[None, :, None, :].expand(*size, dim_h // 2),
                w_[None, None, :, :].expand(*size, dim_w // 2),
            ],
            dim=-1,
        )  # (T, h, w, K/2)
        out.append(table.reshape(frames * grid_h * grid_w, head_dim // 2))  # (T*h*w, K/2)
    return out[0], out[1]


def rope_3d(
    head_dim: int,
    grid_h: int,
    grid_w: int,
    frames: int,
    crop: tuple[tuple[int, int], tuple[int, int]] | None = None,
    grid_type: str = "linspace",
    max_size: tuple[int, int] | None = None,
    theta: float = 10000.0,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """3D RoPE in the reference layout: (cos, sin) each `(frames*grid_h*grid_w, head_dim)` float32.

    Same as `rope_pairs` with every pair column repeated twice (`repeat_interleave(2)`), i.e. exactly the
    tensors diffusers' `get_3d_rotary_pos_embed(..., use_real=True)` returns.
    """
    cos, sin = rope_pairs(head_dim, grid_h, grid_w, frames, crop, grid_type, max_size, theta, device)
    return cos.repeat_interleave(2, dim=1), sin.repeat_interleave(2, dim=1)  # (L, K)


def rope_complex(cos: Tensor, sin: Tensor) -> Tensor:
    """Per-pair (cos, sin) `(L, K/2)` float32 -> unit complex rotations `cos + i sin` `(L, K/2)` complex64."""
    return torch.complex(cos.float(), sin.float())


def rotate_pairs(x: Tensor, freqs: Tensor, out: Tensor | None = None) -> Tensor:
    """Rotate interleaved feature pairs of `x (..., K)` by unit complex numbers `freqs` broadcastable to
    `(..., K/2)` (complex64): out[2j] = x[2j] cos_j - x[2j+1] sin_j, out[2j+1] = x[2j] sin_j + x[2j+1] cos_j.

    Computed in float32 and cast back to x.dtype, as the reference `apply_rotary_emb(use_real_unbind_dim=-1)`
    (`(x.float()*cos + rot(x).float()*sin).to(x.dtype)`). One complex multiply does the same products and
    sums as the reference's four real passes (bit-identical on CPU, tested), without its temporaries.
    `out` (same shape and dtype as x, any strides, may be x itself) receives the result without autograd:
    the model uses it to rotate and change memory layout in one pass.
    """
    if out is None:
        xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (..., K/2) complex view
        return torch.view_as_real(xc * freqs).flatten(-2).to(x.dtype)  # (..., K)
    if x.dtype == out.dtype == torch.float32:
        xc = torch.view_as_complex(x.unflatten(-1, (-1, 2)))  # (..., K/2) complex views of x and out
        torch.mul(xc, freqs, out=torch.view_as_complex(out.unflatten(-1, (-1, 2))))  # (..., K/2) complex
        return out
    xf = x.float()
    torch.view_as_complex(xf.unflatten(-1, (-1, 2))).mul_(freqs)  # (..., K) -> (..., K/2) complex, in place
    return out.copy_(xf)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Reference-layout RoPE: `x (B, N, L, K)`, `cos, sin (L, K)` pair-repeated (as `rope_3d` returns)."""
    return rotate_pairs(x, rope_complex(cos[:, ::2], sin[:, ::2]))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN modulation `x (B, L, D) * (1 + scale (B, D)) + shift (B, D)` (DiT; CogVideoX expert AdaLN)."""
    return x * (1 + scale)[:, None, :] + shift[:, None, :]
