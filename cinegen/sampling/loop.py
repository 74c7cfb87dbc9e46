"""Sampler spec -> immutable plan -> sampling loop.

`make_plan` resolves everything a run needs up front (model-facing timesteps, per-step ᾱ / σ, the V2V
start), so the loop is a plain `for` over data: no scheduler object, no mutable state besides the latents
and the DPM solver's previous x̂0.

The loop reproduces the reference pipeline loop (reference `diffusers-cogvideox.md` §5.1 step 5, §5.3):
    for i, t in enumerate(timesteps):
        out = denoise(latents, t, i)         # guided model output, float32 (pipeline `.float()` + CFG)
        latents, x0 = step(out, t, latents)  # diffusers dtype rules (steps.py)
        latents = latents.to(dtype)          # the reference re-casts to prompt_embeds.dtype every step

Quirks kept for parity (on by default, each documented where it is resolved):
* DDIM/DPM take ᾱ_prev at `t - T // n` (the scheduler's hard-coded stride), not at the next listed
  timestep; they differ e.g. for 30 trailing steps (999, 966, 932, … vs stride 33; diffusers PR #13125).
  `SamplerSpec(prev_rule="next")` uses the real next timestep instead.
* V2V (strength < 1) keeps the last `int(n·strength)` steps, the stride still uses the full n, and the DPM
  solver restarts at first order on the first kept step.

Dimension legend: latents (B, T, C, H, W) (any shape works); n steps; T_train = num_train_timesteps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cinegen.sampling.schedules import (
    NoiseScheduleConfig,
    alphas_cumprod,
    alphas_cumprod_dtype,
    diffusers_flow,
    discrete_timesteps,
    final_alpha_cumprod,
    linear_quadratic,
    log_snr_timesteps,
    uniform,
)
from cinegen.sampling.steps import add_noise, ddim_step, dpm_pp2m_step, euler_flow_step, flow_add_noise

__all__ = [
    "SamplerKind",
    "FlowSchedule",
    "Spacing",
    "SamplerSpec",
    "Plan",
    "default_sampler",
    "kept_steps",
    "make_plan",
    "noise_latents",
    "sample",
]

SamplerKind = Literal["ddim", "dpm", "euler"]
FlowSchedule = Literal["uniform", "shifted", "linear_quadratic", "diffusers"]
Spacing = Literal["scheduler", "log_snr"]

Denoise = Callable[[Tensor, Tensor, int], Tensor]


def default_sampler(schedule: NoiseScheduleConfig) -> SamplerKind:
    """The sampler a scheduler class implies, the one diffusers runs: DDIM -> ddim, DPM -> dpm, FlowMatchEuler ->
    euler."""
    return "euler" if schedule.kind == "flow" else schedule.kind


@dataclass(frozen=True)
class SamplerSpec:
    """What the user picks.

    kind: "ddim" / "dpm" for v-prediction (CogVideoX) schedules, "euler" for flow-matching schedules.
    flow_schedule (euler only):
      "uniform" = σ_i = 1 - i/n, never shifted;
      "shifted" = uniform, then the SD3 shift;
      "linear_quadratic" = Movie Gen's schedule (`threshold_noise`), then the shift, as diffusers does with
      `set_timesteps(sigmas=...)` (the identity for shift 1);
      "diffusers" = exactly `FlowMatchEulerDiscreteScheduler(shift=s).set_timesteps(n)`'s default list
      (linear to a σ_min of ~s²/T, then 0), for parity with diffusers pipelines.
    shift: the flow shift s; None = the schedule config's `shift` (the model's own; 1.0 by default).
    prev_rule (ddim/dpm): "diffusers" = ᾱ_prev at t - T//n (reference quirk); "next" = at the next
      listed timestep.
    spacing (ddim/dpm): "scheduler" = the scheduler config's `timestep_spacing` (the reference's list);
      "log_snr" = uniform in log-SNR of the model's shifted ᾱ table (`log_snr_timesteps`), always with the
      "next" rule. Ignored by euler.
    """

    kind: SamplerKind
    num_steps: int
    flow_schedule: FlowSchedule = "linear_quadratic"
    shift: float | None = None
    threshold_noise: float = 0.025
    prev_rule: Literal["diffusers", "next"] = "diffusers"
    spacing: Spacing = "scheduler"

    def __post_init__(self) -> None:
        if self.kind not in ("ddim", "dpm", "euler"):
            raise ValueError(f"sampler kind must be 'ddim', 'dpm' or 'euler', got {self.kind!r}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.flow_schedule not in ("uniform", "shifted", "linear_quadratic", "diffusers"):
            raise ValueError(
                "flow_schedule must be 'uniform', 'shifted', 'linear_quadratic' or 'diffusers', "
                f"got {self.flow_schedule!r}"
            )
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if self.prev_rule not in ("diffusers", "next"):
            raise ValueError(f"prev_rule must be 'diffusers' or 'next', got {self.prev_rule!r}")
        if self.spacing not in ("scheduler", "log_snr"):
            raise ValueError(f"spacing must be 'scheduler' or 'log_snr', got {self.spacing!r}")

    @classmethod
    def for_schedule(cls, schedule: NoiseScheduleConfig, num_steps: int, **kwargs: object) -> SamplerSpec:
        """A spec with the sampler the scheduler class implies (`default_sampler`)."""
        return cls(kind=default_sampler(schedule), num_steps=num_steps, **kwargs)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Plan:
    """A resolved, immutable sampling plan.

    timesteps: values passed to the transformer, one per step actually run (integers for ddim/dpm,
      float32 σ·T_train values for euler).
    alphas / alphas_prev / alphas_back (ddim/dpm): ᾱ at t, at the step's target, and at the previous
      listed timestep (None where the DPM solver runs first order: the first kept step, and the last step
      where prev_t < 0). Python floats that are exact copies of `alpha_dtype` values; the loop rebuilds
      them as `alpha_dtype` 0-dim tensors, as diffusers indexes its ᾱ table.
    sigmas (euler): len(timesteps) + 1 float32-exact values, ending in 0.
    start_index: first step of the full n-step schedule that is run (0, or n - int(n·strength) for V2V).
    """

    spec: SamplerSpec
    timesteps: tuple[float, ...]
    alphas: tuple[float, ...] = ()
    alphas_prev: tuple[float, ...] = ()
    alphas_back: tuple[float | None, ...] = ()
    sigmas: tuple[float, ...] = ()
    start_index: int = 0
    prediction_type: str = "v_prediction"
    alpha_dtype: torch.dtype = torch.float64
    num_train_timesteps: int = 1000

    @property
    def kind(self) -> SamplerKind:
        return self.spec.kind

    @property
    def num_steps(self) -> int:
        """Steps actually run (model evaluations per CFG branch)."""
        return len(self.timesteps)

    def timestep_tensor(self, i: int, device: torch.device | None = None) -> Tensor:
        """The model's timestep input of step i as a 0-dim tensor (int64 for ddim/dpm, float32 for euler)."""
        if self.kind == "euler":
            return torch.tensor(self.timesteps[i], dtype=torch.float32, device=device)
        return torch.tensor(int(self.timesteps[i]), dtype=torch.int64, device=device)

    def alpha_tensor(self, value: float) -> Tensor:
        """ᾱ as the 0-dim tensor diffusers indexes from its table (float64; float32 for linear betas)."""
        return torch.tensor(value, dtype=self.alpha_dtype)


