"""CLI smoke tests and model-folder error handling on a tiny random model folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cinegen
from cinegen.cli import main
from cinegen.models.io import ModelFolderError, load_model_folder, save_model_folder
from cinegen.pipeline import RequestError
from cinegen.video import read_video


def test_generate_cli_writes_mp4_and_sheet(tiny_2b_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "clip.mp4"
    rc = main(["generate", "a red circle", "--model", str(tiny_2b_folder), "-o", str(out), "--dtype", "fp32"])
    assert rc == 0
    assert out.is_file() and out.with_suffix(".png").is_file()
    video = read_video(out)
    assert video.frames.shape == (9, 32, 48, 3)  # the folder's defaults
    summary = capsys.readouterr().out
    assert "9 frames 48x32" in summary and "peak RSS" in summary and "2 steps" in summary


def test_generate_is_reproducible_and_seed_dependent(tiny_2b_folder: Path) -> None:
    pipe = cinegen.load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    a = pipe.generate(prompt="a blue star", seed=1).frames
    b = pipe.generate(prompt="a blue star", seed=1).frames
    c = pipe.generate(prompt="a blue star", seed=2).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_info_cli(tiny_2b_folder: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", str(tiny_2b_folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["valid_frame_counts"][:3] == [9, 17, 25]
    assert info["resolution_multiple"] == 16
    assert info["components"]["transformer"]["params"] > 0
    assert main(["info", str(tiny_2b_folder)]) == 0
    assert "CogVideoX-2b-like" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "10"], "8N+1"),
        (["--height", "40"], "multiple of 16"),
        (["--sampler", "euler"], "does not fit"),
        (["--image", "x.png"], "text-to-video model"),
    ],
)
def test_bad_requests_fail_before_compute(
    tiny_2b_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    out = tmp_path / "bad.mp4"
    rc = main(["generate", "x", "--model", str(tiny_2b_folder), "-o", str(out), *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_output_extension(tiny_2b_folder: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "x", "--model", str(tiny_2b_folder), "-o", "out.avi"]) == 2
    assert ".mp4 or .gif" in capsys.readouterr().err


def test_request_error_names_allowed_values(tiny_2b_folder: Path) -> None:
    pipe = cinegen.load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    with pytest.raises(RequestError, match=r"\[9, 17, 25"):
        pipe.generate(prompt="x", num_frames=12)
    with pytest.raises(TypeError, match="unknown generate"):
        pipe.generate(prompt="x", frames=9)
    with pytest.raises(RequestError, match="unknown spacing 'karras': choose scheduler or log_snr"):
        pipe.generate(prompt="x", spacing="karras")


def test_spacing_default_and_override(tiny_2b_folder: Path) -> None:
    """DDIM timesteps: the scheduler's list unless the request (or the folder's defaults) asks for log-SNR."""
    pipe = cinegen.load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    req = cinegen.GenerateRequest(prompt="x", steps=10)
    _, _, plan = pipe.prepare_sampling(pipe.resolve(req))
    assert plan.timesteps[-1] > 0  # trailing: the last call is at t = T // n - 1
    _, _, plan = pipe.prepare_sampling(pipe.resolve(dataclasses.replace(req, spacing="log_snr")))
    assert plan.timesteps[0] == 999.0 and plan.timesteps[-1] == 0.0
    pipe.defaults = dataclasses.replace(pipe.defaults, spacing="log_snr")
    assert pipe.resolve(req).spacing == "log_snr"


def _copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


def test_missing_folder_and_files(tiny_2b_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="model folder not found"):
        load_model_folder(tmp_path / "nope")
    bad = _copy(tiny_2b_folder, tmp_path)
    (bad / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=r"no weights in .*vae"):
        load_model_folder(bad, load_text_encoder=False)
    (bad / "transformer" / "config.json").unlink()
    with pytest.raises(ModelFolderError, match=r"missing file: .*transformer/config.json"):
        load_model_folder(bad, load_text_encoder=False)


def test_corrupt_safetensors_names_file(tiny_2b_folder: Path, tmp_path: Path) -> None:
    bad = _copy(tiny_2b_folder, tmp_path)
    f = bad / "transformer" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated download
    with pytest.raises(ModelFolderError, match=r"transformer/diffusion_pytorch_model.safetensors: corrupt"):
        load_model_folder(bad, load_text_encoder=False)


def test_weight_key_mismatch_names_key(tiny_2b_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    bad = _copy(tiny_2b_folder, tmp_path)
    f = bad / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(f))
    state.pop("proj_out.weight")
    state["surprise.weight"] = torch.zeros(1)
    save_file(state, str(f))
    with pytest.raises(ModelFolderError, match=r"missing keys \['proj_out.weight'\].*unexpected keys \['surprise"):
        load_model_folder(bad, load_text_encoder=False)


def test_unknown_config_key_names_key(tiny_2b_folder: Path, tmp_path: Path) -> None:
    bad = _copy(tiny_2b_folder, tmp_path)
    cfg_path = bad / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["mystery_knob"] = 3
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match=r"vae/config.json.*mystery_knob"):
        load_model_folder(bad, load_text_encoder=False)


def test_sharded_save_and_load_roundtrip(tiny_2b_folder: Path, tmp_path: Path) -> None:
    bundle = load_model_folder(tiny_2b_folder, device="cpu", dtype=torch.float32)
    out = save_model_folder(bundle, tmp_path / "sharded", max_shard_bytes=20_000)
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    again = load_model_folder(out, device="cpu", dtype=torch.float32)
    for k, v in bundle.transformer.state_dict().items():
        assert torch.equal(v, again.transformer.state_dict()[k]), k


def test_prompt_enhancer_from_model_defaults(tmp_path: Path) -> None:
    from tests.conftest import TINY_DEFAULTS, make_tiny_folder

    folder = make_tiny_folder(tmp_path, "tiny-cogvideox-2b", defaults={**TINY_DEFAULTS, "prompt_enhancer": "shapes"})
    pipe = cinegen.load_pipeline(folder, device="cpu", dtype=torch.float32)
    r = pipe.resolve(cinegen.GenerateRequest(prompt="a red circle moves from left to right on a navy background"))
    assert r.raw_prompt == "a red circle moves from left to right on a navy background"
    assert "red circle" in r.prompt and "to the right" in r.prompt and "navy background" in r.prompt
    assert pipe.resolve(r).prompt == r.prompt  # idempotent
    off = pipe.resolve(cinegen.GenerateRequest(prompt="a red circle", enhance_prompt=False))
    assert off.prompt == "a red circle" and off.raw_prompt is None
    # an unparseable prompt falls back to itself instead of failing
    assert pipe.resolve(cinegen.GenerateRequest(prompt="a panda playing guitar")).prompt == "a panda playing guitar"


@pytest.mark.parametrize("style", ["shapes-layout", "shapes-tokens"])
def test_layout_prompt_enhancer_draws_cells_from_the_seed(tmp_path: Path, style: str) -> None:
    """`prompt_enhancer: shapes-layout` (models trained on layout captions): each object gets a start cell drawn from
    the request's seed in the request's clip format; a stated cell is kept. `shapes-tokens`: a start token too."""
    from cinegen.world.captions import parse_prompt
    from tests.conftest import TINY_DEFAULTS, make_tiny_folder

    defaults = {**TINY_DEFAULTS, "prompt_enhancer": style}
    pipe = cinegen.load_pipeline(make_tiny_folder(tmp_path, "tiny-cogvideox-2b", defaults=defaults), device="cpu")
    text = "a red circle moves up and a blue square spins on a navy background"

    def enhanced(seed: int, prompt: str = text) -> str:
        return pipe.resolve(cinegen.GenerateRequest(prompt=prompt, seed=seed, width=128, height=96)).prompt

    prompts = [enhanced(s) for s in range(5)]
    assert prompts == [enhanced(s) for s in range(5)] and len(set(prompts)) > 1
    for p in prompts:
        objs = parse_prompt(p).objects
        assert [o.motion for o in objs] == ["up", "rotate"] and all(o.position is not None for o in objs)
        assert all((o.token is not None) == (style == "shapes-tokens") for o in objs)
        assert all(o.token is None or o.token[0] < 16 for o in objs)  # 128 pixels wide: columns 0-15
    kept = parse_prompt(enhanced(0, "a red circle in the bottom left moves up on a navy background"))
    assert kept.objects[0].position == "bottom_left"


def test_generate_cli_long_video(tiny_2b_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--long: 33 frames from a model whose default clip is 9 frames (overlapping windows)."""
    out = tmp_path / "long.mp4"
    rc = main(["generate", "x", "--model", str(tiny_2b_folder), "-o", str(out), "--dtype", "fp32", "--long"])
    assert rc == 2 and "long video num_frames=None" in capsys.readouterr().err  # --long needs the total length
    rc = main(
        ["generate", "x", "--model", str(tiny_2b_folder), "-o", str(out), "--dtype", "fp32", "--long", "--frames", "33"]
    )
    assert rc == 0
    assert read_video(out).frames.shape[0] == 33


