"""CogVideoX "expert" diffusion transformer, weight-compatible with diffusers `CogVideoXTransformer3DModel`.

One file, top to bottom: config -> embeddings -> attention / feed-forward / block -> model -> FLOP count.
Facts reproduced (shared/reference/diffusers-cogvideox.md §2, §5.1 step 4, §5.2, §10):
  - text and video tokens share one stream `[text; video]` through full self-attention and one feed-forward;
    only the AdaLN modulation is per modality ("expert AdaLN"), the LayerNorm weights are shared;
  - per-head q/k LayerNorm (eps 1e-6), 3D RoPE on video tokens only (5B / 1.5), 3D sin-cos absolute
    positions (2B), a learned absolute table for 5B-I2V, an `ofs` embedding for 1.5-I2V;
  - 1.0 patchifies each frame with a p x p conv, 1.5 with a Linear over (C, pt, p, p) features.
The model builds its own position information from the input shape (exactly what the diffusers pipeline's
`_prepare_rotary_positional_embeddings` builds) and caches it per (shape, device, dtype).

Every state-dict key equals the diffusers key, so `load_state_dict(diffusers_model.state_dict(), strict=True)`
works both ways for all five published variants.

Dimension legend
    B batch, C channels, T latent frames, H, W latent height / width, p / pt spatial / temporal patch,
    t' = T // pt token frames, h = H // p, w = W // p, L tokens (Lt text, Lv video), D width, N heads,
    K head dim, E time-embedding width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from cinegen.models.layers import (
    modulate,
    resize_crop_region,
    rope_complex,
    rope_pairs,
    rotate_pairs,
    sincos_3d_table,
    timestep_embedding,
)

__all__ = ["TransformerConfig", "CogVideoXTransformer", "count_flops", "init_dit_weights"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "mish": nn.Mish,
}
_FF_ACTIVATIONS = {"gelu": "none", "gelu-approximate": "tanh"}  # name -> F.gelu(approximate=...)


# ----------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TransformerConfig:
    """Field names and defaults are the diffusers `CogVideoXTransformer3DModel` config.json keys.

    Note `sample_frames` counts *pixel* frames (49 -> 13 latent frames), kept by the reference for backward
    compatibility; `sample_height/width` are latent sizes (60 x 90 = 480 x 720 px).
    """

    num_attention_heads: int = 30
    attention_head_dim: int = 64
    in_channels: int = 16
    out_channels: int | None = 16
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    time_embed_dim: int = 512
    ofs_embed_dim: int | None = None
    text_embed_dim: int = 4096
    num_layers: int = 30
    dropout: float = 0.0
    attention_bias: bool = True
    sample_width: int = 90
    sample_height: int = 60
    sample_frames: int = 49
    patch_size: int = 2
    patch_size_t: int | None = None
    temporal_compression_ratio: int = 4
    max_text_seq_length: int = 226
    activation_fn: str = "gelu-approximate"
    timestep_activation_fn: str = "silu"
    norm_elementwise_affine: bool = True
    norm_eps: float = 1e-5
    spatial_interpolation_scale: float = 1.875
    temporal_interpolation_scale: float = 1.0
    use_rotary_positional_embeddings: bool = False
    use_learned_positional_embeddings: bool = False
    patch_bias: bool = True

    def __post_init__(self) -> None:
        if self.activation_fn not in _FF_ACTIVATIONS:
            raise ValueError(f"activation_fn must be one of {sorted(_FF_ACTIVATIONS)}, got {self.activation_fn!r}")
        if self.timestep_activation_fn.lower() not in _ACTIVATIONS:
            raise ValueError(
                f"timestep_activation_fn must be one of {sorted(_ACTIVATIONS)}, got {self.timestep_activation_fn!r}"
            )
        if self.use_learned_positional_embeddings and not self.use_rotary_positional_embeddings:
            # Same rule as the reference constructor: no checkpoint has learned PE without RoPE.
            raise ValueError("use_learned_positional_embeddings requires use_rotary_positional_embeddings")
        if self.use_learned_positional_embeddings and self.patch_size_t is not None:
            raise ValueError("use_learned_positional_embeddings is only defined for patch_size_t=None (5B-I2V)")
        if self.use_rotary_positional_embeddings and self.attention_head_dim % 16 != 0:
            raise ValueError(f"3D RoPE needs attention_head_dim divisible by 16, got {self.attention_head_dim}")
        if self.ofs_embed_dim and self.ofs_embed_dim != self.time_embed_dim:
            raise ValueError("ofs_embed_dim must equal time_embed_dim (the ofs embedding is added to it)")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformerConfig:
        """Build from a diffusers config.json dict; keys starting with "_" are metadata and ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in names)
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys: {unknown}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return {"_class_name": "CogVideoXTransformer3DModel", **dataclasses.asdict(self)}

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def is_v15(self) -> bool:
        """CogVideoX 1.5 layout: temporal patching with a Linear patch embed."""
        return self.patch_size_t is not None

    @property
    def out_dim_channels(self) -> int:
        # The reference would crash on out_channels=None; predicting in_channels is the natural reading.
        return self.out_channels if self.out_channels is not None else self.in_channels

    @property
    def is_i2v(self) -> bool:
        """Image-to-video layout: the input stacks noise and image latents on C (twice the output channels)."""
        return self.in_channels == 2 * self.out_dim_channels

    @property
    def patch_dim(self) -> int:
        """Features per video token going into / out of the model (C * pt * p * p for one channel set)."""
        return self.patch_size * self.patch_size * (self.patch_size_t or 1)

    @property
    def sample_latent_frames(self) -> int:
        return (self.sample_frames - 1) // self.temporal_compression_ratio + 1


