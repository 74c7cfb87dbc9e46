"""cinegen.models.layers: the pure math of the CogVideoX transformer.

Each function is checked against the diffusers function it reproduces (test oracle), plus golden values and
properties that do not depend on diffusers.
"""

from __future__ import annotations

import math

import pytest
import torch

from cinegen.models.layers import (
    apply_rope,
    modulate,
    resize_crop_region,
    rope_3d,
    rope_complex,
    rope_pairs,
    rotate_pairs,
    sincos_1d,
    sincos_3d_table,
    timestep_embedding,
)


def _maxerr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# ------------------------------------------------------------------------------------------------- golden


def test_sincos_1d_golden():
    # omega_i = 1 / 10000^(i / (dim/2)): dim 4 -> omega = (1, 0.01); layout [sin | cos].
    out = sincos_1d(4, torch.tensor([1.0, 2.0]))
    want = torch.tensor(
        [
            [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)],
            [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)],
        ],
        dtype=torch.float64,
    )
    assert out.dtype == torch.float64
    assert _maxerr(out, want) < 1e-15


def test_sincos_3d_layout_golden():
    # Token (t, h, w) at row t*h*w-major; features [temporal D/4 | w-part 3D/8 | h-part 3D/8].
    D, gh, gw, T = 32, 3, 5, 2
    table = sincos_3d_table(D, gh, gw, T, spatial_interp=1.875, temporal_interp=1.0)
    assert table.shape == (T * gh * gw, D)
    t, h, w = 1, 2, 3
    row = table[(t * gh + h) * gw + w]
    f32 = torch.float32
    want = torch.cat(
        [
            sincos_1d(8, torch.tensor([t], dtype=f32)),
            sincos_1d(12, torch.tensor([w], dtype=f32) / 1.875),
            sincos_1d(12, torch.tensor([h], dtype=f32) / 1.875),
        ],
        dim=1,
    )[0]
    assert torch.equal(row, want)


def test_timestep_embedding_golden():
    # dim 4, shift 0: freqs = exp(-ln(1e4) * i / 2) = (1, 0.01); flip -> [cos | sin].
    out = timestep_embedding(torch.tensor([3.0]), 4, flip_sin_to_cos=True, freq_shift=0)
    want = torch.tensor([[math.cos(3), math.cos(0.03), math.sin(3), math.sin(0.03)]])
    assert out.dtype == torch.float32 and out.shape == (1, 4)
    assert _maxerr(out, want) < 1e-6


def test_resize_crop_region_golden():
    # Rows of the reference study's table (base grid 30 x 45), including the banker's rounding cases.
    assert resize_crop_region(30, 45, 30, 45) == ((0, 0), (30, 45))
    assert resize_crop_region(45, 30, 30, 45) == ((0, 12), (30, 32))
    assert resize_crop_region(48, 85, 30, 45) == ((2, 0), (27, 45))
    assert resize_crop_region(32, 32, 30, 45) == ((0, 8), (30, 38))
    assert resize_crop_region(60, 90, 30, 45) == ((0, 0), (30, 45))


def test_modulate_golden():
    x = torch.ones(1, 2, 3)
    out = modulate(x, shift=torch.full((1, 3), 1.0), scale=torch.full((1, 3), 1.0))
    assert torch.equal(out, torch.full((1, 2, 3), 3.0))


# ------------------------------------------------------------------------------------------------ properties


def test_rope_linspace_full_crop_equals_slice():
    # A grid that fills the base grid gets integer positions in both modes (stop*(n-1)/n == n-1).
    a = rope_3d(16, 4, 6, 3, crop=((0, 0), (4, 6)))
    b = rope_3d(16, 4, 6, 3, grid_type="slice", max_size=(4, 6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_rope_tables_shapes_and_pair_repeat():
    cos, sin = rope_3d(64, 3, 5, 2, crop=((0, 0), (3, 5)))
    assert cos.shape == sin.shape == (30, 64) and cos.dtype == torch.float32
    assert torch.equal(cos[:, 0::2], cos[:, 1::2]) and torch.equal(sin[:, 0::2], sin[:, 1::2])
    pc, ps = rope_pairs(64, 3, 5, 2, crop=((0, 0), (3, 5)))
    assert torch.equal(pc, cos[:, ::2]) and torch.equal(ps, sin[:, ::2])
    # First temporal pair has frequency 1: its angle is the frame index.
    t_of_row = torch.arange(2).repeat_interleave(15).float()
    assert _maxerr(pc[:, 0], torch.cos(t_of_row)) < 1e-6


def test_rope_slice_rejects_grid_beyond_max_size():
    with pytest.raises(ValueError, match="exceeds the RoPE table"):
        rope_3d(16, 10, 4, 2, grid_type="slice", max_size=(8, 8))


def test_rope_rejects_bad_head_dim():
    with pytest.raises(ValueError, match="divisible by 16"):
        rope_3d(24, 2, 2, 1)


def test_rotate_pairs_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 3, 16, generator=g)  # (B, L, N, K)
    angles = torch.randn(7, 1, 8, generator=g)
    freqs = rope_complex(angles.cos(), angles.sin())  # (L, 1, K/2)
    y = rotate_pairs(x, freqs)
    # Norm of every pair is preserved; rotating back by -angle restores x.
    pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)  # noqa: E731
    assert _maxerr(pair_norm(y), pair_norm(x)) < 1e-5
    back = rotate_pairs(y, rope_complex(angles.cos(), -angles.sin()))
    assert _maxerr(back, x) < 1e-5
    # Identity rotation (the model's text rows) is exact; in-place == out-of-place.
    ident = rope_complex(torch.ones(7, 1, 8), torch.zeros(7, 1, 8))
    assert torch.equal(rotate_pairs(x, ident), x)
    assert torch.equal(rotate_pairs(x, freqs, out=torch.empty_like(x)), y)
    xc = x.clone()
    assert torch.equal(rotate_pairs(xc, freqs, out=xc), y)  # in place
    heads_first = torch.empty(2, 3, 7, 16)  # (B, N, L, K) memory written through a (B, L, N, K) view
    rotate_pairs(x, freqs, out=heads_first.transpose(1, 2))
    assert torch.equal(heads_first, y.transpose(1, 2))
    xb = x.bfloat16()
    assert torch.equal(rotate_pairs(xb, freqs, out=xb.clone()), rotate_pairs(xb, freqs))


