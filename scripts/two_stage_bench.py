"""Experiment: ShapesBench with two-stage sampling (session 8, motion A/B; not a pipeline feature yet).

Stage 1 samples a still (one latent frame) from the prompt; stage 2 samples the clip with latent frame 0
replaced by that still before every model call (a clean "history" frame, as `objective.history_prob` trains)
and in the result, so the later frames are generated from the still and the caption.

    .venv/bin/python scripts/two_stage_bench.py MODEL OUT [--limit N]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from cinegen.pipeline import GenerateRequest, Pipeline, load_pipeline
from cinegen.sampling.loop import sample
from cinegen.video import Video
from cinegen.world.bench import run_shapes_bench


def sample_latents(pipe: Pipeline, r: GenerateRequest, history: torch.Tensor | None = None) -> torch.Tensor:
    """Latents (1, T, C, h, w) of a resolved request; `history` (1, k, C, h, w) replaces the first k frames."""
    generator, embeds, plan = pipe.prepare_sampling(r)
    t_lat = (int(r.num_frames or 1) - 1) // pipe.vae_temporal + 1
    h, w = int(r.height or 0) // pipe.vae_spatial, int(r.width or 0) // pipe.vae_spatial
    x = torch.randn((1, t_lat, pipe.config.in_channels, h, w), generator=generator, dtype=embeds.dtype)
    predict = pipe.guided_predictor(r, embeds, len(plan.timesteps))

    def given(lat: torch.Tensor) -> torch.Tensor:
        return lat if history is None else torch.cat([history.to(lat.dtype), lat[:, history.shape[1] :]], dim=1)

    return given(sample(lambda lat, t, i: predict(given(lat), t, i), x.to(pipe.device), plan, generator=generator))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()
    pipe = load_pipeline(args.model, device="cpu", dtype=torch.float32)

    def generate(prompt: str, f: int, h: int, w: int, seed: int) -> np.ndarray:
        r = pipe.resolve(GenerateRequest(prompt=prompt, num_frames=f, height=h, width=w, seed=seed))
        still = sample_latents(pipe, replace(r, num_frames=1))  # (1, 1, C, h, w)
        return Video.from_tensor(pipe.decode(sample_latents(pipe, r, history=still)), fps=8.0).frames

    with torch.no_grad():
        res = run_shapes_bench(generate, args.out, limit=args.limit, model=f"{args.model} (two-stage)")
    print(res["summary"]["all"], res["direction"])


if __name__ == "__main__":
    main()
