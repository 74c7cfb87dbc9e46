"""Per-channel latent normalisation folded into the VAE's weights (cinegen.models.latent_norm)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from cinegen.models.latent_norm import channel_rms, fold_channel_scale, latent_reading_convs
from cinegen.models.vae import CogVideoXVAE, VAEConfig

TINY = VAEConfig(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2)


def _vae() -> CogVideoXVAE:
    torch.manual_seed(0)
    vae = CogVideoXVAE(TINY).eval()
    with torch.no_grad():  # non-zero biases everywhere, so a wrong bias fold would show
        for p in vae.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return vae


def test_folding_scales_the_posterior_and_keeps_the_decoded_video() -> None:
    vae = _vae()
    folded = fold_channel_scale(copy.deepcopy(vae), torch.tensor([0.5, 2.0, 1.0, 3.0]))
    k = torch.tensor([0.5, 2.0, 1.0, 3.0]).view(1, 4, 1, 1, 1)
    x = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1  # (B, 3, F, H, W)
    with torch.no_grad():
        m0, lv0 = vae.encode_moments(x)  # (1, 4, 3, 2, 2) each
        m1, lv1 = folded.encode_moments(x)
        torch.testing.assert_close(m1, m0 * k, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(lv1, lv0 + 2 * k.log(), rtol=1e-5, atol=1e-5)
        ref = vae.decode(m0)
        assert ref.abs().max() > 0.01
        torch.testing.assert_close(folded.decode(m1), ref, rtol=1e-5, atol=1e-5)  # decode(k z) == old decode(z)
        assert not torch.allclose(folded.decode(m0), ref, atol=1e-3)  # the decoder did change
    # conv_in and two convs per SpatialNorm read the latent; all take C_lat input channels
    assert all(c.weight.shape[1] == TINY.latent_channels for c in latent_reading_convs(vae))
    assert len(latent_reading_convs(vae)) > 3


def test_channel_rms_to_unit_rms() -> None:
    z = torch.randn(6, 4, 3, 5, 5, generator=torch.Generator().manual_seed(2)) * torch.tensor([0.3, 1, 2, 5]).view(
        1, 4, 1, 1, 1
    )
    rms = channel_rms(z)
    assert rms.shape == (4,)
    torch.testing.assert_close(rms, z.pow(2).mean(dim=(0, 2, 3, 4)).sqrt())
    torch.testing.assert_close(channel_rms(z / rms.view(1, 4, 1, 1, 1)), torch.ones(4))
    with pytest.raises(ValueError, match="N, C"):
        channel_rms(torch.ones(3))


def test_fold_refuses_bad_factors() -> None:
    vae = _vae()
    for bad in ([1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0], [1.0, float("nan"), 1.0, 1.0]):
        with pytest.raises(ValueError):
            fold_channel_scale(vae, torch.tensor(bad))


def test_normalize_vae_cli_writes_a_folded_vae_with_unit_rms_channels(tiny_2b_folder, tmp_path, capsys) -> None:
    """`cinegen normalize-vae`: measure the channel RMS on a manifest's clips, fold 1 / RMS into the VAE, write
    out/vae/ (loadable as model.vae_path); the same clips then have unit-RMS channels and decode as before."""
    from cinegen.cli import main
    from cinegen.data.manifest import read_manifest
    from cinegen.models.latent_norm import _media_frames
    from cinegen.train.trainer import load_vae_folder
    from cinegen.video import frames_to_tensor
    from tests.test_train_data import make_toy_set

    manifest = make_toy_set(tmp_path / "toy", n_videos=2, frames=9, h=32, w=32, images=1)  # videos and an image
    assert {r.type for r in read_manifest(manifest)} == {"video", "image"}
    out = tmp_path / "norm"
    assert main(["normalize-vae", str(tiny_2b_folder), str(out), "--manifest", str(manifest), "--n", "3"]) == 0
    assert "folded to unit RMS" in capsys.readouterr().out
    old, new = load_vae_folder(tiny_2b_folder), load_vae_folder(out)
    assert json.loads((out / "vae" / "channel_rms.json").read_text())["items"] == 3
    zs = []
    for r in read_manifest(manifest):
        x = frames_to_tensor(_media_frames(manifest.parent / r.path, r.type))[None]  # (1, 3, F, H, W)
        with torch.no_grad():
            z_old, z_new = old.encode(x), new.encode(x)
            torch.testing.assert_close(new.decode(z_new), old.decode(z_old), rtol=1e-4, atol=1e-4)
        zs.append(new.scale(z_new).flatten(2))  # (1, C, T*h*w): clips and images differ in T
    torch.testing.assert_close(
        channel_rms(torch.cat(zs, dim=2)), torch.ones(new.config.latent_channels), rtol=1e-4, atol=1e-4
    )
    assert main(["normalize-vae", str(tiny_2b_folder), str(out), "--manifest", str(tmp_path / "none.jsonl")]) == 2
    assert main(["normalize-vae", str(tiny_2b_folder), str(out), "--manifest", str(manifest), "--n", "0"]) == 2