# ---------------------------------------------------------------------------------------- against diffusers


@pytest.fixture(scope="module")
def emb():
    pytest.importorskip("diffusers")
    from diffusers.models import embeddings

    return embeddings


@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("dim", [32, 33])
def test_timestep_embedding_matches_diffusers(emb, flip, shift, dim):
    t = torch.tensor([0.0, 1.5, 999.0, 421.25])
    ref = emb.get_timestep_embedding(t, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    ours = timestep_embedding(t, dim, flip_sin_to_cos=flip, freq_shift=shift)
    assert ours.shape == ref.shape
    assert _maxerr(ours, ref) <= 1e-6
    ti = torch.tensor([3, 700])  # integer timesteps (the DDIM scheduler's)
    ref_i = emb.get_timestep_embedding(ti, dim, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    assert _maxerr(timestep_embedding(ti, dim, flip, shift), ref_i) <= 1e-6


@pytest.mark.parametrize(("D", "gh", "gw", "T"), [(32, 4, 6, 3), (64, 6, 4, 2), (48, 30, 45, 13), (32, 1, 7, 1)])
def test_sincos_3d_table_matches_diffusers(emb, D, gh, gw, T):
    ref = emb.get_3d_sincos_pos_embed(D, (gw, gh), T, 1.875, 1.0, output_type="pt").flatten(0, 1)
    ours = sincos_3d_table(D, gh, gw, T, spatial_interp=1.875, temporal_interp=1.0)
    assert ours.shape == ref.shape and ours.dtype == torch.float64
    assert _maxerr(ours, ref) <= 1e-6


def test_resize_crop_region_matches_diffusers():
    pytest.importorskip("diffusers")
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    for base_h, base_w in [(30, 45), (4, 6), (8, 8)]:
        for gh in range(1, 65):
            for gw in range(1, 95, 3):
                assert resize_crop_region(gh, gw, base_h, base_w) == get_resize_crop_region_for_grid(
                    (gh, gw), base_w, base_h
                ), (gh, gw, base_h, base_w)


@pytest.mark.parametrize(("K", "gh", "gw", "T"), [(64, 30, 45, 13), (64, 45, 30, 3), (16, 4, 6, 3), (16, 6, 4, 2)])
def test_rope_linspace_matches_diffusers(emb, K, gh, gw, T):
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    base_h, base_w = (30, 45) if K == 64 else (4, 6)
    crops = get_resize_crop_region_for_grid((gh, gw), base_w, base_h)
    ref_cos, ref_sin = emb.get_3d_rotary_pos_embed(K, crops, (gh, gw), T)
    cos, sin = rope_3d(K, gh, gw, T, crop=resize_crop_region(gh, gw, base_h, base_w))
    assert cos.shape == ref_cos.shape
    assert max(_maxerr(cos, ref_cos), _maxerr(sin, ref_sin)) <= 1e-6


@pytest.mark.parametrize(("K", "gh", "gw", "T", "max_size"), [(64, 48, 85, 11, (150, 150)), (16, 4, 6, 2, (8, 8))])
def test_rope_slice_matches_diffusers(emb, K, gh, gw, T, max_size):
    ref_cos, ref_sin = emb.get_3d_rotary_pos_embed(K, None, (gh, gw), T, grid_type="slice", max_size=max_size)
    cos, sin = rope_3d(K, gh, gw, T, grid_type="slice", max_size=max_size)
    assert max(_maxerr(cos, ref_cos), _maxerr(sin, ref_sin)) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_matches_diffusers(emb, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 30, 64, generator=g).to(dtype)  # (B, N, L, K)
    cos, sin = rope_3d(64, 3, 5, 2, crop=((0, 1), (3, 5)))
    ref = emb.apply_rotary_emb(x, (cos, sin))
    ours = apply_rope(x, cos, sin)
    assert ours.dtype == dtype
    # Same float32 products and sums as the reference; allow one rounding step of the output dtype.
    tol = 1e-6 if dtype == torch.float32 else 2**-7
    assert _maxerr(ours, ref) <= tol