# ------------------------------------------------------------------------------------------------ embeddings


class PatchEmbed(nn.Module):
    """Text projection + video patchify (reference `CogVideoXPatchEmbed`); keys `proj`, `text_proj`,
    and `pos_embedding` (a persistent buffer only for 5B-I2V's learned table)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        D, p = cfg.inner_dim, cfg.patch_size
        self.patch_size, self.patch_size_t = p, cfg.patch_size_t
        if cfg.patch_size_t is None:
            self.proj: nn.Module = nn.Conv2d(cfg.in_channels, D, kernel_size=p, stride=p, bias=cfg.patch_bias)
        else:
            # 1.5: the reference Linear always has a bias, whatever `patch_bias` says.
            self.proj = nn.Linear(cfg.in_channels * p * p * cfg.patch_size_t, D)
        self.text_proj = nn.Linear(cfg.text_embed_dim, D)
        if cfg.use_learned_positional_embeddings:
            # Initialised like the reference: zeros for the text slots, the 3D sin-cos table for video.
            h, w, t = cfg.sample_height // p, cfg.sample_width // p, cfg.sample_latent_frames
            table = sincos_3d_table(
                D, h, w, t, cfg.spatial_interpolation_scale, cfg.temporal_interpolation_scale
            )  # (t*h*w, D)
            pos = torch.zeros(1, cfg.max_text_seq_length + t * h * w, D)  # (1, Lt + Lv, D)
            pos[0, cfg.max_text_seq_length :] = table.float()
            self.register_buffer("pos_embedding", pos, persistent=True)

    def patchify(self, x: Tensor) -> Tensor:
        """Video latents `(B, T, C, H, W)` -> tokens `(B, t'*h*w, D)` in (t, h, w) order."""
        B, T, C, H, W = x.shape
        p, pt = self.patch_size, self.patch_size_t
        if pt is None:
            y = self.proj(x.reshape(B * T, C, H, W))  # (B*T, D, h, w)
            return y.flatten(2).transpose(1, 2).reshape(B, -1, y.shape[1])  # (B, T*h*w, D)
        y = x.reshape(B, T // pt, pt, C, H // p, p, W // p, p)  # (B, t', pt, C, h, p, w, p)
        y = y.permute(0, 1, 4, 6, 3, 2, 5, 7)  # (B, t', h, w, C, pt, p, p): reference feature order
        return self.proj(y.reshape(B, -1, C * pt * p * p))  # (B, t'*h*w, D)


class TimestepMLP(nn.Module):
    """`linear_1 -> act -> linear_2` (reference `TimestepEmbedding` without cond/post-act)."""

    def __init__(self, in_dim: int, out_dim: int, act: str) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = _ACTIVATIONS[act.lower()]()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


# ------------------------------------------------------------------------------------------------- the block


class ExpertAdaLN(nn.Module):
    """Shared LayerNorm + per-modality modulation from the time embedding (`CogVideoXLayerNormZero`).

    Reference chunk order: shift, scale, gate, enc_shift, enc_scale, enc_gate.
    """

    def __init__(self, cond_dim: int, dim: int, affine: bool, eps: float) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 6 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: Tensor, n_text: int, temb: Tensor, inplace: bool) -> tuple[Tensor, Tensor, Tensor]:
        """x `(B, L, D)` = [text; video] -> (modulated x, text gate (B, 1, D), video gate (B, 1, D))."""
        mods = self.linear(F.silu(temb)).chunk(6, dim=1)  # 6 x (B, D)
        shift, scale, gate, e_shift, e_scale, e_gate = (m[:, None, :] for m in mods)  # (B, 1, D) each
        n = self.norm(x)  # per-token LayerNorm: one call for both modalities == the reference's two calls
        # Same ops as the reference's `norm(.) * (1 + scale) + shift` per modality, without concatenation.
        if inplace and _keeps_dtype(n, scale, e_scale):  # inference: modulate the rows where they are
            n[:, :n_text].mul_(1 + e_scale).add_(e_shift)
            n[:, n_text:].mul_(1 + scale).add_(shift)
            return n, e_gate, gate
        # Autograd-safe: in-place ops only on values no backward formula needs (the product m, not n).
        m = n * (1 + scale)  # (B, L, D), video scale on every row ...
        m[:, :n_text] = n[:, :n_text] * (1 + e_scale)  # ... text rows overwritten with the text scale
        m[:, :n_text].add_(e_shift)
        m[:, n_text:].add_(shift)
        return m, e_gate, gate


def _keeps_dtype(dst: Tensor, *others: Tensor) -> bool:
    """True when writing `dst op others` into dst keeps the reference's result dtype (type promotion)."""
    return all(torch.promote_types(dst.dtype, o.dtype) == dst.dtype for o in others)


