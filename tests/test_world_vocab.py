"""Shapes-world vocabulary: palettes far apart, held-out list well formed, colour conversion golden values."""

from __future__ import annotations

import itertools

import numpy as np

from cinegen.world import vocab as V


def _min_distance(a: dict, b: dict | None = None) -> float:
    la = V.palette_lab(a)[1]
    if b is None:
        return min(float(np.linalg.norm(x - y)) for x, y in itertools.combinations(la, 2))
    lb = V.palette_lab(b)[1]
    return min(float(np.linalg.norm(x - y)) for x in la for y in lb)


def test_palette_sizes_and_separation() -> None:
    assert len(V.COLORS) >= 8 and len(V.SHAPES) >= 5 and len(V.SIZES) == 2
    assert set(V.COLORS).isdisjoint(V.BACKGROUND_COLORS)
    # Object colours are told apart by nearest CIELAB colour and segmented from backgrounds by a 22-unit
    # threshold: both need real margins.
    assert _min_distance(V.COLORS) > 40.0
    assert _min_distance(V.COLORS, V.BACKGROUND_COLORS) > 44.0
    assert _min_distance(V.BACKGROUND_COLORS) > 24.0


def test_motion_vocabulary() -> None:
    for m in (
        "left",
        "right",
        "up",
        "down",
        "up_left",
        "down_right",
        "bounce",
        "rotate",
        "grow",
        "shrink",
        "still",
    ):
        assert m in V.MOTIONS
    for dx, dy in V.DIRECTIONS.values():
        assert abs(np.hypot(dx, dy) - 1.0) < 1e-12
    assert not V.motion_valid("circle", "rotate") and not V.motion_valid("ring", "rotate")
    assert V.motion_valid("star", "rotate") and V.motion_valid("circle", "bounce")
    assert V.TRAVEL["fast"] > V.TRAVEL["slow"] and V.BOUNCES["fast"] > V.BOUNCES["slow"]


def test_held_out_list() -> None:
    assert len(V.HELD_OUT) == len(set(V.HELD_OUT)) >= 10
    for color, shape, motion in V.HELD_OUT:
        assert color in V.COLORS and shape in V.SHAPES and motion in V.MOTIONS
        assert V.motion_valid(shape, motion)
        assert V.is_held_out(color, shape, motion)
    assert {m for _, _, m in V.HELD_OUT} == set(V.MOTIONS)
    assert {c for c, _, _ in V.HELD_OUT} == set(V.COLORS)
    assert {s for _, s, _ in V.HELD_OUT} == set(V.SHAPES)
    assert not V.is_held_out("red", "circle", "left")


def test_rgb_to_lab_golden_and_lut() -> None:
    lab = V.rgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [119, 119, 119], [255, 0, 0]], dtype=np.uint8))
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[2, 0], 50.0, atol=0.2)  # sRGB 119 is mid-grey L* = 50
    np.testing.assert_allclose(lab[3], [53.24, 80.09, 67.20], atol=0.1)  # standard sRGB red
    # The uint8 lookup-table path equals the float formula.
    x = np.random.default_rng(0).integers(0, 256, (64, 3)).astype(np.uint8)
    np.testing.assert_allclose(V.rgb_to_lab(x), V.rgb_to_lab(x.astype(np.float64)), atol=1e-3)
