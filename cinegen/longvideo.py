"""Long videos: more frames than the model's native clip, by denoising overlapping temporal windows together.

Method (MultiDiffusion, Bar-Tal et al. 2023, eq. 3-5, applied along time; the temporal counterpart of Movie
Gen's overlapping, linearly blended decoder tiles): the whole long latent video x (B, T_long, C, h, w) is one
sampling state. At every step, x is cut into windows of the model's native latent length W that overlap by
`overlap` latent frames; the transformer predicts each window on its own (with CFG), and the per-window
predictions are merged into one prediction for x by a per-frame weighted average whose weights sum to 1 on
every frame. One sampler step is then taken on x with the merged prediction. Because the DDIM, DPM-Solver++ and
Euler updates are affine in the model output, this equals MultiDiffusion's "step each window, then average the
windows' next states" in closed form, while costing one step per denoising step. Every window shares its
overlap with its neighbours at every step, so neighbouring windows agree on the shared frames and the video has
no hard seams. The latents are then decoded with the VAE's temporal tiling (overlapping decoder windows, blended
linearly), so decode memory does not grow with the length either.

Weights: "linear" (default) ramps a window's weight down towards an edge it shares with a neighbour, so the
contribution of a window fades out where the next one takes over (no step change in how many windows a frame
averages); "uniform" is MultiDiffusion's plain average.

Properties tested in tests/test_longvideo.py: the weights are a partition of unity; merging slices of one
global prediction gives that prediction back; with a single window (T_long == W) the result is bit-identical to
`Pipeline.generate_latents`; the output has the requested frame count.

Limits: text-to-video only (an I2V model conditions on one first frame, which later windows do not have; V2V
of a long source is a different job). Cost grows linearly with the number of windows.

Dimension legend: B batch, T latent frames (T_long the whole video, W one window), C channels, h/w latent size,
F pixel frames, L text tokens, D text width.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from cinegen.models.vae import TemporalTiling, window_starts
from cinegen.pipeline import GenerateRequest, GenerationStats, Pipeline, Progress, RequestError, peak_rss_mb
from cinegen.sampling.loop import sample
from cinegen.video import Video

__all__ = [
    "LongVideoSpec",
    "LongPlan",
    "window_starts",
    "window_weights",
    "merge_windows",
    "native_window",
    "default_overlap",
    "plan_long",
    "generate_long",
    "generate_long_latents",
]

Blend = Literal["linear", "uniform"]


@dataclass(frozen=True)
class LongVideoSpec:
    """How to make a long video.

    overlap: latent frames shared by neighbouring denoising windows (1 latent = 4 pixel frames); None =
      a third of the window (at least 1).
    window_frames: pixel frames of one window; None = the model's default (native) clip length.
    blend: "linear" or "uniform" merge weights (see the module docstring).
    """

    overlap: int | None = None
    window_frames: int | None = None
    blend: Blend = "linear"


@dataclass(frozen=True)
class LongPlan:
    num_frames: int  # pixel frames of the whole video, 1 + 4(T_long - 1)
    latent_frames: int  # T_long
    window: int  # W, latent frames per denoising window
    overlap: int
    starts: tuple[int, ...]  # first latent of every window
    decode_tiling: TemporalTiling

    @property
    def num_windows(self) -> int:
        return len(self.starts)


# ------------------------------------------------------------------------------------------ pure helpers
# window_starts(total, window, overlap): the first latent of each window (cinegen.models.vae, shared with the
# decoder's temporal tiling).


def window_weights(total: int, window: int, starts: list[int], blend: Blend = "linear") -> Tensor:
    """Merge weights (n_windows, T) float64, zero outside each window and summing to 1 over windows per frame.

    linear: a window's raw weight at its frame j is min(1, (j + 1) / (o_l + 1), (W - j) / (o_r + 1)) where
    o_l / o_r are the latents it shares with its left / right neighbour (no ramp at the video's ends), then
    normalised per frame. Every raw weight is > 0 inside its window, so every frame is covered.
    """
    if blend not in ("linear", "uniform"):
        raise ValueError(f"blend must be 'linear' or 'uniform', got {blend!r}")
    n = len(starts)
    raw = torch.zeros(n, total, dtype=torch.float64)
    j = torch.arange(window, dtype=torch.float64)  # (W,)
    for k, s in enumerate(starts):
        if s < 0 or s + window > total:
            raise ValueError(f"window [{s}, {s + window}) is outside [0, {total})")
        w = torch.ones(window, dtype=torch.float64)
        if blend == "linear":
            o_l = (starts[k - 1] + window - s) if k > 0 else 0
            o_r = (s + window - starts[k + 1]) if k + 1 < n else 0
            if o_l > 0:
                w = torch.minimum(w, (j + 1) / (o_l + 1))
            if o_r > 0:
                w = torch.minimum(w, (window - j) / (o_r + 1))
        raw[k, s : s + window] = w
    cover = raw.sum(0)  # (T,)
    if bool((cover <= 0).any()):
        raise ValueError("windows do not cover every latent frame")
    return raw / cover


def merge_windows(preds: list[Tensor], starts: list[int], weights: Tensor, total: int) -> Tensor:
    """Weighted sum of window predictions (B, W, C, h, w) into one (B, T, C, h, w) prediction (float32)."""
    first = preds[0]
    out = torch.zeros((first.shape[0], total, *first.shape[2:]), dtype=torch.float32, device=first.device)
    for k, (p, s) in enumerate(zip(preds, starts, strict=True)):
        w = weights[k, s : s + p.shape[1]].to(device=p.device, dtype=torch.float32)  # (W,)
        out[:, s : s + p.shape[1]] += p.float() * w.view(1, -1, 1, 1, 1)  # (W,) -> (1, W, 1, 1, 1)
    return out


# ------------------------------------------------------------------------------------------ planning
def native_window(pipe: Pipeline, window_frames: int | None = None) -> tuple[int, int]:
    """(pixel frames, latent frames) of one denoising window: the native clip; its latent length is padded to
    a multiple of `patch_size_t` for CogVideoX 1.5, as the pipeline pads a native clip (reference §5.1)."""
    frames = int(window_frames or pipe.defaults.num_frames)
    if (frames - 1) % pipe.frame_multiple or frames < 1 + pipe.frame_multiple:
        raise RequestError(
            f"window of {frames} frames is not a valid clip length for this model: use "
            f"{pipe.frame_multiple}N+1 frames, e.g. {pipe.valid_frame_counts()[:6]}"
        )
    t = (frames - 1) // 4 + 1
    pt = pipe.config.patch_size_t or 1
    return frames, t + (-t) % pt


def default_overlap(window: int) -> int:
    """Latent frames shared by neighbouring windows when the user names none: a third of the window."""
    return max(1, window // 3)


def plan_long(pipe: Pipeline, req: GenerateRequest, spec: LongVideoSpec) -> tuple[GenerateRequest, LongPlan]:
    """Validate a long-video request before any compute; returns the resolved request and the window plan.

    `req.num_frames` is the whole video's length: any 4k + 1 frames at least one window long.
    """
    if req.image is not None or req.video is not None:
        raise RequestError("long videos are text-to-video only: drop the image / source video")
    if pipe.is_i2v:
        raise RequestError("long videos need a text-to-video model; this is an image-to-video model")
    native_frames, window = native_window(pipe, spec.window_frames)
    total_frames = req.num_frames
    if total_frames is None or total_frames < 1 or (total_frames - 1) % 4:
        raise RequestError(f"long video num_frames={total_frames} is not valid: use 4k+1 frames, e.g. 97, 193")
    latents = (total_frames - 1) // 4 + 1
    if latents < window:
        raise RequestError(
            f"num_frames={total_frames} is shorter than one window ({native_frames} frames): generate it "
            "without the long-video option"
        )
    overlap = spec.overlap if spec.overlap is not None else default_overlap(window)
    if not 1 <= overlap < window:
        raise RequestError(f"overlap={overlap} latent frames is not valid: use 1 to {window - 1}")
    # every other check (size, steps, sampler, ...) is the model's own, on a native-length copy of the request
    native = pipe.resolve(replace(req, num_frames=native_frames))
    resolved = replace(native, num_frames=total_frames)
    dec_window = window if window % 2 else window - 1  # the VAE tiling needs odd windows (causal first latent)
    dec_window = max(dec_window, 3)
    plan = LongPlan(
        num_frames=total_frames,
        latent_frames=latents,
        window=window,
        overlap=overlap,
        starts=tuple(window_starts(latents, window, overlap)),
        decode_tiling=TemporalTiling(dec_window, max(1, min(overlap, dec_window - 1))),
    )
    return resolved, plan


# ------------------------------------------------------------------------------------------ the run
@torch.inference_mode()
def generate_long_latents(
    pipe: Pipeline, r: GenerateRequest, plan: LongPlan, blend: Blend = "linear", progress: Progress | None = None
) -> Tensor:
    """Denoise the whole long latent video (1, T_long, C, h, w); `r` as returned by `plan_long`.

    Mirrors `Pipeline.generate_latents` (the same noise draw, `Pipeline.initial_noise`, in the prompt dtype; the same
    guided predictor), with the model call replaced by the window merge.
    """
    generator, embeds, sched = pipe.prepare_sampling(r)  # embeds (B', L, D)
    latents = pipe.initial_noise(r, plan.latent_frames, generator, embeds.dtype)  # (1, T_long, C, h, w)
    starts = list(plan.starts)
    weights = window_weights(plan.latent_frames, plan.window, starts, blend)  # (n_windows, T_long)
    predict = pipe.guided_predictor(r, embeds, len(sched.timesteps))  # one window -> guided fp32 output

    def denoise(x: Tensor, t: Tensor, i: int) -> Tensor:
        preds = [predict(x[:, s : s + plan.window], t, i) for s in starts]  # each (B, W, C, h, w)
        return merge_windows(preds, starts, weights, plan.latent_frames)  # (B, T_long, C, h, w)

    return sample(denoise, latents, sched, generator=generator, callback=progress)


@torch.inference_mode()
def decode_long(pipe: Pipeline, latents: Tensor, plan: LongPlan) -> Tensor:
    """(B, T_long, C, h, w) scaled latents -> (B, 3, F, H, W) in [-1, 1] via the VAE's temporal tiling."""
    return pipe.decode(latents, temporal_tiling=plan.decode_tiling)


def generate_long(
    pipe: Pipeline,
    request: GenerateRequest,
    spec: LongVideoSpec | None = None,
    progress: Progress | None = None,
) -> Video:
    """Text-to-video longer than the model's native clip: `request.num_frames` frames (4k + 1).

    For the CLI: ``video = generate_long(pipe, req, LongVideoSpec(overlap=args.long_overlap), progress)``.
    Sets `pipe.last_stats` like `Pipeline.generate`.
    """
    spec = spec or LongVideoSpec()
    r, plan = plan_long(pipe, request, spec)
    t0 = time.perf_counter()
    latents = generate_long_latents(pipe, r, plan, spec.blend, progress)
    video = decode_long(pipe, latents, plan)
    pipe.last_stats = GenerationStats(
        seconds=time.perf_counter() - t0,
        steps=int(r.steps or 0),
        peak_rss_mb=peak_rss_mb(),  # same measure as Pipeline.generate
        latent_shape=tuple(latents.shape),
    )
    return Video.from_tensor(video, fps=float(r.fps or 8.0))
