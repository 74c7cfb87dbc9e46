"""The motion toy's data (scripts/motion_toy.py): two-object captions and the optional object masks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np

from cinegen.data.manifest import read_manifest
from cinegen.video import read_video

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "motion_toy.py"


def _toy():
    spec = importlib.util.spec_from_file_location("motion_toy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("motion_toy", module)
    spec.loader.exec_module(module)
    return module


def test_masks_cover_the_objects_and_leave_the_clips_unchanged(tmp_path: Path) -> None:
    toy = _toy()
    plain = read_manifest(toy.make_data(tmp_path, num=3, seed=0, objects=2))
    clips = {r.path: (tmp_path / r.path).read_bytes() for r in plain}
    masked = read_manifest(toy.make_data(tmp_path, num=3, seed=0, objects=2, masks=True))  # the same folder
    assert [r.mask for r in plain] == [None] * 3
    for p, m in zip(plain, masked, strict=True):
        assert (p.text, p.id, p.path) == (m.text, m.id, m.path)
        clip = tmp_path / m.path
        assert clip.read_bytes() == clips[m.path]  # not rewritten: the latent cache of the clips stays valid
        assert p.text.startswith("Two shapes:")
        mask = np.load(tmp_path / m.mask)["mask"]  # uint8 (F, H, W)
        frames = read_video(clip).frames  # uint8 (F, H, W, 3) on white
        assert mask.shape == frames.shape[:3] == (toy.FRAMES, toy.SIZE, toy.SIZE)
        ink = (255 - frames.astype(np.int16)).max(axis=-1) > 60  # clearly coloured pixels
        inside = mask > 127
        assert 0.02 < inside.mean() < 0.3
        near = np.stack([cv2.dilate(f.astype(np.uint8), np.ones((3, 3), np.uint8)) for f in inside]) > 0
        assert (near & ink).sum() >= 0.98 * ink.sum()  # the objects' pixels (+1 px of codec blur) are in the mask
        assert (inside & ink).sum() >= 0.8 * inside.sum()  # and the mask is on coloured pixels


def test_oracle_first_frame_places_the_objects_for_their_motions() -> None:
    """The oracle first frame is the scene's frame 0 through the default model's VAE; an object that moves left
    starts on the right half, and with `swap` it is laid out for the other object's motion (right) instead."""
    import torch

    import cinegen
    from cinegen.world import vocab as V

    toy = _toy()
    pipe = cinegen.load_pipeline(None, device="cpu", dtype=torch.float32)
    truth = toy.toy_truth(np.random.default_rng(0), ("left", "right"), objects=2)

    def centre_x(z: torch.Tensor, color: str) -> float:
        img = ((pipe.decode(z)[0, :, 0].permute(1, 2, 0) + 1) * 127.5).numpy()  # (H, W, 3)
        near = np.abs(img - np.array(V.COLORS[color])).max(axis=-1) < 40
        assert near.sum() > 10, color
        return float(np.nonzero(near)[1].mean()) / img.shape[1]

    with torch.no_grad():
        z = toy.oracle_first_latent(pipe, truth, seed=3)  # (1, 1, C, h, w)
        swapped = toy.oracle_first_latent(pipe, truth, seed=3, swap=True)
    assert z.shape == (1, 1, 16, toy.SIZE // 4, toy.SIZE // 4)
    left_mover, right_mover = (o.color for o in truth.objects)
    assert centre_x(z, left_mover) > 0.5 > centre_x(z, right_mover)
    assert centre_x(swapped, left_mover) < 0.5 < centre_x(swapped, right_mover)
