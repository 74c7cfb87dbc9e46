"""VAE coverage channels (`loss.mask_channels`): the DCT code of a region mask (golden values, exact inverse,
causal latent frames), the total-variation penalty, and training: the supervised channels learn the code,
bad settings fail with a message."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cinegen.train.config import VAETrainConfig, load_config
from cinegen.train.losses_vae import (
    coverage_from_code,
    dct_basis,
    latent_frame_means,
    mask_code,
    smoothness_penalty,
)
from tests.test_train_data import make_toy_set

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_dct_basis_is_orthonormal_low_frequency_first() -> None:
    full = dct_basis(4, 16).double()  # (16, 16)
    assert torch.allclose(full @ full.T, torch.eye(16, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(full[0], torch.full((16,), 0.25, dtype=torch.float64))  # the constant
    # golden: the first vertical cosine (u=1, v=0 comes after u=0, v=1), rows of a 4x4 patch
    c1 = torch.tensor([0.6532815, 0.2705981, -0.2705981, -0.6532815], dtype=torch.float64) / 2
    assert torch.allclose(full[1].view(4, 4), c1.expand(4, 4), atol=1e-6)  # varies along x: v = 1
    assert torch.allclose(full[2].view(4, 4), c1[:, None].expand(4, 4), atol=1e-6)  # along y: u = 1
    assert torch.equal(dct_basis(4, 8), dct_basis(4, 16)[:8])
    with pytest.raises(ValueError, match="k must be in 1..16"):
        dct_basis(4, 17)


def test_latent_frame_means_follow_the_causal_grouping() -> None:
    m = torch.arange(9, dtype=torch.float32).view(1, 9, 1, 1).expand(2, 9, 2, 2)  # frame f has value f
    out = latent_frame_means(m, 4)  # frame 0 alone, then frames 1-4 and 5-8
    assert out.shape == (2, 3, 2, 2) and out[0, :, 0, 0].tolist() == [0.0, 2.5, 6.5]
    with pytest.raises(ValueError, match="1 \\+ 4·N"):
        latent_frame_means(m[:, :8], 4)


def test_mask_code_values_and_exact_inverse() -> None:
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 5, 8, 12, generator=g) > 0.5).float()  # (B, F, H, W)
    code = mask_code(mask, 16, temporal=4, spatial=4)
    assert code.shape == (2, 16, 2, 2, 3)  # (B, k, T, h, w)
    groups = latent_frame_means(mask, 4)  # (B, T, H, W)
    cell_mean = torch.nn.functional.avg_pool2d(groups * 2 - 1, 4)  # (B, T, h, w)
    assert torch.allclose(code[:, 0], cell_mean, atol=1e-6)  # channel 0: the cell's mean coverage in [-1, 1]
    assert torch.allclose(coverage_from_code(code, 4), groups, atol=1e-5)  # all 16 coefficients: exact
    low = coverage_from_code(code[:, :8], 4)  # 8 coefficients: the least-squares low-pass, closer than the mean
    flat = torch.nn.functional.interpolate((cell_mean + 1) / 2, scale_factor=4)
    assert (low - groups).square().mean() < (flat - groups).square().mean()
    # a full object: every cell at +1 on channel 0 and 0 elsewhere; empty: -1
    assert torch.allclose(mask_code(torch.ones(1, 1, 4, 4), 3, 4, 4).flatten(), torch.tensor([1.0, 0, 0]), atol=1e-6)
    assert torch.allclose(mask_code(torch.zeros(1, 1, 4, 4), 3, 4, 4).flatten(), torch.tensor([-1.0, 0, 0]), atol=1e-6)


def test_smoothness_penalty() -> None:
    z = torch.zeros(1, 2, 1, 4, 4)
    assert float(smoothness_penalty(z + 3.0)) == 0.0  # constant: no edges
    z[..., :, 2:] = 1.0  # one vertical edge: 4 of 12 horizontal neighbour pairs differ by 1
    assert float(smoothness_penalty(z)) == pytest.approx(4 / 12)


def _cfg(man: Path, run: Path, *extra: str) -> VAETrainConfig:
    return load_config(
        VAETrainConfig,
        CONFIGS / "vae.yaml",
        [
            f"data.manifest={man}",
            f"train.run_dir={run}",
            "data.height=16",
            "data.width=16",
            "data.num_frames=9",
            "data.batch_size=2",
            "optim.lr=3e-3",
            "optim.warmup_steps=0",
            "model.vae.block_out_channels=[8, 8, 8]",
            "model.vae.norm_num_groups=2",
            "model.vae.latent_channels=4",
            "loss.gan_weight=0",
            "checkpoint.every=0",
            "validation.every=0",
            "log.every=1",
            "log.progress=false",
            "log.tensorboard=false",
            *extra,
        ],
    )


def test_vae_learns_coverage_channels(tmp_path: Path) -> None:
    from cinegen.train.vae_trainer import train_vae

    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=16, w=16, masks=True)
    over = ["train.steps=30", "loss.mask_channels=2", "loss.smooth_weight=0.01", "loss.latent_noise=0.05"]
    cfg = _cfg(man, tmp_path / "run", *over)
    result = train_vae(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    mask_loss = [r["mask"] for r in rows if "mask" in r]
    assert len(mask_loss) == 30 and all("smooth" in r for r in rows if "mask" in r)
    first, last = sum(mask_loss[:3]) / 3, sum(mask_loss[-3:]) / 3
    print(f"coverage MSE {first:.4f} -> {last:.4f}")
    assert last < 0.3 * first
    # the exported VAE's first channels now carry the clips' coverage code (4x spatial: 2 levels here)
    from cinegen.train.data import BucketSpec, ClipDataset, load_records
    from cinegen.train.trainer import load_vae_folder

    assert result.export is not None
    vae = load_vae_folder(result.export)
    ds = ClipDataset(load_records(man), BucketSpec(height=16, width=16, num_frames=9, vae_spatial=4, patch=1))
    x, m = ds.pixels_and_mask(0, None)
    assert m is not None
    with torch.no_grad():
        mean, _ = vae.encode_moments(x[None])  # (1, 4, 3, 4, 4)
    code = mask_code(m[None], 2, 4, 4)
    err = (mean[:, :2] - code).square().mean() / code.square().mean()
    assert err < 0.3, f"relative coverage error {float(err):.3f}"


def test_coverage_channels_need_masks_and_fit_the_latent(tmp_path: Path) -> None:
    from cinegen.train.vae_trainer import train_vae

    bare = make_toy_set(tmp_path / "bare", n_videos=2, frames=9, h=16, w=16)
    with pytest.raises(ValueError, match="needs a `mask` column on every clip; 2 have none"):
        train_vae(_cfg(bare, tmp_path / "r1", "train.steps=1", "loss.mask_channels=2"))
    masked = make_toy_set(tmp_path / "masked", n_videos=2, frames=9, h=16, w=16, masks=True)
    with pytest.raises(ValueError, match="mask_channels must be in 0..4"):
        train_vae(_cfg(masked, tmp_path / "r2", "train.steps=1", "loss.mask_channels=5"))
    every = train_vae(_cfg(masked, tmp_path / "r3", "train.steps=1", "loss.mask_channels=4", "loss.smooth_weight=0.1"))
    assert every.losses and all(math.isfinite(v) for v in every.losses)  # all channels coverage: nothing to smooth


def test_latent_noise_reaches_the_decoder_at_channel_scale() -> None:
    """`loss.latent_noise` s: the decoder reads mean + s x (each channel's RMS over the batch) x noise."""
    from cinegen.models.latent_norm import channel_rms
    from cinegen.models.vae import CogVideoXVAE, VAEConfig
    from cinegen.train.vae_trainer import VAEWithDiscriminator

    cfg = {"block_out_channels": [8, 8], "down_block_types": ["CogVideoXDownBlock3D"] * 2, "latent_channels": 4,
           "up_block_types": ["CogVideoXUpBlock3D"] * 2, "norm_num_groups": 2, "layers_per_block": 1}  # fmt: skip
    torch.manual_seed(0)
    vae = CogVideoXVAE(VAEConfig.from_dict(cfg)).eval()
    raw = VAEWithDiscriminator(vae, None)
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        mean, _ = vae.encode_moments(x)  # (2, 4, 2, 8, 8)
        noise = torch.randn_like(mean)
        plain, _, _ = raw(x, None)
        assert torch.equal(raw(x, None, noise, 0.0)[0], plain)  # scale 0: no noise
        rms = channel_rms(mean).view(1, 4, 1, 1, 1)  # each channel's RMS over the batch and positions
        assert torch.allclose(rms.flatten(), mean.square().mean((0, 2, 3, 4)).sqrt())
        noisy, _, _ = raw(x, None, noise, 0.2)
        assert torch.allclose(noisy, vae.decode(mean + 0.2 * rms * noise), atol=1e-6)
        assert not torch.allclose(noisy, plain, atol=1e-3)


def test_coverage_vae_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """With coverage channels and latent noise on, a run cut at step 3 and resumed ends bit-identical to one run."""
    from safetensors.torch import load_file

    from cinegen.train.vae_trainer import train_vae

    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=16, w=16, masks=True)
    over = ["train.steps=6", "checkpoint.every=3", "loss.mask_channels=2", "loss.smooth_weight=0.01"]
    over += ["loss.latent_noise=0.1"]
    whole = train_vae(_cfg(man, tmp_path / "whole", *over))
    cut = train_vae(_cfg(man, tmp_path / "cut", *over), stop_at=3)
    assert cut.step == 3 and cut.export is None
    resumed = train_vae(_cfg(man, tmp_path / "cut", *over))
    assert resumed.step == 6 and resumed.export is not None and whole.export is not None
    a = load_file(str(whole.export / "vae" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed.export / "vae" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decoder_only_fine_tuning_keeps_the_encoder(tmp_path: Path) -> None:
    """`model.trainable=decoder`: the encoder (so every cached latent) stays bit-identical while the decoder learns
    the reconstruction alone (no loss on the frozen latents); the export is the whole VAE; a cut run resumes
    bit-identically; FSDP is refused with a message."""
    from safetensors.torch import load_file

    from cinegen.train.vae_trainer import train_vae

    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=16, w=16, masks=True)
    base = train_vae(_cfg(man, tmp_path / "base", "train.steps=2"))
    assert base.export is not None
    src = load_file(str(base.export / "vae" / "diffusion_pytorch_model.safetensors"))
    over = ["model.trainable=decoder", "train.steps=12", "checkpoint.every=4", "loss.latent_noise=0.1"]
    over += [f"model.path={base.export}", "model.vae={}", "loss.mask_channels=2", "loss.smooth_weight=0.1"]
    whole = train_vae(_cfg(man, tmp_path / "dec", *over))
    assert whole.export is not None
    out = load_file(str(whole.export / "vae" / "diffusion_pytorch_model.safetensors"))
    assert out.keys() == src.keys()
    enc = [k for k in src if not k.startswith(("decoder.", "post_quant_conv."))]
    dec = [k for k in src if k.startswith("decoder.")]
    assert enc and all(torch.equal(out[k], src[k]) for k in enc)
    assert sum(not torch.equal(out[k], src[k]) for k in dec) > len(dec) // 2
    rows = [json.loads(x) for x in (tmp_path / "dec" / "metrics.jsonl").read_text().splitlines()]
    recon = [r["recon"] for r in rows if "recon" in r]
    assert not any({"kl", "mask", "smooth"} & set(r) for r in rows)  # no loss on the frozen encoder's latents
    assert sum(recon[-3:]) < sum(recon[:3]), recon
    cut = train_vae(_cfg(man, tmp_path / "cut", *over), stop_at=4)
    assert cut.export is None
    resumed = train_vae(_cfg(man, tmp_path / "cut", *over))
    assert resumed.export is not None
    again = load_file(str(resumed.export / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(again[k], out[k]) for k in out)
    with pytest.raises(ValueError, match="model.trainable=decoder"):
        train_vae(_cfg(man, tmp_path / "fsdp", *over, "parallel.strategy=fsdp"))
