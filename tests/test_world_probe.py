"""Text-conditioning probes (cinegen.world.probe): attribute swaps, latent footprints, and the probes themselves
on a tiny random model (a model blind to its text must score exactly 0)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cinegen
from cinegen.world import probe
from cinegen.world import vocab as V
from cinegen.world.dataset import clip_spec
from cinegen.world.render import render_clip


@pytest.mark.parametrize("attr", ["color", "shape", "motion"])
def test_swap_attribute_changes_only_that_word(attr: str) -> None:
    for i in range(40):
        spec, _ = clip_spec(5, i, include_held_out=True)
        swapped = probe.swap_attribute(spec, attr)
        if swapped is None:
            continue
        a, b = spec.objects[0], swapped.objects[0]
        assert getattr(a, attr) != getattr(b, attr)
        for other in ("shape", "color", "size", "motion", "speed", "x", "y", "angle"):
            if other != attr:
                assert getattr(a, other) == getattr(b, other)
        assert V.has_speed(a.motion) == V.has_speed(b.motion) and V.motion_valid(b.shape, b.motion)
        assert swapped.objects[1:] == spec.objects[1:] and swapped.background == spec.background
    with pytest.raises(ValueError, match="unknown attribute"):
        probe.swap_attribute(spec, "size")


def test_swap_background_changes_only_the_background() -> None:
    for i in range(10):
        spec, _ = clip_spec(5, i)
        swapped = probe.swap_attribute(spec, "background")
        assert swapped is not None and swapped.background != spec.background
        assert swapped.background in V.BACKGROUND_COLORS
        assert swapped.objects == spec.objects and swapped.background_style == spec.background_style


def test_swap_of_a_still_motion_has_no_candidate() -> None:
    spec = next(s for s, _ in (clip_spec(5, i) for i in range(500)) if s.objects[0].motion == "still")
    assert probe.swap_attribute(spec, "motion") is None


def test_probes_measure_text_use_and_read_zero_for_a_text_blind_model(tiny_2b_folder: Path) -> None:
    pipe = cinegen.load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    cap = probe.caption_use(pipe, n=2)
    attr = probe.attribute_use(pipe, n=2, snrs=(0.01,))
    assert set(cap["gain"]) == {"pure_noise", "snr_0.003"} and cap["t"]["pure_noise"] == 999
    assert cap["gain"]["pure_noise"] != 0.0  # a random model's output depends on its text
    assert attr["clips"]["color"] == 2 and attr["clips"]["background"] == 2
    assert set(attr["gain"]) >= {"pure_noise/color", "snr_0.01/shape", "snr_0.01/background"}
    assert any(g != 0.0 for g in attr["gain"].values())
    with torch.no_grad():  # text tokens all zero: every caption gives the same output
        pipe.transformer.patch_embed.text_proj.weight.zero_()
        pipe.transformer.patch_embed.text_proj.bias.zero_()
    assert all(g == 0.0 for g in probe.caption_use(pipe, n=2)["gain"].values())
    assert all(g == 0.0 for g in probe.attribute_use(pipe, n=2, snrs=(0.01,))["gain"].values())


def test_attribute_probe_with_clean_history_frames(tiny_2b_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """history=k: the transformer gets the clip's clean latents in the first k frames (the noisy ones after) and
    only the later frames are scored; a history covering the whole clip is refused."""
    pipe = cinegen.load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    seen: list[torch.Tensor] = []
    real = probe._x0_hat

    def spy(pipe_, x_t, text, t, a):  # type: ignore[no-untyped-def]
        seen.append(x_t.clone())
        return real(pipe_, x_t, text, t, a)

    monkeypatch.setattr(probe, "_x0_hat", spy)
    attr = probe.attribute_use(pipe, n=1, snrs=(0.01,), history=1)
    spec, _ = clip_spec(777, 0, frame_counts=[17], include_held_out=True)
    x0 = probe._clip_latents(pipe, render_clip(spec))  # (1, T, C, h, w)
    assert attr["history"] == 1 and attr["clips"]["color"] == 1 and "snr_0.01/color" in attr["gain"]
    assert all(torch.equal(x[:, :1], x0[:, :1]) for x in seen)
    assert not torch.allclose(seen[0][:, 1:], x0[:, 1:])  # pure noise after the history
    monkeypatch.setattr(probe, "_x0_hat", real)
    with pytest.raises(ValueError, match="leaves none"):
        probe.attribute_use(pipe, n=1, snrs=(0.01,), history=x0.shape[1])


def test_probe_cli_writes_json_and_prints_the_gains(tiny_2b_folder: Path, tmp_path: Path, capsys) -> None:
    from cinegen.world.cli import main

    out = tmp_path / "probe.json"
    assert main(["eval", "probe", "--model", str(tiny_2b_folder), "--n", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"model", "caption_use", "attribute_use"} and data["attribute_use"]["clips"]["color"] == 1
    assert "pure_noise/background" in capsys.readouterr().out
    assert main(["eval", "probe", "--model", str(tiny_2b_folder), "--n", "1", "--history", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["attribute_use_history"]["history"] == 1 and "history/pure_noise/color" in capsys.readouterr().out
    args = ["eval", "probe", "--model", str(tiny_2b_folder), "--n", "1", "--out", str(out)]
    assert main([*args, "--snrs", "0.3,3"]) == 0
    assert set(json.loads(out.read_text())["attribute_use"]["t"]) == {"pure_noise", "snr_0.3", "snr_3.0"}
    assert main([*args, "--snrs", "0.3,x"]) == 2 and "comma-separated" in capsys.readouterr().err
    assert main([*args, "--snrs", "0"]) == 2 and "positive" in capsys.readouterr().err


def test_bag_distance_ignores_order_and_sees_new_words() -> None:
    from cinegen.world.probe import bag_distance

    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 8, generator=g)
    assert bag_distance(a, a[torch.randperm(6, generator=g)]) == 0.0
    assert bag_distance(a, torch.cat([a[:5], torch.randn(1, 8, generator=g)])) > 0.05


def test_text_binding_is_zero_for_a_bag_of_words_and_positive_with_context() -> None:
    from cinegen.world.probe import text_binding

    table: dict[str, torch.Tensor] = {}
    g = torch.Generator().manual_seed(1)

    def word(w: str) -> torch.Tensor:
        if w not in table:
            table[w] = torch.randn(16, generator=g)
        return table[w]

    def bag(text: str) -> torch.Tensor:  # context-free: each token is its word's vector
        return torch.stack([word(w) for w in text.lower().replace(".", " .").split()])

    def context(text: str) -> torch.Tensor:  # each token also carries its sentence's colour word
        rows = []
        for s in (s.split() for s in text.lower().split(".") if s.strip()):
            key = sum((word(w) for w in s if w in V.COLORS), torch.zeros(16))
            rows += [word(w) + 0.5 * key for w in s]
        return torch.stack(rows)

    flat = text_binding(bag, n=8)
    assert flat["bag_distance"]["motion_swap"] < 1e-3 and flat["bag_distance"]["color_swap"] < 1e-3
    assert flat["bag_distance"]["word"] > 0.05 and flat["binding"]["motion_swap"] < 1e-2
    bound = text_binding(context, n=8)
    assert bound["binding"]["motion_swap"] > 0.2


def test_denoise_profile_is_paired_and_zero_for_a_perfect_denoiser(
    tiny_2b_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same clips and noise on every call (paired across models); a denoiser returning the true clean
    latents scores 0 error everywhere and the PSNR floor (100 dB, `cinegen.train.metrics.psnr`)."""
    pipe = cinegen.load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    a = probe.denoise_profile(pipe, n=1, timesteps=(10, 999))
    assert a == probe.denoise_profile(pipe, n=1, timesteps=(10, 999))
    assert a["t"] == {"t10": 10, "t999": 999} and a["sigma"]["t999"] == 1.0 and 0 < a["sigma"]["t10"] < 1
    assert all(v > 0 for k in ("x0_mse", "object_mse") for v in a[k].values())
    spec, _ = clip_spec(777, 0, frame_counts=[17], include_held_out=True)
    x0 = probe._clip_latents(pipe, render_clip(spec))
    monkeypatch.setattr(probe, "_x0_hat", lambda *args: x0.clone())
    perfect = probe.denoise_profile(pipe, n=1, timesteps=(10, 999))
    assert all(v == 0 for k in ("x0_mse", "object_mse") for v in perfect[k].values())
    assert all(v == pytest.approx(100.0, abs=0.01) for v in perfect["psnr"].values())
    table = probe.profile_table([("model", a), ("perfect", perfect)])
    assert table.splitlines()[0].startswith("| t | σ | x̂0 MSE: model | x̂0 MSE: perfect |")
    assert len(table.splitlines()) == 4  # header, rule, two timesteps
    with pytest.raises(ValueError, match="not paired"):
        probe.profile_table([("a", a), ("b", {**perfect, "seed": 1})])
    with pytest.raises(ValueError, match="timesteps must be in"):
        probe.denoise_profile(pipe, n=1, timesteps=(1000,))


