"""Experiment: ShapesBench with two-stage sampling (session 8, motion A/B).

Stage 1 samples a still (one latent frame) from the prompt; stage 2 samples the clip with latent frame 0
replaced by that still before every model call (a clean "history" frame, as `objective.history_prob` trains)
and in the result, so the later frames are generated from the still and the caption
(`Pipeline.generate_latents(..., history=...)`).

    .venv/bin/python scripts/two_stage_bench.py MODEL OUT [--limit N]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from cinegen.pipeline import GenerateRequest, load_pipeline
from cinegen.video import Video
from cinegen.world.bench import run_shapes_bench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()
    pipe = load_pipeline(args.model, dtype=torch.float32)

    def generate(prompt: str, f: int, h: int, w: int, seed: int) -> np.ndarray:
        r = pipe.resolve(GenerateRequest(prompt=prompt, num_frames=f, height=h, width=w, seed=seed))
        still = pipe.generate_latents(replace(r, num_frames=1))  # (1, 1, C, h, w)
        return Video.from_tensor(pipe.decode(pipe.generate_latents(r, history=still)), fps=8.0).frames

    with torch.no_grad():
        res = run_shapes_bench(generate, args.out, limit=args.limit, model=f"{args.model} (two-stage)")
    print(res["summary"]["all"], res["direction"])


if __name__ == "__main__":
    main()
