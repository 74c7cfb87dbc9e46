"""scripts/learning_speed.py: the paired from-scratch screen runs its arms and compares their logs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_speed.py"


def _module(name: str = "learning_speed.py"):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPT.with_name(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arms_share_their_start_and_the_comparison_table(tiny_2b_folder: Path, tmp_path: Path, capsys) -> None:
    ls = _module()
    cache = tmp_path / "clips.pt"
    base = ["--model", str(tiny_2b_folder), "--clips", "2", "--eval-clips", "2", "--cache", str(cache)]
    logs = {}
    for arm in ("default", "scale", "stills-first"):
        logs[arm] = tmp_path / f"{arm}.json"
        ls.main([*base, "--arm", arm, "--steps", "2", "--every", "1", "--stills-steps", "1", "--out", str(logs[arm])])
    runs = {arm: json.loads(p.read_text()) for arm, p in logs.items()}
    assert [e["step"] for e in runs["default"]["log"]] == [0, 1, 2]
    # same initial weights: default and stills-first agree before training; scale differs only by the rescale
    assert runs["default"]["log"][0] == {
        **runs["stills-first"]["log"][0],
        "seconds": runs["default"]["log"][0]["seconds"],
    }
    assert runs["default"]["log"][2]["x0_mse"] != runs["stills-first"]["log"][2]["x0_mse"]
    table = ls.compare([str(logs["default"]), str(logs["scale"])])
    assert table.count("| 2 |") == 2 and "scale" in table and "%)" in table
    with pytest.raises(SystemExit, match="pass another --cache"):  # the cache belongs to other arguments
        ls.main([*base[:2], "--clips", "3", "--eval-clips", "2", "--cache", str(cache), "--out", str(tmp_path / "x")])


def test_layout_screen_arms_share_stills_and_start(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """scripts/layout_screen.py: one cache of stills with both caption styles; the arms start from the same weights,
    see the same images, and log x̂0 errors, generation scores (position for the layout arm) and a sample sheet."""
    screen = _module("layout_screen.py")
    cache = tmp_path / "stills.pt"
    base = ["--model", str(tiny_2b_folder), "--cache", str(cache)]
    screen.main([*base, "--prep", "--n-train", "3", "--n-eval", "8"])
    data = torch.load(cache, weights_only=False)
    assert data["train"]["X"].shape[:2] == (3, 1) and data["eval"]["E_layout"].shape[0] == 8
    assert data["train"]["captions"]["plain"] != data["train"]["captions"]["layout"]
    assert " in the " in " ".join(data["train"]["captions"]["layout"]) or " on the " in " ".join(
        data["train"]["captions"]["layout"]
    )
    with pytest.raises(SystemExit):  # a run needs its log
        screen.main([*base, "--arm", "plain"])
    runs = {}
    for arm in ("plain", "layout", "cell", "tokens"):
        out = tmp_path / f"{arm}.json"
        screen.main(
            [*base, "--arm", arm, "--steps", "2", "--every", "1", "--gen-every", "2", "--gen-n", "8", "--out", str(out)]
        )
        runs[arm] = json.loads(out.read_text())
        assert out.with_suffix(".2.png").is_file()
    first = {arm: r["log"][0]["x0_mse"] for arm, r in runs.items()}
    assert set(first["plain"]) == {str(a) for a in screen.LEVELS}
    gen = {arm: r["log"][-1]["gen"] for arm, r in runs.items()}
    assert "position" in gen["layout"] and "position" not in gen["plain"] and "shape" in gen["plain"]
    assert "position" in gen["cell"] and runs["cell"]["arm"] == "cell"
    assert "token" in gen["tokens"] and "token" in gen["cell"] and "token" not in gen["layout"]
    # --score-model: a model folder's still mode on the same eval stills and token captions, scored as the arms are
    scored = tmp_path / "folder.json"
    screen.main([*base, "--score-model", str(tiny_2b_folder), "--gen-n", "8", "--out", str(scored)])
    res = json.loads(scored.read_text())
    assert res["stills"] == 8 and set(res["gen"]) == set(gen["tokens"]) and scored.with_suffix(".png").is_file()


def test_layout_screen_cell_arm_names_each_token(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """--arm cell: the layout caption plus each object's colour, shape and the 8-pixel token of its centre, every
    word in the fresh T5's vocabulary."""
    from cinegen.world.render import ClipSpec, ObjectSpec

    screen = _module("layout_screen.py")
    objs = (
        ObjectSpec("circle", "red", "large", "still", None, 0.25, 0.75),
        ObjectSpec("star", "blue", "small", "still", None, 0.5, 0.5),
    )
    spec = ClipSpec(objs, width=96, height=96, num_frames=1, background="white").to_dict()  # star: the centre
    assert screen.cell_caption(spec, 8) == " Centres: red circle c3 r9; blue star c6 r6."
    cache = tmp_path / "stills.pt"
    screen.main(["--model", str(tiny_2b_folder), "--cache", str(cache), "--prep", "--n-train", "3", "--n-eval", "2"])
    data = torch.load(cache, weights_only=False)
    screen.add_arm(data, "cell", 8)
    screen.encode_arm(data, "cell", 32)
    for split in ("train", "eval"):
        caps = data[split]["captions"]
        assert all(
            c == lay + screen.cell_caption(sd, 8)
            for c, lay, sd in zip(caps["cell"], caps["layout"], data[split]["specs"], strict=True)
        )
        assert data[split]["E_cell"].shape == data[split]["E_layout"].shape
    text = screen.text_encoder(screen.cached_captions(data), 32)
    ids = text.tokenize(data["train"]["captions"]["cell"])
    assert not (ids == text.tokenizer.unk_token_id).any()  # "centres", "c3", "r9": all known words


