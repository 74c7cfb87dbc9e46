"""Multi-resolution frame pack (CogVideoX §3.2 "Multi-Resolution Frame Pack"; NaViT-style packing).

Clips of different durations and resolutions share one token sequence instead of being padded or bucketed:

    x = [text_1; ...; text_k; video_1; ...; video_k]          (1, k·Lt + Σ Lv_i, D)

with a block-diagonal attention mask so that clip i's text and video tokens attend only to each other. Each
clip gets its own position information (3D RoPE tables or sin-cos tables built for its own t x h x w grid, by
the model's own `rope_tables` / `sincos_table`), is patchified and un-patchified on its own, and all clips of a
pack share the pack's timestep (the expert AdaLN modulates a whole row with one time embedding; per-clip
timesteps would need per-token modulation in the model).

Dimension legend: T latent frames, C channels, H/W latent height/width, t/h/w token grid, Lt text tokens,
Lv video tokens, S packed sequence length, D width, E time-embedding width.

This wrapper reuses the model's modules (patch embedding, time embedding, blocks, output head); it adds only
the sequencing. The attention mask reaches `F.scaled_dot_product_attention` through the block's `attn_mask`
argument when the transformer has one; until then through `MaskedAttention`, which swaps the `F` the
transformer module uses for a proxy that adds the current mask (installed for the whole run, so activation
checkpointing recomputes with the same mask in backward).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cinegen.models.layers import timestep_embedding


def block_mask(text_lens: Sequence[int], video_lens: Sequence[int], device: torch.device) -> torch.Tensor:
    """(S, S) bool, True where attention is allowed: same clip. Token order [texts...; videos...]."""
    clip_of = torch.cat(
        [torch.full((n,), i, device=device) for i, n in enumerate(text_lens)]
        + [torch.full((n,), i, device=device) for i, n in enumerate(video_lens)]
    )  # (S,)
    return clip_of[:, None] == clip_of[None, :]


class _MaskedFunctional:
    """Stands in for `torch.nn.functional` inside cinegen.models.transformer: SDPA gets `mask` when one is set."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def __getattr__(self, name: str):
        return getattr(F, name)

    def scaled_dot_product_attention(self, q, k, v, attn_mask=None, **kwargs):  # noqa: ANN001
        if self.mask is not None and attn_mask is None:
            attn_mask = self.mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)


@contextmanager
def masked_attention():
    """Install the SDPA proxy for the duration of a run; yields it (set `.mask` per step)."""
    import cinegen.models.transformer as tm

    proxy = _MaskedFunctional()
    old = tm.F
    tm.F = proxy  # type: ignore[assignment]
    try:
        yield proxy
    finally:
        tm.F = old


def _blocks_take_mask(model: nn.Module) -> bool:
    return "attn_mask" in inspect.signature(type(model.transformer_blocks[0]).forward).parameters


def _cat_rows(tables: list):
    """Concatenate per-clip position tables along the token dimension (tensors or tuples of tensors)."""
    if isinstance(tables[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*tables, strict=True))
    return torch.cat(tables)


class PackedForward:
    """`pf(latents, texts, timestep)`: run the model on one pack of clips of different shapes.

    latents: list of (T_i, C, H_i, W_i); texts: list of (Lt, D_text); timestep: scalar tensor.
    Returns the list of predictions (T_i, C_out, H_i, W_i).
    """

    def __init__(self, model: nn.Module, proxy: _MaskedFunctional | None = None) -> None:
        cfg = model.config
        if cfg.use_learned_positional_embeddings:
            raise ValueError("frame pack needs RoPE or sin-cos positions (learned positions fix one resolution)")
        if cfg.ofs_embed_dim:
            raise ValueError("frame pack does not support the ofs embedding (CogVideoX 1.5 I2V)")
        self.model, self.proxy = model, proxy
        self.native_mask = _blocks_take_mask(model)
        if not self.native_mask and proxy is None:
            raise ValueError("this transformer's blocks take no attn_mask: run inside `masked_attention()`")

    def __call__(
        self, latents: Sequence[torch.Tensor], texts: Sequence[torch.Tensor], timestep: torch.Tensor
    ) -> list[torch.Tensor]:
        m, cfg = self.model, self.model.config
        p, pt = cfg.patch_size, cfg.patch_size_t or 1
        device, dtype = latents[0].device, latents[0].dtype
        grids = [(x.shape[0] // pt, x.shape[2] // p, x.shape[3] // p) for x in latents]  # (t, h, w) per clip

        # time embedding of the pack (one row)
        t_emb = timestep_embedding(timestep.reshape(1).to(device), cfg.inner_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
        emb = m.time_embedding(t_emb.to(dtype))  # (1, E)

        # tokens: all texts first (the blocks' expert split is text | video), then every clip's video tokens
        text_tok = [m.patch_embed.text_proj(c[None].to(dtype)) for c in texts]  # (1, Lt, D) each
        video_tok = []
        for x, (t, h, w) in zip(latents, grids, strict=True):
            v = m.patch_embed.patchify(x[None])  # (1, t*h*w, D)
            if not cfg.use_rotary_positional_embeddings:  # 2B: absolute 3D sin-cos for this clip's grid
                v = v + m.sincos_table(t, h, w, device, v.dtype)
            video_tok.append(v)
        n_text = sum(c.shape[1] for c in text_tok)
        xs = m.embedding_dropout(torch.cat(text_tok + video_tok, dim=1))  # (1, S, D)
        rope = None
        if cfg.use_rotary_positional_embeddings:
            # The model's own tables, one per clip grid; the first carries the identity rows of all the text
            # tokens (n_text), the others none. Rows are tokens (dim 0) whatever the table format.
            tables = [m.rope_tables(*grids[0], n_text, device)]
            tables += [m.rope_tables(t, h, w, 0, device) for t, h, w in grids[1:]]
            rope = _cat_rows(tables)  # (S, ...) rows in token order
        mask = block_mask([c.shape[1] for c in text_tok], [v.shape[1] for v in video_tok], device)  # (S, S)

        if self.native_mask:
            for block in m.transformer_blocks:
                xs = block(xs, n_text, emb, rope, attn_mask=mask)
        else:
            assert self.proxy is not None
            self.proxy.mask = mask
            for block in m.transformer_blocks:
                xs = block(xs, n_text, emb, rope)

        # output head on the video tokens, then un-patchify each clip (the model's (C, pt, p, p) feature order)
        v = m.proj_out(m.norm_out(m.norm_final(xs[:, n_text:]), emb))  # (1, ΣLv, C_out*pt*p*p)
        c_out = cfg.out_dim_channels
        outs, start = [], 0
        for x, (t, h, w) in zip(latents, grids, strict=True):
            n = t * h * w
            y = v[0, start : start + n].reshape(t, h, w, c_out, pt, p, p)  # (t, h, w, C, pt, p, p)
            y = y.permute(0, 4, 3, 1, 5, 2, 6)  # (t, pt, C, h, p, w, p)
            outs.append(y.reshape(x.shape[0], c_out, x.shape[2], x.shape[3]))  # (T, C_out, H, W)
            start += n
        return outs
