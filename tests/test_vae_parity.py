"""Parity of `cinegen.models.vae.CogVideoXVAE` with diffusers `AutoencoderKLCogVideoX` on tiny random models.

Each reference model is built with a seed, its GroupNorm affine parameters are randomised too (so a swapped or
ignored norm weight shows up), and its state dict is loaded into ours with strict=True. Outputs are compared
on identical inputs in fp32; the bar is 1e-4 max abs (on CPU they are in fact bitwise equal).
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from cinegen.models.vae import CogVideoXVAE, VAEConfig  # noqa: E402

TINY = dict(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2)
WIDE = dict(block_out_channels=(16, 32, 32, 32), latent_channels=4, layers_per_block=1, norm_num_groups=16)
TOL = 1e-4


def _reference(kw: dict, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    ref = diffusers.AutoencoderKLCogVideoX(**kw).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "norm" in name:  # GroupNorm affine: default 1 / 0 would hide mistakes
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
    return ref


def _pair(kw: dict, seed: int = 0) -> tuple[torch.nn.Module, CogVideoXVAE]:
    ref = _reference(kw, seed)
    ours = CogVideoXVAE(VAEConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, CogVideoXVAE]:
    return _pair(TINY)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_config_round_trip_with_diffusers(tiny):
    ref, ours = tiny
    d = ours.config.to_dict()
    assert d["_class_name"] == "AutoencoderKLCogVideoX"
    assert {k for k in ref.config if not k.startswith("_")} == {k for k in d if not k.startswith("_")}
    rebuilt = diffusers.AutoencoderKLCogVideoX.from_config(d)
    assert VAEConfig.from_dict(dict(rebuilt.config)) == ours.config
    assert VAEConfig.from_dict(d) == ours.config


def test_state_dict_round_trip_into_diffusers(tiny):
    ref, ours = tiny
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert list(ref_sd) == list(our_sd)
    assert all(ref_sd[k].shape == our_sd[k].shape for k in ref_sd)
    # ours -> a differently seeded diffusers model: strict load, then identical outputs.
    other = _reference(TINY, seed=7)
    other.load_state_dict(our_sd, strict=True)
    z = torch.randn(1, 4, 3, 2, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # float32 rounding only: our inference path calls oneDNN directly for conv3d (vae.conv3d)
        assert _max_err(other.decode(z).sample, ours.decode(z)) < 1e-5


@pytest.mark.parametrize("num_frames", [1, 5, 9, 17, 25])
def test_encode_moments_parity(tiny, num_frames):
    ref, ours = tiny
    batch = 2 if num_frames == 9 else 1
    g = torch.Generator().manual_seed(num_frames)
    x = torch.rand(batch, 3, num_frames, 16, 24, generator=g) * 2 - 1
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
        mean, logvar = ours.encode_moments(x)
        encoded = ours.encode(x)
    assert mean.shape == (batch, 4, CogVideoXVAE.frames_to_latents(num_frames), 2, 3)
    assert _max_err(mean, dist.mean) <= TOL
    assert _max_err(logvar, dist.logvar) <= TOL
    assert _max_err(encoded, dist.mean) <= TOL


@pytest.mark.parametrize("num_latents", [1, 2, 3, 5, 7])
def test_decode_parity(tiny, num_latents):
    ref, ours = tiny
    batch = 2 if num_latents == 3 else 1
    z = torch.randn(batch, 4, num_latents, 2, 2, generator=torch.Generator().manual_seed(num_latents))
    with torch.no_grad():
        expected = ref.decode(z).sample
        got = ours.decode(z)
    # Odd T: 1 + 4(T - 1) frames; even T follows the reference (chunks of 2 latents -> 8 frames each).
    frames = CogVideoXVAE.latents_to_frames(num_latents) if num_latents % 2 else 4 * num_latents
    assert got.shape == (batch, 3, frames, 16, 16)
    assert _max_err(got, expected) <= TOL


def test_wide_config_parity():
    """(16, 32, 32, 32) channels with 16 norm groups: channel changes use the conv shortcut."""
    ref, ours = _pair(WIDE, seed=1)
    g = torch.Generator().manual_seed(11)
    x = torch.rand(1, 3, 9, 16, 24, generator=g) * 2 - 1
    z = torch.randn(1, 4, 3, 2, 3, generator=g)
    with torch.no_grad():
        assert _max_err(ours.encode(x), ref.encode(x).latent_dist.mean) <= TOL
        assert _max_err(ours.decode(z), ref.decode(z).sample) <= TOL


def test_spatially_tiled_encode_parity():
    ref, ours = _pair(TINY, seed=2)
    x = torch.rand(1, 3, 9, 48, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        plain = ours.encode(x)
        for m in (ref, ours):
            m.enable_tiling(32, 32, 1 / 4, 1 / 4)
        expected = ref.encode(x).latent_dist
        mean, logvar = ours.encode_moments(x)
    assert _max_err(mean, expected.mean) <= TOL
    assert _max_err(logvar, expected.logvar) <= TOL
    assert _max_err(mean, plain) > 1e-3  # tiling really ran (tiles see less context than the whole frame)


def test_spatially_tiled_decode_parity():
    ref, ours = _pair(TINY, seed=3)
    z = torch.randn(1, 4, 3, 6, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        plain = ours.decode(z)
        for m in (ref, ours):
            m.enable_tiling(32, 32, 1 / 4, 1 / 4)
        expected = ref.decode(z).sample
        got = ours.decode(z)
    assert got.shape == (1, 3, 9, 48, 64)
    assert _max_err(got, expected) <= TOL
    assert _max_err(got, plain) > 1e-3


def test_sample_posterior_parity(tiny):
    ref, ours = tiny
    x = torch.rand(2, 3, 5, 16, 16, generator=torch.Generator().manual_seed(8)) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(42))
        got = ours.sample_posterior(x, generator=torch.Generator().manual_seed(42))
        gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        expected_list = ref.encode(x).latent_dist.sample(generator=gens)
        gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        got_list = ours.sample_posterior(x, generator=gens)
    assert _max_err(got, expected) <= TOL
    assert _max_err(got_list, expected_list) <= TOL
    assert _max_err(got, ours.encode(x)) > 1e-3  # noise was really added


def test_gradients_with_checkpointing_match_reference():
    """Training path (autograd on, no in-place shortcuts) with gradient checkpointing; two chunks each way, so
    the gradient also flows through the conv cache from one chunk into the previous one."""
    ref, ours = _pair(TINY, seed=4)
    ours.gradient_checkpointing = True
    g = torch.Generator().manual_seed(9)
    x = torch.rand(1, 3, 17, 8, 8, generator=g) * 2 - 1
    z = torch.randn(1, 4, 5, 1, 1, generator=g)
    w = torch.randn(1, 3, 17, 8, 8, generator=g)

    ref_loss = ref.encode(x).latent_dist.mean.square().mean() + (ref.decode(z).sample * w).mean()
    our_loss = ours.encode(x).square().mean() + (ours.decode(z) * w).mean()
    ref_loss.backward()
    our_loss.backward()
    assert abs(ref_loss.item() - our_loss.item()) <= TOL
    ref_grads = dict(ref.named_parameters())
    worst = 0.0
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        expected = ref_grads[name].grad
        worst = max(worst, (p.grad - expected).abs().max().item() / (expected.abs().max().item() + 1e-12))
    assert worst <= 1e-4
