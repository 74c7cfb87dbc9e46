"""Properties of `cinegen.models.vae` that need no reference implementation: causality, temporal tiling, the
conv cache, gradient checkpointing, frame-count conventions, config validation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cinegen.models.vae import (
    CausalConv3d,
    CogVideoXVAE,
    ConvCache,
    TemporalTiling,
    VAEConfig,
    frame_chunks,
    temporal_blend_weights,
    temporal_windows,
    window_frame_range,
)

TINY = VAEConfig(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2)


@pytest.fixture(scope="module")
def vae() -> CogVideoXVAE:
    torch.manual_seed(0)
    model = CogVideoXVAE(TINY).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial GroupNorm affine parameters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
    return model.requires_grad_(False)


def _latents(t: int, seed: int = 0, h: int = 2, w: int = 2) -> torch.Tensor:
    return torch.randn(1, 4, t, h, w, generator=torch.Generator().manual_seed(seed))


def _video(f: int, seed: int = 0, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, f, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- causality
# -----------------------------------------------------------------------------------------------


def test_decode_is_causal(vae):
    z = _latents(7)
    full = vae.decode(z)  # (1, 3, 25, 16, 16)
    head = vae.decode(z[:, :, :3])  # (1, 3, 9, 16, 16)
    assert full.shape[2] == 25 and head.shape[2] == 9
    assert torch.equal(head, full[:, :, :9])
    # ... and the future does matter: changing latent 3 changes frames 9.. only.
    z2 = z.clone()
    z2[:, :, 3] += 1.0
    other = vae.decode(z2)
    assert torch.equal(other[:, :, :9], full[:, :, :9])
    assert not torch.allclose(other[:, :, 9:13], full[:, :, 9:13])


def test_encode_is_causal(vae):
    x = _video(17)
    full = vae.encode(x)  # (1, 4, 5, 2, 2)
    head = vae.encode(x[:, :, :9])  # (1, 4, 3, 2, 2)
    assert full.shape[2] == 5 and head.shape[2] == 3
    assert torch.equal(head, full[:, :, :3])


def test_inputs_are_not_modified(vae):
    """The no-grad path works in place; it must never touch the caller's tensors."""
    x, z = _video(9), _latents(3)
    x0, z0 = x.clone(), z.clone()
    vae.encode(x)
    vae.decode(z)
    vae.decode(z, temporal_tiling=TemporalTiling(window=3, overlap=1))
    assert torch.equal(x, x0) and torch.equal(z, z0)


# ---- frame batching and frame counts
# ---------------------------------------------------------------------------


def test_frame_chunks_golden():
    assert frame_chunks(1, 8) == [(0, 1)]
    assert frame_chunks(5, 8) == [(0, 5)]
    assert frame_chunks(9, 8) == [(0, 9)]
    assert frame_chunks(17, 8) == [(0, 9), (9, 17)]
    assert frame_chunks(49, 8) == [(0, 9)] + [(9 + 8 * i, 17 + 8 * i) for i in range(5)]
    assert frame_chunks(13, 2) == [(0, 3)] + [(3 + 2 * i, 5 + 2 * i) for i in range(5)]
    assert frame_chunks(4, 2) == [(0, 2), (2, 4)]


def test_frame_latent_conversions():
    for k in range(6):
        assert CogVideoXVAE.frames_to_latents(1 + 4 * k) == 1 + k
        assert CogVideoXVAE.latents_to_frames(1 + k) == 1 + 4 * k
    assert CogVideoXVAE.frames_to_latents(81) == 21  # CogVideoX 1.5
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        CogVideoXVAE.frames_to_latents(8)
    with pytest.raises(ValueError):
        CogVideoXVAE.latents_to_frames(0)


def test_bad_input_shapes_are_rejected(vae):
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(torch.zeros(1, 3, 1, 2, 2))
    with pytest.raises(ValueError, match="video must be"):
        vae.encode(torch.zeros(3, 9, 16, 16))


# ---- temporal tiling
# -------------------------------------------------------------------------------------------


