"""Samplers vs diffusers: ᾱ tables, timesteps, each step over whole trajectories, the loop, V2V, configs.

The oracle is diffusers' own schedulers (CogVideoXDDIMScheduler, CogVideoXDPMScheduler,
FlowMatchEulerDiscreteScheduler) driven the way the CogVideoX pipelines drive them. The "model" is a fixed
random function of (latents, t), so whole multi-step trajectories are compared, not single steps.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from cinegen.sampling import (
    NoiseScheduleConfig,
    SamplerSpec,
    add_noise,
    alphas_cumprod,
    cfg_batched,
    ddim_step,
    diffusers_flow,
    discrete_timesteps,
    dpm_pp2m_step,
    dynamic_cfg_scale,
    dynamic_cfg_scale_diffusers,
    euler_flow_step,
    flow_add_noise,
    flow_velocity,
    guidance_scale_at,
    linear_quadratic,
    log_snr_timesteps,
    make_plan,
    noise_latents,
    predict_x0,
    sample,
    shifted,
    uniform,
    velocity,
)

SHAPE = (1, 3, 4, 6, 6)  # (B, T, C, H, W)


def cogvideox(snr: float, kind: str = "ddim") -> NoiseScheduleConfig:
    """The published CogVideoX scheduler config (reference §6.3)."""
    return NoiseScheduleConfig(kind=kind, snr_shift_scale=snr)  # type: ignore[arg-type]


def flow(shift: float = 1.0) -> NoiseScheduleConfig:
    return NoiseScheduleConfig(kind="flow", shift=shift)


def diffusers_scheduler(cfg: NoiseScheduleConfig):
    diffusers = pytest.importorskip("diffusers")
    return getattr(diffusers, cfg.class_name).from_config(cfg.to_dict())


class FakeModel:
    """A fixed random nonlinear function of (latents, t); a [uncond; cond] batch gives two outputs."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(SHAPE, generator=g)
        self.b = torch.randn(SHAPE, generator=g)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.float() / 1000
        w = self.w.to(x.dtype)
        if x.shape[0] == 2 * SHAPE[0]:  # [uncond; cond]: the cond half sees a different bias
            u, c = x.chunk(2)
            return torch.cat([torch.tanh(u * w + tt), torch.tanh(c * w + tt + self.b.to(x.dtype))])
        return torch.tanh(x * w + tt) + 0.1 * x


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# ---------------------------------------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize("snr", [3.0, 1.0])
def test_alphas_cumprod_bitwise(snr: float) -> None:
    sched = diffusers_scheduler(cogvideox(snr))
    ours = alphas_cumprod(cogvideox(snr))
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    assert torch.equal(ours, sched.alphas_cumprod)
    assert float(ours[-1]) == 0.0  # zero terminal SNR


