"""Experiment: the motion toy (session 9), a minutes-per-run world for finding what makes motion words learnable.

One object per clip, a few shapes and colours, the four straight directions at fast speed, 9 frames at
64x64 on a plain white background with a still camera; captions are the world's dense captions, as in the
default model's data. Training is the real `cinegen train` (configs/motion-toy.yaml) on these clips, so every
lever is a config key; evaluation samples each direction with fixed seeds and measures with the ShapesBench
analyzer whether the object's net displacement points the stated way (50 % = the motion words are ignored).

    .venv/bin/python scripts/motion_toy.py data OUT --num 2000
    .venv/bin/cinegen train configs/motion-toy.yaml train.run_dir=runs/motion-toy/base
    .venv/bin/python scripts/motion_toy.py eval runs/motion-toy/base/model --seeds 8
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cinegen.world import vocab as V
from cinegen.world.captions import dense_caption
from cinegen.world.render import ObjectTruth, SceneTruth, render_truth

MOTIONS = ("left", "right", "up", "down")
SPEEDS = ("fast",)
SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "blue", "green", "yellow")
SIZE, FRAMES = 64, 9
FIRST_FRAMES = ("none", "oracle", "oracle-swapped", "still")  # evaluate(first_frame=...)


def motion_sets(directions: int, speeds: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The toy's directions (4: the straight ones; 8: with the diagonals, as in the Shapes world) and speeds
    ("fast", or "both": slow and fast, as in the Shapes world)."""
    motions = MOTIONS if directions == 4 else tuple(V.DIRECTIONS)
    return motions, (SPEEDS if speeds == "fast" else V.SPEEDS)


def toy_truth(
    rng: np.random.Generator,
    motions: tuple[str, ...] | None = None,
    objects: int = 1,
    pool: tuple[str, ...] = MOTIONS,
    speed: str | None = None,
    speeds: tuple[str, ...] = SPEEDS,
) -> SceneTruth:
    """`objects` small objects (distinct colours and shapes) on plain white, still camera; their motions
    drawn from `pool` unless given, their speed drawn from `speeds` unless given (one speed per clip). With two
    objects the caption names both, so only a text encoder that ties each motion word to its object's words lets
    the transformer move the right object the right way."""
    shapes = rng.permutation(len(SHAPES))[:objects]
    colors = rng.permutation(len(COLORS))[:objects]
    if speed is None:  # one speed draws nothing, so the default data stay byte-identical to session 9's
        speed = speeds[int(rng.integers(len(speeds)))] if len(speeds) > 1 else speeds[0]
    objs = tuple(
        ObjectTruth(
            shape=SHAPES[int(shapes[i])],
            color=COLORS[int(colors[i])],
            size="small",
            motion=motions[i] if motions else pool[int(rng.integers(len(pool)))],
            speed=speed,
        )
        for i in range(objects)
    )
    return SceneTruth(objs, "white", "solid", "still")


def render_fitting(rng: np.random.Generator, draw: Callable[[], SceneTruth]) -> tuple[np.ndarray, Any]:
    """Render the scene `draw()` returns with a layout seeded from `rng` -> (uint8 frames (F, H, W, 3), ClipSpec),
    drawing the scene and its layout again until the objects fit without touching."""
    while True:
        truth = draw()
        try:
            return render_truth(truth, SIZE, SIZE, FRAMES, seed=int(rng.integers(2**31)))
        except ValueError:
            continue


def make_data(
    out: Path, num: int, seed: int, objects: int = 1, directions: int = 4, speeds: str = "fast", masks: bool = False
) -> Path:
    """Render `num` toy clips into out/clips and write out/manifest.jsonl (the trainer's format); with `masks`
    also each clip's object mask (out/masks/*.npz, the record's `mask`, for `objective.mask_weight`). Existing
    clips are kept as they are, so adding masks to a set leaves its latent cache valid."""
    pool, speed_set = motion_sets(directions, speeds)
    from cinegen.data.manifest import ClipRecord, format_bucket, write_manifest
    from cinegen.fsutil import atomic_write
    from cinegen.world.dataset import write_clip
    from cinegen.world.render import render_clip_and_mask

    (out / "clips").mkdir(parents=True, exist_ok=True)
    if masks:
        (out / "masks").mkdir(exist_ok=True)
    records = []
    for i in range(num):
        rng = np.random.default_rng([seed, i])
        draw = functools.partial(toy_truth, rng, objects=objects, pool=pool, speeds=speed_set)
        frames, spec = render_fitting(rng, draw)
        rel = f"clips/{i:06d}.mp4"
        if not (out / rel).is_file():
            write_clip(frames, spec.fps, out / rel)
        mask_rel = f"masks/{i:06d}.npz" if masks else None
        if mask_rel and not (out / mask_rel).is_file():
            with atomic_write(out / mask_rel, "wb") as f:
                np.savez_compressed(f, mask=render_clip_and_mask(spec)[1])  # uint8 (F, H, W)
        records.append(
            ClipRecord(
                path=rel,
                text=dense_caption(spec.truth()),
                width=SIZE,
                height=SIZE,
                num_frames=FRAMES,
                fps=spec.fps,
                bucket=format_bucket(FRAMES, SIZE, SIZE),
                id=f"toy-{seed}-{i:06d}",
                mask=mask_rel,
                meta={"spec": spec.to_dict()},
            )
        )
    manifest = out / "manifest.jsonl"
    write_manifest(records, manifest)
    return manifest


