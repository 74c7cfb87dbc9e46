"""ShapesBench: the fixed suite, the analyzer validated on ground-truth renders of the whole suite (>= 98 % on
every attribute), and a fast end-to-end run that writes results.json / results.md / samples.png."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("cv2")

from PIL import Image  # noqa: E402

from cinegen.world import vocab as V  # noqa: E402
from cinegen.world.analyze import ATTRIBUTES, analyze_video, score_video  # noqa: E402
from cinegen.world.bench import (  # noqa: E402
    default_suite,
    oracle_generate,
    render_item,
    run_shapes_bench,
    vae_roundtrip_generate,
)
from cinegen.world.captions import parse_prompt  # noqa: E402
from cinegen.world.render import render_truth  # noqa: E402


def test_suite_is_fixed_and_covers_the_world() -> None:
    suite = default_suite()
    assert len(suite) == 52 and sum(it.held_out for it in suite) == 26
    assert len({it.id for it in suite}) == len({it.seed for it in suite}) == len(suite)
    ho = {(o.color, o.shape, o.motion) for it in suite for o in it.truth.objects if o.held_out}
    assert ho == set(V.HELD_OUT)
    for it in suite:
        assert it.held_out == any(o.held_out for o in it.truth.objects)
        assert it.truth.complete and it.truth.camera == "still"
        # Every prompt is a dense caption that reads back to its truth.
        assert parse_prompt(it.prompt()).canonical() == it.truth.canonical()
    for group in (True, False):
        part = [it for it in suite if it.held_out == group]
        assert {len(it.truth.objects) for it in part} == {1, 2, 3}
        assert {(it.width, it.height) for it in part} == set(V.ASPECTS.values())
        assert {o.motion for it in part for o in it.truth.objects} == set(V.MOTIONS)
    assert {it.num_frames for it in suite} == {9, 17}
    # Built by a fixed procedure: the same items every time.
    assert [it.prompt() for it in default_suite.__wrapped__()] == [it.prompt() for it in suite]


def test_analyzer_validation_on_ground_truth_suite() -> None:
    """The analyzer must score >= 98 % on every attribute, seen and held-out, on real renders of the suite; the
    start cell (position) and token are scored against the layout the render drew."""
    from cinegen.world.analyze import match_objects
    from cinegen.world.bench import binding_labels, binding_summary

    per_group: dict[str, dict[str, list[float]]] = {"seen": {}, "held_out": {}}
    labels: list[str | None] = []
    for it in default_suite():
        frames, spec = render_truth(it.truth, it.width, it.height, it.num_frames, it.seed)
        assert np.array_equal(frames, render_item(it))
        analysis = analyze_video(frames)
        plain = score_video(analysis, it.truth)
        assert plain["position"] is None and plain["token"] is None  # the suite's prompts state no position
        scores = score_video(analysis, spec.truth(tokens=True))
        for a, v in scores.items():
            if v is not None:
                per_group[it.group].setdefault(a, []).append(v)
        matched = match_objects(analysis, it.truth)
        disp = [None if d is None else d.displacement for d in matched]
        labels += binding_labels([o.motion for o in it.truth.objects], disp)
    # every object of a multi-object scene with stated directions goes its own way (the binding diagnostic)
    binding = binding_summary(labels)
    assert binding["objects"] >= 20 and binding["own"] == 1.0
    for group, attrs in per_group.items():
        assert set(attrs) == set(ATTRIBUTES)
        for a, vals in attrs.items():
            assert np.mean(vals) >= 0.98, (group, a, np.mean(vals))


def test_bench_run_writes_reports(tmp_path) -> None:
    suite = default_suite()
    by_prompt = {it.prompt(): it for it in suite}
    calls = []

    def fake_generate(prompt: str, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
        it = by_prompt[prompt]
        assert (num_frames, height, width, seed) == (it.num_frames, it.height, it.width, it.seed)
        calls.append(prompt)
        return render_item(it)

    res = run_shapes_bench(fake_generate, tmp_path, limit=6, model="fake")
    assert len(calls) == res["videos"] == 6
    assert res["summary"]["seen"]["videos"] == res["summary"]["held_out"]["videos"] == 3
    assert all(res["summary"]["all"][a] == 1.0 for a in ATTRIBUTES if a not in ("position", "token"))
    assert res["summary"]["all"]["position"] is None and res["summary"]["all"]["token"] is None  # none stated
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"] == res["summary"] and len(data["items"]) == 6
    assert {"truth", "scores", "analysis", "prompt", "seed"} <= set(data["items"][0])
    # the direction diagnostic: every directional object of a ground-truth render moves its stated way
    d = res["direction"]
    assert d["objects"] > 0 and d["agree"] == 1.0 and d["mean_projection"] > 0.2
    md = (tmp_path / "results.md").read_text()
    assert d["detected"] == d["objects"] and "move along the stated direction (50 % is chance)" in md
    assert "| attribute | seen | held-out | all |" in md and "| motion |" in md and "| color | 100.0 %" in md
    # ground truth: every confusion cell is on the diagonal, one per truth object
    objects = sum(len(r["truth"]["objects"]) for r in data["items"])
    for a in ("shape", "motion"):
        table = data["confusion"][a]
        assert all(set(row) == {want} for want, row in table.items()), table
        assert sum(n for row in table.values() for n in row.values()) == objects
    assert "Shape confusion (objects; rows: prompted" in md and "Motion confusion" in md
    with Image.open(tmp_path / "samples.png") as im:
        assert im.width > 6 * 96 and im.height > 6 * 96


def test_direction_diagnostic() -> None:
    """Projection of the net displacement on the stated direction, summarised over the detected objects."""
    from cinegen.world.bench import direction_projection, direction_summary

    assert direction_projection("left", [-0.3, 0.05]) == pytest.approx(0.3)
    assert direction_projection("down_right", [0.2, 0.2]) == pytest.approx(0.2 * 2**0.5)
    assert direction_projection("rotate", [0.3, 0.0]) is None and direction_projection("up", None) is None
    rows = [
        {"truth": {"objects": [{"motion": "left"}, {"motion": "grow"}]}, "object_direction": [0.3, None]},
        {"truth": {"objects": [{"motion": "up"}, {"motion": "right"}]}, "object_direction": [None, -0.1]},
    ]
    assert direction_summary(rows) == {"objects": 3, "detected": 2, "agree": 0.5, "mean_projection": 0.1}
    assert direction_summary([]) == {"objects": 0, "detected": 0, "agree": None, "mean_projection": None}


def test_bench_scores_a_bad_generator_low(tmp_path) -> None:
    """Videos that ignore the prompt (always the same clip) must score far below the ground truth."""
    fixed = render_item(default_suite()[0])  # one large red triangle moving left

    def lazy(prompt: str, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
        return fixed

    res = run_shapes_bench(lazy, tmp_path, limit=12)
    s = res["summary"]["all"]
    assert s["color"] < 0.4 and s["shape"] < 0.5 and s["motion"] < 0.4 and s["background"] < 0.5
    # one drawn triangle for every shape word: the confusion table has one detected column (plus misses)
    drawn = {c for row in res["confusion"]["shape"].values() for c in row}
    assert drawn <= {"triangle", "(missed)"} and len(res["confusion"]["shape"]) >= 4


def test_confusion_counts_matches_and_misses() -> None:
    from cinegen.world.bench import confusion

    rows = [
        {
            "truth": {"objects": [{"shape": "star"}, {"shape": "ring"}]},
            "object_detected": [{"shape": "circle"}, None],
        },
        {"truth": {"objects": [{"shape": "star"}]}, "object_detected": [{"shape": "star"}]},
    ]
    assert confusion(rows, "shape") == {"star": {"circle": 1, "star": 1}, "ring": {"(missed)": 1}}
    assert confusion([{"truth": {"objects": []}}], "shape") == {}  # results written before matches were kept


def test_oracle_generate_follows_short_prompts(tmp_path) -> None:
    res = run_shapes_bench(oracle_generate, tmp_path, limit=4, prompt_style="short", save_videos=True)
    s = res["summary"]["all"]
    assert all(s[a] == 1.0 for a in ("color", "shape", "count", "motion", "background")), s
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 4  # --save-videos creates its folder


class _IdentityVAE:
    """A lossless stand-in: the ceiling over it must be exactly the ground truth."""

    device = "cpu"

    def encode(self, x):  # type: ignore[no-untyped-def]
        return x

    def decode(self, z):  # type: ignore[no-untyped-def]
        return z


def test_vae_roundtrip_of_a_lossless_vae_is_the_ground_truth() -> None:
    item = default_suite()[3]
    args = (item.prompt(), item.num_frames, item.height, item.width, item.seed)
    out = vae_roundtrip_generate(_IdentityVAE())(*args)
    assert out.dtype == np.uint8 and np.array_equal(out, oracle_generate(*args))


def test_latent_noise_perturbs_the_roundtrip_by_the_seed_and_scale() -> None:
    """--latent-noise s: noise of std s in the scaled latent space (what the transformer sees), seeded by the
    prompt's seed; 0 is the plain round trip."""

    class _ScaledIdentityVAE(_IdentityVAE):
        def scale(self, z):  # type: ignore[no-untyped-def]
            return 4.0 * z

        def unscale(self, z):  # type: ignore[no-untyped-def]
            return z / 4.0

    item = default_suite()[3]
    args = (item.prompt(), item.num_frames, item.height, item.width, item.seed)
    vae = _ScaledIdentityVAE()
    clean = vae_roundtrip_generate(vae, 0.0)(*args).astype(np.float64)
    a, b = (vae_roundtrip_generate(vae, 0.2)(*args).astype(np.float64) for _ in range(2))
    assert np.array_equal(a, b) and not np.array_equal(a, clean)  # seeded: the same noise every call
    # std 0.2 in scaled units is 0.05 in [-1, 1] pixels (x 127.5 = ~6.4 levels), less where 8-bit clipping bites
    assert 4.0 < float(np.std(a - clean)) < 6.6
    with pytest.raises(ValueError, match=">= 0"):
        vae_roundtrip_generate(vae, -0.1)