def kept_steps(num_steps: int, strength: float) -> int:
    """Steps a strength-`strength` run keeps of `num_steps` (V2V); a clear ValueError when it is none."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    # CogVideoXVideoToVideoPipeline.get_timesteps: init = min(int(n * strength), n); t_start = n - init
    kept = min(int(num_steps * strength), num_steps)
    if kept < 1:
        raise ValueError(
            f"strength {strength} with {num_steps} steps runs no step; need strength >= {1 / num_steps:.4g}"
        )
    return kept


def make_plan(spec: SamplerSpec, schedule: NoiseScheduleConfig, strength: float = 1.0) -> Plan:
    """Resolve `spec` against the model's noise schedule; strength < 1 keeps the last int(n·strength)."""
    n = spec.num_steps
    start = n - kept_steps(n, strength)
    if spec.kind == "euler":
        if schedule.kind != "flow":
            raise ValueError(
                "sampler 'euler' needs a flow-matching schedule (FlowMatchEulerDiscreteScheduler); "
                f"this model has {schedule.class_name} (use 'ddim' or 'dpm')"
            )
        return _flow_plan(spec, schedule, start)
    if schedule.kind == "flow":
        raise ValueError(
            f"sampler {spec.kind!r} needs a diffusion schedule (CogVideoXDDIMScheduler or "
            f"CogVideoXDPMScheduler); this model has {schedule.class_name} (use 'euler')"
        )
    return _diffusion_plan(spec, schedule, start)