def oracle_first_latent(pipe: Any, truth: SceneTruth, seed: int, swap: bool = False) -> Any:
    """The scaled latent (1, 1, C, h, w) of frame 0 of a render of `truth` (its layout drawn from `seed`; the
    VAE's posterior mean): a clean first frame with the prompt's objects in place, for history sampling.

    The layout keeps each object in the frame over its motion, so where an object starts hints where it goes
    (one moving right starts on the left). With `swap` the layout is drawn for the objects' motions reversed
    (two objects: each placed as the other's motion needs), so that hint points to the other object's motion
    and only the caption says which object goes where."""
    import dataclasses

    import torch

    if swap:
        moves = [o.motion for o in truth.objects][::-1]
        objs = tuple(dataclasses.replace(o, motion=m) for o, m in zip(truth.objects, moves, strict=True))
        truth = dataclasses.replace(truth, objects=objs)
    frames, _ = render_fitting(np.random.default_rng([seed, 7]), lambda: truth)  # a fresh layout per try
    x = torch.from_numpy(frames[:1]).float().div(127.5).sub(1.0)  # (1, H, W, 3) in [-1, 1]
    x = x.permute(3, 0, 1, 2)[None].to(pipe.device)  # (1, 3, 1, H, W)
    z = pipe.vae.scale(pipe.vae.encode(x))  # (1, C, 1, h, w)
    return z.permute(0, 2, 1, 3, 4)  # (1, 1, C, h, w)


