"""Training engine pure parts: strict config loader, objectives (vs diffusers), timestep samplers, LR/EMA,
video metrics, LoRA file format and merge math."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import torch

from cinegen.train.config import ConfigError, TrainConfig, VAETrainConfig, load_config, to_yaml
from cinegen.train.metrics import dit_forward_flops, flicker, psnr, ssim, ssim_frames
from cinegen.train.objectives import (
    Objective,
    discrete_timesteps,
    draw_history,
    flow_loss,
    noisy_input,
    objective_loss,
    region_weights,
    shift_sigma,
    temporal_diff_loss,
    timestep_fraction,
    vpred_loss,
    vpred_noisy,
    vpred_target,
    weighted_mean,
    with_history,
)
from cinegen.train.optim import EMA, lr_factor

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# ---------------------------------------------------------------------------------------------------- config


@dataclass
class _Inner:
    lr: float = 1e-4
    names: list[str] = field(default_factory=list)
    mode: Literal["a", "b"] = "a"


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    steps: int = 10
    path: str | None = None
    stages: list[_Inner] = field(default_factory=list)


def test_config_yaml_overrides_and_strictness(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  lr: 1e-3\n  names: [x]\nsteps: 5\nstages:\n  - {lr: 0.5}\n  - {mode: b}\n")
    cfg = load_config(_Outer, f, ["inner.mode=b", "path=/a/b", "stages.1.lr=2", "inner.names=[p, q]"])
    assert cfg.inner.lr == 1e-3 and cfg.inner.mode == "b" and cfg.inner.names == ["p", "q"]
    assert cfg.steps == 5 and cfg.path == "/a/b" and cfg.stages[1].lr == 2.0 and cfg.stages[1].mode == "b"
    with pytest.raises(ConfigError, match=r"unknown config key inner\.lrr"):
        load_config(_Outer, f, ["inner.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key bogus"):
        load_config(_Outer, None, ["bogus=1"])
    with pytest.raises(ConfigError, match=r"inner\.mode.*not one of"):
        load_config(_Outer, None, ["inner.mode=c"])
    with pytest.raises(ConfigError, match=r"steps: expected an integer"):
        load_config(_Outer, None, ["steps=many"])
    with pytest.raises(ConfigError, match=r"not a valid index"):
        load_config(_Outer, f, ["stages.7.lr=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(_Outer, None, ["steps"])


def test_config_base_inheritance(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "root.yaml").write_text("inner:\n  lr: 0.5\n  names: [a, b]\nsteps: 3\npath: /x\n")
    (tmp_path / "sub" / "mid.yaml").write_text("_base_: ../root.yaml\ninner:\n  mode: b\nsteps: 4\n")
    (tmp_path / "leaf.yaml").write_text("_base_: sub/mid.yaml\ninner:\n  names: [c]\npath: null\n")
    cfg = load_config(_Outer, tmp_path / "leaf.yaml", ["steps=9"])
    # mappings merge key by key through the chain (paths relative to each file); lists and scalars replace
    assert cfg.inner == _Inner(lr=0.5, names=["c"], mode="b") and cfg.path is None and cfg.steps == 9
    assert load_config(_Outer, tmp_path / "sub" / "mid.yaml").steps == 4
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(_Outer, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("_base_: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml \(the _base_ of"):
        load_config(_Outer, tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("_base_: [root.yaml]\n")
    with pytest.raises(ConfigError, match="must be a file path"):
        load_config(_Outer, tmp_path / "d.yaml")


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_parse_and_round_trip(name: str, tmp_path: Path) -> None:
    cls = VAETrainConfig if name == "vae" or "-vae" in name else TrainConfig
    cfg = load_config(cls, CONFIGS / f"{name}.yaml")
    dumped = tmp_path / "dump.yaml"
    dumped.write_text(to_yaml(cfg))
    assert load_config(cls, dumped) == cfg  # the --dry-run output is itself a valid config


# ------------------------------------------------------------------------------------------------ objectives


def _ddim(snr: float):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.CogVideoXDDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
        snr_shift_scale=snr,
    )


def test_vpred_matches_diffusers_training_recipe() -> None:
    """x_t, v and the x0-space weighted loss equal the diffusers CogVideoX LoRA training script on the same draws."""
    from cinegen.models.presets import cogvideox_scheduler
    from cinegen.sampling import alphas_cumprod

    sched = _ddim(3.0)
    ours = alphas_cumprod(cogvideox_scheduler(3.0))
    assert torch.equal(ours, sched.alphas_cumprod.double())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, 6, generator=g)  # (B, T, C, H, W)
    noise = torch.randn(x0.shape, generator=g)
    pred = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 500, 999])
    a = ours[t]
    x_t = vpred_noisy(x0, noise, a)
    ref_xt = sched.add_noise(x0, noise, t)
    assert (x_t - ref_xt).abs().max() < 1e-6
    assert (vpred_target(x0, noise, a) - sched.get_velocity(x0, noise, t)).abs().max() < 1e-6
    # diffusers examples/cogvideo/train_cogvideox_lora.py: loss in x0 space with weight 1/(1 - alphas_cumprod)
    model_pred = sched.get_velocity(pred, ref_xt, t)  # = sqrt(a) x_t - sqrt(1-a) v_hat
    w = (1 / (1 - sched.alphas_cumprod[t])).reshape(-1, 1, 1, 1, 1)
    ref = torch.mean((w * (model_pred - x0) ** 2).reshape(3, -1), dim=1)
    ours_loss = vpred_loss(pred, x0, x_t, a)
    assert (ours_loss - ref.float()).abs().max() / ref.abs().max() < 1e-5
    # ... which is the plain v-MSE (SAT loss.py equivalence)
    v = vpred_target(x0, noise, a)
    assert torch.allclose(ours_loss, ((pred - v) ** 2).flatten(1).mean(1), rtol=1e-4)
    # at t = 999 (zero terminal SNR) the model input is pure noise
    assert torch.equal(x_t[2], noise[2])


def test_flow_objective_convention() -> None:
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 1, 2, 2, 2, generator=g), torch.randn(4, 1, 2, 2, 2, generator=g)
    obj = Objective(kind="flow", shift=3.0)
    frac = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    n = noisy_input(obj, x0, noise, frac)
    sigma = 3 * frac / (1 + 2 * frac)
    assert torch.allclose(n.level, sigma)
    assert torch.allclose(n.timestep, (sigma * 1000).float())
    assert torch.allclose(
        n.x_t, (1 - sigma.float()).view(-1, 1, 1, 1, 1) * x0 + sigma.float().view(-1, 1, 1, 1, 1) * noise
    )
    assert torch.equal(n.x_t[0], x0[0]) and torch.equal(n.x_t[3], noise[3])
    perfect = noise - x0
    assert float(objective_loss(obj, perfect, x0, noise, n).abs().max()) == 0.0
    assert torch.allclose(flow_loss(torch.zeros_like(x0), x0, noise), (perfect**2).flatten(1).mean(1))
    # Region weights: none or all-ones = the plain mean; a mask weighs its cells by mask_weight.
    err = torch.rand(2, 3, 4, 2, 2, generator=g)  # (B, T, C, h, w)
    mask = torch.zeros(2, 3, 1, 2, 2)
    mask[0, :, :, 0, 0] = 1.0
    w = region_weights(mask, 4.0)
    assert torch.equal(weighted_mean(err, None), err.flatten(1).mean(1))
    assert torch.allclose(weighted_mean(err, torch.ones_like(mask)), err.flatten(1).mean(1))
    assert torch.allclose(weighted_mean(err, region_weights(mask, 1.0)), err.flatten(1).mean(1))
    inside, outside = err[0, :, :, 0, 0].sum(), err[0].sum() - err[0, :, :, 0, 0].sum()
    assert torch.allclose(weighted_mean(err, w)[0], (4 * inside + outside) / (4 * 12 + 36))
    assert torch.allclose(weighted_mean(err, w)[1], err[1].mean())  # an empty mask: the plain mean
    region = region_weights(mask[:1].expand(4, -1, -1, -1, -1)[:, :1], 3.0)  # (4, 1, 1, 2, 2) over x0's T = 1
    wl = objective_loss(obj, torch.zeros_like(x0), x0, noise, n, region)
    assert torch.allclose(wl, flow_loss(torch.zeros_like(x0), x0, noise, region))
    assert not torch.allclose(wl, objective_loss(obj, torch.zeros_like(x0), x0, noise, n))
    # The flow convention is the one the Euler sampler integrates: one exact step from sigma to 0 recovers x0.
    from cinegen.sampling import euler_flow_step

    x = euler_flow_step(n.x_t[1:2], perfect[1:2], float(sigma[1]), 0.0)
    assert (x - x0[1:2]).abs().max() < 1e-5


def test_temporal_difference_term() -> None:
    """objective.temporal_weight: loss += λ·mean((Δ_t r)²) of the objective's own residual; zero for images, for a
    perfect prediction and for an error that is the same in every frame; hand-computed for vpred and flow."""
    from cinegen.models.presets import cogvideox_scheduler
    from cinegen.sampling import alphas_cumprod

    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(3, 4, 2, 3, 3, generator=g)  # (B, T, C, H, W)
    noise, pred = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    # the term itself: frame pairs, images, region weights (mean of each pair's two frames)
    r = torch.randn(x0.shape, generator=g)
    d = r[:, 1:] - r[:, :-1]
    assert torch.allclose(temporal_diff_loss(r), (d**2).flatten(1).mean(1))
    assert torch.equal(temporal_diff_loss(r[:, :1]), torch.zeros(3))
    region = 1.0 + 3.0 * (torch.rand(3, 4, 1, 3, 3, generator=g) > 0.5).float()
    pw = 0.5 * (region[:, 1:] + region[:, :-1]).expand_as(d)
    ref = (pw * d**2).flatten(1).sum(1) / pw.flatten(1).sum(1)
    assert torch.allclose(temporal_diff_loss(r, region), ref)
    # vpred: residual sqrt(w)·(x0_hat − x0), w = 1/(1 − a)
    alphas = alphas_cumprod(cogvideox_scheduler(3.0))
    base, lam = Objective(kind="vpred", alphas_cumprod=alphas), 2.5
    obj = Objective(kind="vpred", alphas_cumprod=alphas, temporal_weight=lam)
    n = noisy_input(base, x0, noise, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    a = n.level.float().view(-1, 1, 1, 1, 1)
    res = (a.sqrt() * n.x_t - (1 - a).sqrt() * pred - x0) / (1 - a).sqrt()
    want = vpred_loss(pred, x0, n.x_t, n.level) + lam * ((res[:, 1:] - res[:, :-1]) ** 2).flatten(1).mean(1)
    assert torch.allclose(objective_loss(obj, pred, x0, noise, n), want, rtol=1e-5)
    assert torch.equal(objective_loss(base, pred, x0, noise, n), vpred_loss(pred, x0, n.x_t, n.level))
    v = vpred_target(x0, noise, n.level)
    assert float(objective_loss(obj, v, x0, noise, n).abs().max()) < 1e-4  # perfect prediction
    static = v + torch.randn(3, 1, 2, 3, 3, generator=g)  # the same error in every frame: no extra loss
    assert torch.allclose(objective_loss(obj, static, x0, noise, n), objective_loss(base, static, x0, noise, n))
    moving = v + torch.randn(x0.shape, generator=g)
    assert bool((objective_loss(obj, moving, x0, noise, n) > objective_loss(base, moving, x0, noise, n)).all())
    # flow: residual v_hat − (eps − x0); images (T = 1) are unchanged
    fobj = Objective(kind="flow", temporal_weight=lam)
    fn = noisy_input(fobj, x0, noise, torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64))
    fres = pred - (noise - x0)
    want = flow_loss(pred, x0, noise, region) + lam * temporal_diff_loss(fres, region)
    assert torch.allclose(objective_loss(fobj, pred, x0, noise, fn, region), want)
    img = noisy_input(fobj, x0[:, :1], noise[:, :1], torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64))
    assert torch.equal(
        objective_loss(fobj, pred[:, :1], x0[:, :1], noise[:, :1], img), flow_loss(pred[:, :1], x0[:, :1], noise[:, :1])
    )
    with pytest.raises(ValueError, match="temporal_weight"):
        Objective(kind="flow", temporal_weight=-1.0)
    # the config key reaches the objective the trainer builds
    from cinegen.train.trainer import make_objective

    cfg = TrainConfig()
    cfg.objective.temporal_weight = lam
    assert make_objective(cfg, cogvideox_scheduler(1.0)).temporal_weight == lam


def test_history_frames() -> None:
    """objective.history_prob: k whole temporal patches (>= 1, one patch left) re-noised at frac·s, zero loss
    weight on them, timesteps unchanged; the loss is the loss of the remaining frames."""
    gens = [torch.Generator().manual_seed(i) for i in range(400)]
    draws = [draw_history(g, 0.5, 5) for g in gens]
    ks = [k for k, _ in draws]
    assert set(ks) == {0, 1, 2, 3, 4} and 0.4 < ks.count(0) / len(ks) < 0.6
    assert all(0.0 <= s < 1.0 for k, s in draws if k)
    assert {draw_history(torch.Generator().manual_seed(i), 1.0, 6, patch_t=2)[0] for i in range(100)} == {2, 4}
    assert draw_history(torch.Generator().manual_seed(0), 1.0, 1) == (0, 1.0)  # images: never
    assert draw_history(torch.Generator().manual_seed(0), 0.0, 5) == (0, 1.0)
    from cinegen.models.presets import cogvideox_scheduler
    from cinegen.sampling import alphas_cumprod

    obj = Objective(kind="vpred", alphas_cumprod=alphas_cumprod(cogvideox_scheduler(3.0)), history_prob=0.5)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 4, 2, 3, 3, generator=g)  # (B, T, C, H, W)
    noise, pred = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    frac = torch.tensor([0.9, 0.6, 0.8], dtype=torch.float64)
    n = noisy_input(obj, x0, noise, frac)
    h, region = with_history(obj, x0, noise, n, frac, [(2, 0.25), (0, 1.0), (1, 0.5)])
    assert torch.equal(h.timestep, n.timestep) and torch.equal(h.level, n.level)
    assert torch.equal(h.x_t[0, :2], noisy_input(obj, x0[:1, :2], noise[:1, :2], frac[:1] * 0.25).x_t[0])
    assert torch.equal(h.x_t[0, 2:], n.x_t[0, 2:]) and torch.equal(h.x_t[1], n.x_t[1])
    assert (h.x_t[0, :2] - x0[0, :2]).abs().mean() < (n.x_t[0, :2] - x0[0, :2]).abs().mean()  # less noisy
    assert region is not None and region.shape == (3, 4, 1, 3, 3)
    assert region[0, :2].eq(0).all() and region[0, 2:].eq(1).all() and region[1].eq(1).all()
    loss = objective_loss(obj, pred, x0, noise, h, region)
    rest = vpred_loss(pred[:1, 2:], x0[:1, 2:], h.x_t[:1, 2:], h.level[:1])
    assert torch.allclose(loss[0], rest[0]) and torch.allclose(loss[1], vpred_loss(pred, x0, n.x_t, n.level)[1])
    m = torch.rand(3, 4, 1, 3, 3, generator=g)  # an existing region map is multiplied, not replaced
    assert torch.equal(with_history(obj, x0, noise, n, frac, [(1, 0.5)] * 3, m)[1][:, 1:], m[:, 1:])
    assert with_history(obj, x0, noise, n, frac, [(0, 1.0)] * 3) == (n, None)
    with pytest.raises(ValueError, match="history_prob must be in"):
        Objective(kind="flow", history_prob=1.5)
    with pytest.raises(ValueError, match="exclude each other"):
        Objective(kind="flow", history_prob=0.5, temporal_weight=1.0)


def test_timestep_samplers() -> None:
    g = torch.Generator().manual_seed(0)
    B = 4096
    u = torch.rand(B, generator=g, dtype=torch.float64)
    z = torch.randn(B, generator=g, dtype=torch.float64)
    idx = torch.arange(B)
    uni = timestep_fraction("uniform", u, z, idx, B)
    assert torch.equal(uni, u)
    strat = timestep_fraction("explicit_uniform", u[:8], z[:8], torch.arange(8), 8)
    # explicit uniform: sample g lies in [g/G, (g+1)/G) -> one per stratum
    assert torch.equal((strat * 8).floor().long(), torch.arange(8))
    t = discrete_timesteps(timestep_fraction("explicit_uniform", u[:10], z[:10], torch.arange(10), 10), 1000)
    assert torch.equal(t // 100, torch.arange(10))
    ln = timestep_fraction("logit_normal", u, z, idx, B, logit_mean=0.0, logit_std=1.0)
    assert abs(float(ln.median()) - 0.5) < 0.03 and float(ln.min()) > 0 and float(ln.max()) < 1
    assert float(discrete_timesteps(torch.tensor([0.0, 0.9999999, 1.0]), 1000).max()) == 999
    s = shift_sigma(torch.tensor([0.0, 0.5, 1.0]), 3.0)
    assert torch.allclose(s, torch.tensor([0.0, 0.75, 1.0]))


def test_timestep_range_restricts_the_sampled_timesteps() -> None:
    """objective.timestep_range (a low-noise refiner fine-tune): the stratified fractions fill [lo, hi) instead
    of [0, 1); (0, 1) leaves them untouched."""
    from cinegen.train.objectives import Objective, objective_fraction

    table = torch.linspace(0.999, 0.0, 1000, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    u, z = torch.rand(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    full = Objective("vpred", "explicit_uniform", alphas_cumprod=table)
    assert torch.equal(
        objective_fraction(full, u, z, torch.arange(8), 8),
        timestep_fraction("explicit_uniform", u, z, torch.arange(8), 8),
    )
    low = Objective("vpred", "explicit_uniform", alphas_cumprod=table, timestep_range=(0.0, 0.1))
    t = discrete_timesteps(objective_fraction(low, u, z, torch.arange(8), 8), 1000)
    assert int(t.max()) < 100 and torch.equal((t / 12.5).floor().long(), torch.arange(8))  # still one per stratum
    mid = objective_fraction(Objective("flow", timestep_range=(0.5, 0.75)), u, z, torch.arange(8), 8)
    assert float(mid.min()) >= 0.5 and float(mid.max()) < 0.75
    for bad in ((0.2, 0.1), (-0.1, 0.5), (0.0, 1.5)):
        with pytest.raises(ValueError, match="timestep_range"):
            Objective("flow", timestep_range=bad)


# ---------------------------------------------------------------------------------------------- optim / EMA


def test_lr_schedules() -> None:
    assert [lr_factor(s, 10, 2, "constant") for s in range(4)] == [0.5, 1.0, 1.0, 1.0]
    cos = [lr_factor(s, 12, 2, "cosine", 0.1) for s in range(12)]
    assert cos[2] == pytest.approx(1.0) and cos[7] == pytest.approx(0.55) and min(cos) >= 0.1
    assert all(a >= b for a, b in zip(cos[2:], cos[3:], strict=False))
    assert lr_factor(6, 10, 0, "linear") == pytest.approx(0.4)


def test_ema_update_and_copy() -> None:
    m = torch.nn.Linear(2, 2)
    ema = EMA(m, decay=0.9)
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    assert torch.allclose(ema.shadow["weight"], w0 + 0.1)
    ema.copy_to(m)
    assert torch.allclose(m.weight, w0 + 0.1)


# ------------------------------------------------------------------------------------------------- metrics


def test_psnr_ssim_flicker_golden() -> None:
    x = torch.zeros(1, 3, 4, 16, 16)
    y = x + 0.2  # 0.1 on the [0, 1] scale -> MSE 0.01 -> 20 dB
    assert psnr(y, x) == pytest.approx(20.0, abs=1e-4)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 32, 32, generator=g)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    s_noisy = float(ssim_frames(img, noisy))
    assert 0.1 < s_noisy < 0.9 and float(ssim_frames(img, img * 0.9 + 0.05)) > s_noisy
    assert float(ssim_frames(noisy, img)) == pytest.approx(s_noisy, abs=1e-6)  # symmetric
    still = torch.zeros(1, 3, 5, 8, 8)
    flick = still.clone()
    flick[:, :, 1::2] = 0.5  # alternating frames: |diff| = 0.25 on the [0, 1] scale
    f = flicker(flick, still)
    assert f["flicker"] == pytest.approx(0.25) and f["flicker_source"] == 0.0


def test_train_flops_formula() -> None:
    # fast-inference.md §5.3 toy config: L=4, d=256, 832 tokens -> ~8e9 forward FLOPs
    p_lin = 12 * 4 * 256 * 256
    assert dit_forward_flops(p_lin, 4, 256, 832) == pytest.approx(2 * p_lin * 832 + 4 * 4 * 256 * 832**2)
    assert 7e9 < dit_forward_flops(p_lin, 4, 256, 832) < 9e9
    assert math.isclose(dit_forward_flops(0, 1, 1, 10), 400)
