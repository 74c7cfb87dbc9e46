"""CogVideoXTransformer against diffusers' CogVideoXTransformer3DModel on tiny random models, all five variants.

Each diffusers model is built right after torch.manual_seed, its state dict is loaded into ours with
strict=True, and both run on identical inputs in fp32. Diffusers gets the RoPE tables exactly as its
pipeline builds them (`get_resize_crop_region_for_grid` + `get_3d_rotary_pos_embed`); ours builds its own.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import cinegen.models.transformer as tr
from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig, count_flops

diffusers = pytest.importorskip("diffusers")
from diffusers import CogVideoXTransformer3DModel  # noqa: E402
from diffusers.models.embeddings import get_3d_rotary_pos_embed  # noqa: E402
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid  # noqa: E402

TOL = 1e-4
L_TEXT, D_TEXT = 8, 12

# Tiny versions of the five published variants (heads 2 x head_dim 16: RoPE splits 4/6/6).
BASE = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    in_channels=4,
    out_channels=4,
    time_embed_dim=16,
    text_embed_dim=D_TEXT,
    num_layers=2,
    sample_height=8,  # latent 8 x 12 -> base token grid 4 x 6
    sample_width=12,
    sample_frames=9,  # 9 pixel frames -> 3 latent frames
    patch_size=2,
    max_text_seq_length=L_TEXT,
)
ROPE = dict(use_rotary_positional_embeddings=True)
V15 = dict(patch_size_t=2, patch_bias=False, sample_height=16, sample_width=16, sample_frames=13, **ROPE)
VARIANTS = {
    "2b": {},
    "5b": dict(ROPE),
    "5b-i2v": dict(in_channels=8, use_learned_positional_embeddings=True, **ROPE),
    "1.5": dict(V15),
    "1.5-i2v": dict(in_channels=8, ofs_embed_dim=16, **V15),
}
# (variant, (T, H, W)) latent shapes: training shape, other shapes forcing position recompute, non-square grids
# exercising the 1.0 RoPE crop region (portrait 6x4 tokens in a 4x6 base grid, and a larger 8x8 grid).
CASES = [
    ("2b", (3, 8, 12)),
    ("2b", (2, 12, 8)),
    ("5b", (3, 8, 12)),
    ("5b", (2, 12, 8)),
    ("5b", (2, 16, 16)),
    ("5b-i2v", (3, 8, 12)),
    ("5b-i2v", (2, 8, 12)),  # other frame count: reference falls back to sin-cos
    ("1.5", (4, 8, 12)),
    ("1.5", (2, 16, 16)),
    ("1.5-i2v", (4, 8, 12)),
]


def _config(variant: str) -> dict:
    return {**BASE, **VARIANTS[variant]}


def _build(variant: str, seed: int = 0):
    kw = _config(variant)
    torch.manual_seed(seed)
    ref = CogVideoXTransformer3DModel(**kw).eval()
    if kw.get("use_learned_positional_embeddings"):
        # The init value is the sin-cos table; make it a genuinely learned table (text slots included).
        with torch.no_grad():
            ref.patch_embed.pos_embedding.normal_()
    ours = CogVideoXTransformer(TransformerConfig(**kw)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def _inputs(variant: str, shape: tuple[int, int, int], batch: int = 2, seed: int = 1):
    kw = _config(variant)
    T, H, W = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, T, kw["in_channels"], H, W, generator=g)
    text = torch.randn(batch, L_TEXT, D_TEXT, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    ofs = torch.full((1,), 2.0) if kw.get("ofs_embed_dim") else None  # as the I2V pipeline passes it
    return x, text, t, ofs


def _ref_rope(model, T: int, H: int, W: int):
    """The diffusers pipeline's `_prepare_rotary_positional_embeddings`, from latent sizes."""
    c = model.config
    if not c.use_rotary_positional_embeddings:
        return None
    p, pt = c.patch_size, c.patch_size_t
    gh, gw = H // p, W // p
    base_w, base_h = c.sample_width // p, c.sample_height // p
    if pt is None:
        crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
        return get_3d_rotary_pos_embed(c.attention_head_dim, crops, (gh, gw), T)
    return get_3d_rotary_pos_embed(
        c.attention_head_dim, None, (gh, gw), (T + pt - 1) // pt, grid_type="slice", max_size=(base_h, base_w)
    )


def _run_ref(ref, x, text, t, ofs):
    return ref(x, text, t, ofs=ofs, image_rotary_emb=_ref_rope(ref, *x.shape[1:2], *x.shape[3:]), return_dict=False)[0]


def _maxerr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ------------------------------------------------------------------------------------------- forward parity