def evaluate(
    model: Path,
    seeds: int,
    steps: int,
    guidance: float | None,
    objects: int = 1,
    directions: int = 4,
    speeds: str = "fast",
    first_frame: str = "none",
) -> dict[str, Any]:
    """Sample every direction (for two objects: every ordered pair of different directions) with `seeds`
    seeds (with both speeds: even seeds slow, odd seeds fast); each stated object is matched to the detected
    object of its colour, and its net displacement (analyzer, in S; fast travel is ~0.5) is projected on its
    stated direction. Reports the share that agrees (0.5 = motion words ignored), per direction and speed, and
    for two objects the share of videos where both agree and where each object went (`binding_labels`: its own
    stated direction, the other object's, another one, or nowhere).

    `first_frame`: "none" samples the clip in one go; "oracle" gives the model a rendered first frame of the
    prompt's scene (VAE posterior mean) as clean history latents, so colours and places are fixed and only
    the motion is left (does the model bind each motion to the object it sees?; "oracle-swapped": laid out for
    the objects' motions swapped, see `oracle_first_latent`); "still" samples that first
    frame from the prompt first (two-stage sampling, `Pipeline.generate_latents(history=...)`)."""
    import itertools
    from dataclasses import replace

    import torch

    from cinegen.pipeline import GenerateRequest, load_pipeline
    from cinegen.video import Video
    from cinegen.world.analyze import analyze_video
    from cinegen.world.bench import binding_labels, binding_summary, direction_projection

    if first_frame not in FIRST_FRAMES:
        raise ValueError(f"first_frame must be one of {FIRST_FRAMES}, got {first_frame!r}")
    pipe = load_pipeline(model, dtype=torch.float32)
    pool, speed_set = motion_sets(directions, speeds)
    combos = [(m,) for m in pool] if objects == 1 else list(itertools.permutations(pool, objects))
    per_combo = max(1, seeds if objects == 1 else seeds * len(pool) // len(combos))
    rows = []
    for combo in combos:
        for s in range(per_combo):
            rng = np.random.default_rng([999, s, *map(pool.index, combo)])
            truth = toy_truth(rng, combo, objects, speed=speed_set[s % len(speed_set)])
            req = GenerateRequest(
                prompt=dense_caption(truth), num_frames=FRAMES, height=SIZE, width=SIZE, seed=s, steps=steps
            )
            if guidance is not None:
                req = GenerateRequest(**{**req.__dict__, "guidance": guidance})
            with torch.no_grad():
                if first_frame == "none":
                    frames = pipe.generate(req).frames
                else:
                    r = pipe.resolve(req)
                    if first_frame == "still":  # two-stage: sample the first frame from the prompt
                        z = pipe.generate_latents(replace(r, num_frames=1))  # (1, 1, C, h, w)
                    else:
                        z = oracle_first_latent(pipe, truth, s, swap=first_frame == "oracle-swapped")
                    frames = Video.from_tensor(pipe.decode(pipe.generate_latents(r, history=z))).frames
            found = analyze_video(frames).objects
            proj, disp = [], []
            for o in truth.objects:
                same = [d for d in found if d.color == o.color]
                d = same[0].displacement if len(same) == 1 else None
                proj.append(direction_projection(o.motion, d))
                disp.append(None if d is None else list(d))  # the analyzer rounds to 4 decimals
            speed = truth.objects[0].speed
            rows.append(
                {"motions": list(combo), "speed": speed, "seed": s, "detected": len(found), "proj": proj, "disp": disp}
            )
    found_proj = [p for r in rows for p in r["proj"] if p is not None]
    complete = [r for r in rows if None not in r["proj"]]
    per: dict[str, float | None] = {}
    for m in pool:
        hits = [p > 0 for r in rows for mm, p in zip(r["motions"], r["proj"], strict=True) if mm == m and p is not None]
        per[m] = float(np.mean(hits)) if hits else None
    by_speed: dict[str, float | None] = {}
    for sp in speed_set:
        hits = [p > 0 for r in rows if r["speed"] == sp for p in r["proj"] if p is not None]
        by_speed[sp] = float(np.mean(hits)) if hits else None
    return {
        "model": str(model),
        "first_frame": first_frame,
        "objects": objects,
        "videos": len(rows),
        "objects_matched": len(found_proj),
        "agree": float(np.mean([p > 0 for p in found_proj])) if found_proj else None,
        "mean_projection": float(np.mean(found_proj)) if found_proj else None,
        "all_agree": float(np.mean([all(p > 0 for p in r["proj"]) for r in complete])) if complete else None,
        "agree_by_motion": per,
        "agree_by_speed": by_speed,
        "binding": binding_summary([x for r in rows for x in binding_labels(r["motions"], r["disp"], pool)])
        if objects == 2
        else None,
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("out", type=Path)
    d.add_argument("--num", type=int, default=2000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--objects", type=int, default=1, choices=(1, 2))
    d.add_argument("--masks", action="store_true", help="also write the object masks (objective.mask_weight)")
    e = sub.add_parser("eval")
    for q in (d, e):
        q.add_argument("--directions", type=int, default=4, choices=(4, 8), help="8: with the diagonals")
        q.add_argument("--speeds", default="fast", choices=("fast", "both"), help="both: slow and fast clips")
    e.add_argument("model", type=Path)
    e.add_argument("--seeds", type=int, default=8)
    e.add_argument("--steps", type=int, default=25)
    e.add_argument("--guidance", type=float, default=None)
    e.add_argument("--objects", type=int, default=1, choices=(1, 2))
    e.add_argument("--out", type=Path, default=None, help="results JSON (default: MODEL/../motion_toy.json)")
    e.add_argument(
        "--first-frame",
        default="none",
        choices=FIRST_FRAMES,
        help="oracle: a rendered first frame as clean history latents (oracle-swapped: laid out for the other"
        " object's motion); still: sample it first (two-stage)",
    )
    args = p.parse_args()
    if args.cmd == "data":
        print(make_data(args.out, args.num, args.seed, args.objects, args.directions, args.speeds, args.masks))
        return
    res = evaluate(
        args.model, args.seeds, args.steps, args.guidance, args.objects, args.directions, args.speeds, args.first_frame
    )
    out = args.out or args.model.parent / "motion_toy.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    keys = (
        "videos",
        "objects_matched",
        "agree",
        "mean_projection",
        "all_agree",
        "agree_by_motion",
        "agree_by_speed",
        "binding",
    )
    print(json.dumps({k: res[k] for k in keys}))


if __name__ == "__main__":
    assert set(MOTIONS) <= set(V.DIRECTIONS)
    main()