def test_denoise_cli_compares_models_side_by_side(tiny_2b_folder: Path, tmp_path: Path, capsys) -> None:
    from cinegen.world.cli import main

    args = ["eval", "denoise", "--model", str(tiny_2b_folder), "--model", str(tiny_2b_folder), "--n", "1"]
    out = tmp_path / "dn"
    assert main([*args, "--label", "a", "--label", "b", "--timesteps", "40", "--no-pixels", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert [d["label"] for d in data] == ["a", "b"] and data[0]["x0_mse"] == data[1]["x0_mse"]
    assert data[0]["psnr"] == {} and "PSNR" not in (out / "results.md").read_text()
    assert "| 40 |" in capsys.readouterr().out
    again = ["eval", "denoise", "--model", str(tiny_2b_folder), "--n", "1", "--no-pixels", "--label", "c"]
    against = ["--against", str(out / "results.json"), "--out", str(tmp_path / "dn2")]
    assert main([*again, "--timesteps", "40", *against]) == 0  # earlier columns + the new one, paired
    data2 = json.loads((tmp_path / "dn2" / "results.json").read_text())
    assert [d["label"] for d in data2] == ["a", "b", "c"] and data2[2]["x0_mse"] == data[0]["x0_mse"]
    capsys.readouterr()
    assert main([*again, "--timesteps", "100", *against]) == 2 and "not paired" in capsys.readouterr().err
    assert main([*args, "--label", "a"]) == 2 and "1 --label for 2 --model" in capsys.readouterr().err
    assert main([*args, "--timesteps", "1,x"]) == 2 and "comma-separated integers" in capsys.readouterr().err
