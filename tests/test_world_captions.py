"""Shapes-world captions: dense and short captions parse back to their truth; free phrasing; rewriting."""

from __future__ import annotations

import numpy as np
import pytest

from cinegen.world.captions import (
    dense_caption,
    enhance_prompt,
    parse_prompt,
    scene_target,
    short_caption,
    short_caption_and_stated,
)
from cinegen.world.render import ObjectTruth, SceneTruth, sample_truth


def _truths(n: int, seed: int) -> list[SceneTruth]:
    rng = np.random.default_rng(seed)
    return [sample_truth(rng, exclude_held_out=False, camera_prob=0.5) for _ in range(n)]


def test_dense_captions_parse_back_exactly() -> None:
    lengths = []
    for t in _truths(800, 0):
        text = dense_caption(t)
        lengths.append(len(text))
        assert parse_prompt(text).canonical() == t.canonical(), text
    # One byte-level token per character: dense captions must stay near the 226-token text length.
    assert max(lengths) <= 240 and np.mean(lengths) < 160


def test_short_captions_parse_back_to_what_they_state() -> None:
    rng = np.random.default_rng(1)
    texts = set()
    for t in _truths(1500, 2):
        text, stated = short_caption_and_stated(t, rng)
        texts.add(text)
        parsed = parse_prompt(text)
        assert parsed.canonical() == stated.canonical(), text
        # What a short caption always states: every object's shape, colour and motion, and the background.
        assert sorted((o.shape, o.color, o.motion) for o in parsed.objects) == sorted(
            (o.shape, o.color, o.motion) for o in t.objects
        )
        assert parsed.background == t.background
    assert len(texts) > 1400  # phrasing varies


def test_short_caption_phrasing_varies_for_one_truth() -> None:
    t = SceneTruth((ObjectTruth("circle", "red", "small", "left", "slow"),), "white", "solid", "still")
    rng = np.random.default_rng(0)
    assert len({short_caption(t, rng) for _ in range(60)}) > 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "two red circles sliding left on a grey backdrop",
            [("circle", "red", None, "left", None)] * 2,
        ),
        (
            "A big blue star spinning quickly, and a tiny green ring bouncing slowly, on a plain white background",
            [("star", "blue", "large", "rotate", "fast"), ("ring", "green", "small", "bounce", "slow")],
        ),
        (
            "a yellow square moves from the left to the right while the camera zooms in",
            [("square", "yellow", None, "right", None)],
        ),
        (
            "three pink triangles drift toward the upper left over a striped navy backdrop, static camera",
            [("triangle", "pink", None, "up_left", None)] * 3,
        ),
        (  # no articles: "from left to right" means rightward, not "left" (the demo prompt's phrasing)
            "a red circle moves from left to right on a navy background",
            [("circle", "red", None, "right", None)],
        ),
        ("a blue ring goes from top to bottom", [("ring", "blue", None, "down", None)]),
        ("an orange cross getting bigger", [("cross", "orange", None, "grow", None)]),
        ("a purple donut", [("ring", "purple", None, None, None)]),
    ],
)
def test_free_phrasing(text: str, expected: list[tuple]) -> None:
    p = parse_prompt(text)
    assert [(o.shape, o.color, o.size, o.motion, o.speed) for o in p.objects] == expected


def test_background_and_camera_parsing() -> None:
    p = parse_prompt("two red circles sliding left on a grey backdrop")
    assert (p.background, p.background_style, p.camera) == ("gray", None, None)
    p = parse_prompt("a yellow square moves right while the camera pans to the left, on a beige gradient")
    assert (p.background, p.background_style, p.camera) == ("beige", "gradient", "pan_left")
    assert p.objects[0].motion == "right"  # the camera's "left" does not leak into the object
    p = parse_prompt("a green star stands still on a black striped background, static camera")
    assert (p.objects[0].motion, p.background_style, p.camera) == ("still", "stripes", "still")


def test_parse_errors() -> None:
    with pytest.raises(ValueError, match="no shape"):
        parse_prompt("a beautiful sunset over the sea")
    with pytest.raises(ValueError, match="at most 3"):
        parse_prompt("two red circles and two blue squares")


def test_enhance_prompt_expands_to_the_dense_caption() -> None:
    dense = enhance_prompt("a blue star spinning on a grey backdrop")
    t = parse_prompt(dense)
    assert t.complete
    assert (t.objects[0].shape, t.objects[0].color, t.objects[0].motion, t.background) == (
        "star",
        "blue",
        "rotate",
        "gray",
    )
    assert dense == dense_caption(t)
    with pytest.raises(ValueError, match="complete truth"):
        dense_caption(SceneTruth((ObjectTruth("star", "blue"),)))


def test_scene_target_is_the_fixed_order_record_of_what_is_stated() -> None:
    t = SceneTruth(
        (
            ObjectTruth("star", "blue", "small", "up_left", "fast"),
            ObjectTruth("circle", "red", "large", "still"),
            ObjectTruth("star", "blue", "small", "up_left", "fast"),
        ),
        "white",
        "stripes",
        "pan_right",
    )
    assert scene_target(t) == "2 blue small star up left fast ; 1 red large circle still - | white stripes pan right"
    stated = SceneTruth((ObjectTruth("ring", "green", None, "down", None),), "navy")
    assert scene_target(stated) == "1 green - ring down - | navy - -"
    # Objects come in the order the captions mention them, so a caption and its target line up.
    rng = np.random.default_rng(5)
    for truth in _truths(200, 6):
        text, st = short_caption_and_stated(truth, rng)
        colors = [g.split()[1] for g in scene_target(st).split(" | ")[0].split(" ; ")]
        mentioned = [w for w in text.lower().replace(",", " ").replace(".", " ").split() if w in colors]
        assert list(dict.fromkeys(mentioned)) == list(dict.fromkeys(colors)) or len(set(colors)) < len(colors)
