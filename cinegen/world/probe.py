"""Text-conditioning probes: does a v-prediction text-to-video model read its caption, and its object words?

Both probes noise the latents of fresh Shapes-world clips to a chosen level and compare the transformer's x0
estimate under two captions, so they measure the model directly (no sampler, no analyzer):

- `caption_use`: the clip's dense caption vs the empty caption, over the whole latent. From pure noise
  (t = T-1: ᾱ = 0 under every SNR shift) only the caption can tell what the clip holds.
- `attribute_use`: the true caption vs the caption with the first object's colour / shape / motion swapped for
  another word, over that object's latent footprint only. A model that ignores the word scores 0. The
  background colour word, swapped the same way and scored over the background's footprint, is the control: a
  model that reads its background words scores well above 0 there.
  With `history=k` the first k latent frames are given clean (continuation, as `objective.history_prob`
  trains) and only the later frames are scored: does the motion word decide where the object goes next?
- `denoise_profile`: no second caption: the x0 error with the true caption at fixed timesteps, over the whole
  latent, over the first object's footprint, and (decoded) as PSNR against the decoded clean latents. The same
  clips and noise for every model, so two checkpoints compare paired, far more finely than ShapesBench's
  sampled videos; low timesteps measure fine detail (edges, small shapes), high ones the layout.
- `text_binding`: a text-encoder probe (no transformer): do two objects' captions with their motions (or colours)
  swapped give different bags of token features? A frozen random T5 barely tells them apart.

Gain = 1 - error(true caption) / error(other caption): 0 when the words make no difference, > 0 when the right
words help (negative: the wrong words help, i.e. noise).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from cinegen.sampling.schedules import alphas_cumprod
from cinegen.train.data import latent_mask
from cinegen.train.metrics import psnr
from cinegen.video import frames_to_tensor
from cinegen.world import vocab as V
from cinegen.world.captions import dense_caption
from cinegen.world.dataset import clip_spec
from cinegen.world.render import ClipSpec, ObjectTruth, complete_truth, render_clip, sample_truth

if TYPE_CHECKING:
    from cinegen.pipeline import Pipeline

ATTRIBUTES = ("color", "shape", "motion", "background")


def swap_attribute(spec: ClipSpec, attr: str) -> ClipSpec | None:
    """`spec` with its first object's `attr` (colour, shape or motion) or its background colour changed to the
    next valid word of the vocabulary; a motion keeps whether it has a speed. None when no other word is valid."""
    if attr not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {attr!r}; allowed: {', '.join(ATTRIBUTES)}")
    if attr == "background":
        names = list(V.BACKGROUND_COLORS)
        return dataclasses.replace(spec, background=names[(names.index(spec.background) + 1) % len(names)])
    o = spec.objects[0]
    values = {"color": list(V.COLORS), "shape": list(V.SHAPES), "motion": list(V.MOTIONS)}[attr]
    i = values.index(getattr(o, attr))
    for new in values[i + 1 :] + values[:i]:
        cand = dataclasses.replace(o, **{attr: new})
        if V.motion_valid(cand.shape, cand.motion) and V.has_speed(cand.motion) == V.has_speed(o.motion):
            return dataclasses.replace(spec, objects=(cand, *spec.objects[1:]))
    return None


def _levels(pipe: Pipeline, snrs: tuple[float, ...]) -> dict[str, tuple[int, float]]:
    """name -> (timestep, ᾱ): pure noise, then the timestep whose SNR ᾱ / (1 - ᾱ) is closest to each value."""
    ac = alphas_cumprod(pipe.scheduler)  # (N,) float64
    levels = {"pure_noise": (len(ac) - 1, 0.0)}
    for snr in snrs:
        t = int(torch.argmin((ac / (1 - ac) - snr).abs()))
        levels[f"snr_{snr}"] = (t, float(ac[t]))
    return levels


def _clip_latents(pipe: Pipeline, frames: np.ndarray) -> Tensor:
    """uint8 (F, H, W, 3) -> scaled posterior-mean latents (1, T, C, h, w), as the transformer sees them."""
    x = frames_to_tensor(frames)[None].to(pipe.device, pipe.vae.dtype)  # (1, 3, F, H, W) in [-1, 1]
    return pipe.vae.scale(pipe.vae.encode(x)).permute(0, 2, 1, 3, 4).float()  # (1, T, C, h, w)


def _text(pipe: Pipeline, caption: str) -> Tensor:
    """The caption's embeddings (1, L, D) in the transformer's dtype: encode once per clip, reuse per level."""
    return pipe.encode_prompts(caption, "", False).to(pipe.dtype)


def _x0_hat(pipe: Pipeline, x_t: Tensor, text: Tensor, t: int, a: float) -> Tensor:
    """The transformer's x0 estimate (v-prediction) for noisy latents x_t (1, T, C, h, w) at timestep t, given
    caption embeddings `text` (1, L, D) from `_text`."""
    step = torch.tensor([t], device=pipe.device)
    v = pipe.transformer(x_t.to(pipe.dtype), text, step).float()
    return a**0.5 * x_t - (1 - a) ** 0.5 * v


def _check_vpred(pipe: Pipeline) -> None:
    if pipe.scheduler.kind == "flow":
        raise ValueError("the probes read v-prediction x0 estimates; this is a flow-matching model")


def _noised_clips(
    pipe: Pipeline, n: int, seed: int, levels: dict[str, tuple[int, float]]
) -> Iterator[tuple[ClipSpec, np.ndarray, Tensor, Iterator[tuple[str, int, float, Tensor]]]]:
    """The probes' shared loop: for each of `n` fresh 17-frame clips (held-out compositions allowed) yield
    (spec, frames, clean latents x0 (1, T, C, h, w), the noise levels), the levels yielding (name, t, ᾱ, x_t)
    with one noise draw per clip shared by every level."""
    _check_vpred(pipe)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        spec, _ = clip_spec(seed, i, frame_counts=[17], include_held_out=True)
        frames = render_clip(spec)  # (F, H, W, 3) uint8
        x0 = _clip_latents(pipe, frames)
        eps = torch.randn(x0.shape, generator=g).to(x0.device)
        noised = ((name, t, a, a**0.5 * x0 + (1 - a) ** 0.5 * eps) for name, (t, a) in levels.items())
        yield spec, frames, x0, noised


@torch.no_grad()
def caption_use(pipe: Pipeline, n: int = 12, seed: int = 777, snrs: tuple[float, ...] = (0.003,)) -> dict:
    """x0 MSE with the dense caption vs the empty caption on `n` fresh 17-frame clips (held-out compositions
    allowed), from pure noise and at each SNR in `snrs`."""
    levels = _levels(pipe, snrs)
    err: dict[str, list[float]] = {f"{lv}/{c}": [] for lv in levels for c in ("caption", "empty")}
    for spec, _, x0, noised in _noised_clips(pipe, n, seed, levels):
        texts = {"caption": _text(pipe, dense_caption(spec.truth())), "empty": _text(pipe, "")}
        for name, t, a, x_t in noised:
            for cap_name, text in texts.items():
                err[f"{name}/{cap_name}"].append(float(((_x0_hat(pipe, x_t, text, t, a) - x0) ** 2).mean()))
    mean = {k: round(float(np.mean(v)), 4) for k, v in err.items()}
    gain = {lv: round(1 - mean[f"{lv}/caption"] / mean[f"{lv}/empty"], 4) for lv in levels}
    return {"clips": n, "seed": seed, "t": {k: t for k, (t, _) in levels.items()}, "x0_mse": mean, "gain": gain}


def _footprint(pipe: Pipeline, frames: np.ndarray, spec: ClipSpec, attr: str) -> Tensor:
    """Latent cells (T, 1, h, w) an attribute's word is about: where recolouring the first object (object
    attributes) or the background (`background`) changes the rendered pixels, i.e. where they are visible."""
    recoloured = swap_attribute(spec, "background" if attr == "background" else "color")
    assert recoloured is not None  # every colour has another
    mask = torch.from_numpy((frames != render_clip(recoloured)).any(-1))  # (F, H, W)
    return latent_mask(mask, pipe.vae_temporal, pipe.vae_spatial)[:, None]


@torch.no_grad()
def attribute_use(
    pipe: Pipeline, n: int = 24, seed: int = 777, snrs: tuple[float, ...] = (0.003, 0.03), history: int = 0
) -> dict:
    """x0 MSE over an attribute's latent footprint (`_footprint`) with the true dense caption vs the caption with
    that attribute's word swapped (`swap_attribute`), on `n` fresh clips (as `caption_use`); with `history` > 0
    the first `history` latent frames are clean in the input and left out of the error."""
    if history < 0:
        raise ValueError(f"history must be >= 0, got {history}")
    levels = _levels(pipe, snrs)
    err: dict[str, list[float]] = {}
    for spec, frames, x0, noised in _noised_clips(pipe, n, seed, levels):
        cells = {
            part: _footprint(pipe, frames, spec, attr).to(x0.device)
            for part, attr in (("object", "color"), ("background", "background"))
        }
        captions = {"true": dense_caption(spec.truth())}
        for attr in ATTRIBUTES:
            swapped = swap_attribute(spec, attr)
            if swapped is not None:
                captions[attr] = dense_caption(swapped.truth())
        texts = {c: _text(pipe, cap) for c, cap in captions.items()}  # (1, L, D) each, once per clip
        if history >= x0.shape[1]:
            raise ValueError(f"history {history} leaves none of the clip's {x0.shape[1]} latent frames to score")
        for m in cells.values():
            m[:history] = False  # given frames are not scored
        for name, t, a, x_t in noised:
            x_t = torch.cat([x0[:, :history], x_t[:, history:]], dim=1)  # (1, T, C, h, w): the history is clean
            sq = {c: (_x0_hat(pipe, x_t, text, t, a) - x0) ** 2 for c, text in texts.items()}  # (1, T, C, h, w)
            for attr in (c for c in captions if c != "true"):
                m = cells["background" if attr == "background" else "object"]
                if not m.any():  # e.g. the object is hidden in every frame
                    continue
                for which, c in (("true", "true"), ("swapped", attr)):
                    e = float((sq[c] * m).sum() / (m.sum() * x0.shape[2]))
                    err.setdefault(f"{name}/{attr}/{which}", []).append(e)
    mean = {k: round(float(np.mean(v)), 4) for k, v in err.items()}
    gain = {
        f"{lv}/{attr}": round(1 - mean[f"{lv}/{attr}/true"] / mean[f"{lv}/{attr}/swapped"], 4)
        for lv in levels
        for attr in ATTRIBUTES
        if f"{lv}/{attr}/true" in mean
    }
    clips = {attr: len(err.get(f"pure_noise/{attr}/true", [])) for attr in ATTRIBUTES}
    levels_t = {k: t for k, (t, _) in levels.items()}
    return {"seed": seed, "history": history, "clips": clips, "t": levels_t, "x0_mse": mean, "gain": gain}


PROFILE_TIMESTEPS = (10, 40, 100, 200, 400, 700, 999)


@torch.no_grad()
def denoise_profile(
    pipe: Pipeline,
    n: int = 24,
    seed: int = 777,
    timesteps: Sequence[int] = PROFILE_TIMESTEPS,
    pixels: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """One-step x0 error of the transformer with the true dense caption at each of `timesteps`, on `n` fresh
    17-frame clips (as `caption_use`; one noise draw per clip shared by every timestep): latent MSE over the whole
    latent (`x0_mse`) and over the first object's footprint (`object_mse`), and with `pixels` the PSNR of the
    decoded estimate against the decoded clean latents (`psnr`, dB: the VAE's own error left out)."""
    ac = alphas_cumprod(pipe.scheduler)
    bad = [t for t in timesteps if not 0 <= int(t) < len(ac)]
    if bad:
        raise ValueError(f"timesteps must be in [0, {len(ac)}), got {bad}")
    levels = {f"t{int(t)}": (int(t), float(ac[int(t)])) for t in timesteps}
    err: dict[str, dict[str, list[float]]] = {k: {lv: [] for lv in levels} for k in ("x0_mse", "object_mse", "psnr")}
    done = 0
    for spec, frames, x0, noised in _noised_clips(pipe, n, seed, levels):
        cells = _footprint(pipe, frames, spec, "color").to(x0.device)  # (T, 1, h, w)
        ref = pipe.decode(x0.to(pipe.dtype)).float() if pixels else None  # (1, 3, F, H, W)
        text = _text(pipe, dense_caption(spec.truth()))  # (1, L, D)
        for name, t, a, x_t in noised:
            x0_hat = _x0_hat(pipe, x_t, text, t, a)  # (1, T, C, h, w)
            sq = (x0_hat - x0) ** 2
            err["x0_mse"][name].append(float(sq.mean()))
            if cells.any():
                err["object_mse"][name].append(float((sq * cells).sum() / (cells.sum() * x0.shape[2])))
            if ref is not None:
                err["psnr"][name].append(psnr(pipe.decode(x0_hat.to(pipe.dtype)).float(), ref))
            done += 1
            if progress is not None:
                progress(done, n * len(levels))
    out = {k: {lv: round(float(np.mean(v)), 5) for lv, v in d.items() if v} for k, d in err.items()}
    sigma = {lv: round((1 - a) ** 0.5, 4) for lv, (_, a) in levels.items()}
    return {"clips": n, "seed": seed, "t": {k: t for k, (t, _) in levels.items()}, "sigma": sigma, **out}


def profile_table(results: Sequence[tuple[str, dict]]) -> str:
    """Markdown: a row per timestep; x0 MSE, object MSE and PSNR per labelled `denoise_profile` result. Refuses
    results of other clips, seeds or timesteps (they would not be paired)."""
    if not results:
        raise ValueError("no results to tabulate")
    first = results[0][1]
    for label, r in results[1:]:
        if (r["t"], r["clips"], r["seed"]) != (first["t"], first["clips"], first["seed"]):
            raise ValueError(f"{label}: other timesteps, clips or seed than {results[0][0]}: not paired")
    cols = [("x0_mse", "x̂0 MSE", "{:.4f}"), ("object_mse", "object MSE", "{:.4f}"), ("psnr", "PSNR dB", "{:.2f}")]
    cols = [c for c in cols if all(r.get(c[0]) for _, r in results)]
    head = ["t", "σ"] + [f"{name}: {label}" for _, name, _ in cols for label, _ in results]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for lv, t in first["t"].items():
        row = [str(t), f"{first['sigma'][lv]:.3f}"]
        row += [fmt.format(r[key][lv]) for key, _, fmt in cols for _, r in results]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- text binding
def bag_distance(a: Tensor, b: Tensor) -> float:
    """How far apart two token-feature sequences (La, D) and (Lb, D) are as unordered bags (the transformer's
    view: CogVideoX gives text tokens no positions): the mean distance of each token to its nearest token of the
    other bag, both ways, relative to the mean token norm. 0 for the same bag in any order."""
    d = torch.cdist(a.float(), b.float())  # (La, Lb)
    return float((d.min(dim=1).values.mean() + d.min(dim=0).values.mean()) / 2 / a.float().norm(dim=-1).mean())


def _swap(o1: ObjectTruth, o2: ObjectTruth, fields: tuple[str, ...]) -> tuple[ObjectTruth, ObjectTruth]:
    new1 = dataclasses.replace(o1, **{f: getattr(o2, f) for f in fields})
    new2 = dataclasses.replace(o2, **{f: getattr(o1, f) for f in fields})
    return new1, new2


@torch.no_grad()
def text_binding(encode: Callable[[str], Tensor], n: int = 48, seed: int = 5) -> dict:
    """Does a text encoder tie each object's words together? On `n` random two-object scenes (different colours,
    shapes and straight directions, one speed), the bag distance (`bag_distance`) between the dense caption's
    token features (`encode(text)` -> (L, D)) and the caption with the two objects' motions swapped, or their
    colours swapped (the same words, rebound), against the caption with one motion word replaced by an unused
    direction (a different word). `binding` = swap / word: ~0 when the features are a bag of context-free words,
    so that "red up, blue down" and "red down, blue up" look alike to the transformer."""
    rng = np.random.default_rng(seed)
    dirs = ("left", "right", "up", "down")
    dist: dict[str, list[float]] = {"motion_swap": [], "color_swap": [], "word": []}
    while len(dist["word"]) < n:
        truth = complete_truth(sample_truth(rng, num_objects=2, group_prob=0.0, camera_prob=0.0), rng)
        o1, o2 = truth.objects
        if o1.color == o2.color or o1.shape == o2.shape:
            continue
        m1, m2, m3 = (dirs[i] for i in rng.permutation(len(dirs))[:3])
        o1, o2 = dataclasses.replace(o1, motion=m1, speed="fast"), dataclasses.replace(o2, motion=m2, speed="fast")
        base = encode(dense_caption(dataclasses.replace(truth, objects=(o1, o2))))
        variants = {
            "motion_swap": _swap(o1, o2, ("motion",)),
            "color_swap": _swap(o1, o2, ("color",)),
            "word": (dataclasses.replace(o1, motion=m3), o2),
        }
        for key, objs in variants.items():
            dist[key].append(bag_distance(base, encode(dense_caption(dataclasses.replace(truth, objects=objs)))))
    mean = {k: round(float(np.mean(v)), 4) for k, v in dist.items()}
    binding = {k: round(mean[k] / mean["word"], 4) for k in ("motion_swap", "color_swap")}
    return {"scenes": n, "seed": seed, "bag_distance": mean, "binding": binding}