def _gated_residual(x: Tensor, y: Tensor, n_text: int, gate_t: Tensor, gate_v: Tensor, inplace: bool) -> Tensor:
    """x + gate * y with the text gate on the first n_text tokens and the video gate on the rest.

    Same products (gate * y) and sums (gate * y + x == x + gate * y) as the reference, written into memory
    the caller does not need any more; x (the block input) is never modified, so wrapping blocks in any
    checkpointing scheme stays correct.
    """
    if not _keeps_dtype(y, x, gate_t, gate_v):  # mixed dtypes: let type promotion decide, as the reference
        return _cat_tokens(x[:, :n_text] + gate_t * y[:, :n_text], x[:, n_text:] + gate_v * y[:, n_text:])
    if inplace:  # inference: y is a temporary we own
        y[:, :n_text].mul_(gate_t)
        y[:, n_text:].mul_(gate_v)
        return y.add_(x)
    # Autograd-safe: the product is new, and adding into it in place needs no saved value.
    g = y * gate_v  # (B, L, D), video gate on every row ...
    g[:, :n_text] = y[:, :n_text] * gate_t  # ... text rows overwritten with the text gate
    return g.add_(x)


class Attention(nn.Module):
    """Joint self-attention over `[text; video]` (reference `Attention` + `CogVideoXAttnProcessor2_0`)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        D, K = cfg.inner_dim, cfg.attention_head_dim
        self.heads, self.head_dim = cfg.num_attention_heads, K
        self.to_q = nn.Linear(D, D, bias=cfg.attention_bias)
        self.to_k = nn.Linear(D, D, bias=cfg.attention_bias)
        self.to_v = nn.Linear(D, D, bias=cfg.attention_bias)
        # The reference always builds affine q/k norms with eps 1e-6 (independent of norm_elementwise_affine).
        self.norm_q = nn.LayerNorm(K, eps=1e-6)
        self.norm_k = nn.LayerNorm(K, eps=1e-6)
        # The reference does not pass the model dropout to attention: its output dropout is p=0.
        self.to_out = nn.ModuleList([nn.Linear(D, D, bias=True), nn.Dropout(0.0)])

    def forward(self, x: Tensor, rope: Tensor | None, inplace: bool, attn_mask: Tensor | None = None) -> Tensor:
        """x `(B, L, D)`; rope `(L, 1, K/2)` complex rotations, identity on the text rows; attn_mask an
        optional SDPA mask `(L, L)` (bool: True = attend), e.g. block-diagonal for packed clips. The reference
        uses no mask."""
        B, L, _ = x.shape
        N, K = self.heads, self.head_dim
        # q/k LayerNorm over K directly on the (B, L, N, K) projections (the reference transposes first and
        # normalises a strided copy; per-row LayerNorm is the same either way).
        q = self.norm_q(self.to_q(x).view(B, L, N, K))  # (B, L, N, K)
        k = self.norm_k(self.to_k(x).view(B, L, N, K))  # (B, L, N, K)
        v = self.to_v(x).view(B, L, N, K)  # (B, L, N, K)
        # RoPE after the q/k norm on video rows only: text rows rotate by 1 + 0i, an exact no-op, so the whole
        # sequence rotates at once (the reference rotates a slice and copies it back into q and k).
        if inplace:
            # Inference: write q, k, v heads-first and contiguous; RoPE and the layout change share one pass,
            # and the CPU attention kernel runs measurably faster on contiguous (B, N, L, K) inputs.
            q, k, v = (_heads_first(t, rope if t is not v else None) for t in (q, k, v))  # (B, N, L, K)
        else:
            if rope is not None:
                q, k = rotate_pairs(q, rope), rotate_pairs(k, rope)
            q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # (B, N, L, K)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, N, L, K), scale 1/sqrt(K)
        o = o.transpose(1, 2).reshape(B, L, N * K)  # (B, L, D); a view for the CPU/flash (B, L, N, K) layout
        return self.to_out[1](self.to_out[0](o))


def _heads_first(x: Tensor, rope: Tensor | None) -> Tensor:
    """`(B, L, N, K)` -> contiguous `(B, N, L, K)`, rotated by `rope` on the way when given (no autograd)."""
    B, L, N, K = x.shape
    out = x.new_empty(B, N, L, K)  # (B, N, L, K) memory
    if rope is None:
        return out.copy_(x.transpose(1, 2))  # (B, L, N, K) -> (B, N, L, K)
    rotate_pairs(x, rope, out=out.transpose(1, 2))  # writes through the (B, L, N, K) view
    return out


class GELUProj(nn.Module):
    """`proj` Linear followed by GELU (reference `GELU` activation module; key `ff.net.0.proj`)."""

    def __init__(self, dim_in: int, dim_out: int, approximate: str) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x)
        if torch.is_grad_enabled():
            return F.gelu(h, approximate=self.approximate)
        # Inference: the (B, L, 4D) hidden is the largest activation; overwrite it instead of allocating
        # a second one (same kernel, same values).
        return torch.ops.aten.gelu_(h, approximate=self.approximate)


class FeedForward(nn.Module):
    """`net = [GELU(proj D->4D), Dropout, Linear 4D->D, Dropout]` (reference `FeedForward`, final_dropout)."""

    def __init__(self, dim: int, dropout: float, activation_fn: str) -> None:
        super().__init__()
        self.net = nn.ModuleList(
            [
                GELUProj(dim, 4 * dim, _FF_ACTIVATIONS[activation_fn]),
                nn.Dropout(dropout),
                nn.Linear(4 * dim, dim),
                nn.Dropout(dropout),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class Block(nn.Module):
    """One CogVideoX block (reference `CogVideoXBlock`) on the joint stream x = [text; video] `(B, L, D)`.

    Without autograd (inference) the block updates x in place and reuses its temporaries; with autograd it
    builds new tensors. Both compute the reference's values (tests compare both paths to diffusers).
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        D, E = cfg.inner_dim, cfg.time_embed_dim
        self.norm1 = ExpertAdaLN(E, D, cfg.norm_elementwise_affine, cfg.norm_eps)
        self.attn1 = Attention(cfg)
        self.norm2 = ExpertAdaLN(E, D, cfg.norm_elementwise_affine, cfg.norm_eps)
        self.ff = FeedForward(D, cfg.dropout, cfg.activation_fn)

    def forward(
        self, x: Tensor, n_text: int, temb: Tensor, rope: Tensor | None, attn_mask: Tensor | None = None
    ) -> Tensor:
        """x `(B, L, D)` with the first n_text tokens text; temb `(B, E)`; rope as `Attention`."""
        inplace = not torch.is_grad_enabled()
        h, gate_t, gate_v = self.norm1(x, n_text, temb, inplace)
        a = self.attn1(h, rope, inplace, attn_mask)  # (B, L, D)
        x = _gated_residual(x, a, n_text, gate_t, gate_v, inplace)
        h, gate_t, gate_v = self.norm2(x, n_text, temb, inplace)
        f = self.ff(h)  # (B, L, D)
        return _gated_residual(x, f, n_text, gate_t, gate_v, inplace)


