"""CLI (`train --dry-run`, strict errors, `plot`), observability outputs, export -> `cinegen` pipeline, and VAE
training (loss falls, metrics, export loads, GAN/OPL/perceptual terms)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cinegen.train.cli import main
from cinegen.train.config import VAETrainConfig, load_config
from tests.test_train_data import make_toy_set

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_dry_run_prints_resolved_config_and_rejects_unknown_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(CONFIGS / "lora-cogvideox-2b.yaml"), "optim.lr=3e-4", "lora.rank=8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.0003" in out and "rank: 8" in out and "targets:" in out
    assert main(["train", str(CONFIGS / "lora-cogvideox-2b.yaml"), "optim.lrr=1", "--dry-run"]) == 2
    assert "unknown config key optim.lrr" in capsys.readouterr().err
    assert main(["train-vae", str(CONFIGS / "vae.yaml"), "--dry-run", "loss.gan_weight=0"]) == 0
    assert "gan_weight: 0.0" in capsys.readouterr().out


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_resolves(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each training config in configs/ parses strictly (no unknown or mistyped key) with its own command."""
    command = "train-vae" if "vae" in config else "train"
    assert main([command, str(CONFIGS / config), "--dry-run"]) == 0, capsys.readouterr().err
    assert "run_dir:" in capsys.readouterr().out


def test_train_cli_outputs_export_and_pipeline(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """A run through the CLI writes metrics (JSONL + TensorBoard), validation MP4 + PNG, checkpoints, an exported
    model folder that cinegen's pipeline loads and samples from, and `cinegen plot` draws the curves."""
    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=32, w=32)
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: {{path: {tiny_2b_folder}}}\n"
        f"data: {{manifest: {man}, height: 32, width: 32, num_frames: 9, batch_size: 2, aspect_ratios: [1.0]}}\n"
        f"train: {{run_dir: {run}, steps: 4}}\n"
        "objective: {kind: flow}\n"
        "log: {every: 1, progress: true}\n"
        "checkpoint: {every: 2}\n"
        "validation: {every: 4, prompts: [red right], steps: 2, num_frames: 9, height: 32, width: 32}\n"
    )
    assert main(["train", str(config)]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "it_per_s", "mfu"} <= set(rows[0])
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert (run / "samples" / "step_00000004" / "00.mp4").stat().st_size > 0
    assert (run / "samples" / "step_00000004" / "00.png").stat().st_size > 0
    assert (run / "checkpoints" / "step_00000004" / "state.json").is_file()
    # the export is a diffusers-layout flow model that cinegen generates from
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    from cinegen.pipeline import load_pipeline

    pipe = load_pipeline(run / "model", device="cpu", dtype=torch.float32)
    video = pipe.generate(prompt="red right", num_frames=9, height=32, width=32, steps=2, seed=0)
    assert video.frames.shape == (9, 32, 32, 3)
    assert main(["plot", str(run)]) == 0
    assert (run / "loss.png").stat().st_size > 1000


def test_vae_training_loss_falls_and_exports(tmp_path: Path) -> None:
    from cinegen.train.losses_vae import VGGPerceptual
    from cinegen.train.trainer import load_vae_folder
    from cinegen.train.vae_trainer import train_vae

    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=16, w=16, corrupt=1)
    vgg = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in VGGPerceptual().features.state_dict().items()}, vgg)
    run = tmp_path / "run"
    cfg = load_config(
        VAETrainConfig,
        CONFIGS / "vae.yaml",
        [
            f"data.manifest={man}",
            f"train.run_dir={run}",
            "data.height=16",
            "data.width=16",
            "data.num_frames=9",
            "data.batch_size=2",
            "train.steps=14",
            "optim.lr=3e-3",
            "optim.warmup_steps=0",
            "model.vae.block_out_channels=[8, 8, 8, 8]",
            "model.vae.norm_num_groups=2",
            "model.vae.latent_channels=4",
            "loss.gan_start_step=11",
            "loss.disc_channels=8",
            "loss.disc_layers=2",
            "loss.perceptual_weight=0.1",
            f"loss.perceptual_weights_path={vgg}",
            "checkpoint.every=7",
            "validation.every=7",
            "log.every=2",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    result = train_vae(cfg)
    first, last = sum(result.losses[:3]) / 3, sum(result.losses[8:11]) / 3  # before the GAN terms start
    print(f"vae: loss {first:.4f} -> {last:.4f}; val {result.metrics}")
    assert last < 0.7 * first
    assert result.skipped == {"corrupt": 1}
    assert {"psnr", "ssim", "flicker"} <= set(result.metrics) and result.metrics["psnr"] > 10
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("g_adv" in r for r in rows) and any("opl" in r for r in rows) and any("perceptual" in r for r in rows)
    assert any("val/psnr" in r for r in rows) and (run / "samples" / "step_00000007.png").is_file()
    vae = load_vae_folder(result.export)
    x = torch.zeros(1, 3, 9, 16, 16)
    assert vae.decode(vae.encode(x)).shape == (1, 3, 9, 16, 16)
