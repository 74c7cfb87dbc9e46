"""Two-stage sampling: `Pipeline.generate_latents(history=...)` holds clean latent frames fixed at the start of
the clip, in every model call and in the result, on a tiny random model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cinegen.pipeline import GenerateRequest, RequestError, load_pipeline


@pytest.fixture(scope="module")
def pipe(tiny_2b_folder: Path):  # type: ignore[no-untyped-def]
    return load_pipeline(tiny_2b_folder, dtype=torch.float32)


def test_history_frames_are_held_in_every_model_call_and_the_result(pipe) -> None:  # type: ignore[no-untyped-def]
    r = pipe.resolve(GenerateRequest(prompt="a red circle moves left", num_frames=9, seed=2, enhance_prompt=False))
    still = pipe.generate_latents(replace(r, num_frames=1))  # (1, 1, C, h, w)
    assert still.shape[1] == 1
    seen: list[torch.Tensor] = []
    forward = pipe.transformer.forward

    def spy(x: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(x[:, :1].clone())  # (B', 1, C, h, w): the first latent frame of each model input
        return forward(x, *args, **kwargs)

    pipe.transformer.forward = spy
    try:
        got = pipe.generate_latents(r, history=still)  # (1, 3, C, h, w)
    finally:
        del pipe.transformer.forward
    plain = pipe.generate_latents(r)
    assert got.shape == plain.shape == (1, 3, *still.shape[2:])
    assert torch.equal(got[:, :1], still)
    assert len(seen) == int(r.steps)
    for first in seen:  # with CFG the batch is [uncond; cond]: both see the still
        assert torch.equal(first, still.expand_as(first))
    assert not torch.allclose(got[:, 1:], plain[:, 1:])  # the rest is generated from the still


def test_history_that_does_not_fit_is_refused(pipe) -> None:  # type: ignore[no-untyped-def]
    r = pipe.resolve(GenerateRequest(prompt="a blue square", num_frames=9, seed=0, enhance_prompt=False))
    h, w = int(r.height) // pipe.vae_spatial, int(r.width) // pipe.vae_spatial
    c = pipe.config.in_channels
    with pytest.raises(RequestError, match="do not fit"):
        pipe.generate_latents(r, history=torch.zeros(1, 1, c + 1, h, w))
    with pytest.raises(RequestError, match="do not fit"):
        pipe.generate_latents(r, history=torch.zeros(c, h, w))
    with pytest.raises(RequestError, match="leaves nothing to generate"):
        pipe.generate_latents(r, history=torch.zeros(1, 3, c, h, w))