def test_generate_cli_lora_changes_output(tiny_2b_folder: Path, tmp_path: Path) -> None:
    from cinegen.models.io import load_model_folder
    from cinegen.train.config import LoraConfig
    from cinegen.train.lora import apply_lora, lora_state_dict, save_lora

    bundle = load_model_folder(tiny_2b_folder, device="cpu", dtype=torch.float32, load_text_encoder=False)
    cfg = LoraConfig(rank=4, alpha=4)
    model = apply_lora(bundle.transformer, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained-looking adapter (B starts at zero)
    lora_dir = save_lora(lora_state_dict(model), cfg, tmp_path / "lora").parent
    base, tuned = tmp_path / "base.mp4", tmp_path / "tuned.mp4"
    args = ["generate", "a red circle", "--model", str(tiny_2b_folder), "--dtype", "fp32"]
    assert main([*args, "-o", str(base)]) == 0
    assert main([*args, "-o", str(tuned), "--lora", str(lora_dir), "--lora-scale", "1.0"]) == 0
    assert not np.array_equal(read_video(base).frames, read_video(tuned).frames)


def test_truncation_warning_names_only_truncated_prompts(caplog: pytest.LogCaptureFixture) -> None:
    """A batch with one over-long prompt warns once, for that prompt; a prompt that fills the length exactly
    (15 bytes + EOS = 16 tokens) is not truncated."""
    from cinegen.models.presets import tiny_t5
    from cinegen.models.text import TextEncoder

    model, tok = tiny_t5()
    enc = TextEncoder(model, tok, max_length=16)
    with caplog.at_level("WARNING", logger="cinegen.models.text"):
        ids = enc.tokenize(["short", "a prompt well beyond sixteen bytes", "x" * 15])
    assert ids.shape == (3, 16)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "sixteen bytes" in warnings[0], warnings


def test_latent_size_follows_the_vae_compression(tmp_path: Path) -> None:
    """A model whose VAE compresses 4x in space (as the shipped default model's): latents, valid sizes and the
    decoded video follow the VAE's factor instead of the published VAEs' 8 (a hard-coded 8 halved the video)."""
    from dataclasses import replace

    from cinegen.models.presets import build_bundle, get_preset
    from cinegen.models.vae import CogVideoXVAE

    preset = get_preset("tiny-cogvideox-5b")
    vae_cfg = replace(
        preset.vae,
        block_out_channels=(8, 8, 8),
        down_block_types=("CogVideoXDownBlock3D",) * 3,
        up_block_types=("CogVideoXUpBlock3D",) * 3,
    )
    bundle = build_bundle(preset)
    bundle.vae = CogVideoXVAE(vae_cfg).eval()
    assert bundle.vae.config.spatial_compression == 4
    save_model_folder(bundle, tmp_path / "m", defaults={"num_frames": 9, "height": 24, "width": 40, "steps": 2})
    pipe = cinegen.load_pipeline(tmp_path / "m", device="cpu", dtype=torch.float32)
    assert pipe.spatial_multiple == 8 and pipe.info()["resolution_multiple"] == 8
    r = pipe.resolve(cinegen.GenerateRequest(prompt="a red circle", seed=0))
    assert pipe.generate_latents(r).shape == (1, 3, preset.transformer.in_channels, 6, 10)  # (B, T, C, h, w)
    assert pipe.generate(prompt="a red circle", seed=0).frames.shape == (9, 24, 40, 3)
    with pytest.raises(RequestError, match="multiple of 8"):
        pipe.resolve(cinegen.GenerateRequest(prompt="x", height=28))


def test_log_snr_spacing_is_refused_for_a_flow_model(tiny_2b_folder: Path) -> None:
    """Flow models sample on their flow schedule: a timestep spacing for ddim/dpm is an error, not ignored."""
    from cinegen.models.presets import flow_scheduler

    pipe = cinegen.load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    pipe.scheduler = flow_scheduler()
    assert pipe.generate(prompt="a blue star", seed=1, steps=2).frames.shape[0] == 9  # euler by default
    with pytest.raises(RequestError, match="flow model samples on its flow schedule"):
        pipe.generate(prompt="a blue star", seed=1, steps=2, spacing="log_snr")
