"""Shapes-world renderer: determinism, vocabulary coverage, geometry, kinematics, layout, held-out split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cinegen.world import vocab as V
from cinegen.world.render import (
    SHAPE_GEOMETRY,
    ClipSpec,
    ObjectSpec,
    ObjectTruth,
    SceneTruth,
    complete_truth,
    layout_truth,
    object_tracks,
    polygon_sdf,
    render_clip,
    render_clip_and_mask,
    render_truth,
    sample_spec,
    sample_truth,
    shape_label_map,
)


def _one(shape="circle", color="red", size="large", motion="still", speed=None, **kw) -> ClipSpec:
    obj = ObjectSpec(shape, color, size, motion, speed, 0.5, 0.5)
    return ClipSpec((obj,), **{"num_frames": 5, **kw})


def test_deterministic_per_seed() -> None:
    a = sample_spec(np.random.default_rng(123))
    b = sample_spec(np.random.default_rng(123))
    c = sample_spec(np.random.default_rng(124))
    assert a == b and a != c
    np.testing.assert_array_equal(render_clip(a), render_clip(b))
    va = render_clip(a)
    assert va.dtype == np.uint8 and va.shape == (a.num_frames, a.height, a.width, 3)
    # Specs survive a JSON-style round trip (the manifest stores them).
    assert ClipSpec.from_dict(a.to_dict()) == a
    assert SceneTruth.from_dict(a.truth().to_dict()) == a.truth()


@pytest.mark.parametrize("shape", V.SHAPES)
def test_every_shape_and_colour_renders_flat(shape: str) -> None:
    for i, color in enumerate(V.COLORS):
        bg = list(V.BACKGROUND_COLORS)[i % len(V.BACKGROUND_COLORS)]
        v = render_clip(_one(shape, color, "large", background=bg, num_frames=1))[0]
        h, w, _ = v.shape
        # The object's own colour appears exactly (flat fill), at the ring's band for a ring.
        probe = (h // 2, w // 2 + round(0.775 * V.SIZES["large"] * min(h, w))) if shape == "ring" else (h // 2, w // 2)
        assert tuple(v[probe]) == V.COLORS[color], (shape, color)
        assert tuple(v[1, 1]) == V.BACKGROUND_COLORS[bg]  # corners stay background
    # The ring has a hole of background colour in the middle.
    if shape == "ring":
        assert tuple(v[h // 2, w // 2]) == V.BACKGROUND_COLORS[bg]


@pytest.mark.parametrize("shape", V.SHAPES)
def test_rendered_area_matches_geometry(shape: str) -> None:
    """Anti-aliased coverage integrates to the analytic area (SDF and polygon tables agree)."""
    spec = _one(shape, "red", "large", width=192, height=192, num_frames=1, background="black")
    v = render_clip(spec)[0].astype(np.float64)
    coverage = (v[..., 0] - V.BACKGROUND_COLORS["black"][0]) / (V.COLORS["red"][0] - V.BACKGROUND_COLORS["black"][0])
    r = V.SIZES["large"] * 192
    assert coverage.sum() == pytest.approx(SHAPE_GEOMETRY[shape].area * r * r, rel=0.01)


def test_shape_label_map_marks_each_object_with_its_shape() -> None:
    """`shape_label_map`: 0 on the background, 1 + the shape's index inside each object; at cell 1 it agrees with the
    rendered mask (> half coverage) up to anti-aliased edge pixels, and a coarser cell samples the cell centres."""
    rng = np.random.default_rng(3)
    for _ in range(6):
        spec = sample_spec(rng, aspects=["square"], frame_counts=[9])
        labels = shape_label_map(spec, frame=2)
        mask = render_clip_and_mask(spec)[1][2]  # (H, W)
        assert labels.shape == (96, 96) and labels.dtype == np.uint8
        assert np.mean((labels > 0) == (mask > 127)) > 0.995
        assert set(np.unique(labels)) - {0} <= {1 + V.SHAPES.index(o.shape) for o in spec.objects}
        coarse = shape_label_map(spec, frame=2, cell=4)  # (24, 24): centres at 2, 6, ... (exact pixel corners)
        assert coarse.shape == (24, 24) and np.mean(coarse == labels[2::4, 2::4]) > 0.97
    with pytest.raises(ValueError, match="does not divide"):
        shape_label_map(_one(width=96, height=96), cell=5)


def test_polygon_sdf_signs_and_distance() -> None:
    square = np.array([(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)])
    qx, qy = np.array([0.0, 2.0, 0.5, 3.0]), np.array([0.0, 0.0, 0.0, 4.0])
    np.testing.assert_allclose(polygon_sdf(qx, qy, square), [-1.0, 1.0, -0.5, math.hypot(2.0, 3.0)])


@pytest.mark.parametrize("motion", V.MOTIONS)
def test_kinematics_follow_the_vocabulary(motion: str) -> None:
    shape = "triangle"
    speed = "fast" if V.has_speed(motion) else None
    spec = _one(shape, "blue", "small", motion, speed, width=128, height=96, num_frames=17)
    t = object_tracks(spec)[0]
    s = 96.0
    dx, dy = t.cx[-1] - t.cx[0], t.cy[-1] - t.cy[0]
    if motion in V.DIRECTIONS:
        ux, uy = V.DIRECTIONS[motion]
        np.testing.assert_allclose([dx, dy], [ux * V.TRAVEL["fast"] * s, uy * V.TRAVEL["fast"] * s], atol=1e-9)
    else:
        assert abs(dx) < 1e-9 and abs(dy) < 1e-9
    if motion == "bounce":
        assert t.cy.min() == pytest.approx(t.cy[0] - V.BOUNCE_HEIGHT * s, abs=1e-6)
    if motion == "rotate":
        assert t.angle[-1] - t.angle[0] == pytest.approx(V.ROTATION_DEG["fast"])
    if motion in ("grow", "shrink"):
        lo, hi = V.GROWTH["fast"]
        ratio = t.radius[-1] / t.radius[0]
        assert ratio == pytest.approx(hi / lo if motion == "grow" else lo / hi)


@pytest.mark.parametrize("camera", V.CAMERAS)
@pytest.mark.parametrize("style", V.BACKGROUND_STYLES)
def test_camera_and_backgrounds(camera: str, style: str) -> None:
    spec = _one("star", "yellow", "small", background="navy", background_style=style, camera=camera, num_frames=9)
    v = render_clip(spec)
    t = object_tracks(spec)[0]
    if camera == "pan_left":  # the scene slides right on screen
        assert t.cx[-1] - t.cx[0] == pytest.approx(V.PAN_TRAVEL * 96)
    if camera == "zoom_in":
        assert t.radius[-1] / t.radius[0] == pytest.approx(V.ZOOM_RANGE["zoom_in"][1])
    if style == "solid":
        assert tuple(v[0, 0, 0]) == V.BACKGROUND_COLORS["navy"]
    else:  # patterned backgrounds vary, and move with a panning / zooming camera
        assert v[0, :4].std() > 1.0  # top rows, away from the centred object
        if camera != "still":
            assert not np.array_equal(v[0, :4], v[-1, :4])


def test_layout_keeps_objects_apart_and_inside() -> None:
    rng = np.random.default_rng(0)
    for _ in range(25):
        spec = sample_spec(rng, frame_counts=(9,))
        s = min(spec.width, spec.height)
        # Render each object alone: their pixel masks never overlap and never touch the border.
        masks = []
        for o in spec.objects:
            one = ClipSpec((o,), spec.background, "solid", spec.camera, spec.width, spec.height, spec.num_frames)
            masks.append((render_clip(one) != np.array(V.BACKGROUND_COLORS[spec.background])).any(-1))
        for m in masks:
            assert not m[:, :2].any() and not m[:, -2:].any() and not m[:, :, :2].any() and not m[:, :, -2:].any()
        for i in range(len(masks)):
            for j in range(i):
                assert not (masks[i] & masks[j]).any()
        assert s > 0


def test_held_out_never_sampled_for_training() -> None:
    rng = np.random.default_rng(7)
    train = [sample_truth(rng) for _ in range(3000)]
    assert not any(t.held_out for t in train)
    seen_objects = {(o.color, o.shape, o.motion) for t in train for o in t.objects}
    assert len(seen_objects) > 400  # the sampler still covers the composition space
    # The filter is what removes them: without it they do appear.
    rng = np.random.default_rng(7)
    assert any(sample_truth(rng, exclude_held_out=False).held_out for _ in range(3000))


def test_sampling_covers_the_vocabulary() -> None:
    rng = np.random.default_rng(3)
    specs = [sample_spec(rng) for _ in range(300)]
    objs = [o for s in specs for o in s.objects]
    assert {o.shape for o in objs} == set(V.SHAPES)
    assert {o.color for o in objs} == set(V.COLORS)
    assert {o.motion for o in objs} == set(V.MOTIONS)
    assert {o.size for o in objs} == set(V.SIZES)
    assert {s.background for s in specs} == set(V.BACKGROUND_COLORS)
    assert {s.background_style for s in specs} == set(V.BACKGROUND_STYLES)
    assert {s.camera for s in specs} == set(V.CAMERAS)
    assert {(s.width, s.height) for s in specs} == set(V.ASPECTS.values())
    assert {s.num_frames for s in specs} == set(V.FRAME_COUNTS)
    assert {len(s.objects) for s in specs} == {1, 2, 3}
    # Both sizes are common (layout rejection must not starve large objects).
    assert sum(o.size == "large" for o in objs) > 0.25 * len(objs)


def test_truth_validation_and_completion() -> None:
    with pytest.raises(ValueError, match="rotation would be invisible"):
        ObjectTruth("circle", "red", "large", "rotate", "slow")
    with pytest.raises(ValueError, match="unknown color"):
        ObjectTruth("circle", "mauve")
    with pytest.raises(ValueError, match="1..3 objects"):
        SceneTruth(())
    partial = SceneTruth((ObjectTruth("star", "red"),))
    full = complete_truth(partial)
    assert full.complete and full.objects[0] == ObjectTruth("star", "red", "large", "still", None)
    assert full.background == "white" and full.camera == "still"
    frames, spec = render_truth(full, 96, 96, 9, seed=1)
    assert frames.shape == (9, 96, 96, 3) and spec.truth() == full
    # Three large fast-growing objects do not fit a 96 px frame: the layout says so instead of overlapping.
    crowded = SceneTruth((ObjectTruth("star", "red", "large", "grow", "fast"),) * 3, "white", "solid", "still")
    assert layout_truth(crowded, 96, 96, 9, np.random.default_rng(0), tries=20) is None