def test_temporal_windows_and_frame_ranges():
    tiling = TemporalTiling(window=5, overlap=2)
    assert temporal_windows(5, tiling) == [(0, 5)]
    assert temporal_windows(4, tiling) == [(0, 4)]
    assert temporal_windows(11, tiling) == [(0, 5), (3, 8), (6, 11)]
    assert temporal_windows(12, tiling) == [(0, 5), (3, 8), (6, 11), (7, 12)]  # last window pulled back
    assert window_frame_range(0, 5) == (0, 17)
    # A window starting at latent 3 renders it as one frame: global frame 12, the last of latent 3's 4 frames.
    assert window_frame_range(3, 8) == (12, 29)
    # Two latents shared -> 4 * 2 - 3 = 5 pixel frames shared.
    assert window_frame_range(0, 5)[1] - window_frame_range(3, 8)[0] == 5


@pytest.mark.parametrize(("num_latents", "window", "overlap"), [(11, 5, 2), (12, 5, 2), (13, 7, 5), (9, 3, 1)])
def test_temporal_blend_weights_partition_unity(num_latents, window, overlap):
    tiling = TemporalTiling(window=window, overlap=overlap)
    weights = temporal_blend_weights(num_latents, tiling)
    windows = temporal_windows(num_latents, tiling)
    assert weights.shape == (len(windows), CogVideoXVAE.latents_to_frames(num_latents))
    assert torch.allclose(weights.sum(0), torch.ones(weights.shape[1], dtype=torch.float64), atol=1e-12)
    assert (weights >= 0).all() and (weights <= 1).all()
    for k, (s, e) in enumerate(windows):
        f0, f1 = window_frame_range(s, e)
        assert weights[k, :f0].abs().sum() == 0 and weights[k, f1:].abs().sum() == 0  # support = own frames
        if k:
            assert weights[k, f0] == 0  # a window's first frame (its "video start") never shows
            # Linear fade-in over the overlap with the previous window (until the next window starts).
            end = window_frame_range(*windows[k - 1])[1]
            if k + 1 < len(windows):
                end = min(end, window_frame_range(*windows[k + 1])[0] + 1)
            assert (weights[k, f0:end].diff() > 0).all()


@pytest.mark.parametrize("num_latents", [3, 4, 5])
def test_temporal_tiling_with_large_window_is_plain_decode(vae, num_latents):
    z = _latents(num_latents, seed=num_latents)
    assert torch.equal(vae.decode(z, temporal_tiling=TemporalTiling(window=5, overlap=2)), vae.decode(z))


@pytest.mark.parametrize(("num_latents", "window", "overlap"), [(7, 3, 1), (8, 5, 2), (9, 5, 3)])
def test_temporal_tiling_output(vae, num_latents, window, overlap):
    tiling = TemporalTiling(window=window, overlap=overlap)
    z = _latents(num_latents, seed=10 + num_latents)
    out = vae.decode(z, temporal_tiling=tiling)
    assert out.shape == (1, 3, CogVideoXVAE.latents_to_frames(num_latents), 16, 16)
    assert torch.isfinite(out).all()
    # Frames seen by one window only are exactly that window's own decode, placed by window_frame_range.
    weights = temporal_blend_weights(num_latents, tiling)
    windows = temporal_windows(num_latents, tiling)
    for k, (s, e) in enumerate(windows):
        f0, f1 = window_frame_range(s, e)
        solo = (weights[k] == 1).nonzero().flatten()
        assert len(solo) > 0 or 0 < k < len(windows) - 1  # heavy overlap can leave a middle window no solo frame
        own = vae.decode(z[:, :, s:e])
        assert torch.allclose(out[:, :, solo], own[:, :, solo - f0], atol=1e-6)
    # Blended frames are the weighted sum of the windows' decodes.
    s0, e0 = temporal_windows(num_latents, tiling)[0]
    s1, e1 = temporal_windows(num_latents, tiling)[1]
    a, b = vae.decode(z[:, :, s0:e0]), vae.decode(z[:, :, s1:e1])
    f1_start, f0_end = window_frame_range(s1, e1)[0], window_frame_range(s0, e0)[1]
    for f in range(f1_start, f0_end):
        if weights[:, f].count_nonzero() == 2:
            expected = weights[0, f].item() * a[:, :, f] + weights[1, f].item() * b[:, :, f - f1_start]
            assert torch.allclose(out[:, :, f], expected, atol=1e-5)


def test_temporal_tiling_validation():
    for window, overlap in [(4, 1), (1, 0), (5, 0), (5, 5)]:
        with pytest.raises(ValueError):
            TemporalTiling(window=window, overlap=overlap)


# ---- conv cache
# ------------------------------------------------------------------------------------------------


