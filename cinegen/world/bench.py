"""ShapesBench: a fixed prompt suite over the Shapes world, a runner, and its reports.

The suite (`default_suite()`) is built by a fixed procedure, no randomness: every held-out composition
(vocab.HELD_OUT) twice (alone, and in a two- or three-object scene or a counted group), plus seen
compositions covering every motion alone, counted groups and mixed scenes; three aspect ratios; 9 and 17
frames; fixed seeds. Prompts are the dense captions the model trains on (`prompt_style="short"` sends the
user-style short caption instead and scores only what it states).

`run_shapes_bench(generate_fn, out_dir)` generates every prompt, analyzes each video (analyze.py, no access
to the prompt) and scores it against the truth, then writes `results.json`, `results.md` (attribute x
seen / held-out table, by-motion table, the direction diagnostic of `direction_summary`, shape and motion
`confusion` tables) and `samples.png`
(a contact sheet). `repeats` = R samples every prompt R times with distinct fixed seeds (`repeat_seed`): a model's
scores move by ~10 points between seeds on 26 prompts, so a decision between two models wants R > 1 and the paired
differences of `paired_differences` (same prompts, same seeds), which `compare_table` prints with 95 % intervals.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cinegen.fsutil import atomic_write
from cinegen.world import vocab as V
from cinegen.world.analyze import ATTRIBUTES, MOVE_MIN, analyze_video, match_objects, score_video
from cinegen.world.captions import dense_caption, parse_prompt, short_caption_and_stated
from cinegen.world.render import (
    ObjectTruth,
    SceneTruth,
    complete_truth,
    layout_truth,
    render_clip,
    render_truth,
)

__all__ = [
    "BenchItem",
    "GenerateFn",
    "default_suite",
    "run_shapes_bench",
    "oracle_generate",
    "render_item",
    "vae_roundtrip_generate",
    "pipeline_generate",
    "confusion",
    "paired_differences",
    "repeat_seed",
    "summarize",
]

# generate_fn(prompt, num_frames, height, width, seed) -> uint8 (F, H, W, 3)
GenerateFn = Callable[[str, int, int, int, int], np.ndarray]
GROUPS = ("seen", "held_out", "all")


@dataclass(frozen=True)
class BenchItem:
    """One prompt of the suite with its truth, format and seed."""

    id: str
    truth: SceneTruth
    width: int
    height: int
    num_frames: int
    seed: int

    @property
    def held_out(self) -> bool:
        return self.truth.held_out

    @property
    def group(self) -> str:
        return "held_out" if self.held_out else "seen"

    def prompt(self, style: str = "dense") -> str:
        return self.prompt_and_truth(style)[0]

    def prompt_and_truth(self, style: str = "dense") -> tuple[str, SceneTruth]:
        """(prompt text, the truth it states): dense states everything; short leaves some attributes out."""
        if style == "dense":
            return dense_caption(self.truth), self.truth
        if style == "short":
            return short_caption_and_stated(self.truth, np.random.default_rng(self.seed))
        raise ValueError(f"unknown prompt style {style!r}: use 'dense' or 'short'")


# ------------------------------------------------------------------------------------------------- suite
_ASPECT_CYCLE = ("square", "landscape", "portrait")
_BG_NAMES = list(V.BACKGROUND_COLORS)
_COLOR_NAMES = list(V.COLORS)
_FRAME_CYCLE = (9, 17)


def _obj(shape: str, color: str, size: str, motion: str, i: int) -> ObjectTruth:
    return ObjectTruth(shape, color, size, motion, V.SPEEDS[i % 2] if V.has_speed(motion) else None)


def _companion(i: int, j: int, avoid: set[tuple[str, str]]) -> ObjectTruth:
    """A deterministic seen-composition object, distinct in colour+shape from `avoid`, small."""
    for step in range(200):
        shape = V.SHAPES[(i + 2 * j + step + 1) % len(V.SHAPES)]
        color = _COLOR_NAMES[(3 * i + 5 * j + step + 2) % len(_COLOR_NAMES)]
        motion = V.MOTIONS[(2 * i + 7 * j + step + 5) % len(V.MOTIONS)]
        if V.motion_valid(shape, motion) and not V.is_held_out(color, shape, motion) and (color, shape) not in avoid:
            return _obj(shape, color, "small", motion, i + j)
    raise AssertionError("no companion found")  # pragma: no cover - the loop always finds one


def _item(idx: int, name: str, objects: Sequence[ObjectTruth], k: int, variant: int = 0) -> BenchItem:
    truth = SceneTruth(
        tuple(objects),
        _BG_NAMES[k % len(_BG_NAMES)],
        V.BACKGROUND_STYLES[(k // 2) % len(V.BACKGROUND_STYLES)],
        "still",  # the analyzer reads object motion on screen; camera motion is for training data only
    )
    w, h = V.ASPECTS[_ASPECT_CYCLE[k % 3]]
    return BenchItem(f"{idx:03d}-{name}", truth, w, h, _FRAME_CYCLE[(k // 3) % 2], 1000 + idx + 100 * variant)


def _fits(item: BenchItem) -> bool:
    rng = np.random.default_rng(item.seed)
    return layout_truth(item.truth, item.width, item.height, item.num_frames, rng) is not None


@functools.lru_cache(maxsize=1)
def default_suite() -> tuple[BenchItem, ...]:
    """The fixed ShapesBench suite: 26 held-out + 26 seen prompts (see module docstring)."""
    items: list[BenchItem] = []

    def add(name: str, make: Callable[[int], Sequence[ObjectTruth]], k: int) -> None:
        # Crowded scenes may not fit at a given seed: try the next seeds, then other companions
        # (objects variant v // 4), until the scene can be laid out.
        for v in range(40):
            item = _item(len(items), name, make(v // 4), k, v)
            if _fits(item):
                items.append(item)
                return
        raise AssertionError(f"no feasible layout for suite item {name}")  # pragma: no cover

    # Held-out compositions: alone, then in company (mixed scene for even i, a counted group for odd i).
    for i, (color, shape, motion) in enumerate(V.HELD_OUT):
        alone = _obj(shape, color, ("large", "small")[i % 2], motion, i)
        add(f"ho-{color}-{shape}-{motion}", lambda v, o=alone: [o], i)
    for i, (color, shape, motion) in enumerate(V.HELD_OUT):

        def company(v: int, i: int = i, main: ObjectTruth = _obj(shape, color, "small", motion, i + 1)):
            n = 2 + (i // 2) % 2
            if i % 2:
                return [main] * n
            return [main] + [_companion(i + 7 * v, j, {(main.color, main.shape)}) for j in range(n - 1)]

        add(f"ho-multi-{color}-{shape}-{motion}", company, i + 5)
    # Seen compositions: every motion alone.
    for i, motion in enumerate(V.MOTIONS):
        for step in range(len(V.SHAPES) * len(V.COLORS)):
            shape = V.SHAPES[(2 * i + step) % len(V.SHAPES)]
            color = _COLOR_NAMES[(3 * i + 1 + step // len(V.SHAPES)) % len(_COLOR_NAMES)]
            if V.motion_valid(shape, motion) and not V.is_held_out(color, shape, motion):
                break
        o = _obj(shape, color, ("small", "large")[i % 2], motion, i + 1)
        add(f"seen-{color}-{shape}-{motion}", lambda v, o=o: [o], i + 2)
    # Counted groups of identical objects.
    groups = [
        ("circle", "red", "left", 2),
        ("star", "blue", "rotate", 3),
        ("square", "green", "still", 3),
        ("ring", "yellow", "down", 2),
        ("triangle", "pink", "grow", 2),
        ("cross", "cyan", "bounce", 2),
    ]
    for i, (shape, color, motion, n) in enumerate(groups):
        o = _obj(shape, color, "small", motion, i)
        add(f"seen-group{n}-{color}-{shape}-{motion}", lambda v, o=o, n=n: [o] * n, i + 7)
    # Mixed scenes of seen compositions.
    for i in range(7):

        def make(v: int, i: int = i) -> list[ObjectTruth]:
            first = _companion(i + 20 + 7 * v, 0, set())
            rest = [_companion(i + 20 + 7 * v, j, {(first.color, first.shape)}) for j in range(1, 2 + i % 2)]
            return [first, *rest]

        add(f"seen-mixed{2 + i % 2}-{i}", make, i + 11)
    return tuple(items)


REPEAT_SEED_STRIDE = 100_000  # repeat r of a prompt starts its seed search at seed + r * stride


def repeat_seed(item: BenchItem, repeat: int) -> int:
    """The seed of repeat `repeat` of a suite item: its own seed for repeat 0, else the first seed from
    `item.seed + repeat * REPEAT_SEED_STRIDE` at which its scene can be laid out (the oracle and `--from-truth`
    render the layout of that seed; a model samples its noise from it)."""
    if repeat < 0:
        raise ValueError(f"repeat must be >= 0, got {repeat}")
    if repeat == 0:
        return item.seed
    start = item.seed + repeat * REPEAT_SEED_STRIDE
    for seed in range(start, start + 1000):
        if _fits(dataclasses.replace(item, seed=seed)):
            return seed
    raise AssertionError(f"no feasible layout for {item.id} near seed {start}")  # pragma: no cover


# ------------------------------------------------------------------------------------- ground-truth oracle
def render_item(item: BenchItem) -> np.ndarray:
    """Ground-truth render of a suite item (its seed fixes the layout)."""
    frames, _ = render_truth(item.truth, item.width, item.height, item.num_frames, item.seed)
    return frames


def oracle_generate(prompt: str, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A `generate_fn` that renders the world's own answer to a prompt: parse, fill unstated attributes
    with defaults, lay out with `seed`, render. For a dense suite prompt this is exactly `render_item`."""
    parsed = parse_prompt(prompt)
    spec = layout_truth(complete_truth(parsed), width, height, num_frames, np.random.default_rng(seed))
    if spec is None:  # unstated sizes default to large; a crowded scene may only fit with small objects
        small = [dataclasses.replace(o, size=o.size or "small") for o in parsed.objects]
        truth = complete_truth(dataclasses.replace(parsed, objects=tuple(small)))
        spec = layout_truth(truth, width, height, num_frames, np.random.default_rng(seed))
    if spec is None:
        raise ValueError(f"cannot lay out {prompt!r} at {width}x{height}")
    return render_clip(spec)