def test_vae_ceiling_cli_runs_the_suite_through_the_models_vae(tmp_path, tiny_2b_folder) -> None:
    from cinegen.world.cli import main

    out = tmp_path / "ceiling"
    args = ["eval", "shapes", "--model", str(tiny_2b_folder), "--vae-ceiling", "--limit", "2", "--out", str(out)]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["videos"] == 2 and "through the VAE" in data["model"]
    noisy = tmp_path / "noisy"
    assert main([*args[:-1], str(noisy), "--latent-noise", "0.5"]) == 0
    assert "with latent noise 0.5" in json.loads((noisy / "results.json").read_text())["model"]
    assert main([*args[:4], "--latent-noise", "0.5"]) == 2  # only with --vae-ceiling
    assert main([*args, "--latent-noise", "-1"]) == 2


def test_from_truth_cli_denoises_the_ground_truth(tmp_path, tiny_2b_folder, capsys) -> None:
    """--from-truth: each prompt's render noised to a strength and denoised by the model (V2V, SDEdit)."""
    from cinegen.world.cli import main

    out = tmp_path / "v2v"
    args = ["eval", "shapes", "--model", str(tiny_2b_folder), "--from-truth", "0.3", "--steps", "4"]
    assert main([*args, "--limit", "2", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["videos"] == 2 and "noised to strength 0.3" in data["model"]
    assert [it["output_shape"][:3] for it in data["items"]] == [it["format"] for it in data["items"]]
    assert main([*args, "--vae-ceiling"]) == 2 and "exclude each other" in capsys.readouterr().err
    assert main([*args[:4], "--from-truth", "1.5"]) == 2 and "(0, 1]" in capsys.readouterr().err
    # 0.2 of 4 steps runs none: refused before the bench starts, with the smallest strength that runs one
    assert main([*args[:4], "--from-truth", "0.2", "--steps", "4", "--out", str(tmp_path / "none")]) == 2
    assert "need strength >= 0.25" in capsys.readouterr().err and not (tmp_path / "none").exists()
    # A random VAE destroys the picture: nothing like the ground truth's 100 %.
    assert data["summary"]["all"]["color"] < 1.0
    assert main(["eval", "shapes", "--oracle", "--vae-ceiling", "--out", str(out)]) == 2


def test_compare_table_and_cli(tmp_path, capsys) -> None:
    """`cinegen eval compare`: two real (tiny) bench runs side by side as held-out / seen; other suites and bad
    input are refused with a message."""
    from cinegen.cli import main
    from cinegen.world.bench import compare_table

    fixed = render_item(default_suite()[0])
    run_shapes_bench(
        lambda p, f, h, w, s: render_item({it.prompt(): it for it in default_suite()}[p]), tmp_path / "a", limit=4
    )
    run_shapes_bench(lambda p, f, h, w, s: fixed, tmp_path / "b", limit=4)
    a, b = (json.loads((tmp_path / x / "results.json").read_text()) for x in "ab")
    table = compare_table([a, b], ["truth", "fixed"], ["color", "motion"])
    lines = table.splitlines()
    assert lines[0] == "| run | color | motion | direction agree (all) |"
    assert lines[2] == "| truth | 100.0 / 100.0 | 100.0 / 100.0 | 100.0 |"
    hb, sb = b["summary"]["held_out"]["color"], b["summary"]["seen"]["color"]
    assert lines[3].startswith(f"| fixed | {100 * hb:.1f} / {100 * sb:.1f} |")
    assert lines[4] == "| bar (held-out / seen) | >= 90 / higher | >= 80 / higher | (50 = chance) |"
    # the same prompts and seeds: paired differences of b against a (the ground truth scores 100 everywhere)
    assert lines[6].startswith("Paired differences against truth (videos of the same prompt and seed")
    assert lines[8:9] == ["| run | color | motion |"]
    dc = 100 * (b["summary"]["all"]["color"] - 1.0)
    assert lines[10].startswith("| fixed | ") and f" / {dc:+.1f} ± " in lines[10].split("|")[2]
    assert len(compare_table([a], ["truth"], ["color"]).splitlines()) == 4  # one run: no paired section
    old = {k: v for k, v in b.items() if k != "direction"}  # results written before the diagnostic existed
    assert compare_table([a, old], ["x", "y"], ["color"]).splitlines()[0] == "| run | color |"
    with pytest.raises(ValueError, match="different suites"):
        compare_table([a, {**b, "prompt_style": "short"}], ["x", "y"])
    with pytest.raises(ValueError, match="unknown attributes"):
        compare_table([a], ["x"], ["colour"])

    out = tmp_path / "cmp.md"
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b" / "results.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and f"| {tmp_path / 'a'} |" in printed
    assert main(["eval", "compare", str(tmp_path / "missing")]) == 2
    assert "no ShapesBench results" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path / "a"), "--label", "x, 1", "--label", "y"]) == 2
    assert "1 results for 2 labels" in capsys.readouterr().err