def _causal_convs(module: torch.nn.Module) -> dict[str, CausalConv3d]:
    return {m.cache_key: m for m in module.modules() if isinstance(m, CausalConv3d) and m.time_pad > 0}


@pytest.mark.parametrize("chunk_frames", [1, 9])
def test_encoder_cache_carries_k_minus_1_frames(vae, chunk_frames):
    x = _video(chunk_frames, seed=chunk_frames)
    cache = ConvCache()
    with torch.no_grad():
        vae.encoder(x, cache)
    convs = _causal_convs(vae.encoder)
    assert set(cache.current) == set(convs)  # every 3x3x3 causal conv, and nothing else (no 1x1x1 entries)
    assert all(n == convs[k].time_pad == 2 for k, n in cache.num_frames().items())
    # conv_in sees the raw video: its tail is the chunk's last two frames (frame 0 twice for a 1-frame chunk).
    expected = x[:, :, -2:] if chunk_frames > 1 else x[:, :, :1].expand(-1, -1, 2, -1, -1)
    assert torch.equal(cache.current["conv_in"], expected)


def test_decoder_cache_is_read_once_and_last_chunk_records_nothing(vae):
    z = _latents(5)
    first = ConvCache()
    with torch.no_grad():
        vae.decoder(z[:, :, :3], first)
        convs = _causal_convs(vae.decoder)
        assert set(first.current) == set(convs)
        assert all(v.shape[2] == 2 for v in first.current.values())
        second = first.advance(record=False)
        vae.decoder(z[:, :, 3:5], second)
    assert second.previous is first.current and not second.previous  # every entry consumed (and freed)
    assert not second.current  # the last chunk keeps nothing


def test_conv_cache_changes_the_result(vae):
    """Sanity: without the cache the second chunk restarts causally and differs from the cached decode."""
    z = _latents(5, seed=3)
    with torch.no_grad():
        full = vae.decode(z)
        restarted = vae.decoder(z[:, :, 3:5])
    assert not torch.allclose(full[:, :, 9:17], restarted, atol=1e-4)


# ---- training
# ------------------------------------------------------------------------------------------------


def test_gradient_checkpointing_gives_identical_gradients():
    torch.manual_seed(0)
    model = CogVideoXVAE(TINY)
    x = _video(17, seed=5, h=8, w=8)
    z = _latents(5, seed=6, h=1, w=1)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        loss = model.encode(x).square().mean() + model.decode(z).square().mean()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    assert model.encoder.gradient_checkpointing and model.decoder.gradient_checkpointing
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], rtol=1e-5, atol=1e-7), name


def test_bf16_decode_runs_and_tracks_fp32(vae):
    z = _latents(3, seed=8)
    ref = vae.decode(z)
    low = CogVideoXVAE(TINY).eval().requires_grad_(False)
    low.load_state_dict(vae.state_dict())
    out = low.to(torch.bfloat16).decode(z)  # fp32 input is cast to the weights' dtype
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


# ---- configs and latent scaling
# --------------------------------------------------------------------------------


def test_config_from_dict_rules():
    cfg = VAEConfig.from_dict({"_class_name": "x", "block_out_channels": [8, 8, 8, 8], "norm_num_groups": 2})
    assert cfg.block_out_channels == (8, 8, 8, 8)
    with pytest.raises(ValueError, match="typo_key"):
        VAEConfig.from_dict({"typo_key": 1})
    with pytest.raises(ValueError, match="block types"):
        VAEConfig(down_block_types=("DownEncoderBlock2D",) * 4)
    with pytest.raises(ValueError, match="norm_num_groups"):
        VAEConfig(block_out_channels=(8, 8, 8, 12), norm_num_groups=8)


def test_scaling_conventions():
    z = torch.randn(1, 4, 2, 2, 2)
    vae_2b = CogVideoXVAE(TINY)
    assert torch.allclose(vae_2b.unscale(vae_2b.scale(z)), z)
    assert torch.equal(vae_2b.scale(z), z * 1.15258426)
    assert torch.equal(vae_2b.scale_image_latents(z), z * 1.15258426)
    vae_15 = CogVideoXVAE(replace(TINY, scaling_factor=0.7, invert_scale_latents=True))
    assert torch.equal(vae_15.scale(z), z * 0.7)  # video latents are still multiplied ...
    assert torch.equal(vae_15.scale_image_latents(z), z / 0.7)  # ... but 1.5 I2V image latents are divided