def test_alphas_cumprod_other_betas_bitwise() -> None:
    diffusers = pytest.importorskip("diffusers")
    cases = [
        {"_class_name": "CogVideoXDPMScheduler"},  # class defaults: scaled-linear, snr 3, no rescale
        # linear betas live in float32 in diffusers (so do the step coefficients)
        {
            "_class_name": "CogVideoXDPMScheduler",
            "beta_schedule": "linear",
            "beta_start": 1e-4,
            "beta_end": 0.02,
        },
        {
            "_class_name": "CogVideoXDDIMScheduler",
            "beta_schedule": "squaredcos_cap_v2",
            "snr_shift_scale": 2.0,
        },
        {"_class_name": "CogVideoXDDIMScheduler", "rescale_betas_zero_snr": True, "set_alpha_to_one": False},
    ]
    for d in cases:
        sched = getattr(diffusers, d["_class_name"]).from_config(d)
        ours = alphas_cumprod(NoiseScheduleConfig.from_dict(d))
        assert torch.equal(ours, sched.alphas_cumprod.double()), d


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_discrete_timesteps(spacing: str) -> None:
    cfg = NoiseScheduleConfig(timestep_spacing=spacing, steps_offset=1 if spacing == "leading" else 0)
    sched = diffusers_scheduler(cfg)
    for n in [50, 30, 25, 4, 1, 7, 999]:
        sched.set_timesteps(n)
        assert discrete_timesteps(n, cfg) == sched.timesteps.tolist(), n
    if spacing == "trailing":
        assert discrete_timesteps(50, cfg)[:3] == [999, 979, 959] and discrete_timesteps(50, cfg)[-1] == 19
        assert discrete_timesteps(30, cfg)[:4] == [999, 966, 932, 899]  # not a constant stride (PR #13125)
        # diffusers' float arange gives 62 timesteps ending in -1 for n = 61; we keep the 61 real ones
        sched.set_timesteps(61)
        assert len(sched.timesteps) == 62 and int(sched.timesteps[-1]) == -1
        assert discrete_timesteps(61, cfg) == sched.timesteps.tolist()[:61]
    for n in range(1, 1000, 3):
        ts = discrete_timesteps(n, cfg)
        assert len(ts) == n and len(set(ts)) == n and min(ts) >= 0 and max(ts) <= 999, n
    with pytest.raises(ValueError, match="num_steps"):
        discrete_timesteps(0, cfg)
    if spacing == "leading":  # offset 1 with n = T would ask for t = 1000
        with pytest.raises(ValueError, match="t=1000"):
            discrete_timesteps(1000, cfg)


def test_linear_quadratic_schedule() -> None:
    s = linear_quadratic(50)
    assert len(s) == 51 and s[0] == 1.0 and s[-1] == 0.0
    assert all(a > b for a, b in zip(s, s[1:], strict=False))  # strictly decreasing
    # first half: the first 25 steps of a 1000-step uniform schedule (fast-inference.md §1.1)
    assert all(abs(s[i] - (1 - i / 1000)) < 1e-12 for i in range(26))
    # second half: the values printed in fast-inference.md §1.1 (4 decimals)
    doc = [0.9725, 0.9669, 0.9583, 0.9467, 0.932, 0.9143, 0.8935, 0.8697, 0.8429, 0.813, 0.7801, 0.7441]
    doc += [0.7051, 0.6631, 0.618, 0.5699, 0.5187, 0.4645, 0.4073, 0.347, 0.2837, 0.2173, 0.1479, 0.0755]
    assert max(abs(a - b) for a, b in zip(s[26:50], doc, strict=True)) < 6e-5
    steps = [a - b for a, b in zip(s, s[1:], strict=False)]
    assert abs(steps[25] - 0.0025) < 1e-4 and abs(steps[-1] - 0.0755) < 1e-4  # growing quadratic steps
    assert all(b > a for a, b in zip(steps[25:], steps[26:], strict=False))
    for n in (1, 2, 3, 7, 64):
        s = linear_quadratic(n)
        assert len(s) == n + 1 and s[0] == 1.0 and s[-1] == 0.0
        assert all(a > b for a, b in zip(s, s[1:], strict=False))
    with pytest.raises(ValueError, match="threshold_noise"):
        linear_quadratic(10, threshold_noise=0.6)


def test_linear_quadratic_matches_mochi() -> None:
    pytest.importorskip("diffusers")
    from diffusers.pipelines.mochi.pipeline_mochi import linear_quadratic_schedule

    for n in (4, 10, 50, 64, 7):
        assert linear_quadratic(n)[:n] == linear_quadratic_schedule(n, 0.025), n


def test_diffusers_flow_list() -> None:
    for shift in (1.0, 3.0, 7.3):
        for n in (1, 3, 50):
            sched = diffusers_scheduler(flow(shift))
            sched.set_timesteps(n)
            assert diffusers_flow(n, shift) == sched.sigmas.tolist(), (shift, n)


