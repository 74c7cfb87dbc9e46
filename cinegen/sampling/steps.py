"""One sampler step each, as pure functions (no scheduler object, no hidden state).

Each function reproduces one diffusers step with the same expression order and the same dtype behaviour,
so fp32 (and bf16) trajectories match the reference exactly (reference `diffusers-cogvideox.md` §4.1-4.3):

* Per-step scalars (ᾱ_t, ᾱ_prev, ᾱ_back, σ) are 0-dim tensors in the dtype diffusers keeps them in
  (float64 for scaled-linear ᾱ, float32 for σ). All coefficient math (sqrt, log, expm1) runs on those 0-dim
  tensors; torch's type promotion then casts each coefficient to the latent dtype at the multiply, exactly
  as in diffusers. Python floats are wrapped as float64 (ᾱ) / float32 (σ) 0-dim tensors (exact), which also
  keeps the ±inf log-SNRs of zero terminal SNR (ᾱ = 0 or 1) well defined instead of ZeroDivisionError.
* Latents are never up-cast here; the caller (loop.py) re-casts after every step as the reference does.

Conventions
    diffusion (ddim / dpm): x_t = √ᾱ·x0 + √(1-ᾱ)·ε, v = √ᾱ·ε - √(1-ᾱ)·x0 (v-prediction, CogVideoX).
    flow (euler): x_σ = (1-σ)·x0 + σ·ε, velocity target v = ε - x0, model timestep input σ·T_train;
    Euler: x_next = x + (σ_next - σ)·v (FlowMatchEulerDiscreteScheduler, fast-inference.md §4.2).

Dimension legend: tensors are latents of any shape, typically (B, T, C, H, W); scalars broadcast.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "Scalar",
    "predict_x0",
    "ddim_step",
    "dpm_pp2m_step",
    "euler_flow_step",
    "add_noise",
    "velocity",
    "flow_add_noise",
    "flow_velocity",
    "randn_like_reference",
]

Scalar = float | Tensor
GeneratorArg = torch.Generator | list[torch.Generator] | None


def _scalar(value: Scalar, dtype: torch.dtype = torch.float64) -> Tensor:
    """A 0-dim tensor; tensors pass through untouched so a caller can choose float32 ᾱ (linear betas)."""
    if isinstance(value, Tensor):
        return value
    return torch.tensor(float(value), dtype=dtype)


def randn_like_reference(
    shape: torch.Size | tuple[int, ...],
    generator: GeneratorArg,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """Gaussian noise drawn as diffusers `randn_tensor(shape, generator=g, device=device, dtype=dtype)`.

    The draw happens in the target dtype on the generator's device when that is the CPU (a CPU generator with
    CUDA latents draws on the CPU, then moves), so a seeded CPU generator gives the same numbers on any latent
    device; a list of generators draws one batch element each (VAE posterior samples).
    """
    shape = tuple(shape)
    rand_device = device
    if generator is not None:
        gen_device = (generator[0] if isinstance(generator, list) else generator).device
        if gen_device.type != device.type:
            if gen_device.type != "cpu":
                raise ValueError(f"cannot draw {device} noise from a generator on {gen_device}")
            rand_device = torch.device("cpu")
    if isinstance(generator, list) and len(generator) == 1:
        generator = generator[0]
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        one = (1, *shape[1:])
        draws = [torch.randn(one, generator=g, device=rand_device, dtype=dtype) for g in generator]
        return torch.cat(draws, dim=0).to(device)
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)


def predict_x0(sample: Tensor, model_output: Tensor, alpha_t: Scalar, prediction_type: str = "v_prediction") -> Tensor:
    """x̂0 from the model output (diffusers expression order for each parameterisation)."""
    alpha_t = _scalar(alpha_t)
    beta_t = 1 - alpha_t
    if prediction_type == "v_prediction":
        return (alpha_t**0.5) * sample - (beta_t**0.5) * model_output
    if prediction_type == "epsilon":
        return (sample - beta_t ** (0.5) * model_output) / alpha_t ** (0.5)
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type must be 'v_prediction', 'epsilon' or 'sample', got {prediction_type!r}")


def ddim_step(
    sample: Tensor,
    model_output: Tensor,
    alpha_t: Scalar,
    alpha_prev: Scalar,
    prediction_type: str = "v_prediction",
) -> tuple[Tensor, Tensor]:
    """Deterministic DDIM (η = 0) step of `CogVideoXDDIMScheduler.step` (§4.1); returns (x_prev, x̂0).

    x_prev = c·x_t + b·x̂0 with c = √((1-ᾱ_prev)/(1-ᾱ_t)), b = √ᾱ_prev - √ᾱ_t·c, which is
    √ᾱ_prev·x̂0 + √(1-ᾱ_prev)·ε̂. No clipping, no thresholding (the reference accepts but ignores them).
    """
    alpha_t, alpha_prev = _scalar(alpha_t), _scalar(alpha_prev)
    x0 = predict_x0(sample, model_output, alpha_t, prediction_type)
    c_t = ((1 - alpha_prev) / (1 - alpha_t)) ** 0.5
    b_t = alpha_prev**0.5 - alpha_t**0.5 * c_t
    prev = c_t * sample + b_t * x0
    return prev, x0


def dpm_pp2m_step(
    sample: Tensor,
    model_output: Tensor,
    old_x0: Tensor | None,
    alpha_t: Scalar,
    alpha_prev: Scalar,
    alpha_back: Scalar | None,
    generator: torch.Generator | None = None,
    prediction_type: str = "v_prediction",
) -> tuple[Tensor, Tensor]:
    """Stochastic SDE-DPM-Solver++(2M) step, `CogVideoXDPMScheduler.step` (SAT `VPSDEDPMPP2MSampler`).

    Returns (x_prev, x̂0); feed x̂0 back as `old_x0` on the next step. λ = log √(ᾱ/(1-ᾱ)), h = λ_prev - λ_t:
        x_prev = √((1-ᾱ_prev)/(1-ᾱ_t))·e^{-h}·x_t - expm1(-2h)·√ᾱ_prev·D + √(1-ᾱ_prev)·√(1-e^{-2h})·z
    with D = x̂0 (first order) or D = (1 + 1/2r)·x̂0 - (1/2r)·x̂0_old, r = (λ_t - λ_back)/h (second order).

    RNG use is the reference's (§4.2): one Gaussian draw always; on second-order steps a second draw
    replaces it (the first is wasted). Second order is used iff `old_x0` and `alpha_back` are both
    given; the caller passes `alpha_back=None` on the first step and on the last one (the reference's
    `prev_timestep < 0` case).
    """
    alpha_t, alpha_prev = _scalar(alpha_t), _scalar(alpha_prev)
    x0 = predict_x0(sample, model_output, alpha_t, prediction_type)

    lamb = ((alpha_t / (1 - alpha_t)) ** 0.5).log()
    lamb_next = ((alpha_prev / (1 - alpha_prev)) ** 0.5).log()
    h = lamb_next - lamb
    mult1 = ((1 - alpha_prev) / (1 - alpha_t)) ** 0.5 * (-h).exp()
    mult2 = (-2 * h).expm1() * alpha_prev**0.5
    mult_noise = (1 - alpha_prev) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5

    noise = randn_like_reference(sample.shape, generator, sample.device, sample.dtype)
    prev = mult1 * sample - mult2 * x0 + mult_noise * noise
    if old_x0 is None or alpha_back is None:
        return prev, x0

    alpha_back = _scalar(alpha_back)
    lamb_back = ((alpha_back / (1 - alpha_back)) ** 0.5).log()
    r = (lamb - lamb_back) / h
    mult3 = 1 + 1 / (2 * r)
    mult4 = 1 / (2 * r)
    x0_d = mult3 * x0 - mult4 * old_x0
    noise = randn_like_reference(sample.shape, generator, sample.device, sample.dtype)
    prev = mult1 * sample - mult2 * x0_d + mult_noise * noise
    return prev, x0


def euler_flow_step(sample: Tensor, velocity: Tensor, sigma: Scalar, sigma_next: Scalar) -> Tensor:
    """Flow-matching Euler step, `FlowMatchEulerDiscreteScheduler.step` (deterministic): x + (σ_next - σ)·v.

    As the reference: the sample is taken to float32, σ are float32 0-dim tensors, and the result is cast
    to the velocity's dtype.
    """
    sigma, sigma_next = _scalar(sigma, torch.float32), _scalar(sigma_next, torch.float32)
    dt = sigma_next - sigma
    prev = sample.to(torch.float32) + dt * velocity
    return prev.to(velocity.dtype)


def _alpha_like(alpha: Scalar, like: Tensor) -> Tensor:
    # diffusers `add_noise` / `get_velocity` first cast ᾱ to the sample dtype, then take square roots in it.
    return _scalar(alpha).to(device=like.device, dtype=like.dtype)


def add_noise(x0: Tensor, noise: Tensor, alpha: Scalar) -> Tensor:
    """Forward diffusion x_t = √ᾱ·x0 + √(1-ᾱ)·ε (reference §4.3; V2V start, training inputs).

    `alpha` is a scalar or a per-sample `(B,)` tensor (broadcast over the remaining dims).
    """
    a = _alpha_like(alpha, x0)
    a = a.reshape(a.shape + (1,) * (x0.dim() - a.dim()))  # (B,) -> (B, 1, ..., 1)
    return a**0.5 * x0 + (1 - a) ** 0.5 * noise


def velocity(x0: Tensor, noise: Tensor, alpha: Scalar) -> Tensor:
    """v-prediction target v = √ᾱ·ε - √(1-ᾱ)·x0 (`get_velocity`); scalar or `(B,)` ᾱ."""
    a = _alpha_like(alpha, x0)
    a = a.reshape(a.shape + (1,) * (x0.dim() - a.dim()))  # (B,) -> (B, 1, ..., 1)
    return a**0.5 * noise - (1 - a) ** 0.5 * x0


def flow_add_noise(x0: Tensor, noise: Tensor, sigma: Scalar) -> Tensor:
    """Flow interpolant x_σ = σ·ε + (1-σ)·x0 (`FlowMatchEuler...scale_noise`); scalar or `(B,)` σ."""
    s = _scalar(sigma, torch.float32).to(device=x0.device, dtype=x0.dtype)
    s = s.reshape(s.shape + (1,) * (x0.dim() - s.dim()))  # (B,) -> (B, 1, ..., 1)
    return s * noise + (1.0 - s) * x0


def flow_velocity(x0: Tensor, noise: Tensor) -> Tensor:
    """Flow-matching velocity target v = ε - x0 (d x_σ / dσ)."""
    return noise - x0