def test_layout_screen_tokens_arm_and_shared_text(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """--arm tokens trains on the product's token captions (`dense_caption(truth(tokens=True))`, what `world render
    --token-captions` writes); `--arm layout --text-over tokens` encodes the layout captions by the very T5 the
    tokens arm gets, so the two arms differ only in their captions."""
    from cinegen.world.captions import dense_caption
    from cinegen.world.render import ClipSpec

    screen = _module("layout_screen.py")
    cache = tmp_path / "stills.pt"
    screen.main(["--model", str(tiny_2b_folder), "--cache", str(cache), "--prep", "--n-train", "3", "--n-eval", "2"])
    data = torch.load(cache, weights_only=False)
    screen.add_arm(data, "tokens", 8)
    for split in ("train", "eval"):
        caps, specs = data[split]["captions"], data[split]["specs"]
        want = [dense_caption(ClipSpec.from_dict(sd).truth(tokens=True)) for sd in specs]
        assert caps["tokens"] == want and all(" at c" in c for c in want)
    text = screen.text_encoder(screen.cached_captions(data), 32)
    assert not (text.tokenize(data["train"]["captions"]["tokens"]) == text.tokenizer.unk_token_id).any()
    screen.encode_arm(data, "layout", 32)
    with torch.no_grad():
        assert torch.equal(data["eval"]["E_layout"], text.encode(data["eval"]["captions"]["layout"]).float())
    base = ["--model", str(tiny_2b_folder), "--cache", str(cache), "--steps", "1", "--every", "1", "--gen-every", "9"]
    logs = {}
    for name, extra in (("layout", []), ("shared", ["--text-over", "tokens"])):
        screen.main([*base, "--arm", "layout", *extra, "--out", str(tmp_path / f"{name}.json")])
        logs[name] = json.loads((tmp_path / f"{name}.json").read_text())["log"]
    assert logs["layout"][0]["x0_mse"] != logs["shared"][0]["x0_mse"]  # another T5: other embeddings


def test_layout_screen_resume_equals_uninterrupted(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """A run cut after step 1 and continued with --resume reaches exactly the weights, optimiser state and log of
    an uninterrupted run (the batch generator's state is saved with the weights); --score samples a split with the
    checkpoint's weights."""
    screen = _module("layout_screen.py")
    cache = tmp_path / "stills.pt"
    base = ["--model", str(tiny_2b_folder), "--cache", str(cache)]
    screen.main([*base, "--prep", "--n-train", "3", "--n-eval", "2"])
    run = [*base, "--arm", "layout", "--every", "1", "--gen-every", "9"]
    screen.main([*run, "--steps", "3", "--out", str(tmp_path / "whole.json")])
    screen.main([*run, "--steps", "1", "--out", str(tmp_path / "cut.json")])
    screen.main([*run, "--steps", "3", "--resume", "--out", str(tmp_path / "cut.json")])
    whole, cut = (torch.load(tmp_path / f"{n}.ckpt.pt", weights_only=False) for n in ("whole", "cut"))
    assert cut["step"] == whole["step"] == 3
    for k, v in whole["model"].items():
        assert torch.equal(v, cut["model"][k]), k
    assert torch.equal(whole["g"], cut["g"])
    m_whole, m_cut = whole["opt"]["state"], cut["opt"]["state"]
    assert all(torch.equal(m_whole[i]["exp_avg_sq"], m_cut[i]["exp_avg_sq"]) for i in m_whole)
    x0 = lambda log: [(e["step"], e["x0_mse"]) for e in log]  # noqa: E731  (the cut run also scored its last step)
    assert x0(whole["log"]) == x0(cut["log"]) and [e["step"] for e in cut["log"]] == [0, 1, 2, 3]
    # --score: the checkpoint's weights sample the train captions too (memorised vs generalised)
    screen.main([*run, "--score", "train", "--gen-n", "3", "--out", str(tmp_path / "whole.json")])
    scored = json.loads((tmp_path / "whole.score-train-3.json").read_text())
    assert scored["split"] == "train" and scored["n"] == 3 and {"shape", "position"} <= set(scored["gen"])
    assert len(json.loads((tmp_path / "whole.json").read_text())["log"]) == 4  # the run's log is left as it was
    with pytest.raises(SystemExit, match="no checkpoint"):
        screen.main([*run, "--score", "eval", "--out", str(tmp_path / "none.json")])


def test_layout_screen_decoder_free_spaces_round_trip(tmp_path: Path) -> None:
    """--space pixel is lossless (4x4 unshuffle at unit RMS); --space pca keeps the top-k components of the train
    stills' 4x4 patches, each at unit RMS, and `unlatent` inverts both back to [-1, 1] frames; --space latent-white
    puts each VAE channel at unit RMS."""
    from cinegen.world.dataset import clip_spec
    from cinegen.world.render import ClipSpec, render_clip

    screen = _module("layout_screen.py")
    specs = [clip_spec(0, i, aspects=["square"], frame_counts=[1])[0].to_dict() for i in range(6)]
    data = {"train": {"specs": specs[:4]}, "eval": {"specs": specs[4:]}}
    cache = tmp_path / "stills.pt"
    frames = torch.from_numpy(render_clip(ClipSpec.from_dict(specs[4]))).float() / 127.5 - 1  # (1, H, W, 3)
    truth = frames.permute(3, 0, 1, 2)[None]  # (1, 3, 1, H, W)
    X, fit = screen.load_stills(data, "train", "pixel", cache)
    assert X.shape == (4, 1, 48, 24, 24) and abs(float(X.square().mean()) - 1) < 1e-4
    XV, _ = screen.load_stills(data, "eval", "pixel", cache, fit=fit)
    assert (screen.unlatent(XV[:1], fit) - truth).abs().max() < 0.01  # bf16 cache: ~3 bits of a uint8 step
    X, fit = screen.load_stills(data, "train", "pca", cache, k=12)
    assert X.shape == (4, 1, 12, 24, 24)
    assert torch.allclose(X.square().mean((0, 1, 3, 4)), torch.ones(12), atol=1e-3)  # each component at unit RMS
    XV, _ = screen.load_stills(data, "eval", "pca", cache, k=12, fit=fit)
    psnr = 10 * torch.log10(4 / (screen.unlatent(XV[:1], fit) - truth).square().mean())
    assert psnr > 25, float(psnr)  # flat colours: 12 of 48 components fitted on 4 stills keep ~28 dB
    data["train"]["X"] = torch.randn(4, 1, 16, 24, 24) * torch.linspace(0.2, 3.0, 16).view(1, 1, 16, 1, 1) + 0.5
    X, fit = screen.load_stills(data, "train", "latent-white", cache)  # VAE latents, each channel at unit RMS
    assert torch.allclose(X.square().mean((0, 1, 3, 4)), torch.ones(16), atol=1e-4)
    assert torch.allclose(X / fit["scale"], data["train"]["X"])


def test_layout_screen_aux_shape_targets_and_ema(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """--aux-shape: each token's target is the SUB x SUB shape-label grid of its pixels (row-major tokens, as the
    patch embedding orders them); the head reads block `--aux-layer`, so its loss trains that block and those before
    it, not the later ones. --ema keeps a second, scored and saved copy."""
    from cinegen.world.dataset import clip_spec
    from cinegen.world.render import ClipSpec, shape_label_map

    screen = _module("layout_screen.py")
    specs = [clip_spec(0, i, aspects=["square"], frame_counts=[1])[0].to_dict() for i in range(3)]
    labels = screen.shape_targets(specs, 8, tmp_path / "stills.pt")  # 8-pixel tokens: 12 x 12, cells of 2 px
    assert labels.shape == (3, 144, 16) and (tmp_path / "stills.shapes8.pt").is_file()
    full = labels[1].view(12, 12, 4, 4).permute(0, 2, 1, 3).reshape(48, 48)  # tokens back to the cell grid
    assert torch.equal(full, torch.from_numpy(shape_label_map(ClipSpec.from_dict(specs[1]), 0, 2)).long())
    assert int(labels.max()) >= 1

    from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig

    cfg = TransformerConfig(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=8, num_layers=3, sample_width=24, sample_height=24, sample_frames=1, max_text_seq_length=5,
    )  # fmt: skip
    model = CogVideoXTransformer(cfg)
    aux, head = screen.shape_aux(model, labels, 2, 5, 0.5)
    model(torch.randn(2, 1, 4, 24, 24), torch.randn(2, 5, 8), torch.tensor([10, 500]))
    loss = aux(torch.tensor([0, 2]))
    assert loss.ndim == 0 and 0.5 * 0.5 < float(loss.detach()) < 0.5 * 5  # ~0.5 ln 7 at init
    loss.backward()
    grads = [
        any(p.grad is not None and p.grad.abs().sum() > 0 for p in b.parameters()) for b in model.transformer_blocks
    ]
    assert grads == [True, True, False] and all(p.grad is not None for p in head.parameters())

    cache = tmp_path / "tiny.pt"
    base = ["--model", str(tiny_2b_folder), "--cache", str(cache)]
    screen.main([*base, "--prep", "--n-train", "3", "--n-eval", "8"])
    out = tmp_path / "aux.json"
    screen.main(
        [*base, "--arm", "layout", "--steps", "2", "--every", "1", "--gen-every", "2", "--gen-n", "8"]
        + ["--aux-shape", "0.5", "--aux-layer", "1", "--ema", "0.9", "--out", str(out)]
    )
    log = json.loads(out.read_text())
    assert log["aux_shape"] == 0.5 and log["ema"] == 0.9
    last = log["log"][-1]
    assert {"gen", "gen_ema", "x0_mse_ema", "aux_loss"} <= set(last) and last["aux_loss"] > 0
    assert out.with_suffix(".2_ema.png").is_file() and (tmp_path / "aux_ema.pt").is_file()
    out = tmp_path / "text.json"  # a trained T5 and shape-swapped inputs (VAE-encoded beside the cache)
    screen.main([*base, "--arm", "layout", "--steps", "2", "--every", "2", "--gen-every", "2", "--gen-n", "8"]
                + ["--train-text", "--swap-shapes", "1", "--out", str(out)])  # fmt: skip
    log = json.loads(out.read_text())
    assert log["train_text"] and log["swap_shapes"] == 1 and "gen" in log["log"][-1]
    assert (tmp_path / "tiny.swap-latent.pt").is_file() and (tmp_path / "text_text.pt").is_file()
    with pytest.raises(SystemExit, match="blocks 1.."):
        screen.main([*base, "--aux-shape", "0.5", "--aux-layer", "99", "--out", str(out)])
    with pytest.raises(SystemExit, match="EMA"):
        screen.main([*base, "--train-text", "--ema", "0.9", "--out", str(out)])


def test_layout_screen_shape_swap_inputs(tmp_path: Path) -> None:
    """--swap-shapes: the swapped stills change every object's shape and nothing else; `train_step` with a perturb
    that changes nothing takes exactly the plain step (target v = (√ᾱ x_t - x0) / √(1 - ᾱ) is the usual v), and the
    perturb swaps only kept captions at ᾱ <= max_abar."""
    from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig
    from cinegen.world.dataset import clip_spec
    from cinegen.world.render import ClipSpec

    screen = _module("layout_screen.py")
    specs = [clip_spec(0, i, aspects=["square"], frame_counts=[1])[0].to_dict() for i in range(8)]
    swapped = screen.swapped_specs(specs)
    for a, b in zip(specs, swapped, strict=True):
        ClipSpec.from_dict(b)  # valid (a rotating object never becomes a circle or a ring)
        assert all(oa["shape"] != ob["shape"] for oa, ob in zip(a["objects"], b["objects"], strict=True))
        assert [{**o, "shape": ""} for o in a["objects"]] == [{**o, "shape": ""} for o in b["objects"]]
        assert {k: v for k, v in a.items() if k != "objects"} == {k: v for k, v in b.items() if k != "objects"}

    cfg = TransformerConfig(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=8, num_layers=1, sample_width=8, sample_height=8, sample_frames=1, max_text_seq_length=5,
    )  # fmt: skip
    X, E = torch.randn(6, 1, 4, 8, 8), torch.randn(6, 5, 8)
    ac = torch.linspace(0.999, 0.001, 1000)  # ᾱ_t
    params = []
    for perturb in (None, lambda idx, x0, a, kept: x0.clone()):
        torch.manual_seed(0)
        model = CogVideoXTransformer(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        _module().train_step(model, opt, X, E, ac, torch.Generator().manual_seed(1), 4, perturb=perturb)
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(params[0], params[1], atol=1e-6)

    data = {"train": {"specs": specs[:4]}}
    X, fit = screen.load_stills(data, "train", "pixel", tmp_path / "s.pt")
    perturb = screen.shape_swap(None, data, "pixel", tmp_path / "s.pt", 8, fit, 1.0, 0.5)
    XS, _ = screen.load_stills({"swap": {"specs": swapped[:4]}}, "swap", "pixel", tmp_path / "s.pt", fit=dict(fit))
    idx, a = torch.tensor([0, 1, 2, 3]), torch.tensor([0.1, 0.1, 0.9, 0.1]).view(4, 1, 1, 1, 1)
    out = perturb(idx, X[idx], a, torch.tensor([True, False, True, True]))
    assert torch.equal(out[0], XS[0]) and torch.equal(out[3], XS[3])  # swapped
    assert torch.equal(out[1], X[1]) and torch.equal(out[2], X[2])  # caption dropped / too little noise


def test_shape_word_toy_modes(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """scripts/shape_word_toy.py: six one-object stills (one per shape) learned from random, frozen-T5 or trained-T5
    caption embeddings; each mode logs analyzer scores and writes a strip of 12 samples."""
    from cinegen.world.vocab import SHAPES

    screen, toy = _module("layout_screen.py"), _module("shape_word_toy.py")
    specs = toy.toy_specs()
    assert [s["objects"][0]["shape"] for s in specs] == list(SHAPES)
    assert {(s["objects"][0]["x"], s["objects"][0]["color"]) for s in specs} == {(0.5, "red")}
    varied = toy.toy_specs(variants=3, vary=("position", "color"))  # shape-major: 3 stills per shape
    assert [s["objects"][0]["shape"] for s in varied] == [s for s in SHAPES for _ in range(3)]
    assert len({(s["objects"][0]["x"], s["objects"][0]["y"]) for s in varied}) == 18
    assert all(0.25 <= s["objects"][0]["x"] <= 0.75 for s in varied)
    grid = {round(s["objects"][0]["x"] * 96, 6) for s in toy.toy_specs(variants=8, vary=("grid",))}
    assert grid <= {24.0, 32.0, 40.0, 48.0, 56.0, 64.0, 72.0} and len(grid) > 1  # whole tokens from the centre
    assert all(abs(s["objects"][0]["y"] * 96 - 48) < 4 for s in toy.toy_specs(variants=8, vary=("jitter",)))
    cells = [toy.token_cell_caption(sd) for sd in toy.toy_specs(variants=16, vary=("grid",))]
    assert " Its centre is in column c3 and row r3." in cells and len(set(cells)) > 20  # 8-px tokens 3..9
    assert all(int(c.split("column c")[1].split()[0]) in range(3, 10) for c in cells)
    rungs = toy.toy_specs(variants=8, vary=("grid", "color", "size", "background", "count"))
    assert [s["objects"][0]["shape"] for s in rungs] == [s for s in SHAPES for _ in range(8)]  # the listed shape first
    assert {len(s["objects"]) for s in rungs} == {1, 2, 3} and len({s["background"] for s in rungs}) > 2
    assert {o["size"] for s in rungs for o in s["objects"]} == {"small", "large"}
    for s in rungs:  # no two objects overlap
        objs = s["objects"]
        assert all(
            math.hypot(a["x"] - b["x"], a["y"] - b["y"]) > 0.125 * 2 for i, a in enumerate(objs) for b in objs[i + 1 :]
        )
    # golden: the places of session 20's recorded grid / position runs (checked against their cached pixels), which
    # the later rungs' draws must not move
    xy = lambda specs: [(round(o["x"] * 96, 2), round(o["y"] * 96, 2)) for o in (s["objects"][0] for s in specs)]  # noqa: E731
    assert xy(toy.toy_specs(variants=16, vary=("grid",))[:4]) == [(24, 24), (64, 48), (56, 56), (56, 24)]
    assert xy(toy.toy_specs(variants=16, vary=("position",))[:2]) == [(30.17, 47.97), (52.87, 25.38)]
    cache = tmp_path / "stills.pt"
    screen.main(["--model", str(tiny_2b_folder), "--cache", str(cache), "--prep", "--n-train", "3", "--n-eval", "2"])
    out = tmp_path / "tokens"  # the product's token captions on the multi-object rung: scored on the token too
    toy.main(["--model", str(tiny_2b_folder), "--cache", str(cache), "--variants", "2", "--vary", "grid", "count"]
             + ["--token-captions", "--steps", "1", "--every", "1", "--samples", "1", "--out", str(out)])  # fmt: skip
    assert "token" in json.loads(out.with_suffix(".jsonl").read_text())
    for mode in toy.MODES:
        out = tmp_path / mode
        vary = ["--variants", "2", "--vary", "position", "--token-cell"] if mode == "t5" else []
        arch = ["--patch", "1", "--positions", "rope", "--samples", "1"] if mode == "random" else []
        toy.main(["--model", str(tiny_2b_folder), "--cache", str(cache), "--text", mode, "--steps", "2"]
                 + ["--every", "2", "--out", str(out), *vary, *arch])  # fmt: skip
        entry = json.loads(out.with_suffix(".jsonl").read_text().splitlines()[-1])
        assert entry["step"] == 2 and "shape" in entry
        assert (entry["patch"], entry["rope"]) == ((1, True) if arch else (2, False))  # the tiny 2B has sin-cos
        strip = np.asarray(Image.open(out.with_suffix(".2.png")))
        assert strip.shape[1] == strip.shape[0] * 6 * (1 if arch else 2)  # square samples: per shape x six shapes
        weights = torch.load(out.with_suffix(".weights.pt"))
        assert weights["patch_embed.proj.weight"].shape[-1] == (1 if arch else 2)  # --patch
    # --eval-seed: the t5 run's weights sample fresh stills (other places) of every shape, without training
    fresh = ["--model", str(tiny_2b_folder), "--cache", str(cache), "--text", "t5", "--out", str(tmp_path / "t5")]
    toy.main([*fresh, "--variants", "2", "--vary", "position", "--token-cell", "--samples", "1", "--eval-seed", "5"])
    entry = json.loads((tmp_path / "t5.fresh-5.json").read_text())
    assert entry["n"] == 6 and entry["unseen"] == 6 and "position" in entry and "shape" in entry
    assert len(json.loads((tmp_path / "t5.jsonl").read_text().splitlines()[-1])) > 0  # the run's log is kept
    with pytest.raises(SystemExit, match="random embeddings"):
        toy.main([*fresh[:-4], "--text", "random", "--out", str(tmp_path / "random"), "--eval-seed", "5"])
    with pytest.raises(SystemExit, match="no .*weights"):
        toy.main([*fresh[:-2], "--out", str(tmp_path / "none"), "--eval-seed", "5"])
    with pytest.raises(SystemExit, match="not found"):
        toy.main(["--cache", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x")])


def test_shape_word_toy_factored_space_and_init(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """`--space factored`: coverage PCA + the two colours rebuild the renders (>= 35 dB) so the analyzer reads them
    back; a one-object rung trains in it, and `--init` starts another rung from those weights (a curriculum)."""

    from cinegen.video import Video
    from cinegen.world.analyze import analyze_video, score_video
    from cinegen.world.bench import still_truth
    from cinegen.world.render import ClipSpec

    screen, toy = _module("layout_screen.py"), _module("shape_word_toy.py")
    specs = toy.toy_specs(variants=4, vary=("grid", "color", "background", "count"))
    X, fit = toy.factored_latents(specs)
    assert X.shape == (24, 1, toy.MASK_K + 6, 24, 24)
    assert torch.allclose(X.square().mean((0, 1, 3, 4)), torch.ones(toy.MASK_K + 6), atol=1e-4)  # unit RMS channels
    _, colours, renders = toy.factored_stills(specs)
    assert colours.min() >= -1 and colours.max() <= 1
    multi = [i for i, sd in enumerate(specs) if len(sd["objects"]) > 1]
    assert multi and len(colours[multi[0], :3].flatten(1).unique(dim=1).T) > 1  # each object its own colour region
    for i in (0, 9, 23, multi[0]):  # coverage x colours is the render, and the analyzer reads it back in full
        video = toy.unfactor(X[i : i + 1], fit)  # (1, 3, 1, 96, 96)
        mse = (video[0, :, 0] - renders[i]).square().mean().item()
        assert 10 * math.log10(4 / mse) >= 35
        truth = still_truth(ClipSpec.from_dict(specs[i]).truth())
        res = score_video(analyze_video(Video.from_tensor(video).frames), truth)
        assert (res["shape"], res["color"], res["count"], res["background"]) == (1.0,) * 4, res
    noise = 0.3 * torch.randn(X[:1].shape, generator=torch.Generator().manual_seed(0))  # (1, 1, K + 6, h, w)
    noise[:, :, : toy.MASK_K] = 0  # on the colour maps only
    per_patch = (noise[:, 0] / fit["scale"])[:, toy.MASK_K :].abs().mean()  # in colour units
    err = (toy.unfactor(X[:1] + noise, fit) - toy.unfactor(X[:1], fit)).abs().mean()
    assert err < 0.3 * per_patch  # the median filter removes most of it
    with pytest.raises(SystemExit, match="solid"):
        toy.factored_stills([{**specs[0], "background_style": "stripes"}])
    said = "One shape: A large red circle in the top left at c3 r2 stays still. Plain white background."
    unsaid = "One shape: A large circle in the top left at c3 r2 stays still. Plain background."
    assert toy.unsay(said, ["color", "background"]) == unsaid
    assert toy.unsay(said, []) == said
    cache = tmp_path / "stills.pt"
    screen.main(["--model", str(tiny_2b_folder), "--cache", str(cache), "--prep", "--n-train", "3", "--n-eval", "2"])
    base = ["--model", str(tiny_2b_folder), "--cache", str(cache), "--variants", "2", "--samples", "1"]
    first, second = tmp_path / "plain", tmp_path / "colour"
    toy.main([*base, "--space", "factored", "--vary", "grid", "--steps", "1", "--every", "1", "--out", str(first)])
    w0 = torch.load(first.with_suffix(".weights.pt"))
    assert w0["patch_embed.proj.weight"].shape[1] == toy.MASK_K + 6  # the factored channels in
    init = {k: v + 0.5 for k, v in w0.items()}  # marked: far from any fresh initialisation
    torch.save(init, tmp_path / "init.pt")
    curriculum = ["--vary", "grid", "color", "background", "--init", str(tmp_path / "init.pt")]
    toy.main([*base, "--space", "factored", *curriculum, "--steps", "1", "--every", "1", "--out", str(second)])
    assert json.loads(second.with_suffix(".jsonl").read_text())["step"] == 1
    w1 = torch.load(second.with_suffix(".weights.pt"))
    step = max((w1[k].float() - init[k].float()).abs().max().item() for k in w0)
    assert 0 < step < 1e-2  # one AdamW step (lr 3e-4) on from the given weights
    toy.main([*base, "--space", "factored", *curriculum[:4], "--out", str(second), "--eval-seed", "5"])
    assert json.loads((tmp_path / "colour.fresh-5.json").read_text())["n"] == 6
    with pytest.raises(SystemExit, match="--init: .* not found"):
        toy.main([*base, "--init", str(tmp_path / "none.pt"), "--steps", "1", "--out", str(tmp_path / "x")])


def test_shape_word_toy_vae_space(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """`--space vae --vae FOLDER`: the toy trains in another VAE's latents (unit RMS per channel) and decodes its
    samples with that VAE; `--vae` alone is refused."""
    from cinegen.pipeline import load_pipeline

    screen, toy = _module("layout_screen.py"), _module("shape_word_toy.py")
    pipe = load_pipeline(tiny_2b_folder)
    specs = toy.toy_specs(variants=2, vary=("grid", "color"))
    X, fit = toy.vae_latents(pipe, specs)
    C = pipe.vae.config.latent_channels
    assert X.shape[:3] == (12, 1, C) and fit["scale"].shape == (1, C, 1, 1)
    assert torch.allclose(X.square().mean((0, 1, 3, 4)), torch.ones(C), atol=1e-3)
    video = toy.unvae(X[:1], pipe, fit)  # the VAE's own decode of the unscaled latent
    want = pipe.decode(screen.vae_stills(pipe, specs[:1]).float()).float().clamp(-1, 1)
    assert torch.allclose(video, want, atol=1e-4)
    cache = tmp_path / "stills.pt"
    screen.main(["--model", str(tiny_2b_folder), "--cache", str(cache), "--prep", "--n-train", "3", "--n-eval", "2"])
    base = ["--model", str(tiny_2b_folder), "--cache", str(cache), "--variants", "2", "--samples", "1"]
    out = tmp_path / "vae"
    toy.main([*base, "--space", "vae", "--vae", str(tiny_2b_folder), "--steps", "1", "--every", "1", "--out", str(out)])
    assert "shape" in json.loads(out.with_suffix(".jsonl").read_text())
    assert torch.load(out.with_suffix(".weights.pt"))["patch_embed.proj.weight"].shape[1] == C
    with pytest.raises(SystemExit, match="--vae needs --space vae"):
        toy.main([*base, "--vae", str(tiny_2b_folder), "--steps", "1", "--out", str(tmp_path / "x")])


def test_layout_screen_other_vae(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """`--vae FOLDER`: the screen re-encodes the cache's stills with that VAE (cached beside the cache, keyed by its
    weights), trains on them and decodes its samples with it; spaces without a VAE refuse it."""
    from cinegen.models.io import save_component_folder
    from cinegen.pipeline import load_pipeline
    from cinegen.train.trainer import load_vae_folder

    screen = _module("layout_screen.py")
    vae = load_vae_folder(tiny_2b_folder)
    with torch.no_grad():
        for p in vae.encoder.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    other = save_component_folder(vae, vae.config, tmp_path / "other-vae")
    cache = tmp_path / "stills.pt"
    base = ["--model", str(tiny_2b_folder), "--cache", str(cache)]
    screen.main([*base, "--prep", "--n-train", "3", "--n-eval", "2"])
    data = torch.load(cache, weights_only=False)
    pipe = load_pipeline(tiny_2b_folder)
    screen.restill(pipe, data, cache, str(other))
    enc = next(vae.encoder.parameters())
    assert torch.equal(next(pipe.vae.encoder.parameters()).to(enc), enc)  # the pipeline now holds the other VAE
    assert [len(list(tmp_path.glob(f"stills.vae-*-{split}.pt"))) for split in ("train", "eval")] == [1, 1]
    want = screen.vae_stills(pipe, data["train"]["specs"])  # the other VAE's latents, not the cached ones
    assert torch.equal(data["train"]["X"], want) and data["eval"]["X"].shape[0] == 2
    assert not torch.allclose(want.float(), torch.load(cache, weights_only=False)["train"]["X"].float())
    out = tmp_path / "other.json"
    run = [*base, "--arm", "plain", "--space", "latent-white", "--vae", str(other), "--steps", "1", "--every", "1"]
    screen.main([*run, "--gen-every", "1", "--gen-n", "2", "--out", str(out)])
    log = json.loads(out.read_text())
    assert log["vae"] == str(other) and "shape" in log["log"][-1]["gen"]
    assert len(list(tmp_path.glob("stills.vae-*.pt"))) == 2  # the same key: the run reused the cached latents
    with pytest.raises(SystemExit, match="--vae re-encodes"):
        screen.main([*base, "--space", "pca", "--vae", str(other), "--steps", "1", "--out", str(tmp_path / "x.json")])


def test_coverage_probe(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """scripts/coverage_probe.py: pairs differ in the shape only; the probe scores the swaps and writes its files."""
    probe = _module("coverage_probe.py")
    pairs = probe.pair_specs(4, seed=0)
    for a, b in pairs:
        (oa,), (ob,) = a["objects"], b["objects"]
        assert oa["shape"] != ob["shape"] and {**oa, "shape": None} == {**ob, "shape": None}
        assert {**a, "objects": None} == {**b, "objects": None} and a["background_style"] == "solid"
    out = tmp_path / "probe"
    probe.main([str(tiny_2b_folder), "--k", "2", "--n", "2", "--out", str(out)])
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["n"] == 2 and res["k"] == 2 and 0 <= res["shape_follows"] <= 100 and res["code_rel_mse"] > 0
    assert np.asarray(Image.open(out.with_suffix(".png"))).shape == (2 * 96, 3 * 96, 3)  # A | B | swap rows
    with pytest.raises(SystemExit, match="--k must be in 1.."):
        probe.main([str(tiny_2b_folder), "--k", "99", "--out", str(out)])