def _diffusion_plan(spec: SamplerSpec, schedule: NoiseScheduleConfig, start: int) -> Plan:
    n, T = spec.num_steps, schedule.num_train_timesteps
    table = alphas_cumprod(schedule)
    final = final_alpha_cumprod(schedule, table)
    log_snr = spec.spacing == "log_snr"
    full = log_snr_timesteps(n, table) if log_snr else discrete_timesteps(n, schedule)
    stride = T // n  # CogVideoX*Scheduler.step: prev_timestep = timestep - T // n (full n, even for V2V)
    kept = full[start:]
    alphas, prev, back = [], [], []
    for i, t in enumerate(kept):
        j = start + i
        if spec.prev_rule == "diffusers" and not log_snr:
            prev_t = t - stride
        else:
            prev_t = full[j + 1] if j + 1 < n else -1
        alphas.append(float(table[t]))
        prev.append(float(table[prev_t]) if prev_t >= 0 else final)
        # The pipeline passes timesteps[i-1] of the (truncated) list as timestep_back; the step runs first
        # order on the first step and when prev_t < 0 ("all noise levels are 0").
        back.append(float(table[kept[i - 1]]) if i > 0 and prev_t >= 0 else None)
    return Plan(
        spec=spec,
        timesteps=tuple(float(t) for t in kept),
        alphas=tuple(alphas),
        alphas_prev=tuple(prev),
        alphas_back=tuple(back),
        start_index=start,
        prediction_type=schedule.prediction_type,
        alpha_dtype=alphas_cumprod_dtype(schedule),
        num_train_timesteps=T,
    )


def _flow_plan(spec: SamplerSpec, schedule: NoiseScheduleConfig, start: int) -> Plan:
    n, T = spec.num_steps, schedule.num_train_timesteps
    if spec.flow_schedule == "uniform":
        shift = 1.0
    else:
        shift = schedule.shift if spec.shift is None else spec.shift
    if spec.flow_schedule == "diffusers":
        sig = torch.tensor(diffusers_flow(n, shift, T)[:n], dtype=torch.float32)  # (n,), already shifted
    else:
        base = linear_quadratic(n, spec.threshold_noise) if spec.flow_schedule == "linear_quadratic" else uniform(n)
        # FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=base[:n]): float32 sigmas, the shift evaluated
        # in float32, timesteps = σ·T in float32, then a final 0 appended. Same dtype, same order here.
        sig = torch.tensor(base[:n], dtype=torch.float64).to(torch.float32)  # (n,)
        sig = shift * sig / (1 + (shift - 1) * sig)
    timesteps = sig * T
    sigmas = torch.cat([sig, torch.zeros(1, dtype=torch.float32)])  # (n + 1,)
    return Plan(
        spec=spec,
        timesteps=tuple(timesteps[start:].tolist()),
        sigmas=tuple(sigmas[start:].tolist()),
        start_index=start,
        prediction_type="flow",
        alpha_dtype=torch.float32,
        num_train_timesteps=T,
    )


def noise_latents(x0: Tensor, noise: Tensor, plan: Plan) -> Tensor:
    """Noise clean latents to the plan's first step (V2V / SDEdit start), in x0's dtype.

    ddim/dpm: √ᾱ·x0 + √(1-ᾱ)·ε at the first kept timestep (`scheduler.add_noise(x0, noise, timesteps[:1])`);
    euler: σ·ε + (1-σ)·x0 at the first kept σ (`scale_noise`).
    """
    if plan.kind == "euler":
        return flow_add_noise(x0, noise, plan.sigmas[0])
    return add_noise(x0, noise, plan.alpha_tensor(plan.alphas[0]))


def sample(
    denoise: Denoise,
    latents: Tensor,
    plan: Plan,
    generator: torch.Generator | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Run the plan from `latents` (noise, or `noise_latents(...)` for V2V); return the final latents.

    denoise(latents, t, i) -> the guided model output (float32, as the reference), where t is the 0-dim model
    timestep (`Plan.timestep_tensor`) on the latents' device and i the step index within this plan.
    generator: used only by the DPM solver's noise draws. callback(done, total) after every step.
    Latents are re-cast to their input dtype after every step (the reference casts to prompt_embeds.dtype).
    """
    dtype = latents.dtype
    total = plan.num_steps
    old_x0: Tensor | None = None
    for i in range(total):
        t = plan.timestep_tensor(i, latents.device)
        out = denoise(latents, t, i)
        if plan.kind == "euler":
            latents = euler_flow_step(latents, out, plan.sigmas[i], plan.sigmas[i + 1])
        elif plan.kind == "ddim":
            a_t, a_prev = plan.alpha_tensor(plan.alphas[i]), plan.alpha_tensor(plan.alphas_prev[i])
            latents, _ = ddim_step(latents, out, a_t, a_prev, plan.prediction_type)
        else:
            a_t, a_prev = plan.alpha_tensor(plan.alphas[i]), plan.alpha_tensor(plan.alphas_prev[i])
            back = plan.alphas_back[i]
            a_back = None if back is None else plan.alpha_tensor(back)
            latents, old_x0 = dpm_pp2m_step(latents, out, old_x0, a_t, a_prev, a_back, generator, plan.prediction_type)
        latents = latents.to(dtype)
        if callback is not None:
            callback(i + 1, total)
    return latents
