"""Layout captions: each object's start cell in the caption ("in the top left"), read back by the parser, honoured
by the layout and the renderer, drawn by the layout prompt enhancer, and checked by the analyzer. Token captions
add the 8-pixel token of the start ("in the top left at c3 r2")."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cinegen.world import vocab as V
from cinegen.world.analyze import analyze_video, score_video
from cinegen.world.captions import dense_caption, enhance_prompt, parse_prompt, position_phrase, token_phrase
from cinegen.world.dataset import clip_spec, export_dataset
from cinegen.world.render import (
    ClipSpec,
    ObjectTruth,
    SceneTruth,
    complete_truth,
    layout_truth,
    object_tracks,
    render_clip,
    render_truth,
)


def test_grid_cells() -> None:
    assert V.position_cell(0.1, 0.1) == "top_left" and V.position_cell(0.5, 0.5) == "center"
    assert V.position_cell(0.99, 0.5) == "right" and V.position_cell(0.5, 1.0) == "bottom"
    for p in V.POSITIONS:
        x0, x1, y0, y1 = V.cell_bounds(p)
        assert V.position_cell((x0 + x1) / 2, (y0 + y1) / 2) == p
    assert [position_phrase(p) for p in ("top_left", "top", "left", "center", "bottom_right")] == [
        "in the top left",
        "at the top",
        "on the left",
        "in the center",
        "in the bottom right",
    ]


def test_layout_captions_parse_back_exactly() -> None:
    """Clip specs -> layout truth (cells from the first frame on screen) -> caption -> the same truth."""
    lengths = []
    for i in range(400):
        spec, _ = clip_spec(5, i, include_held_out=True, camera_prob=0.5)
        truth = spec.truth(layout=True)
        assert all(o.position is not None for o in truth.objects)
        assert truth.canonical() != spec.truth().canonical()
        text = dense_caption(truth)
        lengths.append(len(text.split()))
        assert parse_prompt(text).canonical() == truth.canonical(), text
        # the plain caption is unchanged by the feature and states no position
        assert all(o.position is None for o in parse_prompt(dense_caption(spec.truth())).objects)
    assert max(lengths) <= 64


@pytest.mark.parametrize(
    ("text", "cells", "motions"),
    [
        ("a red circle in the top left moves right", ["top_left"], ["right"]),
        ("a red circle in the upper-right corner moves to the left", ["top_right"], ["left"]),
        ("a green star at the bottom spins", ["bottom"], ["rotate"]),
        ("a pink ring stays still in the middle", ["center"], ["still"]),
        ("two red circles on the left move up", ["left", "left"], ["up", "up"]),
        ("two blue squares on the right and in the top right slide left", ["right", "top_right"], ["left", "left"]),
        ("a red circle moves from left to right", [None], ["right"]),  # direction words, not a place
        ("a red circle moves toward the upper left", [None], ["up_left"]),
        ("a red circle moves up on a navy background", [None], ["up"]),
    ],
)
def test_position_phrases(text: str, cells: list, motions: list) -> None:
    objs = parse_prompt(text).objects
    assert [o.position for o in objs] == cells
    assert [o.motion for o in objs] == motions


def test_layout_honours_stated_cells_and_refuses_impossible_ones() -> None:
    rng = np.random.default_rng(0)
    for i in range(60):
        cell = V.POSITIONS[i % len(V.POSITIONS)]
        truth = complete_truth(parse_prompt(f"a small red circle {position_phrase(cell)} stays still"), rng)
        spec = layout_truth(truth, 128, 96, 17, rng)
        assert spec is not None and spec.truth(layout=True).objects[0].position == cell
    # a zoomed-out first frame: the stated cell is where the object is on screen
    truth = complete_truth(parse_prompt("a small red square in the top left stays still, the camera zooms out"))
    spec = layout_truth(truth, 96, 96, 17, np.random.default_rng(1))
    assert spec is not None
    t = object_tracks(spec)[0]
    assert V.position_cell(t.cx[0] / 96, t.cy[0] / 96) == "top_left"
    # a large fast object starting on the right cannot move right and stay in frame
    bad = complete_truth(parse_prompt("a large red circle on the right quickly moves to the right"))
    assert layout_truth(bad, 96, 96, 17, np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="cannot lay out"):
        enhance_prompt("a large red circle on the right quickly moves to the right", layout=True)


def test_layout_enhancer_draws_cells_per_seed_and_keeps_stated_ones() -> None:
    text = "a blue square slides left and a red star spins on a gray background"
    a = [enhance_prompt(text, np.random.default_rng(s), layout=True) for s in range(6)]
    assert a == [enhance_prompt(text, np.random.default_rng(s), layout=True) for s in range(6)]  # deterministic
    assert len(set(a)) > 1  # the seed moves the objects
    for caption in a:
        truth = parse_prompt(caption)
        assert all(o.position in V.POSITIONS for o in truth.objects)
        assert [o.motion for o in truth.objects] == ["left", "rotate"]
    # a crowded scene: random fills that do not fit are redrawn (seed 1 needs the fallback to the plain defaults)
    crowded = "two blue squares slide left and a red star spins on a gray background"
    objs = parse_prompt(enhance_prompt(crowded, np.random.default_rng(1), layout=True)).objects
    assert len(objs) == 3 and all(o.position in V.POSITIONS for o in objs)
    # no rng: deterministic defaults, as the plain enhancer; the plain enhancer states no position
    assert enhance_prompt(text, layout=True) == enhance_prompt(text, layout=True)
    assert "the top" not in enhance_prompt(text) and parse_prompt(enhance_prompt(text)).objects[0].position is None
    kept = enhance_prompt("a red circle in the bottom right moves up", np.random.default_rng(3), layout=True)
    assert "in the bottom right" in kept and parse_prompt(kept).objects[0].position == "bottom_right"


def test_analyzer_scores_the_stated_cell() -> None:
    frames, spec = render_truth(parse_prompt("a large red square in the top right stays still"), 96, 96, 9, 0)
    truth = spec.truth(layout=True)
    assert truth.objects[0].position == "top_right"
    analysis = analyze_video(frames)
    assert analysis.objects[0].position == "top_right"
    assert score_video(analysis, truth)["position"] == 1.0
    wrong = parse_prompt("a large red square in the bottom left stays still")
    assert score_video(analysis, wrong)["position"] == 0.0
    assert score_video(analysis, parse_prompt("a large red square stays still"))["position"] is None


def test_analyzer_reads_cells_of_random_layout_clips() -> None:
    """Ground-truth renders of random training clips: the start cell is read back (>= 98 %)."""
    hits = []
    for i in range(60):
        spec, _ = clip_spec(9, i, frame_counts=[9], camera_prob=0.5)
        scores = score_video(analyze_video(render_clip(spec)), spec.truth(layout=True))
        hits.append(scores["position"])
    assert np.mean(hits) >= 0.98


def test_export_with_layout_captions(tmp_path) -> None:
    plain = export_dataset(tmp_path / "a", 3, seed=4, frame_counts=[9], masks=False)
    layout = export_dataset(tmp_path / "b", 3, seed=4, frame_counts=[9], masks=False, layout=True)
    ra = [json.loads(line) for line in plain.read_text().splitlines()]
    rb = [json.loads(line) for line in layout.read_text().splitlines()]
    for a, b in zip(ra, rb, strict=True):
        assert a["meta"]["spec"] == b["meta"]["spec"]  # the same clips, other captions
        spec = ClipSpec.from_dict(b["meta"]["spec"])
        assert a["text"] == dense_caption(spec.truth()) and b["text"] == dense_caption(spec.truth(layout=True))
        assert a["text"] != b["text"]


def test_token_captions_parse_back_and_name_the_start_token() -> None:
    """Clip specs -> token truth (the cell and the 8-pixel token of each centre on screen at the first frame) ->
    caption -> the same truth; without the token words it is the layout caption."""
    assert V.token_of(55.999999999, 8.0) == (7, 1) and V.token_of(7.9, 0.0) == (0, 0)
    assert V.token_bounds((3, 9)) == (24, 32, 72, 80) and token_phrase((3, 9)) == "at c3 r9"
    lengths = []
    for i in range(300):
        spec, _ = clip_spec(5, i, include_held_out=True, camera_prob=0.5)
        truth = spec.truth(tokens=True)
        assert [o.token for o in truth.objects] == [V.token_of(t.cx[0], t.cy[0]) for t in object_tracks(spec)]
        layout = spec.truth(layout=True)
        assert [o.position for o in truth.objects] == [o.position for o in layout.objects]
        text = dense_caption(truth)
        assert parse_prompt(text).canonical() == truth.canonical(), text
        assert re.sub(r" at c\d+ r\d+", "", text) == dense_caption(layout)
        lengths.append(len(re.findall(r"\w+|[^\w\s]", text)) + 1)  # word-level T5 tokens with </s>
    assert max(lengths) <= 72  # 3 more per object than a layout caption (the default model reads 64)


@pytest.mark.parametrize(
    ("text", "cells", "tokens"),
    [
        ("a red circle in the top left at c2 r3 moves right", ["top_left"], [(2, 3)]),
        ("a red circle at c5 r6 stays still", [None], [(5, 6)]),
        ("two red circles on the left at c1 r5 and at c2 r7 move up", ["left", None], [(1, 5), (2, 7)]),
        ("two red circles on the left at c1 r5 move up", ["left", None], [(1, 5), None]),  # a token is one object's
        ("a red circle at c99 r3 moves up", [None], [None]),  # outside the grid: not a token
        ("a red circle moves up at the top", ["top"], [None]),
    ],
)
def test_token_phrases(text: str, cells: list, tokens: list) -> None:
    objs = parse_prompt(text).objects
    assert [o.position for o in objs] == cells and [o.token for o in objs] == tokens


def test_object_truth_token_round_trips_and_is_checked() -> None:
    truth = SceneTruth((ObjectTruth("circle", "red", "small", "still", None, "center", (5, 6)),), "white")
    assert SceneTruth.from_dict(json.loads(json.dumps(truth.to_dict()))) == truth  # JSON lists back to a tuple
    with pytest.raises(ValueError, match="outside"):
        ObjectTruth("circle", token=(V.MAX_TOKENS, 0))


def test_layout_and_enhancer_honour_stated_tokens() -> None:
    rng = np.random.default_rng(0)
    for i in range(30):
        col, row = 4 + i % 5, 4 + (i // 5) % 4
        truth = complete_truth(parse_prompt(f"a small red circle at c{col} r{row} stays still"), rng)
        for w, h in ((96, 96), (128, 96), (96, 128)):
            spec = layout_truth(truth, w, h, 17, rng)
            assert spec is not None and spec.truth(tokens=True).objects[0].token == (col, row)
    # a zoomed-out first frame: the stated token is where the object is on screen
    truth = complete_truth(
        parse_prompt("a small red square in the top left at c3 r2 stays still, the camera zooms out")
    )
    spec = layout_truth(truth, 96, 96, 17, np.random.default_rng(1))
    assert spec is not None and spec.truth(tokens=True).objects[0].token == (3, 2)
    # the enhancer: a cell and a token for every object, drawn from the seed, the stated ones kept
    text = "a blue square slides left and a red star spins on a gray background"
    a = [enhance_prompt(text, np.random.default_rng(s), tokens=True) for s in range(4)]
    assert a == [enhance_prompt(text, np.random.default_rng(s), tokens=True) for s in range(4)] and len(set(a)) > 1
    for caption in a:
        objs = parse_prompt(caption).objects
        assert all(o.position in V.POSITIONS and o.token is not None for o in objs)
    kept = enhance_prompt("a red circle in the bottom right at c8 r8 moves up", np.random.default_rng(3), tokens=True)
    assert "in the bottom right at c8 r8" in kept
    with pytest.raises(ValueError, match="cannot lay out"):  # the left cell is rows 4-7 of a 96-pixel frame
        enhance_prompt("a red circle on the left at c2 r1 stays still", tokens=True)


def test_export_with_token_captions(tmp_path) -> None:
    out = export_dataset(tmp_path / "t", 3, seed=4, frame_counts=[9], masks=False, tokens=True, snap=V.TOKEN_PX)
    for r in (json.loads(line) for line in out.read_text().splitlines()):
        spec = ClipSpec.from_dict(r["meta"]["spec"])
        assert r["text"] == dense_caption(spec.truth(tokens=True)) and re.search(r" at c\d+ r\d+", r["text"])
        assert spec == clip_spec(4, int(r["path"][-10:-4]), frame_counts=[9], snap=V.TOKEN_PX)[0]  # snapped starts


def test_snapped_starts_sit_on_token_corners() -> None:
    """`snap`: every object starts on screen (camera zoom included) on a whole multiple of the snap; clips drawn
    without it are the ones drawn before the option existed."""
    for i in range(80):
        spec, _ = clip_spec(3, i, camera_prob=0.5, snap=V.TOKEN_PX)
        tracks = object_tracks(spec)
        for t in tracks:
            assert abs(t.cx[0] / 8 - round(t.cx[0] / 8)) < 1e-6 and abs(t.cy[0] / 8 - round(t.cy[0] / 8)) < 1e-6
        assert [o.token for o in spec.truth(tokens=True).objects] == [V.token_of(t.cx[0], t.cy[0]) for t in tracks]
    # golden starts of clip 0 of set 0 (square stills), as session 17's code drew them
    plain = clip_spec(0, 0, aspects=["square"], frame_counts=[1])[0]
    assert [(o.shape, o.x, o.y) for o in plain.objects] == [
        ("square", 0.7138394981112158, 0.6327820585470145),
        ("square", 0.788695756679303, 0.25784152362116725),
    ]
    truth = complete_truth(parse_prompt("a small red circle at c5 r6 stays still, the camera zooms out"))
    spec = layout_truth(truth, 96, 96, 17, np.random.default_rng(0), snap=8)
    assert spec is not None
    t = object_tracks(spec)[0]
    assert (round(t.cx[0], 6), round(t.cy[0], 6)) == (40.0, 48.0)  # the stated token's corner, on screen


def test_analyzer_scores_the_stated_token() -> None:
    """The start token is read back from ground-truth renders (snapped or not, cameras included: >= 98 %), and a
    wrong token scores 0."""
    for snap in (V.TOKEN_PX, None):
        hits = []
        for i in range(40):
            spec, _ = clip_spec(9, i, frame_counts=[9], camera_prob=0.5, snap=snap)
            hits.append(score_video(analyze_video(render_clip(spec)), spec.truth(tokens=True))["token"])
        assert np.mean(hits) >= 0.98, (snap, np.mean(hits))
    frames, spec = render_truth(parse_prompt("a large red square in the top right at c8 r3 stays still"), 96, 96, 9, 0)
    analysis = analyze_video(frames)
    assert spec.truth(tokens=True).objects[0].token == (8, 3)
    assert score_video(analysis, spec.truth(tokens=True))["token"] == 1.0
    assert score_video(analysis, parse_prompt("a large red square at c2 r8 stays still"))["token"] == 0.0
    assert score_video(analysis, parse_prompt("a large red square stays still"))["token"] is None
