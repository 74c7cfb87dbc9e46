"""Noise schedules: the diffusers scheduler config, ᾱ tables, discrete timestep lists and flow σ lists.

Everything here is a pure function of a frozen `NoiseScheduleConfig`. The numerics reproduce diffusers
(reference `diffusers-cogvideox.md` §4 and §6.3, `fast-inference.md` §1.1) bit for bit:

* ᾱ: scaled-linear betas built in float64, cumulative product, CogVideoX SNR shift `a / (s + (1 - s) a)`
  (SNR' = SNR / s), then the zero-terminal-SNR rescale of √ᾱ (Lin et al. 2305.08891, Algorithm 1), so that
  ᾱ[T-1] == 0 exactly. The "linear", "squaredcos_cap_v2" and `trained_betas` variants are built in
  float32 as diffusers does.
* discrete timesteps: numpy `linspace` / `leading` / `trailing` spacing exactly as `set_timesteps`.
* flow σ lists: `uniform`, `shifted` (σ' = sσ / (1 + (s-1)σ), SD3 / `FlowMatchEulerDiscreteScheduler.shift`),
  the Movie Gen / Mochi `linear_quadratic` schedule, and `diffusers_flow` (FlowMatchEulerDiscreteScheduler's
  own default list, for parity). All return `num_steps + 1` values, 1.0 → 0.0.

Dimension legend: none of these functions touch latents; `n` is the number of sampling steps and `T` the
number of training timesteps (`num_train_timesteps`, 1000).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ScheduleKind",
    "NoiseScheduleConfig",
    "CLASS_NAMES",
    "alphas_cumprod",
    "alphas_cumprod_dtype",
    "final_alpha_cumprod",
    "discrete_timesteps",
    "uniform",
    "shift_sigmas",
    "shifted",
    "diffusers_flow",
    "linear_quadratic",
]

ScheduleKind = Literal["ddim", "dpm", "flow"]

# diffusers class name <-> our kind.
CLASS_NAMES: dict[str, ScheduleKind] = {
    "CogVideoXDDIMScheduler": "ddim",
    "CogVideoXDPMScheduler": "dpm",
    "FlowMatchEulerDiscreteScheduler": "flow",
}
_KIND_TO_CLASS = {v: k for k, v in CLASS_NAMES.items()}

# Keys written by diffusers' ConfigMixin itself (metadata, not scheduler arguments).
_METADATA_KEYS = frozenset({"_class_name", "_diffusers_version", "_use_default_values", "_name_or_path"})

# Keys we model, per kind (the rest of the dataclass fields keep their defaults for that kind).
_DIFFUSION_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "clip_sample",
    "set_alpha_to_one",
    "steps_offset",
    "prediction_type",
    "clip_sample_range",
    "sample_max_value",
    "timestep_spacing",
    "rescale_betas_zero_snr",
    "snr_shift_scale",
)
_FLOW_KEYS = ("num_train_timesteps", "shift")

# Known diffusers keys we accept but do not model, with the one value that keeps the scheduler's behaviour
# equal to ours (`_ANY` = any value is harmless, e.g. dynamic-shift parameters while dynamic shifting is
# off). A config with a different value is rejected rather than silently sampled differently.
_ANY = object()
_TOLERATED: dict[ScheduleKind, dict[str, Any]] = {
    # Documented in the CogVideoX schedulers' docstrings (copied from DDIMScheduler) but unused by them.
    "ddim": {"thresholding": False, "dynamic_thresholding_ratio": _ANY},
    "dpm": {"thresholding": False, "dynamic_thresholding_ratio": _ANY},
    "flow": {
        "use_dynamic_shifting": False,
        "base_shift": _ANY,
        "max_shift": _ANY,
        "base_image_seq_len": _ANY,
        "max_image_seq_len": _ANY,
        "invert_sigmas": False,
        "shift_terminal": None,
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "time_shift_type": _ANY,
        "stochastic_sampling": False,
    },
}

# diffusers class defaults (what `from_config` uses for an absent key). The two CogVideoX classes share
# their __init__ signature (reference §4; the DPM docstring's "linear, 0.0001..0.02" is stale).
_CLASS_DEFAULTS: dict[ScheduleKind, dict[str, Any]] = {
    "ddim": dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.0120,
        beta_schedule="scaled_linear",
        trained_betas=None,
        clip_sample=True,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="epsilon",
        clip_sample_range=1.0,
        sample_max_value=1.0,
        timestep_spacing="leading",
        rescale_betas_zero_snr=False,
        snr_shift_scale=3.0,
    ),
    "flow": dict(num_train_timesteps=1000, shift=1.0),
}
_CLASS_DEFAULTS["dpm"] = dict(_CLASS_DEFAULTS["ddim"])

_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_SPACINGS = ("linspace", "leading", "trailing")
_PREDICTIONS = ("epsilon", "sample", "v_prediction")


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """A diffusers `scheduler_config.json`, typed.

    One dataclass covers the three supported classes; `kind` says which one (and which fields matter).
    The constructor defaults are the published CogVideoX-5B values (reference §6.3: v-prediction, zero
    terminal SNR, trailing spacing, snr_shift_scale 1.0); `from_dict` instead fills absent keys with the
    diffusers *class* defaults, exactly as `Scheduler.from_config` does, so the same dict means the same
    schedule in both.
    """

    kind: ScheduleKind = "ddim"
    num_train_timesteps: int = 1000
    # diffusion (ddim / dpm)
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    trained_betas: tuple[float, ...] | None = None
    clip_sample: bool = False  # accepted for compatibility; the CogVideoX step never clips (reference §4.1)
    set_alpha_to_one: bool = True
    steps_offset: int = 0
    prediction_type: str = "v_prediction"
    clip_sample_range: float = 1.0
    sample_max_value: float = 1.0
    timestep_spacing: str = "trailing"
    rescale_betas_zero_snr: bool = True
    snr_shift_scale: float = 1.0
    # flow
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _KIND_TO_CLASS:
            raise ValueError(f"kind must be one of {sorted(_KIND_TO_CLASS)}, got {self.kind!r}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if self.kind == "flow":
            if not self.shift > 0:
                raise ValueError(f"shift must be > 0, got {self.shift}")
            return
        if self.beta_schedule not in _BETA_SCHEDULES and self.trained_betas is None:
            raise ValueError(f"beta_schedule must be one of {_BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.timestep_spacing not in _SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {_SPACINGS}, got {self.timestep_spacing!r}")
        if self.prediction_type not in _PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {_PREDICTIONS}, got {self.prediction_type!r}")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise ValueError(
                f"trained_betas has {len(self.trained_betas)} values, expected num_train_timesteps="
                f"{self.num_train_timesteps}"
            )

    @property
    def class_name(self) -> str:
        return _KIND_TO_CLASS[self.kind]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NoiseScheduleConfig:
        """Parse a diffusers scheduler config dict; `_class_name` selects the kind.

        Absent keys take the diffusers class defaults. Keys that are neither modelled nor a known (harmless)
        diffusers key of that class raise ValueError naming the key.
        """
        class_name = d.get("_class_name")
        if class_name not in CLASS_NAMES:
            raise ValueError(f"unsupported scheduler _class_name {class_name!r}; expected one of {sorted(CLASS_NAMES)}")
        kind = CLASS_NAMES[class_name]
        modelled = _FLOW_KEYS if kind == "flow" else _DIFFUSION_KEYS
        values: dict[str, Any] = dict(_CLASS_DEFAULTS[kind])
        for key, value in d.items():
            if key in _METADATA_KEYS:
                continue
            if key in modelled:
                values[key] = value
            elif key in _TOLERATED[kind]:
                allowed = _TOLERATED[kind][key]
                if allowed is not _ANY and value != allowed:
                    raise ValueError(f"{class_name}: {key}={value!r} is not supported by cinegen (only {allowed!r})")
            else:
                raise ValueError(f"{class_name}: unknown scheduler config key {key!r}")
        if values.get("trained_betas") is not None:
            values["trained_betas"] = tuple(float(b) for b in values["trained_betas"])
        return cls(kind=kind, **_coerce(values))

    def to_dict(self) -> dict[str, Any]:
        """A config dict `diffusers.<class_name>.from_config` loads to the same schedule."""
        keys = _FLOW_KEYS if self.kind == "flow" else _DIFFUSION_KEYS
        d = asdict(self)
        out: dict[str, Any] = {"_class_name": self.class_name}
        for key in keys:
            value = d[key]
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    """JSON gives ints for floats like `1` and vice versa; normalise to the dataclass field types."""
    types = {f.name: f.type for f in fields(NoiseScheduleConfig)}
    out = {}
    for key, value in values.items():
        t = types[key]
        if t == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif t == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------------------
# ᾱ table (ddim / dpm)


def alphas_cumprod_dtype(cfg: NoiseScheduleConfig) -> torch.dtype:
    """The dtype diffusers keeps `alphas_cumprod` in: float64 for scaled-linear betas, float32 otherwise.

    The step coefficients are computed in this dtype (0-dim tensors in diffusers), so parity needs it.
    """
    if cfg.trained_betas is None and cfg.beta_schedule == "scaled_linear":
        return torch.float64
    return torch.float32


def _betas(cfg: NoiseScheduleConfig) -> Tensor:
    n = cfg.num_train_timesteps
    if cfg.trained_betas is not None:
        return torch.tensor(cfg.trained_betas, dtype=torch.float32)
    if cfg.beta_schedule == "scaled_linear":
        # linear in sqrt(beta), built in float64 (reference §4)
        return torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, dtype=torch.float64) ** 2
    if cfg.beta_schedule == "linear":
        return torch.linspace(cfg.beta_start, cfg.beta_end, n, dtype=torch.float32)

    # squaredcos_cap_v2: Nichol & Dhariwal cosine ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), betas <= 0.999
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


def alphas_cumprod(cfg: NoiseScheduleConfig) -> Tensor:
    """ᾱ_t for t = 0..T-1 as float64 `(T,)`, bit-identical to `CogVideoX{DDIM,DPM}Scheduler.alphas_cumprod`.

    (For non-scaled-linear betas diffusers works in float32; the values are computed in float32 and then
    widened, which is exact.)
    """
    if cfg.kind == "flow":
        raise ValueError("alphas_cumprod is defined for ddim/dpm schedules, not for a flow schedule")
    a = torch.cumprod(1.0 - _betas(cfg), dim=0)
    s = cfg.snr_shift_scale
    # SNR shift: SNR' = SNR / s  <=>  a' = a / (s + (1 - s) a)   (same expression order as diffusers)
    a = a / (s + (1 - s) * a)
    if cfg.rescale_betas_zero_snr:
        # zero terminal SNR: shift sqrt(a) so its last value is 0, rescale so its first value is unchanged
        root = a.sqrt()
        root0, root_last = root[0].clone(), root[-1].clone()
        root = root - root_last
        root = root * (root0 / (root0 - root_last))
        a = root**2
    return a.to(torch.float64)


def final_alpha_cumprod(cfg: NoiseScheduleConfig, table: Tensor | None = None) -> float:
    """ᾱ used after the last step (`prev_t < 0`): 1.0 with `set_alpha_to_one`, else ᾱ_0."""
    if cfg.set_alpha_to_one:
        return 1.0
    table = alphas_cumprod(cfg) if table is None else table
    return float(table[0])


def discrete_timesteps(num_steps: int, cfg: NoiseScheduleConfig) -> list[int]:
    """Integer model timesteps, noisiest first, as `CogVideoX*Scheduler.set_timesteps(num_steps)`.

    linspace: round(linspace(0, T-1, n)) reversed; leading: arange(n)·(T // n) reversed + steps_offset;
    trailing: round(arange(T, 0, -T/n)) - 1 (n=50: 999, 979, …, 19), cut to n values (see below).
    """
    T = cfg.num_train_timesteps
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, {T}], got {num_steps}")
    if cfg.timestep_spacing == "linspace":
        ts = np.linspace(0, T - 1, num_steps).round()[::-1].astype(np.int64)
    elif cfg.timestep_spacing == "leading":
        ts = (np.arange(0, num_steps) * (T // num_steps))[::-1].astype(np.int64) + cfg.steps_offset
    elif cfg.timestep_spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / num_steps)).astype(np.int64) - 1
        # The float `arange` yields n + 1 values ending in -1 for some n (61, 103, 121, ... in 62 of 1..1000);
        # diffusers would then run an extra step at t = -1 (ᾱ[-1] = ᾱ[T-1]). Keep the n real timesteps.
        ts = ts[:num_steps]
    else:  # pragma: no cover - rejected by the config
        raise ValueError(f"unsupported timestep_spacing {cfg.timestep_spacing!r}")
    out = [int(t) for t in ts]
    if out[0] > T - 1:  # e.g. leading spacing, steps_offset=1 and n = T
        raise ValueError(
            f"{num_steps} {cfg.timestep_spacing} steps with steps_offset={cfg.steps_offset} reach t={out[0]} > {T - 1}"
        )
    return out


MIN_LOG_SNR = -10.0  # log-SNR spacing starts its uniform part here (SNR 4.5e-5: the latents are noise)


def log_snr_timesteps(num_steps: int, table: Tensor, min_log_snr: float = MIN_LOG_SNR) -> list[int]:
    """Integer model timesteps, noisiest first, spaced uniformly in log-SNR λ = log(ᾱ / (1 - ᾱ)) of `table` (the
    model's ᾱ_t, after its SNR shift; `alphas_cumprod`): the first at T - 1 (where sampling starts), the other
    n - 1 at the timesteps nearest to λ evenly spaced from max(min_log_snr, λ_{T-1}) to λ_0, kept strictly
    decreasing. DPM-Solver's spacing. A shifted schedule has no trailing step below σ ~ 0.6 (SNR shift 10:
    20 trailing steps end at t = 49, σ = 0.58, and the last step jumps from there to clean); this one ends at t = 0.
    """
    T = int(table.shape[0])
    if not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be in [1, {T}], got {num_steps}")
    a = table.double().numpy()
    with np.errstate(divide="ignore"):
        lam = np.log(a) - np.log1p(-a)  # (T,), decreasing in t; -inf at a zero-SNR end
    lo = max(min_log_snr, float(lam[-1]))
    if not lo < lam[0]:
        raise ValueError(f"log-SNR range [{lo}, {lam[0]}] is empty")
    targets = np.linspace(lo, float(lam[0]), num_steps)[1:]  # (n - 1,)
    ts = [T - 1] + [int(np.argmin(np.abs(lam - x))) for x in targets]
    # Strictly decreasing (fine steps near t = 0 may round to the same timestep): step i is kept in
    # [n - 1 - i, T - 1 - i], where n - i distinct timesteps still fit, and below step i - 1.
    for i in range(1, num_steps):
        ts[i] = min(max(ts[i], num_steps - 1 - i), T - 1 - i, ts[i - 1] - 1)
    return ts


# ----------------------------------------------------------------------------------------------------
# flow σ lists (σ = 1: pure noise, σ = 0: data; x_σ = (1 - σ)·x0 + σ·ε)


def uniform(num_steps: int) -> list[float]:
    """σ_i = 1 - i/n, i = 0..n (minRF / rectified-flow Euler, fast-inference.md §4.2)."""
    _check_steps(num_steps)
    return [1.0 - i / num_steps for i in range(num_steps + 1)]


def shift_sigmas(sigmas: Sequence[float], shift: float) -> list[float]:
    """σ' = s·σ / (1 + (s - 1)·σ): the SD3 / FlowMatchEuler shift (s > 1 spends more steps near noise).

    Fixes 0 and 1; equivalent to dividing the SNR ((1-σ)/σ)² by s².
    """
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return [shift * s / (1 + (shift - 1) * s) for s in sigmas]


def shifted(num_steps: int, shift: float) -> list[float]:
    """The uniform list passed through `shift_sigmas`."""
    return shift_sigmas(uniform(num_steps), shift)


def diffusers_flow(num_steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> list[float]:
    """`FlowMatchEulerDiscreteScheduler(shift=s).set_timesteps(n)` σ list, value for value (n + 1 values).

    diffusers spaces n σ linearly from σ_max = shift(1) = 1 to σ_min = shift(1/T) (its training table's last
    entry, float32), applies the shift again (so σ_min is shifted twice) in float64, rounds to float32 and
    appends 0. The end point before the final 0 is therefore ~s²/T, not 0: the last step jumps from there.
    """
    _check_steps(num_steps)
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    T = num_train_timesteps
    # __init__: float32 table σ = t/T for t = T..1, shifted in float32; keep its end points
    ends = torch.tensor([float(T), 1.0], dtype=torch.float32) / T
    ends = shift * ends / (1 + (shift - 1) * ends)
    sigma_max, sigma_min = float(ends[0]), float(ends[1])
    # set_timesteps(n): float64 linspace of timesteps, back to σ, shifted (again) in float64, then float32
    sig = np.linspace(sigma_max * T, sigma_min * T, num_steps) / T
    sig = shift * sig / (1 + (shift - 1) * sig)
    return torch.from_numpy(sig).to(torch.float32).tolist() + [0.0]


def linear_quadratic(num_steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None) -> list[float]:
    """Movie Gen's linear-quadratic σ list (fast-inference.md §1.1, public form: Mochi / LTX-Video).

    With progress u = 1 - σ, L linear steps (default n // 2), Q = n - L and τ = `threshold_noise`:
    u_i = i·τ/L for i < L; u_i = a·i² + b·i + c for L <= i < n with a = (L - τn)/(L·Q²),
    b = τ/L - 2(L - τn)/Q², c = a·L² (continuous and C¹ at i = L, u(n) = 1); u_n = 1.
    Returns n + 1 values σ_0 = 1 … σ_n = 0. With n = 50, τ = 0.025 the first 25 steps equal those of a
    1000-step uniform schedule, then 25 growing steps follow.
    """
    _check_steps(num_steps)
    if num_steps == 1:
        return [1.0, 0.0]  # no room for a linear part; one Euler step from noise to data
    L = num_steps // 2 if linear_steps is None else linear_steps
    if not 1 <= L < num_steps:
        raise ValueError(f"linear_steps must be in [1, {num_steps - 1}], got {L}")
    if not 0 < threshold_noise < L / num_steps:
        # a > 0 (a monotone, convex quadratic part) needs tau < L / n
        raise ValueError(f"threshold_noise must be in (0, {L / num_steps}), got {threshold_noise}")
    Q = num_steps - L
    gap = L - threshold_noise * num_steps
    a = gap / (L * Q**2)
    b = threshold_noise / L - 2 * gap / (Q**2)
    c = a * (L**2)
    progress = [i * threshold_noise / L for i in range(L)]
    progress += [a * (i**2) + b * i + c for i in range(L, num_steps)]
    return [1.0 - u for u in progress] + [0.0]


def _check_steps(num_steps: int) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
