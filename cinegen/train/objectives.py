"""Training objectives and timestep samplers (pure functions; fast-inference.md §4, diffusers-cogvideox.md §4.3).

Dimension legend: B batch, T latent frames, C latent channels, H/W latent height/width. Latents are (B, T, C, H, W)
as the transformer takes them; every function here is shape-agnostic past the batch dimension.

Two objectives share one interface (`noisy_input` then `loss`):

- **vpred** (CogVideoX): x_t = sqrt(a_t)·x0 + sqrt(1 - a_t)·eps with a_t = alphas_cumprod[t] (scaled-linear betas,
  SNR shift, zero terminal SNR; `cinegen.sampling.alphas_cumprod`), integer t in [0, 1000). The network predicts
  v; the loss is computed in x0 space exactly as the reference (diffusers `train_cogvideox_lora.py`, SAT
  `VideoScaling` + `loss.py`): x0_hat = sqrt(a)·x_t − sqrt(1−a)·v_hat, weight 1/(1 − a), mean of w·(x0_hat − x0)².
  (Algebraically this equals the plain v-MSE; we keep the reference's form so fp rounding matches it.)
- **flow** (rectified flow, shared_api.md convention): x_σ = (1 − σ)·x0 + σ·eps, target v = eps − x0, model
  timestep = σ·1000; σ from the sampled fraction, optionally shifted σ' = sσ / (1 + (s − 1)σ) (SD3).

Optional temporal-difference term (`Objective.temporal_weight` = λ > 0): with r the objective's residual
(x0_hat − x0 for vpred, v_hat − v for flow, times the same weight), loss += λ·mean((r[:, t+1] − r[:, t])²) over
the T − 1 latent frame pairs (0 for images). Both terms are minimised by the same prediction (the conditional
mean; frame differences are linear), so it reweights the objective toward what changes between frames (motion)
without moving its optimum.

Optional history frames (`Objective.history_prob` = p > 0; Diffusion Forcing / video-continuation training):
with probability p a clip's first k latent frames (k uniform over whole temporal patches, at least one patch left)
are noised less, at fraction s·frac with s ~ U(0, 1), and weigh 0 in the loss. The transformer keeps the clip's
timestep and must read the cleaner frames from their content; the remaining frames then depend on the caption's
motion words far more than under one shared noise level, where the trajectory is as hidden as the objects.

Timestep samplers return a fraction in [0, 1):
- uniform: u ~ U(0, 1);
- explicit_uniform (CogVideoX "explicit uniform sampling"): stratified over the *global* batch, sample g of G
  gets (g + u_g) / G, so ranks (and samples within a rank) cover disjoint intervals;
- logit_normal (SD3 / Movie Gen): sigmoid(m + s·z), z ~ N(0, 1).
The random numbers (u, z, eps) are drawn by the caller from per-sample generators (see trainer), which keeps
results independent of the number of processes and exactly reproducible on resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from cinegen.sampling.steps import add_noise, flow_add_noise, velocity

TimestepKind = Literal["uniform", "explicit_uniform", "logit_normal"]


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) matching x's rank, in x's dtype."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))  # (B,) -> (B, 1, 1, 1, 1)


def timestep_fraction(
    kind: TimestepKind,
    u: torch.Tensor,
    z: torch.Tensor,
    global_index: torch.Tensor,
    global_batch: int,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
) -> torch.Tensor:
    """Fraction in [0, 1) per sample. u ~ U(0,1), z ~ N(0,1) are per-sample draws; global_index (B,) in [0, G)."""
    if kind == "uniform":
        return u
    if kind == "explicit_uniform":
        return (global_index.to(u.dtype) + u) / global_batch
    if kind == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * z)
    raise ValueError(f"unknown timestep sampler {kind!r}")


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3 / flux timestep shift s·σ / (1 + (s − 1)·σ); shift 1 is the identity."""
    if shift == 1.0:
        return sigma
    return shift * sigma / (1 + (shift - 1) * sigma)


