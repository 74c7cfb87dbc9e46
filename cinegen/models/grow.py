"""Function-preserving growth of a CogVideoX transformer: twice the width, more blocks.

A small trained transformer becomes the warm start of a larger one that computes the same function (Net2Net,
Chen et al. 2016), so the larger model starts where the small one is instead of from noise.

Widening by 2 (`widen_state`): every hidden width D becomes 2D and the residual stream becomes [x; x]. LayerNorm
of [x; x] equals [LN(x); LN(x)] (same mean and variance), attention gets a copy of each head (heads h and h+N see
the same q, k, v), the feed-forward gets a copy of each hidden unit, and every layer that reads a duplicated
vector has its input weights halved so that the sum over both copies equals the original. The sinusoidal
timestep features of width 2D contain those of width D at the even frequencies (freq_shift 0), so the time
embedding reads only those. Small noise (relative to each tensor's spread) breaks the symmetry between copies,
otherwise they would receive equal gradients and stay equal.

Deepening (`add_blocks`): a new block is a copy of an existing block with its four gates (text and video, for
attention and feed-forward) at zero: `x + 0 * f(x)` is the identity, and the gates get gradients at once
(adaLN-Zero, as DiT initialises every block).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch
from torch import Tensor

from cinegen.models.transformer import TransformerConfig

# norm1/norm2 modulation chunks: shift, scale, gate, enc_shift, enc_scale, enc_gate (reference order).
_GATE_CHUNKS = (2, 5)


def check_growable(cfg: TransformerConfig) -> None:
    """Widening keeps the function only for CogVideoX 1.0-style RoPE models with freq_shift 0."""
    if not cfg.use_rotary_positional_embeddings or cfg.use_learned_positional_embeddings:
        raise ValueError(
            "widening needs a RoPE transformer without learned positions: sin-cos and learned position tables "
            "of width 2D are not copies of those of width D"
        )
    if cfg.patch_size_t is not None or cfg.ofs_embed_dim is not None:
        raise ValueError("growth supports CogVideoX 1.0-style transformers (patch_size_t None, no ofs embedding)")
    if cfg.freq_shift != 0:
        raise ValueError(f"widening needs freq_shift 0 (the timestep sinusoid nests), got {cfg.freq_shift}")


def _dup_rows(w: Tensor, chunks: int = 1) -> Tensor:
    """Each of `chunks` row blocks of w repeated twice in place: (k*D, ...) -> (2*k*D, ...)."""
    return torch.cat([torch.cat([c, c]) for c in w.chunk(chunks, dim=0)])


def _dup_cols_half(w: Tensor) -> Tensor:
    """Input side of a layer reading [h; h]: (out, D) -> (out, 2D) with W/2 on each copy."""
    return torch.cat([w / 2, w / 2], dim=1)


def _time_linear_1(w: Tensor) -> Tensor:
    """linear_1 of the time embedding reads the sinusoid [cos(f_0..f_{h-1}), sin(...)] of width 2h = D.

    Width 2D has frequencies f'_j = f_{j/2} at even j, so old column i of each half goes to new column 2i of
    that half and the odd columns (new frequencies) get zero weight: (E, D) -> (E, 2D).
    """
    e, d = w.shape
    half = d // 2
    out = w.new_zeros(e, 2 * d)
    out[:, 0 : 2 * half : 2] = w[:, :half]  # cos part
    out[:, 2 * half :: 2] = w[:, half : 2 * half]  # sin part
    return out


def _widen_tensor(key: str, w: Tensor) -> Tensor:
    """The width-2D tensor of one state-dict entry (see the module docstring for the rule of each kind)."""
    name = re.sub(r"^transformer_blocks\.\d+\.", "blocks.", key)
    both = w.ndim == 2
    if name == "time_embedding.linear_1.weight":
        return _time_linear_1(w)
    if name.startswith(("time_embedding.", "blocks.attn1.norm_q.", "blocks.attn1.norm_k.")) or name == (
        "proj_out.bias"
    ):
        return w.clone()  # widths that do not change: time_embed_dim, head_dim, output channels
    if name == "proj_out.weight":
        return _dup_cols_half(w)
    if name.startswith(("patch_embed.proj.", "patch_embed.text_proj.")):
        return _dup_rows(w)  # writes the residual stream from the latent / text width
    if name.startswith(("norm_final.", "norm_out.norm.", "blocks.norm1.norm.", "blocks.norm2.norm.")):
        return _dup_rows(w)
    if name.startswith(("blocks.norm1.linear.", "blocks.norm2.linear.")):
        return _dup_rows(w, chunks=6)  # each modulation chunk is a width-D vector
    if name.startswith("norm_out.linear."):
        return _dup_rows(w, chunks=2)
    if name.startswith(("blocks.attn1.to_", "blocks.ff.net.")):
        return _dup_rows(_dup_cols_half(w) if both else w)  # reads a duplicated vector, writes one
    raise ValueError(f"widening has no rule for {key!r} {tuple(w.shape)}")


def widen_state(
    state: dict[str, Tensor], cfg: TransformerConfig, noise: float = 0.0, generator: torch.Generator | None = None
) -> tuple[dict[str, Tensor], TransformerConfig]:
    """A state dict and config of twice the width (twice the heads, same head dim) computing the same function
    (exactly for noise 0; float rounding aside). `noise` adds N(0, (noise * std)^2) to every widened matrix."""
    check_growable(cfg)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    new_cfg = dataclasses.replace(cfg, num_attention_heads=2 * cfg.num_attention_heads)
    out: dict[str, Tensor] = {}
    for key, w in state.items():
        big = _widen_tensor(key, w.float())
        if noise > 0 and big.ndim >= 2 and big.shape != w.shape:  # the widened matrices
            big = big + noise * big.std() * torch.randn(big.shape, generator=generator)
        out[key] = big.to(w.dtype)
    return out, new_cfg


def block_positions(num_layers: int, extra: int) -> list[int]:
    """Where the `extra` new blocks go among `num_layers` old ones (evenly spread): for each new block, the
    index of the old block it copies; the new block is placed right after it."""
    if extra < 0:
        raise ValueError(f"extra blocks must be >= 0, got {extra}")
    return [((i + 1) * num_layers) // (extra + 1) - 1 for i in range(extra)] if extra else []


def add_blocks(
    state: dict[str, Tensor], cfg: TransformerConfig, extra: int
) -> tuple[dict[str, Tensor], TransformerConfig]:
    """Insert `extra` identity blocks (copies of their predecessor with zero gates) evenly among the blocks (any
    variant: positions enter once, before the blocks)."""
    sources = block_positions(cfg.num_layers, extra)
    order: list[tuple[int, bool]] = []  # (old block index, is a new identity copy)
    for i in range(cfg.num_layers):
        order.append((i, False))
        order.extend((i, True) for s in sources if s == i)
    prefix = "transformer_blocks."
    out = {k: v.clone() for k, v in state.items() if not k.startswith(prefix)}
    for new_i, (old_i, is_new) in enumerate(order):
        head = f"{prefix}{old_i}."
        for k, v in state.items():
            if not k.startswith(head):
                continue
            w = v.clone()
            if is_new and re.search(r"\.norm[12]\.linear\.", k):
                for c, rows in enumerate(w.chunk(6, dim=0)):
                    if c in _GATE_CHUNKS:
                        rows.zero_()  # a view into w: zero gate, block output = its input
            out[f"{prefix}{new_i}.{k[len(head) :]}"] = w
    return out, dataclasses.replace(cfg, num_layers=cfg.num_layers + extra)


def grow_transformer_folder(
    src: str | Path, out: str | Path, widen: bool = True, extra_blocks: int = 0, noise: float = 0.01, seed: int = 0
) -> tuple[Path, TransformerConfig]:
    """Read the transformer of a model folder (`src/transformer/`) or a component folder (`src/`), grow it and
    write `out/transformer/` (config.json + weights), usable as `model.transformer_init` with the grown config.
    Widening comes first, so the new blocks are copies of widened blocks."""
    from cinegen.models.io import read_json, read_weights, save_component_folder
    from cinegen.models.transformer import CogVideoXTransformer

    root = Path(src)
    folder = root / "transformer" if (root / "transformer" / "config.json").is_file() else root
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no transformer folder at {root} (expected {root}/transformer/config.json)")
    if not widen and extra_blocks == 0:
        raise ValueError("nothing to grow: pass widen and/or extra blocks > 0")
    cfg = TransformerConfig.from_dict(read_json(folder / "config.json"))
    state = read_weights(folder)
    if widen:
        state, cfg = widen_state(state, cfg, noise=noise, generator=torch.Generator().manual_seed(seed))
    if extra_blocks:
        state, cfg = add_blocks(state, cfg, extra_blocks)
    model = CogVideoXTransformer(cfg)
    model.load_state_dict(state, strict=True)  # every key and shape as the grown config builds them
    save_component_folder(model, cfg, Path(out) / "transformer")
    return Path(out), cfg
