"""Distributed training on CPU (gloo, 2 processes via torchrun): DDP and FSDP2 runs reproduce a 1-process run with
the same global batch (same losses and weights up to float reduction order; tolerance below)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cinegen.train.config import TrainConfig, load_config, to_yaml
from cinegen.train.trainer import train
from tests.test_train_data import make_toy_set

# Reductions over 2 ranks sum partial gradients in another order than one process over the whole batch, and
# a batched matmul over 4 samples may block differently than over 2: expect float32 rounding-level differences.
TOL = 1e-5
# Weights after 2 Adam steps at lr 1e-3: Adam divides each gradient by its own running RMS, so a parameter whose
# gradient is nearly zero turns rounding noise into a sizeable step (seen in CI: 1.02e-5 on a 1e-5 bound). A real
# DDP/FSDP error (a missing or doubled gradient share) moves weights by ~lr = 1e-3; 5e-5 is 5 % of one step.
W_TOL = 5e-5

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(nproc: int, config: Path, overrides: list[str], log: Path) -> None:
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1"]
    cmd = [*launch, f"--master_port={_free_port()}", "-m", "cinegen.train.cli", "train", str(config), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([*sys.path])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log.write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _losses(run: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _common(folder: Path, manifest: Path, cache: Path, frames: int) -> list[str]:
    """Overrides of a tiny 2-step v-prediction run at 32x32 with grad accumulation 2 (rank count and batch apart)."""
    return [
        f"model.path={folder}",
        f"data.manifest={manifest}",
        f"data.cache_dir={cache}",
        "data.height=32",
        "data.width=32",
        f"data.num_frames={frames}",
        "data.aspect_ratios=[1.0]",
        "objective.kind=vpred",
        "objective.timesteps=explicit_uniform",
        "train.steps=2",
        "optim.lr=1e-3",
        "optim.grad_accum=2",
        "log.every=1",
        "log.tensorboard=false",
        "log.progress=false",
        "checkpoint.every=2",
        "checkpoint.export=false",
    ]


@pytest.mark.slow
def test_ddp_and_fsdp_two_processes_equal_one(tiny_2b_folder: Path, tmp_path: Path) -> None:
    man = make_toy_set(tmp_path / "data", n_videos=8, frames=9, h=32, w=32)
    common = _common(tiny_2b_folder, man, tmp_path / "cache", frames=9)
    # the 1-process reference runs in this process (it also fills the shared feature cache)
    train(load_config(TrainConfig, None, [*common, "data.batch_size=4", f"train.run_dir={tmp_path / 'single'}"]))
    config = tmp_path / "run.yaml"
    config.write_text(to_yaml(load_config(TrainConfig, None, common)))
    for name in ("ddp", "fsdp"):
        extra = ["data.batch_size=2", f"parallel.strategy={name}", f"train.run_dir={tmp_path / name}"]
        if name == "ddp":  # a fresh cache: both ranks precompute their share, then read each other's entries
            extra.append(f"data.cache_dir={tmp_path / 'cache_ddp'}")
        _run(2, config, extra, tmp_path / f"{name}.log")
    ref = _losses(tmp_path / "single")
    w_ref = load_file(str(tmp_path / "single" / "checkpoints" / "step_00000002" / "model.safetensors"))
    for name in ("ddp", "fsdp"):
        got = _losses(tmp_path / name)
        w = load_file(str(tmp_path / name / "checkpoints" / "step_00000002" / "model.safetensors"))
        loss_err = max(abs(a - b) for a, b in zip(ref, got, strict=True))
        # q/k-norm biases of keys shift every logit of a query row by the same amount, which softmax ignores:
        # their true gradient is 0 and what autograd returns is rounding noise, which Adam rescales to
        # full-size steps. They are excluded from the weight comparison (the losses include their effect: none).
        w_err = max(float((w[k] - w_ref[k]).abs().max()) for k in w_ref if not k.endswith("norm_k.bias"))
        print(f"{name}: max |loss - 1 proc| = {loss_err:.2e}, max |weights - 1 proc| = {w_err:.2e}")
        assert len(got) == 2 and set(w) == set(w_ref)
        assert loss_err <= TOL * max(1.0, max(ref)), (name, ref, got)
        assert w_err <= W_TOL, (name, w_err)
    assert torch.tensor(ref).isfinite().all()


@pytest.mark.slow
def test_ddp_token_batches_split_unevenly_equal_one_process(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """`data.batch_by_tokens` under DDP: the per-bucket plan comes from the global batch (4 clips of 17 frames,
    7 images), so 2 processes x 2 reproduce 1 process x 4 although 7 images split 4 + 3 between the ranks."""
    man = make_toy_set(tmp_path / "data", n_videos=4, frames=17, h=32, w=32, images=7)
    common = [*_common(tiny_2b_folder, man, tmp_path / "cache", frames=17), "data.batch_by_tokens=true"]
    train(load_config(TrainConfig, None, [*common, "data.batch_size=4", f"train.run_dir={tmp_path / 'single'}"]))
    config = tmp_path / "run.yaml"
    config.write_text(to_yaml(load_config(TrainConfig, None, common)))
    _run(2, config, ["data.batch_size=2", "parallel.strategy=ddp", f"train.run_dir={tmp_path / 'ddp'}"], tmp_path / "l")
    assert "global batch per bucket {'17x32x32': 4, '1x32x32': 7}" in (tmp_path / "l").read_text()
    ref, got = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    w_ref = load_file(str(tmp_path / "single" / "checkpoints" / "step_00000002" / "model.safetensors"))
    w = load_file(str(tmp_path / "ddp" / "checkpoints" / "step_00000002" / "model.safetensors"))
    loss_err = max(abs(a - b) for a, b in zip(ref, got, strict=True))
    w_err = max(float((w[k] - w_ref[k]).abs().max()) for k in w_ref if not k.endswith("norm_k.bias"))
    print(f"ddp, token batches: max |loss - 1 proc| = {loss_err:.2e}, max |weights - 1 proc| = {w_err:.2e}")
    assert len(got) == 2 and loss_err <= TOL * max(1.0, max(ref)), (ref, got)
    assert w_err <= W_TOL, w_err