def vae_roundtrip_generate(vae: Any, latent_noise: float = 0.0) -> GenerateFn:
    """A `generate_fn` that passes the oracle's render through `vae` (encode to the posterior mean, decode,
    8-bit). ShapesBench on it is the ceiling of any transformer over that VAE: what survives the latent
    space. `vae` is a `cinegen.models.vae` autoencoder (encode/decode on (B, 3, F, H, W) in [-1, 1]).

    `latent_noise` = s > 0 adds Gaussian noise of std s *in the transformer's latent units* (after
    `vae.scale`, unit variance) before decoding, seeded by the prompt's seed: how robust the decoder is to
    the small errors every denoiser leaves (a smooth latent space keeps a slightly-off square a square)."""
    import torch

    from cinegen.video import Video, frames_to_tensor

    if latent_noise < 0:
        raise ValueError(f"latent_noise must be >= 0, got {latent_noise}")

    def generate(prompt: str, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
        frames = oracle_generate(prompt, num_frames, height, width, seed)  # (F, H, W, 3) uint8
        x = frames_to_tensor(frames)[None].to(vae.device)  # (1, 3, F, H, W)
        with torch.no_grad():
            z = vae.encode(x)  # (1, C_lat, T, h, w), unscaled
            if latent_noise > 0:
                g = torch.Generator().manual_seed(seed)
                eps = torch.randn(z.shape, generator=g).to(z)  # (1, C_lat, T, h, w)
                z = vae.unscale(vae.scale(z) + latent_noise * eps)
            y = vae.decode(z)  # (1, 3, F, H, W)
        return Video.from_tensor(y).frames

    return generate


def pipeline_generate(pipe: Any, from_truth: float | None = None, **sample_kw: Any) -> GenerateFn:
    """A `generate_fn` over `pipe` (a `cinegen.pipeline.Pipeline`; `sample_kw` e.g. steps, guidance, spacing):
    text-to-video, or with `from_truth` = S the oracle's render noised to strength S of the sampling schedule and
    denoised with the prompt (video-to-video, SDEdit). The latter finds where along the schedule a model loses an
    attribute: at a low strength only the last, low-noise steps run (does it keep a drawn triangle a
    triangle?), at a high one it must also lay out the scene (1.0 = ordinary generation)."""

    def generate(prompt: str, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
        v2v: dict[str, Any] = {}
        if from_truth is not None:  # the render (F, H, W, 3) uint8
            v2v = {"video": oracle_generate(prompt, num_frames, height, width, seed), "strength": from_truth}
        video = pipe.generate(
            prompt=prompt, num_frames=num_frames, height=height, width=width, seed=seed, **v2v, **sample_kw
        )
        return video.frames

    return generate


# ------------------------------------------------------------------------------------------------ runner
def still_truth(truth: SceneTruth) -> SceneTruth:
    """What one frame can show of a scene: its objects without motion or speed, and no camera move."""
    objects = tuple(dataclasses.replace(o, motion=None, speed=None) for o in truth.objects)
    return dataclasses.replace(truth, objects=objects, camera=None)


def _per_prompt(rows: Sequence[dict[str, Any]], value: Callable[[dict[str, Any]], float | None]) -> dict[str, float]:
    """Prompt id -> mean of `value(row)` over that prompt's rows (its repeats), skipping None; prompts with no
    value are left out."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        v = value(r)
        if v is not None:
            acc.setdefault(r["id"], []).append(float(v))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean (sample std / sqrt n); None below two values."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean of each attribute score per group (seen / held_out / all); None scores are skipped. `stderr`: the
    standard error of each mean over prompts (a prompt's repeats averaged first: prompts are the sample), None
    below two prompts."""
    out: dict[str, dict[str, Any]] = {}
    for g in GROUPS:
        sel = [r for r in rows if g == "all" or r["group"] == g]
        stats: dict[str, Any] = {"videos": len(sel)}
        stderr: dict[str, float | None] = {}
        for a in ATTRIBUTES:
            vals = [r["scores"][a] for r in sel if r["scores"].get(a) is not None]
            stats[a] = round(float(np.mean(vals)), 4) if vals else None
            se = _stderr(list(_per_prompt(sel, lambda r, a=a: r["scores"].get(a)).values()))
            stderr[a] = None if se is None else round(se, 4)
        vals = [r["analysis"]["dynamic_degree"] for r in sel]
        stats["dynamic_degree"] = round(float(np.mean(vals)), 5) if vals else None
        stats["stderr"] = stderr
        out[g] = stats
    return out


def paired_differences(
    base: dict[str, Any], other: dict[str, Any], attributes: Sequence[str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """`other` minus `base` (two ShapesBench results) per group (held_out / seen / all) and attribute, paired: only
    videos of the same prompt and seed count, each prompt's differences are averaged over its repeats, and the
    interval is 1.96 standard errors over prompts. Pairing removes the prompts' own difficulty, which dominates
    the unpaired spread. Each cell: {"prompts": k, "mean": d, "ci95": h} (mean/ci95 None without pairs)."""
    attrs = list(attributes or ATTRIBUTES)
    by_key = {(r["id"], r["seed"]): r for r in base.get("items", [])}
    diffs = []  # one row per paired video: its prompt id, group and per-attribute difference (None: unscored)
    for y in other.get("items", []):
        if (x := by_key.get((y["id"], y["seed"]))) is not None:
            d = {
                a: None if x["scores"].get(a) is None or y["scores"].get(a) is None else y["scores"][a] - x["scores"][a]
                for a in attrs
            }
            diffs.append({"id": x["id"], "group": x["group"], "diff": d})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for g in GROUPS:
        sel = [r for r in diffs if g == "all" or r["group"] == g]
        out[g] = {}
        for a in attrs:
            per = list(_per_prompt(sel, lambda r, a=a: r["diff"][a]).values())
            se = _stderr(per)
            out[g][a] = {
                "prompts": len(per),
                "mean": round(float(np.mean(per)), 4) if per else None,
                "ci95": None if se is None else round(1.96 * se, 4),
            }
    return out


def _pct(v: float | None, unit: str = " %") -> str:
    """A share as a percentage with one decimal ("n/a" for None)."""
    return "n/a" if v is None else f"{100 * v:.1f}{unit}"


# The default model's bar on held-out compositions (issue 4); seen compositions should score higher.
HELD_OUT_BAR = {"color": 0.90, "shape": 0.80, "count": 0.85, "motion": 0.80}


def compare_table(
    results: Sequence[dict[str, Any]], labels: Sequence[str], attributes: Sequence[str] | None = None
) -> str:
    """Markdown table of several ShapesBench `results.json`: one row per run, "held-out / seen" per attribute,
    then the held-out bar. Runs of different suites (size, version, prompt style) are refused: their numbers
    are not comparable."""
    if len(results) != len(labels) or not results:
        raise ValueError(f"{len(results)} results for {len(labels)} labels")
    key = {(r.get("suite_size"), r.get("version"), r.get("prompt_style")) for r in results}
    if len(key) > 1:
        raise ValueError(f"results of different suites (suite size, version, prompt style): {sorted(key, key=str)}")
    attrs = list(attributes or ATTRIBUTES)
    unknown = [a for a in attrs if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"unknown attributes {unknown} (known: {list(ATTRIBUTES)})")

    # The direction diagnostic (all prompts) when every run has it (results written before it existed do not).
    direction = all("direction" in r for r in results)
    extra = ["direction agree (all)"] if direction else []
    lines = [
        "| run | " + " | ".join(attrs + extra) + " |",
        "|---|" + "---:|" * len(attrs + extra),
    ]
    for label, r in zip(labels, results, strict=True):
        s = r["summary"]
        # .get: results written before an attribute existed (position) show n/a
        cells = [f"{_pct(s['held_out'].get(a), '')} / {_pct(s['seen'].get(a), '')}" for a in attrs]
        cells += [_pct(r["direction"]["agree"], "")] if direction else []
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    bar = [f">= {100 * HELD_OUT_BAR[a]:.0f} / higher" if a in HELD_OUT_BAR else "" for a in attrs]
    bar += ["(50 = chance)"] if direction else []
    lines.append("| bar (held-out / seen) | " + " | ".join(bar) + " |")
    return "\n".join(lines + _paired_lines(results, labels, attrs)) + "\n"


def _signed(cell: dict[str, Any]) -> str:
    """A `paired_differences` cell in points: "+8.9 ± 7.1" ("n/a" without pairs, no interval below two prompts)."""
    if cell["mean"] is None:
        return "n/a"
    return f"{100 * cell['mean']:+.1f}" + ("" if cell["ci95"] is None else f" ± {100 * cell['ci95']:.1f}")


def _paired_lines(results: Sequence[dict[str, Any]], labels: Sequence[str], attrs: Sequence[str]) -> list[str]:
    """Markdown of each later run's `paired_differences` against the first (empty for a single run, or when no
    video of a later run shares a prompt and seed with the first)."""
    diffs = [paired_differences(results[0], r, attrs) for r in results[1:]]
    if not diffs or not any(d["all"][a]["prompts"] for d in diffs for a in attrs):
        return []
    lines = [
        "",
        f"Paired differences against {labels[0]} (videos of the same prompt and seed; points, mean over prompts"
        " ± 95 % interval; held-out / all):",
        "",
        "| run | " + " | ".join(attrs) + " |",
        "|---|" + "---:|" * len(attrs),
    ]
    for label, d in zip(labels[1:], diffs, strict=True):
        lines.append(
            f"| {label} | " + " | ".join(f"{_signed(d['held_out'][a])} / {_signed(d['all'][a])}" for a in attrs) + " |"
        )
    return lines


def direction_projection(motion: str | None, displacement: Sequence[float] | None) -> float | None:
    """Net displacement (in S, the analyzer's unit; slow travel is 0.25) along the stated direction of a
    directional motion; None for other motions or an undetected object."""
    if motion not in V.DIRECTIONS or displacement is None:
        return None
    ux, uy = V.DIRECTIONS[motion]
    return float(ux * displacement[0] + uy * displacement[1])


def nearest_direction(
    displacement: Sequence[float], directions: Sequence[str] = tuple(V.DIRECTIONS), min_travel: float = MOVE_MIN
) -> str | None:
    """The direction of `directions` that a net displacement (in S) points along most; None when the object
    travels less than `min_travel` (the analyzer's threshold for "moves"; slow travel is 0.25 S)."""
    if float(np.hypot(displacement[0], displacement[1])) < min_travel:
        return None
    return max(directions, key=lambda m: float(direction_projection(m, displacement) or 0.0))


BINDING_LABELS = ("own", "other", "neither", "still")


def binding_labels(
    motions: Sequence[str], displacements: Sequence[Sequence[float] | None], directions: Sequence[str] | None = None
) -> list[str | None]:
    """Where each object of a scene with two or more directional objects went: "own" (along its stated direction),
    "other" (along another object's stated direction: the motion word was read but bound to the wrong object),
    "neither" (another direction), "still" (less than MOVE_MIN); None for an undetected object, a non-directional
    motion or a scene with fewer than two directional objects. `directions`: the candidate directions (default:
    all of the world's)."""
    stated = [m for m in motions if m in V.DIRECTIONS]
    if len(stated) < 2:
        return [None] * len(motions)
    out: list[str | None] = []
    for i, (m, d) in enumerate(zip(motions, displacements, strict=True)):
        if m not in V.DIRECTIONS or d is None:
            out.append(None)
            continue
        near = nearest_direction(d, directions if directions is not None else tuple(V.DIRECTIONS))
        others = {o for j, o in enumerate(motions) if j != i and o in V.DIRECTIONS}
        out.append("still" if near is None else "own" if near == m else "other" if near in others else "neither")
    return out


def binding_summary(labels: Sequence[str | None]) -> dict[str, Any]:
    """Shares of `binding_labels` over the labelled objects. A model that ignores its motion words spreads over
    the directions (own ~ other); one that reads them without binding: own ~ other, neither ~ 0; bound: own -> 1."""
    found = [x for x in labels if x is not None]
    n = len(found)
    return {"objects": n, **{k: (round(found.count(k) / n, 4) if n else None) for k in BINDING_LABELS}}


def direction_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A graded motion diagnostic over the directional objects of all prompts that were detected: the share whose
    net displacement points along the stated direction ("agree"; 0.5 is chance, a model that ignores its motion
    words) and the mean projection (0 is chance, slow travel is +0.25); with the rows' displacements also the
    binding summary of the scenes with two or more directional objects (`binding_labels`)."""
    proj = [
        p
        for r in rows
        for o, p in zip(r["truth"]["objects"], r["object_direction"], strict=True)
        if o["motion"] in V.DIRECTIONS
    ]
    found = [p for p in proj if p is not None]
    out = {
        "objects": len(proj),
        "detected": len(found),
        "agree": round(float(np.mean([p > 0 for p in found])), 4) if found else None,
        "mean_projection": round(float(np.mean(found)), 4) if found else None,
    }
    if rows and all("object_displacement" in r for r in rows):  # results written before it existed have none
        labels = [
            x
            for r in rows
            for x in binding_labels([o["motion"] for o in r["truth"]["objects"]], r["object_displacement"])
        ]
        out["binding"] = binding_summary(labels)
    return out


def _by_motion(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Motion accuracy per truth motion type (object level, matched as in `score_video`; stills have none)."""
    acc: dict[str, list[float]] = {m: [] for m in V.MOTIONS}
    for r in rows:
        for o, ok in zip(r["truth"]["objects"], r["object_motion_ok"], strict=True):
            if ok is not None:
                acc[o["motion"]].append(float(ok))
    return {m: {"objects": len(v), "motion": round(float(np.mean(v)), 4) if v else None} for m, v in acc.items()}


# Object attributes whose confusion (prompted -> detected) results.json and results.md report.
CONFUSION = ("shape", "motion")
MISSED = "(missed)"  # the column of truth objects no detection was matched to


def confusion(rows: Sequence[dict[str, Any]], attribute: str) -> dict[str, dict[str, int]]:
    """Prompted value -> {detected value (or MISSED): objects} of one object attribute over all prompts, from
    the rows' one-to-one matches (`object_detected`); empty for rows written before they were recorded.
    Tells a model that draws one shape for every word (a column) from one that confuses two (a pair of cells)."""
    if not rows or not all("object_detected" in r for r in rows):
        return {}
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        for o, d in zip(r["truth"]["objects"], r["object_detected"], strict=True):
            if o.get(attribute) is None:
                continue
            got = MISSED if d is None or d.get(attribute) is None else d[attribute]
            cell = out.setdefault(o[attribute], {})
            cell[got] = cell.get(got, 0) + 1
    return out


def _confusion_lines(attribute: str, table: dict[str, dict[str, int]]) -> list[str]:
    """Markdown of a `confusion` table: one row per prompted value, one column per detected value."""
    if not table:
        return []
    cols = sorted({c for row in table.values() for c in row if c != MISSED})
    cols += [MISSED] if any(MISSED in row for row in table.values()) else []
    lines = [
        "",
        f"{attribute.capitalize()} confusion (objects; rows: prompted, columns: detected; diagonal = right):",
        "",
        f"| {attribute} | " + " | ".join(cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for want in sorted(table):
        row = table[want]
        lines.append(f"| {want} | " + " | ".join(str(row.get(c, 0)) for c in cols) + " |")
    return lines


def _binding_line(b: dict[str, Any] | None) -> list[str]:
    if not b or not b["objects"]:
        return []
    return [
        f"Binding (scenes with two or more directional objects, {b['objects']} detected objects): {_pct(b['own'])}"
        f" go their own stated way, {_pct(b['other'])} another object's (read but bound to the wrong object),"
        f" {_pct(b['neither'])} another direction, {_pct(b['still'])} stay."
    ]


def _markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        "# ShapesBench",
        "",
        f"{result['videos']} videos ({s['seen']['videos']} seen,"
        f" {s['held_out']['videos']} held-out compositions), prompt style `{result['prompt_style']}`,"
        f" generator: {result.get('model') or 'custom'}.",
        "",
    ]
    if result.get("frames") == 1:
        lines += ["Still mode: one frame per prompt; motion, speed, dynamic and consistency are n/a.", ""]
    elif result.get("frames"):
        lines += [f"{result['frames']} frames per prompt instead of the suite's.", ""]
    lines += [
        "| attribute | seen | held-out | all |",
        "|---|---:|---:|---:|",
    ]

    for a in ATTRIBUTES:
        lines.append(f"| {a} | {_pct(s['seen'][a])} | {_pct(s['held_out'][a])} | {_pct(s['all'][a])} |")
    lines.append(
        f"| dynamic degree (mean) | {s['seen']['dynamic_degree']} | {s['held_out']['dynamic_degree']} |"
        f" {s['all']['dynamic_degree']} |"
    )
    ses = {g: s[g].get("stderr") or {} for g in ("held_out", "all")}
    if any(v is not None for v in ses["held_out"].values()):
        cells = [f"{a} {_pct(ses['held_out'].get(a), '')} / {_pct(ses['all'].get(a), '')}" for a in HELD_OUT_BAR]
        lines += [
            "",
            "Standard error over prompts (points, held-out / all; two runs differ beyond noise only by about twice"
            " this, or by a paired interval of `cinegen eval compare` that excludes 0): " + ", ".join(cells) + ".",
        ]
    lines += [
        "",
        "Motion accuracy by motion type (objects, all prompts):",
        "",
        "| motion | objects | accuracy |",
    ]
    lines.append("|---|---:|---:|")
    for m, d in result["by_motion"].items():
        lines.append(f"| {m} | {d['objects']} | {_pct(d['motion'])} |")
    d = result["direction"]
    lines += [
        "",
        f"Direction (diagnostic, {d['detected']} of {d['objects']} directional objects detected): {_pct(d['agree'])}"
        f" of them move along the stated direction (50 % is chance), mean projection {d['mean_projection']} S"
        " (slow travel 0.25).",
        *_binding_line(d.get("binding")),
        *[x for a, t in result.get("confusion", {}).items() for x in _confusion_lines(a, t)],
        "",
        "Scores are per-video means of object-level accuracy (objects matched one-to-one to the truth);"
        " count, background, consistency (stable count, area and colour) and dynamic (moves iff the prompt"
        " says so) are per video. See `results.json` for every video's analysis.",
        "",
    ]
    return "\n".join(lines)


def _contact_sheet(videos: Sequence[tuple[str, np.ndarray]], frames_per_row: int = 6) -> Image.Image:
    """One row per video: a label and evenly spaced frames, each in a cell sized for the largest frame."""
    cell_h = max(v.shape[1] for _, v in videos)
    cell_w = max(v.shape[2] for _, v in videos)
    pad, label_h = 3, 12
    sheet = Image.new(
        "RGB",
        (pad + frames_per_row * (cell_w + pad), pad + len(videos) * (cell_h + label_h + pad)),
        (24, 24, 24),
    )
    draw = ImageDraw.Draw(sheet)
    for r, (label, v) in enumerate(videos):
        y = pad + r * (cell_h + label_h + pad)
        draw.text((pad, y), label[:150], fill=(230, 230, 230))
        idx = np.linspace(0, len(v) - 1, min(frames_per_row, len(v))).round().astype(int)
        for c, i in enumerate(idx):
            sheet.paste(Image.fromarray(np.ascontiguousarray(v[i])), (pad + c * (cell_w + pad), y + label_h))
    return sheet


def run_shapes_bench(
    generate_fn: GenerateFn,
    out_dir: str | os.PathLike[str],
    suite: Sequence[BenchItem] | None = None,
    limit: int | None = None,
    *,
    prompt_style: str = "dense",
    model: str | None = None,
    sheet_rows: int = 16,
    save_videos: bool = False,
    repeats: int = 1,
    frames: int | None = None,
    progress: Callable[[int, int, BenchItem], None] | None = None,
) -> dict[str, Any]:
    """Generate, analyze and score every suite item; write results.json, results.md and samples.png.

    `generate_fn(prompt, num_frames, height, width, seed)` returns uint8 (F, H, W, 3). `limit` runs the first
    N items of a balanced interleaving of held-out and seen items. `repeats` = R runs them R times, all items
    once per pass, pass r with `repeat_seed(item, r)`. `frames` asks for that many frames instead of each item's;
    1 is a model's still mode (one latent frame), scored on what a frame shows (colour, shape, size, count,
    background; motion, speed, dynamic and consistency are n/a), which tells per-frame skills from temporal
    ones. results.json is rewritten after every video, so an interrupted run leaves the scores so far.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    items = list(suite if suite is not None else default_suite())
    ho = [it for it in items if it.held_out]
    seen = [it for it in items if not it.held_out]
    order = [x for pair in zip(ho, seen, strict=False) for x in pair]
    order += ho[len(seen) :] + seen[len(ho) :]
    items = order[:limit] if limit is not None else order
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    samples: list[tuple[str, np.ndarray]] = []
    runs = [(item, r, repeat_seed(item, r)) for r in range(repeats) for item in items]
    # Sheet rows spread over the first pass (single objects, groups and mixed scenes, seen and held-out).
    sample_at = set(np.linspace(0, len(items) - 1, min(sheet_rows, len(items))).round().astype(int).tolist())
    result: dict[str, Any] = {}
    for n, (item, r, seed) in enumerate(runs):
        if progress is not None:
            progress(n, len(runs), item)
        prompt, stated = item.prompt_and_truth(prompt_style)
        n_frames = item.num_frames if frames is None else frames
        still = n_frames == 1
        t0 = time.perf_counter()
        video = np.asarray(generate_fn(prompt, n_frames, item.height, item.width, seed))
        seconds = time.perf_counter() - t0
        if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
            raise ValueError(f"generate_fn must return uint8 (F, H, W, 3); got {video.dtype} {video.shape}")
        analysis = analyze_video(video)
        scores = score_video(analysis, still_truth(stated) if still else stated)
        if still:
            scores["consistency"] = None  # one frame is consistent with itself
        matched = match_objects(analysis, item.truth)
        rows.append(
            {
                "id": item.id,
                "group": item.group,
                "prompt": prompt,
                "repeat": r,
                "seed": seed,
                "format": [n_frames, item.height, item.width],
                "output_shape": list(video.shape),
                "truth": item.truth.to_dict(),
                "stated": stated.to_dict(),
                "scores": scores,
                "object_motion_ok": [
                    None if still else d is not None and d.motion == o.motion
                    for o, d in zip(item.truth.objects, matched, strict=True)
                ],
                "object_direction": [
                    None if still or d is None else direction_projection(o.motion, d.displacement)
                    for o, d in zip(item.truth.objects, matched, strict=True)
                ],
                "object_displacement": [None if still or d is None else list(d.displacement) for d in matched],
                "object_detected": [None if d is None else {a: getattr(d, a) for a in CONFUSION} for d in matched],
                "analysis": analysis.to_dict(),
                "seconds": round(seconds, 3),
            }
        )
        if save_videos:  # Video.save creates out/videos/
            from cinegen.video import Video

            Video(video, V.FPS).save(out / "videos" / f"{item.id}{f'-r{r}' if r else ''}.mp4", crf=12)
        if n in sample_at:
            tag = "HELD-OUT" if item.held_out else "seen"
            samples.append((f"{item.id} [{tag}] {prompt}", video))
        result = {
            "benchmark": "ShapesBench",
            "version": 1,
            "model": model,
            "prompt_style": prompt_style,
            "videos": len(rows),
            "suite_size": len(order),
            "repeats": repeats,
            "frames": frames,
            "summary": summarize(rows),
            "by_motion": _by_motion(rows),
            "direction": direction_summary(rows),
            "confusion": {a: confusion(rows, a) for a in CONFUSION},
            "seconds_total": round(sum(r["seconds"] for r in rows), 2),
            "items": rows,
        }
        with atomic_write(out / "results.json", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    if not rows:
        raise ValueError("the bench suite is empty (limit=0?)")
    with atomic_write(out / "results.md", "w", encoding="utf-8") as f:
        f.write(_markdown(result))
    with atomic_write(out / "samples.png", "wb") as f:
        _contact_sheet(samples).save(f, format="PNG")
    return result
