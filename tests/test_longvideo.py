"""Long videos by overlapping temporal windows (MultiDiffusion along time): window layout, merge weights,
exactness for one window, and an end-to-end long generation on a tiny random model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cinegen.longvideo import (
    LongVideoSpec,
    generate_long,
    generate_long_latents,
    merge_windows,
    plan_long,
    window_starts,
    window_weights,
)
from cinegen.pipeline import GenerateRequest, RequestError, load_pipeline


@pytest.fixture(scope="module")
def pipe(tiny_2b_folder: Path):  # type: ignore[no-untyped-def]
    return load_pipeline(tiny_2b_folder, device="cpu")


def test_window_starts_golden() -> None:
    assert window_starts(5, 3, 1) == [0, 2]
    assert window_starts(13, 5, 2) == [0, 3, 6, 8]  # last window pulled back to end at 13
    assert window_starts(3, 3, 1) == [0] and window_starts(2, 3, 1) == [0]
    assert window_starts(25, 13, 4) == [0, 9, 12]
    with pytest.raises(ValueError):
        window_starts(10, 3, 3)


@pytest.mark.parametrize("blend", ["linear", "uniform"])
@pytest.mark.parametrize(("total", "window", "overlap"), [(5, 3, 1), (13, 5, 2), (25, 13, 4), (40, 13, 6)])
def test_window_weights_partition_of_unity(blend: str, total: int, window: int, overlap: int) -> None:
    starts = window_starts(total, window, overlap)
    w = window_weights(total, window, starts, blend)  # type: ignore[arg-type]
    assert w.shape == (len(starts), total)
    torch.testing.assert_close(w.sum(0), torch.ones(total, dtype=torch.float64), rtol=0, atol=1e-12)
    inside = torch.zeros_like(w, dtype=torch.bool)
    for k, s in enumerate(starts):
        inside[k, s : s + window] = True
    assert bool((w[~inside] == 0).all()) and bool((w[inside] > 0).all())
    if blend == "uniform":  # MultiDiffusion's plain average: 1 / (windows covering the frame)
        torch.testing.assert_close(w[inside], (1 / inside.sum(0).double()).expand_as(w)[inside])
    else:  # where exactly two windows overlap, the earlier one fades out and the later one fades in
        for k in range(len(starts) - 1):
            only_pair = (inside.sum(0) == 2) & inside[k] & inside[k + 1]
            a, b = w[k, only_pair], w[k + 1, only_pair]
            assert only_pair.any() and bool((a.diff() < 0).all()) and bool((b.diff() > 0).all())


def test_merge_windows_reconstructs_a_global_prediction() -> None:
    total, window, overlap = 13, 5, 2
    starts = window_starts(total, window, overlap)
    field = torch.randn(2, total, 4, 3, 3)  # (B, T, C, h, w)
    preds = [field[:, s : s + window] for s in starts]  # every window predicts its slice of one field
    for blend in ("linear", "uniform"):
        merged = merge_windows(preds, starts, window_weights(total, window, starts, blend), total)  # type: ignore[arg-type]
        torch.testing.assert_close(merged, field, rtol=1e-6, atol=1e-6)


def test_plan_long_validates_before_compute(pipe) -> None:  # type: ignore[no-untyped-def]
    spec = LongVideoSpec()
    r, plan = plan_long(pipe, GenerateRequest(prompt="x", num_frames=33), spec)
    # tiny model: native 9 frames = 3 latents; 33 frames = 9 latents; default overlap 1
    assert (plan.latent_frames, plan.window, plan.overlap, plan.starts) == (9, 3, 1, (0, 2, 4, 6))
    assert r.num_frames == 33 and r.height == 32 and r.sampler == "ddim"
    assert (plan.decode_tiling.window, plan.decode_tiling.overlap) == (3, 1)
    cases = [
        (GenerateRequest(prompt="x", num_frames=34), "4k\\+1"),
        (GenerateRequest(prompt="x", num_frames=5), "shorter than one window"),
        (GenerateRequest(prompt="x", num_frames=33, sampler="euler"), "sampler"),
        (GenerateRequest(prompt="x", num_frames=33, height=40), "multiple of 16"),
        (GenerateRequest(prompt="x", num_frames=33, image="a.png"), "text-to-video only"),
    ]
    for req, match in cases:
        with pytest.raises(RequestError, match=match):
            plan_long(pipe, req, spec)
    with pytest.raises(RequestError, match="overlap=3"):
        plan_long(pipe, GenerateRequest(prompt="x", num_frames=33), LongVideoSpec(overlap=3))
    with pytest.raises(RequestError, match="window of 10 frames"):
        plan_long(pipe, GenerateRequest(prompt="x", num_frames=33), LongVideoSpec(window_frames=10))


def test_single_window_is_bitwise_the_native_pipeline(pipe) -> None:  # type: ignore[no-untyped-def]
    req = GenerateRequest(prompt="a red circle moves left", num_frames=9, seed=3, enhance_prompt=False)
    r, plan = plan_long(pipe, req, LongVideoSpec())
    assert plan.starts == (0,)
    ours = generate_long_latents(pipe, r, plan)
    ref = pipe.generate_latents(pipe.resolve(req))
    assert torch.equal(ours, ref)


def test_long_video_end_to_end(pipe) -> None:  # type: ignore[no-untyped-def]
    calls: list[tuple[int, int]] = []
    req = GenerateRequest(prompt="a blue square moves right", num_frames=17, seed=1, enhance_prompt=False)
    video = generate_long(pipe, req, LongVideoSpec(overlap=1), progress=lambda i, n: calls.append((i, n)))
    assert (video.num_frames, video.height, video.width) == (17, 32, 48)  # 2x the native 9-frame clip - 1
    assert calls == [(1, 2), (2, 2)]  # one report per denoising step, not per window
    assert pipe.last_stats.latent_shape == (1, 5, 4, 4, 6)
    assert video.frames.std() > 0