def _cat_tokens(text: Tensor, video: Tensor) -> Tensor:
    """Join `(B, Lt, D)` and `(B, Lv, D)` into `(B, Lt + Lv, D)`."""
    return torch.cat([text, video], dim=1)


class FinalAdaLN(nn.Module):
    """Output AdaLN (reference `AdaLayerNorm(chunk_dim=1)`): shift FIRST, then scale."""

    def __init__(self, cond_dim: int, dim: int, affine: bool, eps: float) -> None:
        super().__init__()
        self.linear = nn.Linear(cond_dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        shift, scale = self.linear(F.silu(temb)).chunk(2, dim=1)  # (B, D) each
        n = self.norm(x)
        if torch.is_grad_enabled() or not _keeps_dtype(n, shift, scale):
            return modulate(n, shift, scale)
        return n.mul_(1 + scale[:, None, :]).add_(shift[:, None, :])  # same ops as `modulate`, in place


# ------------------------------------------------------------------------------------------------- the model


class CogVideoXTransformer(nn.Module):
    """CogVideoX expert DiT: `(B, T, C_in, H, W)` latents + `(B, Lt, D_text)` text + `(B,)` timesteps ->
    `(B, T, C_out, H, W)` prediction (v-prediction for the published weights)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = cfg = config
        D, E = cfg.inner_dim, cfg.time_embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        # The timestep sinusoid has D channels (not E), as the reference `Timesteps(inner_dim, ...)`.
        self.time_embedding = TimestepMLP(D, E, cfg.timestep_activation_fn)
        self.ofs_embedding = (
            TimestepMLP(cfg.ofs_embed_dim, cfg.ofs_embed_dim, cfg.timestep_activation_fn) if cfg.ofs_embed_dim else None
        )
        self.transformer_blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.num_layers)])
        self.norm_final = nn.LayerNorm(D, eps=cfg.norm_eps, elementwise_affine=cfg.norm_elementwise_affine)
        self.norm_out = FinalAdaLN(E, D, cfg.norm_elementwise_affine, cfg.norm_eps)
        self.proj_out = nn.Linear(D, cfg.patch_dim * cfg.out_dim_channels)
        self.gradient_checkpointing = False
        self._pos_cache: dict[tuple[Any, ...], Any] = {}

    # -- position information, built from the input shape and cached -----------------------------------

    def _cached(self, key: tuple[Any, ...], build: Any) -> Any:
        if key not in self._pos_cache:
            if len(self._pos_cache) >= 16:  # many shapes in one process: keep memory bounded
                self._pos_cache.clear()
            # Built as ordinary constant tensors even inside torch.inference_mode(): a table first made during
            # a validation sample must still be usable by a later training step's autograd.
            with torch.inference_mode(False), torch.no_grad():
                self._pos_cache[key] = build()
        return self._pos_cache[key]

    def sincos_table(self, t: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """3D sin-cos table `(t*h*w, D)` for a token grid, float64 math cast once to `dtype` (as the
        reference's `pos_embedding.to(embeds.dtype)`)."""
        cfg = self.config

        def build() -> Tensor:
            table = sincos_3d_table(
                cfg.inner_dim,
                h,
                w,
                t,
                cfg.spatial_interpolation_scale,
                cfg.temporal_interpolation_scale,
                device=device,
            )
            return table.to(dtype)

        return self._cached(("sincos", t, h, w, device, dtype), build)

    def rope_tables(self, t: int, h: int, w: int, n_text: int, device: torch.device) -> Tensor:
        """RoPE rotations `(Lt + t*h*w, 1, K/2)` complex64 (broadcast over heads), identity for text rows.

        Positions as the reference pipeline builds them from latent H, W, T: 1.0 uses the crop region of the
        grid inside the base grid (sample_height//p x sample_width//p) with `linspace`; 1.5 uses integer
        ("slice") positions with that base grid as max size.
        """
        cfg = self.config

        def build() -> Tensor:
            base_h, base_w = cfg.sample_height // cfg.patch_size, cfg.sample_width // cfg.patch_size
            K = cfg.attention_head_dim
            if cfg.patch_size_t is None:
                crop = resize_crop_region(h, w, base_h, base_w)
                cos, sin = rope_pairs(K, h, w, t, crop=crop, device=device)
            else:
                cos, sin = rope_pairs(K, h, w, t, grid_type="slice", max_size=(base_h, base_w), device=device)
            ones = torch.ones(n_text, K // 2, device=device)
            zeros = torch.zeros(n_text, K // 2, device=device)
            freqs = rope_complex(torch.cat([ones, cos]), torch.cat([zeros, sin]))  # (Lt + Lv, K/2)
            return freqs[:, None, :]  # (Lt + Lv, 1, K/2): broadcast over the heads of (B, L, N, K/2)

        return self._cached(("rope", t, h, w, n_text, device), build)

    def _check_shape(self, T: int, H: int, W: int) -> None:
        cfg, p = self.config, self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"latent height/width must be divisible by patch_size={p}, got {H}x{W}")
        if cfg.patch_size_t is not None and T % cfg.patch_size_t:
            raise ValueError(
                f"CogVideoX 1.5 needs the number of latent frames to be divisible by patch_size_t="
                f"{cfg.patch_size_t}, got T={T}; pad the latents (the reference pipeline prepends "
                f"{cfg.patch_size_t - T % cfg.patch_size_t} frame(s)) or pick 16N+1 pixel frames"
            )
        if cfg.use_learned_positional_embeddings and (cfg.sample_height, cfg.sample_width) != (H, W):
            raise ValueError(
                f"this model (CogVideoX-5b-I2V style) has a learned position table for latent "
                f"{cfg.sample_height}x{cfg.sample_width} only ({cfg.sample_height * 8}x{cfg.sample_width * 8} px); "
                f"got latent {H}x{W}"
            )

    def _add_abs_positions(self, x: Tensor, n_text: int, t: int, h: int, w: int, T: int) -> Tensor:
        """Add the absolute position embedding (2B sin-cos, 5B-I2V learned) to x = [text; video]."""
        cfg = self.config
        if cfg.use_rotary_positional_embeddings and not cfg.use_learned_positional_embeddings:
            return x
        frames_px = (T - 1) * cfg.temporal_compression_ratio + 1
        if cfg.use_learned_positional_embeddings and frames_px == cfg.sample_frames:
            pos = self.patch_embed.pos_embedding  # (1, Lt_max + Lv, D), includes (learned) text slots
            if n_text != cfg.max_text_seq_length:
                raise ValueError(
                    f"the learned position table needs exactly max_text_seq_length={cfg.max_text_seq_length} "
                    f"text tokens, got {n_text}"
                )
            return x.add_(pos.to(x.dtype))  # x is a fresh concatenation: adding in place is autograd-safe
        # Sin-cos (2B; and the reference's silent fallback for 5B-I2V at another frame count). The text
        # slots of the reference table are zeros, so adding to video tokens only is the same sum.
        x[:, n_text:].add_(self.sincos_table(t, h, w, x.device, x.dtype))  # table (Lv, D)
        return x

    # -- forward ---------------------------------------------------------------------------------------------

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        timestep: Tensor | float | int,
        ofs: Tensor | float | None = None,
    ) -> Tensor:
        """hidden_states `(B, T, C_in, H, W)`, encoder_hidden_states `(B, Lt, D_text)`, timestep `(B,)`
        (or a scalar), ofs `(B,)`/`(1,)` for 1.5-I2V -> `(B, T, C_out, H, W)`."""
        cfg = self.config
        B, T, C, H, W = hidden_states.shape
        if cfg.in_channels != C:
            raise ValueError(f"expected {cfg.in_channels} latent channels at dim 2 of (B, T, C, H, W), got {C}")
        self._check_shape(T, H, W)
        p, pt = cfg.patch_size, cfg.patch_size_t or 1
        t, h, w = T // pt, H // p, W // p
        n_text = encoder_hidden_states.shape[1]
        dtype, device = hidden_states.dtype, hidden_states.device

        # 1. time (+ ofs) embedding; the sinusoid is float32, then cast to the latent dtype (reference).
        timestep = torch.as_tensor(timestep, device=device)
        if timestep.ndim == 0:
            timestep = timestep.expand(B)
        t_emb = timestep_embedding(timestep, cfg.inner_dim, cfg.flip_sin_to_cos, cfg.freq_shift)  # (B, D)
        emb = self.time_embedding(t_emb.to(dtype))  # (B, E)
        if self.ofs_embedding is not None:
            if ofs is None:
                raise ValueError("this model has an ofs embedding (CogVideoX 1.5 I2V): pass ofs (reference: 2.0)")
            ofs = torch.as_tensor(ofs, device=device).reshape(-1)  # scalar or (B,) -> (B,) / (1,)
            o_emb = timestep_embedding(ofs, cfg.ofs_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
            emb = emb + self.ofs_embedding(o_emb.to(dtype))  # (B, E)

        # 2. tokens: [text_proj(text); patchify(video)] + absolute positions
        x = _cat_tokens(
            self.patch_embed.text_proj(encoder_hidden_states),  # (B, Lt, D)
            self.patch_embed.patchify(hidden_states),  # (B, Lv, D)
        )
        x = self._add_abs_positions(x, n_text, t, h, w, T)
        x = self.embedding_dropout(x)
        rope = self.rope_tables(t, h, w, n_text, device) if cfg.use_rotary_positional_embeddings else None

        # 3. blocks
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.transformer_blocks:
            if use_ckpt:
                x = checkpoint(block, x, n_text, emb, rope, use_reentrant=False)
            else:
                x = block(x, n_text, emb, rope)

        # 4. output head on video tokens
        v = self.norm_out(self.norm_final(x[:, n_text:]), emb)  # (B, Lv, D)
        v = self.proj_out(v)  # (B, Lv, C_out * pt * p * p)

        # 5. unpatchify; proj_out features are ordered (C, pt, p, p) (reference unpatchify)
        c = cfg.out_dim_channels
        v = v.reshape(B, t, h, w, c, pt, p, p)  # (B, t', h, w, C, pt, p, p)
        v = v.permute(0, 1, 5, 4, 2, 6, 3, 7)  # (B, t', pt, C, h, p, w, p)
        return v.reshape(B, T, c, H, W)  # (B, T, C_out, H, W)


# -------------------------------------------------------------------------------------------------- FLOPs


def count_flops(config: TransformerConfig, T: int, H: int, W: int, L: int, cfg: bool = True) -> int:
    """Analytic multiply-add FLOPs (2 per MAC) of one forward on `(B, T, C, H, W)` latents with L text tokens.

    Per sample, with Lv = (T/pt)(H/p)(W/p) video tokens and S = L + Lv:
        blocks     2 * S * layers * (4 D^2 + 8 D^2)      q, k, v, out projections and the 4x feed-forward
                 + 4 * layers * D * S^2                  Q K^T and A V (2 S^2 D MACs per layer)
        embed      2 * L * D_text * D + 2 * Lv * (C_in p^2 pt) * D
        head       2 * Lv * D * (C_out p^2 pt)
        per-sample 2 * (D E + E^2 + 12 E D + 2 E D [+ 2 E^2 ofs])   (time MLP and the AdaLN linears)
    i.e. the usual 2 * params * tokens + 4 * layers * D * tokens^2; LayerNorm, softmax, GELU and RoPE
    (O(S D) each) are not counted. B = 2 with classifier-free guidance (cfg=True), else 1.
    """
    c = config
    D, E, nl = c.inner_dim, c.time_embed_dim, c.num_layers
    pt = c.patch_size_t or 1
    Lv = (T // pt) * (H // c.patch_size) * (W // c.patch_size)
    S = L + Lv
    blocks = 2 * S * nl * 12 * D * D + 4 * nl * D * S * S
    embed = 2 * L * c.text_embed_dim * D + 2 * Lv * c.in_channels * c.patch_dim * D
    head = 2 * Lv * D * c.out_dim_channels * c.patch_dim
    per_sample = 2 * (D * E + E * E + nl * 12 * E * D + 2 * E * D)
    if c.ofs_embed_dim:
        per_sample += 2 * 2 * c.ofs_embed_dim * c.ofs_embed_dim
    return (2 if cfg else 1) * (blocks + embed + head + per_sample)


# ------------------------------------------------------------------------------------------ from-scratch init


def init_dit_weights(model: CogVideoXTransformer) -> CogVideoXTransformer:
    """DiT's initialisation for training from scratch (Peebles & Xie 2023, "adaLN-Zero"), in place:

    - every Linear (and the patch projection, as a flattened Linear): Xavier-uniform weights, zero biases;
    - the timestep MLP: normal(0, 0.02) weights;
    - every block's modulation (`norm1`/`norm2` `.linear`: shift, scale, gate for text and video): zero, so
      each block starts as the identity (gate 0) and the first LayerNorm scale is 1 + 0;
    - the output modulation and the output projection: zero, so the untrained model predicts 0.

    PyTorch's default (Kaiming-uniform) init, which the reference classes also leave in place, starts every
    residual branch with a random gate of order 0.5. Only the initial values change: the architecture, the
    state-dict keys and the diffusers layout stay the same. Returns `model`.
    """
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    proj = model.patch_embed.proj
    if isinstance(proj, nn.Conv2d):  # (D, C, p, p) initialised as the Linear it is: xavier on (D, C*p*p)
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
    for mlp in (model.time_embedding, model.ofs_embedding):
        if mlp is not None:
            nn.init.normal_(mlp.linear_1.weight, std=0.02)
            nn.init.normal_(mlp.linear_2.weight, std=0.02)
    zero = [b.norm1.linear for b in model.transformer_blocks] + [b.norm2.linear for b in model.transformer_blocks]
    for lin in [*zero, model.norm_out.linear, model.proj_out]:
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
    return model