def discrete_timesteps(frac: torch.Tensor, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Fraction -> integer diffusion step in [0, N) (uniform fractions give t ~ U{0..N-1})."""
    return (frac * num_train_timesteps).floor().long().clamp_(0, num_train_timesteps - 1)


# ------------------------------------------------------------------------------------------------- v-prediction


# The forward processes are the sampler's (one definition for training and sampling): diffusers `add_noise`
# sqrt(a)·x0 + sqrt(1 − a)·eps and `get_velocity` v = sqrt(a)·eps − sqrt(1 − a)·x0, with a cast to the sample
# dtype first, as the reference.
vpred_noisy = add_noise
vpred_target = velocity


def region_weights(mask: torch.Tensor, mask_weight: float) -> torch.Tensor:
    """Loss weight map from a latent mask in [0, 1]: `mask_weight` inside, 1 outside, linear in between."""
    return 1.0 + (mask_weight - 1.0) * mask.float()


def weighted_mean(err: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean (B,) of an elementwise error (B, ...); with a weight map `region` broadcastable to it
    (e.g. (B, T, 1, h, w)), the weighted mean sum(w·e) / sum(w), so the loss keeps its scale."""
    if region is None:
        return err.flatten(1).mean(1)
    w = region.float().expand_as(err)
    return (w * err).flatten(1).sum(1) / w.flatten(1).sum(1)


def temporal_diff_loss(residual: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample mean (B,) of the squared frame-to-frame change of a residual (B, T, ...): mean of
    (r[:, t+1] − r[:, t])² over the T − 1 frame pairs, zeros for T == 1; `region` (B, T, ...) weighs each pair by
    the mean of its two frames' weights (see `weighted_mean`)."""
    if residual.shape[1] < 2:
        return residual.new_zeros(residual.shape[0], dtype=torch.float32)
    diff = residual[:, 1:] - residual[:, :-1]  # (B, T-1, ...)
    pair = None if region is None else 0.5 * (region[:, 1:] + region[:, :-1])
    return weighted_mean(diff.float() ** 2, pair)


def _vpred_residual(
    pred_v: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat − x0, w) with x0_hat = sqrt(a)·x_t − sqrt(1 − a)·v_hat and w = 1/(1 − a) as (B, 1, ..., 1)."""
    pred_v, x0, x_t = pred_v.float(), x0.float(), x_t.float()
    a = _bcast(alpha, x0)
    x0_hat = a.sqrt() * x_t - (1 - a).sqrt() * pred_v
    return x0_hat - x0, 1.0 / (1.0 - a)


def vpred_loss(
    pred_v: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, region: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample loss (B,): mean over non-batch dims of (1/(1 − a))·(x0_hat − x0)²,
    with x0_hat = sqrt(a)·x_t − sqrt(1 − a)·v_hat (weighted by `region`, see `weighted_mean`)."""
    res, w = _vpred_residual(pred_v, x0, x_t, alpha)
    return weighted_mean(w * res**2, region)


# --------------------------------------------------------------------------------------------------- flow matching


flow_noisy = flow_add_noise  # x_σ = (1 − σ)·x0 + σ·eps


def flow_loss(
    pred_v: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, region: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample loss (B,): mean of (v_hat − (eps − x0))² (weighted by `region`, see `weighted_mean`)."""
    return weighted_mean(_flow_residual(pred_v, x0, noise) ** 2, region)


def _flow_residual(pred_v: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v_hat − v with the flow target v = eps − x0, in float32."""
    return pred_v.float() - (noise.float() - x0.float())


# ---------------------------------------------------------------------------------------------------- interface


@dataclass(frozen=True)
class Objective:
    kind: Literal["vpred", "flow"]
    timesteps: TimestepKind = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0
    num_train_timesteps: int = 1000
    alphas_cumprod: torch.Tensor | None = None  # float64 (N,), vpred only
    temporal_weight: float = 0.0  # λ of the temporal-difference term (module docstring); 0 = off
    history_prob: float = 0.0  # probability of history frames per clip (module docstring); 0 = off
    # Train on this part [lo, hi) of the timestep fractions only (the sampled fraction f becomes lo + (hi - lo)·f):
    # e.g. (0, 0.1) fine-tunes the low-noise end, as an expert denoiser (eDiff-I) or a refiner. (0, 1) = all.
    timestep_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        lo, hi = self.timestep_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"timestep_range must satisfy 0 <= lo < hi <= 1, got {self.timestep_range}")
        if self.kind == "vpred" and self.alphas_cumprod is None:
            raise ValueError("the vpred objective needs alphas_cumprod (cinegen.sampling.alphas_cumprod)")
        if self.temporal_weight < 0:
            raise ValueError(f"temporal_weight must be >= 0, got {self.temporal_weight}")
        if not 0.0 <= self.history_prob <= 1.0:
            raise ValueError(f"history_prob must be in [0, 1], got {self.history_prob}")
        if self.history_prob > 0 and self.temporal_weight > 0:
            raise ValueError("history_prob and temporal_weight exclude each other (a history frame has no residual)")


@dataclass
class Noisy:
    x_t: torch.Tensor  # (B, T, C, H, W) model input
    timestep: torch.Tensor  # (B,) what the transformer gets: integer t (vpred) or σ·1000 (flow)
    level: torch.Tensor  # (B,) float64: a_t (vpred) or σ (flow)


def objective_fraction(
    obj: Objective, u: torch.Tensor, z: torch.Tensor, global_index: torch.Tensor, global_batch: int
) -> torch.Tensor:
    """The objective's timestep fraction per sample (B,): `timestep_fraction` of its sampler, mapped into its
    `timestep_range`."""
    frac = timestep_fraction(obj.timesteps, u, z, global_index, global_batch, obj.logit_mean, obj.logit_std)
    lo, hi = obj.timestep_range
    return lo + (hi - lo) * frac  # exactly frac for (0, 1)


def noisy_input(obj: Objective, x0: torch.Tensor, noise: torch.Tensor, frac: torch.Tensor) -> Noisy:
    """Corrupt clean latents x0 with noise at the sampled fractions (B,)."""
    if obj.kind == "vpred":
        t = discrete_timesteps(frac, obj.num_train_timesteps)
        assert obj.alphas_cumprod is not None
        alpha = obj.alphas_cumprod.to(t.device)[t]  # float64 (B,)
        return Noisy(vpred_noisy(x0, noise, alpha), t, alpha)
    sigma = shift_sigma(frac.double(), obj.shift)
    return Noisy(flow_noisy(x0, noise, sigma), (sigma * obj.num_train_timesteps).float(), sigma)


def objective_loss(
    obj: Objective,
    pred: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    n: Noisy,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample loss (B,) in float32; `region` (B, T, 1, h, w) weighs latent cells (`region_weights`); with
    `obj.temporal_weight` > 0 plus λ·`temporal_diff_loss` of the same (weighted) residual."""
    # the residual once, for the loss (the same ops as vpred_loss / flow_loss) and the temporal term
    w: torch.Tensor | None = None
    if obj.kind == "vpred":
        res, w = _vpred_residual(pred, x0, n.x_t, n.level)
        loss = weighted_mean(w * res**2, region)
    else:
        res = _flow_residual(pred, x0, noise)
        loss = weighted_mean(res**2, region)
    if obj.temporal_weight == 0:
        return loss
    if w is not None:
        res = res * w.sqrt()  # w·(Δr)² == (Δ(sqrt(w)·r))², w is per sample
    return loss + obj.temporal_weight * temporal_diff_loss(res, region)


def draw_history(g: torch.Generator, prob: float, num_frames: int, patch_t: int = 1) -> tuple[int, float]:
    """(k, s) of one clip: k history latent frames (0 = none; whole temporal patches, at least one patch left to
    predict, so images never get any) and their noise scale s ~ U(0, 1); three draws from g in a fixed order."""
    b, j, s = (float(torch.rand((), generator=g, dtype=torch.float64)) for _ in range(3))
    patches = num_frames // patch_t
    if patches < 2 or b >= prob:
        return 0, 1.0
    return (1 + int(j * (patches - 1))) * patch_t, s


def with_history(
    obj: Objective,
    x0: torch.Tensor,
    noise: torch.Tensor,
    n: Noisy,
    frac: torch.Tensor,
    history: list[tuple[int, float]],
    region: torch.Tensor | None = None,
) -> tuple[Noisy, torch.Tensor | None]:
    """Apply `draw_history` results to a batch: clip i's first k_i latent frames re-noised at frac_i·s_i (same
    noise draw), and a loss weight map (B, T, 1, h, w) that is 0 on them (`region` times it). Timesteps unchanged."""
    if not any(k for k, _ in history):
        return n, region
    x_t = n.x_t.clone()
    w = torch.ones_like(x0[:, :, :1]) if region is None else region.clone()  # (B, T, 1, h, w)
    for i, (k, s) in enumerate(history):
        if k:
            x_t[i, :k] = noisy_input(obj, x0[i : i + 1, :k], noise[i : i + 1, :k], frac[i : i + 1] * s).x_t[0]
            w[i, :k] = 0.0
    return Noisy(x_t, n.timestep, n.level), w
