"""Sampling = schedule (ᾱ or σ list) + step function + guidance + loop, each a pure function (DESIGN.md §4.5).

plan = make_plan(SamplerSpec("dpm", 50), schedule_cfg)          # resolve once, immutable
latents = sample(denoise, noise, plan, generator=g)             # denoise(latents, t, i) -> guided output
"""

from __future__ import annotations

from cinegen.sampling.guidance import (
    cfg,
    cfg_batched,
    dynamic_cfg_scale,
    dynamic_cfg_scale_diffusers,
    guidance_scale_at,
)
from cinegen.sampling.loop import Plan, SamplerSpec, default_sampler, make_plan, noise_latents, sample
from cinegen.sampling.schedules import (
    NoiseScheduleConfig,
    alphas_cumprod,
    diffusers_flow,
    discrete_timesteps,
    linear_quadratic,
    log_snr_timesteps,
    shift_sigmas,
    shifted,
    uniform,
)
from cinegen.sampling.steps import (
    add_noise,
    ddim_step,
    dpm_pp2m_step,
    euler_flow_step,
    flow_add_noise,
    flow_velocity,
    predict_x0,
    velocity,
)

__all__ = [
    "NoiseScheduleConfig",
    "alphas_cumprod",
    "discrete_timesteps",
    "diffusers_flow",
    "uniform",
    "shift_sigmas",
    "shifted",
    "linear_quadratic",
    "log_snr_timesteps",
    "predict_x0",
    "ddim_step",
    "dpm_pp2m_step",
    "euler_flow_step",
    "add_noise",
    "velocity",
    "flow_add_noise",
    "flow_velocity",
    "cfg",
    "cfg_batched",
    "dynamic_cfg_scale",
    "dynamic_cfg_scale_diffusers",
    "guidance_scale_at",
    "SamplerSpec",
    "Plan",
    "default_sampler",
    "make_plan",
    "noise_latents",
    "sample",
]