def test_uniform_and_shifted() -> None:
    assert uniform(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    s = shifted(4, 3.0)
    assert s[0] == 1.0 and s[-1] == 0.0 and abs(s[2] - 0.75) < 1e-12  # 3·0.5 / (1 + 2·0.5)
    assert shifted(4, 1.0) == uniform(4)


# ---------------------------------------------------------------------------------------------------------
# step functions over whole trajectories


@pytest.mark.parametrize(("snr", "n"), [(3.0, 50), (1.0, 30), (3.0, 4)])
def test_ddim_trajectory_matches_diffusers(snr: float, n: int) -> None:
    cfg = cogvideox(snr)
    sched = diffusers_scheduler(cfg)
    sched.set_timesteps(n)
    plan = make_plan(SamplerSpec("ddim", n), cfg)
    assert plan.timesteps == tuple(float(t) for t in sched.timesteps)
    model = FakeModel()
    x_ref = x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    err = 0.0
    for i, t in enumerate(sched.timesteps):
        x_ref, x0_ref = sched.step(model(x_ref, t), t, x_ref, return_dict=False)
        a_t, a_prev = plan.alpha_tensor(plan.alphas[i]), plan.alpha_tensor(plan.alphas_prev[i])
        x, x0 = ddim_step(x, model(x, plan.timestep_tensor(i)), a_t, a_prev)
        err = max(err, max_err(x, x_ref), max_err(x0, x0_ref))
    assert err <= 1e-6, err
    assert torch.equal(x, x_ref)  # same expressions, same dtypes: bit-identical


@pytest.mark.parametrize(("snr", "n"), [(3.0, 50), (1.0, 30), (1.0, 2)])
def test_dpm_trajectory_matches_diffusers(snr: float, n: int) -> None:
    cfg = cogvideox(snr, kind="dpm")
    sched = diffusers_scheduler(cfg)
    sched.set_timesteps(n)
    plan = make_plan(SamplerSpec("dpm", n), cfg)
    model = FakeModel()
    x_ref = x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    g_ref, g = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    old_ref = old = None
    ts = sched.timesteps
    err = 0.0
    for i, t in enumerate(ts):
        back_t = ts[i - 1] if i > 0 else None
        x_ref, old_ref = sched.step(model(x_ref, t), old_ref, t, back_t, x_ref, generator=g_ref, return_dict=False)
        back = plan.alphas_back[i]
        x, old = dpm_pp2m_step(
            x,
            model(x, plan.timestep_tensor(i)),
            old,
            plan.alpha_tensor(plan.alphas[i]),
            plan.alpha_tensor(plan.alphas_prev[i]),
            None if back is None else plan.alpha_tensor(back),
            g,
        )
        err = max(err, max_err(x, x_ref), max_err(old, old_ref))
    assert err <= 1e-6, err
    assert torch.equal(x, x_ref)
    # same number of noise draws (one per step + a wasted one on every middle step)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=g_ref))


@pytest.mark.parametrize(
    ("schedule", "shift"),
    [("shifted", 3.0), ("linear_quadratic", 1.0), ("uniform", 1.0), ("diffusers", 3.0), ("diffusers", 1.0)],
)
def test_euler_trajectory_matches_diffusers(schedule: str, shift: float) -> None:
    n = 12
    cfg = flow(shift)
    sched = diffusers_scheduler(cfg)
    if schedule == "diffusers":
        sched.set_timesteps(n)  # the scheduler's own default σ list
    else:
        base = linear_quadratic(n) if schedule == "linear_quadratic" else uniform(n)
        sched.set_timesteps(sigmas=base[:n])  # custom sigmas; diffusers applies the config shift, appends 0
    plan = make_plan(SamplerSpec("euler", n, flow_schedule=schedule), cfg)  # type: ignore[arg-type]
    assert plan.sigmas == tuple(sched.sigmas.tolist())
    assert plan.timesteps == tuple(sched.timesteps.tolist())  # model input = σ·1000
    model = FakeModel()
    x_ref = x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    err = 0.0
    for i, t in enumerate(sched.timesteps):
        x_ref = sched.step(model(x_ref, t), t, x_ref, return_dict=False)[0]
        x = euler_flow_step(x, model(x, plan.timestep_tensor(i)), plan.sigmas[i], plan.sigmas[i + 1])
        err = max(err, max_err(x, x_ref))
    assert err <= 1e-6, err
    assert torch.equal(x, x_ref)


def test_forward_processes_match_diffusers() -> None:
    cfg = cogvideox(3.0)
    sched = diffusers_scheduler(cfg)
    table = alphas_cumprod(cfg)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn((3, *SHAPE[1:]), generator=g), torch.randn((3, *SHAPE[1:]), generator=g)
    t = torch.tensor([0, 500, 999])
    for dtype in (torch.float32, torch.bfloat16):
        a, b = x0.to(dtype), eps.to(dtype)
        assert torch.equal(add_noise(a, b, table[t]), sched.add_noise(a, b, t))
        assert torch.equal(velocity(a, b, table[t]), sched.get_velocity(a, b, t))
    # v-pred consistency: x̂0 from the exact v at x_t is x0 (the training target and the sampler agree)
    a = table[t]
    x0_hat = torch.stack([predict_x0(add_noise(x0, eps, a)[k], velocity(x0, eps, a)[k], a[k]) for k in range(3)])
    assert max_err(x0_hat, x0) < 1e-5
    # flow interpolant: FlowMatchEulerDiscreteScheduler.scale_noise at the first step
    fs = diffusers_scheduler(flow(3.0))
    fs.set_timesteps(sigmas=uniform(8)[:8])
    fs.set_begin_index(2)
    ref = fs.scale_noise(x0[:1], fs.timesteps[2:3], eps[:1])
    assert torch.equal(flow_add_noise(x0[:1], eps[:1], float(fs.sigmas[2])), ref)
    assert torch.equal(flow_velocity(x0, eps), eps - x0)


# ---------------------------------------------------------------------------------------------------------
# the loop vs a hand-written diffusers-style pipeline loop


def reference_loop(cfg: NoiseScheduleConfig, n: int, latents, model, guidance, dynamic, strength, x0, generator):
    """The CogVideoX pipeline loop (reference §5.1 step 5; §5.3 for strength < 1), diffusers schedulers."""
    sched = diffusers_scheduler(cfg)
    if cfg.kind == "flow":
        sched.set_timesteps(sigmas=linear_quadratic(n)[:n])
    else:
        sched.set_timesteps(n)
    timesteps, steps = sched.timesteps, n
    if strength < 1.0:  # CogVideoXVideoToVideoPipeline.get_timesteps + add_noise
        init = min(int(n * strength), n)
        t_start = max(n - init, 0)
        timesteps, steps = timesteps[t_start:], n - t_start
        if cfg.kind == "flow":
            sched.set_begin_index(t_start)
            latents = sched.scale_noise(x0, timesteps[:1], latents)
        else:
            latents = sched.add_noise(x0, latents, timesteps[:1])
    dtype = latents.dtype
    old = None
    for i, t in enumerate(timesteps):
        noise_pred = model(torch.cat([latents] * 2), t).float()
        gs = guidance
        if dynamic:
            gs = 1 + guidance * ((1 - math.cos(math.pi * ((steps - t.item()) / steps) ** 5.0)) / 2)
        uncond, text = noise_pred.chunk(2)
        noise_pred = uncond + gs * (text - uncond)
        if cfg.kind == "ddim":
            latents = sched.step(noise_pred, t, latents, return_dict=False)[0]
        elif cfg.kind == "dpm":
            back = timesteps[i - 1] if i > 0 else None
            latents, old = sched.step(noise_pred, old, t, back, latents, generator=generator, return_dict=False)
        else:
            latents = sched.step(noise_pred, t, latents, return_dict=False)[0]
        latents = latents.to(dtype)
    return latents


@pytest.mark.parametrize(
    ("kind", "strength", "dtype", "dynamic"),
    [
        ("ddim", 1.0, torch.float32, True),
        ("dpm", 1.0, torch.float32, True),
        ("euler", 1.0, torch.float32, False),
        ("ddim", 0.5, torch.float32, False),
        ("dpm", 0.5, torch.float32, False),
        ("euler", 0.5, torch.float32, False),
        ("dpm", 1.0, torch.bfloat16, False),
        ("euler", 1.0, torch.bfloat16, False),
    ],
)
def test_sample_matches_reference_loop(kind: str, strength: float, dtype: torch.dtype, dynamic: bool) -> None:
    n = 10
    cfg = flow(3.0) if kind == "euler" else cogvideox(3.0, kind=kind)
    model = FakeModel()
    g0 = torch.Generator().manual_seed(3)
    start = torch.randn(SHAPE, generator=g0).to(dtype)
    x0 = torch.randn(SHAPE, generator=g0).to(dtype)
    guidance = 6.0
    ref = reference_loop(cfg, n, start, model, guidance, dynamic, strength, x0, torch.Generator().manual_seed(5))

    plan = make_plan(SamplerSpec(kind, n), cfg, strength=strength)  # type: ignore[arg-type]
    assert plan.num_steps == (n if strength == 1.0 else int(n * strength))

    def denoise(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
        scale = guidance_scale_at(guidance, i, float(t), plan.num_steps, dynamic=dynamic, mode="diffusers")
        return cfg_batched(model(torch.cat([x] * 2), t).float(), scale)

    calls: list[tuple[int, int]] = []
    latents = noise_latents(x0, start, plan) if strength < 1.0 else start
    out = sample(denoise, latents, plan, torch.Generator().manual_seed(5), lambda i, k: calls.append((i, k)))
    assert out.dtype == dtype
    assert calls == [(i + 1, plan.num_steps) for i in range(plan.num_steps)]
    err = max_err(out, ref)
    assert err <= 1e-6, err


def test_samplers_recover_x0_with_an_oracle_model() -> None:
    """With a perfect model every sampler lands on x0 (steps, schedules and noise conventions agree)."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    cfg = cogvideox(3.0)
    table = alphas_cumprod(cfg)
    for kind, spacing in (("ddim", "scheduler"), ("dpm", "scheduler"), ("ddim", "log_snr"), ("dpm", "log_snr")):
        plan = make_plan(SamplerSpec(kind, 8, spacing=spacing), cfg)  # type: ignore[arg-type]

        def v_oracle(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
            a = table[int(t)]  # v such that √ᾱ·x - √(1-ᾱ)·v = x0
            return ((a**0.5 * x - x0) / (1 - a) ** 0.5).float()

        out = sample(v_oracle, eps.clone(), plan, torch.Generator().manual_seed(1))
        assert max_err(out, x0) < 1e-5, kind
    for schedule in ("uniform", "shifted", "linear_quadratic"):
        plan = make_plan(SamplerSpec("euler", 8, flow_schedule=schedule, shift=3.0), flow())  # type: ignore[arg-type]
        out = sample(lambda x, t, i: eps - x0, eps.clone(), plan)  # straight path: constant velocity
        assert max_err(out, x0) < 1e-5, schedule
        # V2V start on the same path: x at the first kept σ, then the same exact landing
        p = make_plan(SamplerSpec("euler", 8, flow_schedule=schedule), flow(), strength=0.5)  # type: ignore[arg-type]
        xs = noise_latents(x0, eps, p)
        assert max_err(xs, (1 - p.sigmas[0]) * x0 + p.sigmas[0] * eps) < 1e-6
        assert max_err(sample(lambda x, t, i: eps - x0, xs, p), x0) < 1e-5


@pytest.mark.parametrize("snr", [1.0, 10.0])
def test_log_snr_timesteps(snr: float) -> None:
    """Uniform in the shifted schedule's log-SNR: starts at T - 1 (zero terminal SNR), ends at t = 0, strictly
    decreasing, even log-SNR gaps between its first and last uniform steps."""
    table = alphas_cumprod(cogvideox(snr))
    lam = (table / (1 - table)).log()  # (T,), -inf at T - 1
    for n in (1, 2, 8, 20, 50):
        ts = log_snr_timesteps(n, table)
        assert len(ts) == n and ts[0] == 999 and all(a > b for a, b in zip(ts, ts[1:], strict=False))
        if n > 1:
            assert ts[-1] == 0
    ts = log_snr_timesteps(8, table)
    gaps = [float(lam[b] - lam[a]) for a, b in zip(ts[1:], ts[2:], strict=False)]
    step = (float(lam[0]) + 10.0) / 7  # from MIN_LOG_SNR to λ_0 in 7 intervals
    assert max(abs(g - step) for g in gaps) < 0.15 * step
    assert log_snr_timesteps(1000, table) == list(range(999, -1, -1))  # every timestep once
    # the plan: the last model call is at t = 0 (trailing with SNR shift 10 ends at t = 49, σ = 0.58), and each
    # step goes to the next listed timestep
    plan = make_plan(SamplerSpec("ddim", 20, spacing="log_snr"), cogvideox(snr))
    assert plan.timesteps[-1] == 0.0 and plan.alphas_prev[-1] == 1.0
    assert plan.alphas_prev[:-1] == tuple(float(table[int(t)]) for t in plan.timesteps[1:])
    v2v = make_plan(SamplerSpec("ddim", 20, spacing="log_snr"), cogvideox(snr), strength=0.3)
    assert v2v.timesteps == plan.timesteps[-6:]
    with pytest.raises(ValueError, match="spacing"):
        SamplerSpec("ddim", 4, spacing="karras")  # type: ignore[arg-type]


def test_plan_rules_and_errors() -> None:
    cfg = cogvideox(1.0)
    p30, n30 = (
        make_plan(SamplerSpec("ddim", 30), cfg),
        make_plan(SamplerSpec("ddim", 30, prev_rule="next"), cfg),
    )
    table = alphas_cumprod(cfg)
    assert p30.alphas_prev[1] == float(table[966 - 33]) and n30.alphas_prev[1] == float(table[932])
    p50, n50 = (
        make_plan(SamplerSpec("ddim", 50), cfg),
        make_plan(SamplerSpec("ddim", 50, prev_rule="next"), cfg),
    )
    assert p50.alphas_prev == n50.alphas_prev  # trailing 50: the stride is exact
    dpm = make_plan(SamplerSpec("dpm", 5), cfg)
    assert dpm.alphas_back[0] is None and dpm.alphas_back[-1] is None and None not in dpm.alphas_back[1:-1]
    assert dpm.alphas_prev[-1] == 1.0 and dpm.alphas[0] == 0.0
    v2v = make_plan(SamplerSpec("dpm", 10), cfg, strength=0.55)
    assert v2v.start_index == 5 and v2v.timesteps == tuple(float(t) for t in discrete_timesteps(10, cfg)[5:])
    assert v2v.alphas_back[0] is None  # the solver restarts at first order
    assert SamplerSpec.for_schedule(flow(), 4).kind == "euler"
    assert SamplerSpec.for_schedule(cogvideox(1.0, "dpm"), 4).kind == "dpm"
    with pytest.raises(ValueError, match="flow-matching"):
        make_plan(SamplerSpec("euler", 4), cfg)
    with pytest.raises(ValueError, match="diffusion schedule"):
        make_plan(SamplerSpec("ddim", 4), flow())
    for bad in (0.0, 1.5, 0.01):
        with pytest.raises(ValueError, match="strength"):
            make_plan(SamplerSpec("ddim", 50), cfg, strength=bad)
    with pytest.raises(ValueError, match="kind"):
        SamplerSpec("heun", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_steps"):
        SamplerSpec("ddim", 0)


# ---------------------------------------------------------------------------------------------------------
# guidance


def test_dynamic_cfg_values() -> None:
    # SAT DynamicCFG on the step index (golden values, n = 50, s = 6): 1 at the start, ramps to 1 + s late
    golden = {
        0: 1.0,
        10: 1.0000015159711082,
        25: 1.0144458199834092,
        40: 2.45409593950096,
        45: 4.841407096516552,
    }
    for i, v in golden.items():
        assert dynamic_cfg_scale(i, 50, 6.0) == pytest.approx(v, abs=1e-12)
    assert dynamic_cfg_scale(50, 50, 6.0) == 7.0
    ramp = [dynamic_cfg_scale(i, 50, 6.0) for i in range(51)]
    assert all(b >= a for a, b in zip(ramp, ramp[1:], strict=False))
    # diffusers' raw-timestep variant (issue #9641): golden values, non-monotone, within [1, 1 + s]
    golden_t = {
        999: 2.291487174551452,
        979: 2.5435028667646318,
        499: 1.5212656935026643,
        19: 1.123397939968981,
    }
    for t, v in golden_t.items():
        assert dynamic_cfg_scale_diffusers(t, 50, 6.0) == pytest.approx(v, abs=1e-12)
    vals = [dynamic_cfg_scale_diffusers(t, 50, 6.0) for t in discrete_timesteps(50, cogvideox(1.0))]
    assert all(1.0 <= v <= 7.0 for v in vals) and vals != sorted(vals)
    assert guidance_scale_at(6.0, 3, 999.0, 50) == 6.0
    assert guidance_scale_at(6.0, 25, 999.0, 50, dynamic=True) == dynamic_cfg_scale(25, 50, 6.0)
    assert guidance_scale_at(6.0, 25, 999.0, 50, dynamic=True, mode="diffusers") == golden_t[999]


# ---------------------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize(
    "cfg", [cogvideox(3.0), cogvideox(1.0, "dpm"), flow(3.0), NoiseScheduleConfig(timestep_spacing="leading")]
)
def test_config_round_trip_through_diffusers(cfg: NoiseScheduleConfig) -> None:
    diffusers = pytest.importorskip("diffusers")
    d = json.loads(json.dumps(cfg.to_dict()))  # through JSON, as a model folder stores it
    sched, unused = getattr(diffusers, d["_class_name"]).from_config(d, return_unused_kwargs=True)
    assert set(unused) <= {"_class_name"}  # every scheduler key was consumed
    for k, v in d.items():
        if not k.startswith("_"):
            assert sched.config[k] == v, k
    # diffusers' full config (metadata + every class key) parses back to the same config
    assert NoiseScheduleConfig.from_dict(dict(sched.config)) == cfg


def test_config_from_dict_defaults_and_errors() -> None:
    diffusers = pytest.importorskip("diffusers")
    # absent keys take the diffusers class defaults (as from_config does)
    for cls in ("CogVideoXDDIMScheduler", "CogVideoXDPMScheduler", "FlowMatchEulerDiscreteScheduler"):
        ours = NoiseScheduleConfig.from_dict({"_class_name": cls})
        ref = dict(getattr(diffusers, cls)().config)
        for k, v in ours.to_dict().items():
            if not k.startswith("_"):
                assert ref[k] == v, (cls, k)
    with pytest.raises(ValueError, match="'foo'"):
        NoiseScheduleConfig.from_dict({"_class_name": "CogVideoXDDIMScheduler", "foo": 1})
    with pytest.raises(ValueError, match="'shift'"):  # a flow key is not a CogVideoX key
        NoiseScheduleConfig.from_dict({"_class_name": "CogVideoXDDIMScheduler", "shift": 3.0})
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        NoiseScheduleConfig.from_dict({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True})
    with pytest.raises(ValueError, match="_class_name"):
        NoiseScheduleConfig.from_dict({"_class_name": "DDIMScheduler"})
    with pytest.raises(ValueError, match="timestep_spacing"):
        NoiseScheduleConfig(timestep_spacing="karras")
    with pytest.raises(ValueError, match="flow"):
        alphas_cumprod(flow())