@pytest.mark.parametrize(("variant", "shape"), CASES, ids=[f"{v}-{'x'.join(map(str, s))}" for v, s in CASES])
def test_forward_matches_diffusers(variant, shape):
    ref, ours = _build(variant)
    x, text, t, ofs = _inputs(variant, shape)
    x0, text0 = x.clone(), text.clone()
    with torch.no_grad():
        want = _run_ref(ref, x, text, t, ofs)
        got = ours(x, text, t, ofs=ofs)
        again = ours(x, text, t, ofs=ofs)  # second call: cached position tables
    assert got.shape == want.shape == (2, shape[0], _config(variant)["out_channels"], shape[1], shape[2])
    err = _maxerr(got, want)
    assert err <= TOL, f"{variant} {shape}: max abs err {err:.3e}"
    assert torch.equal(again, got)
    assert torch.equal(x, x0) and torch.equal(text, text0), "forward must not modify its inputs"


@pytest.mark.parametrize("variant", ["2b", "5b", "1.5-i2v"])
def test_autograd_path_matches_diffusers(variant):
    """With autograd on, the block takes its out-of-place path: outputs and every parameter grad match."""
    ref, ours = _build(variant)
    ref.train()
    ours.train()
    shape = (4, 8, 12)
    x, text, t, ofs = _inputs(variant, shape)
    w = torch.randn(2, shape[0], 4, shape[1], shape[2], generator=torch.Generator().manual_seed(5))
    out_ref, out = _run_ref(ref, x, text, t, ofs), ours(x, text, t, ofs=ofs)
    assert _maxerr(out, out_ref) <= TOL
    (out_ref * w).sum().backward()
    (out * w).sum().backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        err = _maxerr(p.grad, ref_grads[name])
        assert err <= TOL * max(1.0, ref_grads[name].abs().max().item()), f"{name}: grad err {err:.3e}"


def test_bf16_autocast_matches_diffusers():
    """Same op sequence under CPU bf16 autocast (the benchmark setting), RoPE variant."""
    ref, ours = _build("5b")
    x, text, t, ofs = _inputs("5b", (2, 12, 8))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = _run_ref(ref, x, text, t, ofs), ours(x, text, t, ofs=ofs)
    assert got.dtype == want.dtype == torch.bfloat16
    assert _maxerr(got, want) <= 1e-2  # measured 0.0 on CPU


@pytest.mark.parametrize("variant", ["2b", "5b-i2v", "1.5-i2v"])
def test_bf16_weights_match_diffusers(variant):
    """Both models cast to bf16 (how published bf16/fp16 weights run without autocast)."""
    ref, ours = _build(variant)
    ref, ours = ref.to(torch.bfloat16), ours.to(torch.bfloat16)
    shape = (4, 8, 12) if variant.startswith("1.5") else (3, 8, 12)
    x, text, t, ofs = _inputs(variant, shape)
    x, text = x.bfloat16(), text.bfloat16()
    with torch.no_grad():
        want, got = _run_ref(ref, x, text, t, ofs), ours(x, text, t, ofs=ofs)
    assert got.dtype == want.dtype == torch.bfloat16
    assert _maxerr(got, want) <= 1e-2  # measured 0.0 on CPU


def test_learned_positions_reject_other_resolution():
    ref, ours = _build("5b-i2v")
    x, text, t, _ = _inputs("5b-i2v", (3, 8, 8))
    with pytest.raises(ValueError):
        _run_ref(ref, x, text, t, None)
    with pytest.raises(ValueError, match=r"learned position table for latent 8x12"):
        ours(x, text, t)
    x, text, t, _ = _inputs("5b-i2v", (3, 8, 12))
    with pytest.raises(ValueError, match=r"exactly max_text_seq_length=8 text tokens, got 6"):
        ours(x, text[:, :6], t)


def test_v15_odd_latent_frames_error():
    _, ours = _build("1.5")
    x, text, t, _ = _inputs("1.5", (3, 8, 12))
    with pytest.raises(ValueError, match=r"divisible by patch_size_t=2, got T=3.*prepends 1 frame"):
        ours(x, text, t)


def test_ofs_required_for_v15_i2v():
    _, ours = _build("1.5-i2v")
    x, text, t, _ = _inputs("1.5-i2v", (2, 8, 12))
    with pytest.raises(ValueError, match="pass ofs"):
        ours(x, text, t)


def test_scalar_timestep_equals_vector():
    _, ours = _build("5b")
    x, text, _, _ = _inputs("5b", (2, 8, 12))
    with torch.no_grad():
        a = ours(x, text, 321)
        b = ours(x, text, torch.tensor([321, 321]))
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------- weights and config


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_round_trip_into_diffusers(variant):
    """Our (own-init) weights load strictly into diffusers, with identical names, shapes and outputs."""
    kw = _config(variant)
    torch.manual_seed(123)
    ours = CogVideoXTransformer(TransformerConfig(**kw)).eval()
    torch.manual_seed(7)
    ref = CogVideoXTransformer3DModel(**kw).eval()
    sd = ours.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    ref.load_state_dict(sd, strict=True)
    shape = (4, 8, 12) if kw.get("patch_size_t") else (3, 8, 12)
    x, text, t, ofs = _inputs(variant, shape)
    with torch.no_grad():
        assert _maxerr(ours(x, text, t, ofs=ofs), _run_ref(ref, x, text, t, ofs)) <= TOL