def test_repeats_sample_every_prompt_with_distinct_fixed_seeds(tmp_path, capsys) -> None:
    """`repeats` = 2 runs every prompt twice, the second pass at other seeds that still lay out; the oracle stays
    exact, results record the repeat and seed, and the summary carries standard errors over prompts."""
    from cinegen.cli import main
    from cinegen.world.bench import repeat_seed

    res = run_shapes_bench(oracle_generate, tmp_path, limit=2, repeats=2, save_videos=True)
    assert sorted(f.name for f in (tmp_path / "videos").iterdir()) == sorted(
        f"{r['id']}{'-r1' if r['repeat'] else ''}.mp4" for r in res["items"]
    )
    res = run_shapes_bench(oracle_generate, tmp_path, limit=4, repeats=2)
    items = res["items"]
    assert res["videos"] == 8 and res["repeats"] == 2 and res["suite_size"] == 52
    assert [r["repeat"] for r in items] == [0] * 4 + [1] * 4
    assert [r["id"] for r in items[:4]] == [r["id"] for r in items[4:]]
    suite = {it.id: it for it in default_suite()}
    assert all(r["seed"] == suite[r["id"]].seed for r in items[:4])
    assert all(r["seed"] == repeat_seed(suite[r["id"]], 1) != suite[r["id"]].seed for r in items[4:])
    assert repeat_seed(suite[items[0]["id"]], 1) == repeat_seed(suite[items[0]["id"]], 1)  # fixed, not random
    assert len({r["seed"] for r in items}) == 8
    s = res["summary"]
    assert all(s["all"][a] == 1.0 for a in ("color", "shape", "count", "motion", "background"))
    assert s["all"]["stderr"]["color"] == 0.0 and s["held_out"]["stderr"]["shape"] == 0.0  # 2 prompts each
    assert "Standard error over prompts (points, held-out / all" in (tmp_path / "results.md").read_text()
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        run_shapes_bench(oracle_generate, tmp_path, limit=1, repeats=0)
    assert main(["eval", "shapes", "--oracle", "--limit", "1", "--repeats", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


def test_still_mode_scores_what_one_frame_shows(tmp_path, capsys) -> None:
    """`frames=1` (`--frames 1`): every prompt is generated as one frame and scored on colour, shape, size, count
    and background (the ground truth's first frame scores 100 %); the temporal attributes are n/a, not zero."""
    from cinegen.world.cli import main

    asked = []

    def oracle_still(prompt: str, num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
        asked.append(num_frames)
        return oracle_generate(prompt, num_frames, height, width, seed)

    res = run_shapes_bench(oracle_still, tmp_path, limit=6, frames=1)
    assert asked == [1] * 6 and res["frames"] == 1
    assert all(r["output_shape"][0] == 1 and r["format"][0] == 1 for r in res["items"])
    s = res["summary"]["all"]
    assert all(s[a] == 1.0 for a in ("color", "shape", "size", "count", "background")), s
    assert all(s[a] is None for a in ("motion", "speed", "dynamic", "consistency")), s
    assert all(m["objects"] == 0 for m in res["by_motion"].values())
    assert res["direction"]["objects"] > 0 and res["direction"]["detected"] == 0  # no direction from one frame
    md = (tmp_path / "results.md").read_text()
    assert "Still mode: one frame per prompt" in md and "| motion | n/a | n/a | n/a |" in md
    with pytest.raises(ValueError, match="frames must be >= 1"):
        run_shapes_bench(oracle_generate, tmp_path, limit=1, frames=0)
    assert main(["eval", "shapes", "--oracle", "--limit", "1", "--frames", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--frames must be >= 1" in capsys.readouterr().err


def _result(scores: list[tuple[str, str, int, float | None]]) -> dict:
    """A minimal results.json of (prompt id, group, seed, colour score) rows."""
    items = [{"id": i, "group": g, "seed": s, "scores": {"color": c, "shape": 1.0}} for i, g, s, c in scores]
    return {"items": items}


def test_paired_differences_average_repeats_per_prompt_then_over_prompts() -> None:
    from cinegen.world.bench import paired_differences

    base = _result(
        [("a", "held_out", 1, 1.0), ("b", "held_out", 2, 0.0), ("c", "held_out", 3, 1.0), ("d", "seen", 4, 0.5)]
        + [("a", "held_out", 11, 0.0), ("z", "seen", 9, 0.0)]  # a's second repeat; z has no partner
    )
    other = _result(
        [("a", "held_out", 1, 1.0), ("b", "held_out", 2, 1.0), ("c", "held_out", 3, 0.0), ("d", "seen", 4, None)]
        + [("a", "held_out", 11, 0.0), ("a", "held_out", 99, 1.0)]  # seed 99 was not run by base: unpaired
    )
    d = paired_differences(base, other, ["color", "shape"])
    ho = d["held_out"]["color"]  # per prompt: a (0 + 0) / 2 = 0, b +1, c -1
    assert ho["prompts"] == 3 and ho["mean"] == 0.0
    assert ho["ci95"] == pytest.approx(1.96 * 1.0 / 3**0.5, abs=1e-4)
    assert d["seen"]["color"] == {"prompts": 0, "mean": None, "ci95": None}  # d's score is None in other
    assert d["all"]["shape"] == {"prompts": 4, "mean": 0.0, "ci95": 0.0}
    assert paired_differences(base, _result([("q", "seen", 5, 1.0)]))["all"]["color"]["prompts"] == 0


def test_binding_tells_swapped_from_ignored_motion_words() -> None:
    """Each object of a multi-object scene goes its own stated way, another object's, another way, or stays."""
    from cinegen.world.bench import binding_labels, binding_summary, direction_summary, nearest_direction

    four = ("left", "right", "up", "down")
    assert nearest_direction((-0.4, 0.05), four) == "left"
    assert nearest_direction((0.0, 0.3), four) == "down"  # y grows downwards
    assert nearest_direction((0.3, -0.28)) == "up_right"  # all eight directions by default
    assert nearest_direction((0.05, 0.0)) is None  # below the analyzer's MOVE_MIN
    assert binding_labels(["left", "up"], [[-0.4, 0.0], [0.0, -0.4]], four) == ["own", "own"]
    assert binding_labels(["left", "up"], [[0.0, -0.4], [-0.4, 0.0]], four) == ["other", "other"]  # swapped
    assert binding_labels(["right", "down"], [[0.0, 0.02], None], four) == ["still", None]
    assert binding_labels(["right", "grow"], [[-0.3, 0.0], [0.0, 0.4]], four) == [None, None]  # one direction only
    labels = binding_labels(["right", "down", "grow"], [[-0.3, 0.0], [0.0, 0.4], [0.3, 0.0]], four)
    assert labels == ["neither", "own", None]
    s = binding_summary(["own", "other", None, "other", "still", "neither", "own", "own"])
    assert s == {"objects": 7, "own": round(3 / 7, 4), "other": round(2 / 7, 4), "neither": 0.1429, "still": 0.1429}
    assert binding_summary([None])["own"] is None
    rows = [
        {
            "truth": {"objects": [{"motion": "left"}, {"motion": "up"}]},
            "object_direction": [-0.4, -0.4],
            "object_displacement": [[0.0, -0.4], [-0.4, 0.0]],
        }
    ]
    assert direction_summary(rows)["binding"] == {"objects": 2, "own": 0.0, "other": 1.0, "neither": 0.0, "still": 0.0}


def test_prompt_enhancer_flag_rewrites_every_prompt(tmp_path, tiny_2b_folder, monkeypatch, capsys) -> None:
    """--prompt-enhancer shapes-tokens: a checkpoint export (no `_cinegen_defaults`) is prompted as a model trained
    on token captions is, each object placed at a start cell and token; bad styles are refused with a message."""
    import cinegen.pipeline
    from cinegen.world.cli import main

    seen: list[str] = []
    enhance = cinegen.pipeline.Pipeline.enhance

    def spy(self, prompt, request=None):  # noqa: ANN001, ANN202
        seen.append(enhance(self, prompt, request))
        return seen[-1]

    monkeypatch.setattr(cinegen.pipeline.Pipeline, "enhance", spy)
    args = ["eval", "shapes", "--model", str(tiny_2b_folder), "--steps", "2", "--limit", "2"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert seen == []  # the tiny folder has no enhancer: prompts go in as written
    assert main([*args, "--prompt-enhancer", "shapes-tokens", "--out", str(tmp_path / "tokens")]) == 0
    assert len(seen) == 2 and all(re.search(r" at c\d+ r\d+", p) for p in seen)
    assert main([*args, "--prompt-enhancer", "fancy", "--out", str(tmp_path / "fancy")]) == 2
    assert "use one of shapes, shapes-layout, shapes-tokens, none" in capsys.readouterr().err
    assert not (tmp_path / "fancy").exists()  # refused before anything is generated


def test_eval_shapes_warns_when_a_folder_has_no_generation_defaults(tmp_path, tiny_2b_folder, capsys) -> None:
    """A checkpoint export carries no `_cinegen_defaults`: the bench samples with the reference defaults (CFG 6), not
    those of the model it is compared with, so it says so and names the flags that are not set."""
    import shutil

    from cinegen.world.cli import main

    export = tmp_path / "export"
    shutil.copytree(tiny_2b_folder, export)
    index = json.loads((export / "model_index.json").read_text())
    del index["_cinegen_defaults"]
    (export / "model_index.json").write_text(json.dumps(index))
    args = ["eval", "shapes", "--model", str(export), "--steps", "2", "--limit", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert (
        "has no _cinegen_defaults" in err and "CFG 6.0, no prompt enhancer; give --guidance, --prompt-enhancer" in err
    )
    flags = ["--guidance", "3", "--prompt-enhancer", "shapes-tokens"]
    assert main([*args, *flags, "--out", str(tmp_path / "b")]) == 0
    assert "_cinegen_defaults" not in capsys.readouterr().err  # every sampling flag given: nothing to warn about
