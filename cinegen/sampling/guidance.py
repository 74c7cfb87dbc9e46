"""Classifier-free guidance and the CogVideoX dynamic guidance-scale schedule (pure functions).

Dynamic CFG (reference `diffusers-cogvideox.md` §5.1 step 5, `fast-inference.md` §4.1): SAT's
`DynamicCFG` defines
    scale(i) = 1 + s·(1 - cos(π·(i/n)^5)) / 2
a ramp from 1 (first, noisiest step) to 1 + s (last step). Two evaluations exist:

* "original": the formula on the step index i = 0..n-1, the ramp it was written to be (DESIGN.md §5;
  the fix proposed in diffusers PR #13172).
* "diffusers": what diffusers' `use_dynamic_cfg=True` computes,
  `1 + s·((1 - cos(π·((n - t)/n)^5))/2)` with the raw timestep value t (≈999…19) from `t.item()`
  (issue #9641, still present). ((n - t)/n)^5 is then a huge negative number and the scale jumps
  pseudo-randomly in [1, 1 + s]. SAT does the same (it passes `num_steps - timestep` as the step index),
  so this is also how the published sample videos were made. Needed for parity with the reference.

Dimension legend: predictions are latents (B, T, C, H, W); a CFG batch stacks [uncond; cond] on B.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

__all__ = [
    "DynamicCFGMode",
    "cfg",
    "cfg_batched",
    "dynamic_cfg_scale",
    "dynamic_cfg_scale_diffusers",
    "guidance_scale_at",
]

DynamicCFGMode = Literal["original", "diffusers"]


def cfg(uncond: Tensor, cond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance u + w·(c - u) (diffusers expression order)."""
    return uncond + scale * (cond - uncond)


def cfg_batched(pred: Tensor, scale: float) -> Tensor:
    """CFG on a prediction whose batch is [uncond; cond] (2B, ...) -> (B, ...), as the CogVideoX pipelines."""
    uncond, cond = pred.chunk(2)  # (2B, ...) -> 2 x (B, ...)
    return cfg(uncond, cond, scale)


def dynamic_cfg_scale(step_index: int, num_steps: int, scale: float) -> float:
    """SAT `DynamicCFG` on the step index: 1 + s·(1 - cos(π·(i/n)^5))/2, i = 0 (noisiest) … n-1."""
    return 1 + scale * (1 - math.cos(math.pi * (step_index / num_steps) ** 5.0)) / 2


def dynamic_cfg_scale_diffusers(t_value: float, num_steps: int, scale: float) -> float:
    """diffusers `use_dynamic_cfg`: the cosine fed with the raw timestep value (issue #9641), bit for bit."""
    return 1 + scale * ((1 - math.cos(math.pi * ((num_steps - t_value) / num_steps) ** 5.0)) / 2)


def guidance_scale_at(
    scale: float,
    step_index: int,
    t_value: float | Tensor,
    num_steps: int,
    dynamic: bool = False,
    mode: DynamicCFGMode = "original",
) -> float:
    """The guidance scale of one step: constant, or dynamic in the chosen mode.

    `num_steps` is the number of steps actually run (the diffusers V2V pipeline uses the truncated count).
    `t_value` may be the 0-dim timestep tensor: it is read (`float`, a device sync) only in "diffusers" mode.
    """
    if not dynamic:
        return scale
    if mode == "original":
        return dynamic_cfg_scale(step_index, num_steps, scale)
    if mode == "diffusers":
        return dynamic_cfg_scale_diffusers(float(t_value), num_steps, scale)
    raise ValueError(f"dynamic CFG mode must be 'original' or 'diffusers', got {mode!r}")