def test_config_fields_are_diffusers_arguments():
    params = inspect.signature(CogVideoXTransformer3DModel.__init__).parameters
    ref_defaults = {k: p.default for k, p in params.items() if k != "self"}
    ours = {f.name: f.default for f in dataclasses.fields(TransformerConfig)}
    assert ours == ref_defaults


def test_config_from_dict_and_to_dict():
    ref = CogVideoXTransformer3DModel(**_config("1.5-i2v"))
    cfg = TransformerConfig.from_dict(dict(ref.config))  # includes "_class_name", "_diffusers_version"
    assert cfg == TransformerConfig(**_config("1.5-i2v"))
    d = cfg.to_dict()
    assert d["_class_name"] == "CogVideoXTransformer3DModel"
    assert TransformerConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"unknown TransformerConfig keys: \['bogus_key'\]"):
        TransformerConfig.from_dict({**d, "bogus_key": 1})
    assert cfg.inner_dim == 32 and cfg.is_v15 and not TransformerConfig().is_v15


# ---------------------------------------------------------------------------- checkpointing, cache, FLOPs


def test_gradient_checkpointing_same_gradients(monkeypatch):
    calls = []
    real_checkpoint = tr.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(1)
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(tr, "checkpoint", counting_checkpoint)
    _, ours = _build("5b")
    ours.train()
    x, text, t, _ = _inputs("5b", (2, 12, 8))
    grads = []
    for ckpt in (False, True):
        ours.zero_grad(set_to_none=True)
        ours.gradient_checkpointing = ckpt
        ours(x, text, t).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in ours.named_parameters()})
    assert len(calls) == BASE["num_layers"], "checkpointing was not used"
    for name, g in grads[0].items():
        assert _maxerr(g, grads[1][name]) <= 1e-6, name


@pytest.mark.parametrize("variant", ["2b", "5b"])
def test_tables_cached_in_inference_mode_work_for_training(variant):
    _, ours = _build(variant)
    x, text, t, _ = _inputs(variant, (2, 8, 12))
    with torch.inference_mode():
        ours(x, text, t)  # e.g. a validation sample builds and caches the position tables
    ours.train()
    ours(x, text, t).square().mean().backward()
    assert ours.proj_out.weight.grad is not None


def test_block_attn_mask_reaches_attention():
    _, ours = _build("5b")
    block = ours.transformer_blocks[0]
    g = torch.Generator().manual_seed(3)
    x, temb = torch.randn(1, 20, 32, generator=g), torch.randn(1, 16, generator=g)
    rope = ours.rope_tables(1, 2, 6, 8, x.device)  # 8 text + 12 video rows
    with torch.no_grad():
        plain = block(x, 8, temb, rope)
        full = block(x, 8, temb, rope, attn_mask=torch.ones(20, 20, dtype=torch.bool))
        diag = block(x, 8, temb, rope, attn_mask=torch.eye(20, dtype=torch.bool))
    assert _maxerr(full, plain) <= 1e-6
    assert _maxerr(diag, plain) > 1e-3


def test_position_cache_is_keyed_on_shape():
    _, ours = _build("5b")
    with torch.no_grad():
        for shape in [(2, 8, 12), (2, 8, 12), (3, 8, 12), (2, 12, 8)]:
            x, text, t, _ = _inputs("5b", shape)
            ours(x, text, t)
    assert len(ours._pos_cache) == 3


@pytest.mark.parametrize("variant", ["2b", "1.5-i2v"])
def test_count_flops_matches_flop_counter(variant):
    from torch.utils.flop_counter import FlopCounterMode

    _, ours = _build(variant)
    shape = (4, 8, 12)
    x, text, t, ofs = _inputs(variant, shape, batch=1)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        ours(x, text, t, ofs=ofs)
    counted = counter.get_total_flops()
    if not any("attention" in str(op) for op in counter.get_flop_counts()["Global"]):
        # torch's counter has no formula for the CPU flash-attention kernel: add Q K^T and A V by hand.
        cfg = ours.config
        S = L_TEXT + (shape[0] // (cfg.patch_size_t or 1)) * (shape[1] // 2) * (shape[2] // 2)
        counted += 4 * cfg.num_layers * cfg.inner_dim * S * S
    assert count_flops(ours.config, *shape, L=L_TEXT, cfg=False) == counted
    assert count_flops(ours.config, *shape, L=L_TEXT, cfg=True) == 2 * counted
