"""Multi-resolution frame pack: a packed forward equals separate forwards of each clip (the block-diagonal mask
isolates clips; each clip keeps its own positions), for sin-cos (2B) and RoPE (5B) models; gradients too; a
packed training run trains (loss falls on the held-still probe)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cinegen.models.presets import get_preset
from cinegen.models.transformer import CogVideoXTransformer
from cinegen.train.framepack import PackedForward, block_mask, masked_attention


def test_block_mask() -> None:
    m = block_mask([2, 2], [3, 1], torch.device("cpu"))
    clip = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1])
    assert torch.equal(m, clip[:, None] == clip[None, :])


@pytest.mark.parametrize("preset", ["tiny-cogvideox-2b", "tiny-cogvideox-5b"])
def test_packed_forward_equals_separate_forwards(preset: str) -> None:
    torch.manual_seed(0)
    cfg = get_preset(preset).transformer
    model = CogVideoXTransformer(cfg).train()
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4, 4), (1, 8, 4), (2, 6, 8)]  # (T, H, W) latents: different durations and aspect ratios
    lat = [torch.randn(t, cfg.in_channels, h, w, generator=g, requires_grad=True) for t, h, w in shapes]
    txt = [torch.randn(cfg.max_text_seq_length, cfg.text_embed_dim, generator=g) for _ in shapes]
    t = torch.tensor(321.0)
    with masked_attention() as proxy:
        outs = PackedForward(model, proxy)(lat, txt, t)
        sum(o.square().sum() for o in outs).backward()
        proxy.mask = None
    packed_grads = [x.grad.clone() for x in lat]
    w_grad = model.transformer_blocks[0].attn1.to_q.weight.grad.clone()
    model.zero_grad()
    errs, gerrs = [], []
    for i, (x, c, o) in enumerate(zip(lat, txt, outs, strict=True)):
        x.grad = None
        ref = model(x[None], c[None], t[None])[0]  # (T, C, H, W)
        errs.append(float((ref - o).detach().abs().max()))
        ref.square().sum().backward()  # weight grads accumulate over the clips, as in the packed backward
        gerrs.append(float((x.grad - packed_grads[i]).abs().max()))
    werr = float((model.transformer_blocks[0].attn1.to_q.weight.grad - w_grad).abs().max())
    print(f"{preset}: max |packed - separate| out {max(errs):.2e}, input grad {max(gerrs):.2e}, weight grad {werr:.2e}")
    assert max(errs) < 1e-5 and max(gerrs) < 1e-5 and werr < 1e-4
    assert all(o.shape == x.shape for o, x in zip(outs, lat, strict=True))


def _pack_run(folder: Path, manifest: Path) -> list[str]:
    """Overrides of a tiny frame-pack flow run (32 px, 9 frames, two aspects, 128-token packs, no outputs)."""
    return [
        f"model.path={folder}",
        f"data.manifest={manifest}",
        "data.height=32",
        "data.width=32",
        "data.num_frames=9",
        "data.aspect_ratios=[0.5, 1.0]",
        "data.pack=true",
        "data.batch_size=1",
        "data.token_budget=128",
        "objective.kind=flow",
        "log.progress=false",
        "log.tensorboard=false",
        "checkpoint.every=0",
        "checkpoint.export=false",
    ]


def test_packed_training_run(tiny_2b_folder: Path, tmp_path: Path) -> None:
    from cinegen.train.config import TrainConfig, load_config
    from cinegen.train.trainer import train
    from tests.test_train_data import make_toy_set
    from tests.test_train_loop import _eval_loss, _fixed_eval

    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, sizes=[(32, 32), (32, 64)], images=2)
    cfg = load_config(
        TrainConfig,
        None,
        [*_pack_run(tiny_2b_folder, man), f"train.run_dir={tmp_path / 'run'}", "train.steps=14", "optim.lr=3e-3"],
    )
    from cinegen.train.trainer import load_components

    comps = load_components(cfg)
    probe = _fixed_eval(cfg, comps)
    before = _eval_loss(cfg, comps, probe)
    result = train(cfg, comps)
    after = _eval_loss(cfg, comps, probe)
    print(f"frame pack: probe loss {before:.4f} -> {after:.4f}")
    assert result.step == 14 and after < 0.85 * before
    import cinegen.models.transformer as tm

    assert tm.F is torch.nn.functional  # the run-scoped attention patch is undone


def test_packed_run_weighs_masked_cells(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """Frame pack with the region-weighted loss: each packed clip gets its own map (images without a mask weigh
    1), and the weighting changes the losses of the same samples."""
    import math

    from cinegen.train.config import TrainConfig, load_config
    from cinegen.train.trainer import train
    from tests.test_train_data import make_toy_set

    man = make_toy_set(tmp_path / "data", n_videos=3, frames=9, sizes=[(32, 32), (32, 64)], images=1, masks=True)
    base = [*_pack_run(tiny_2b_folder, man), "train.steps=3"]
    losses = {}
    for w in ("1", "4"):
        cfg = load_config(TrainConfig, None, [*base, f"train.run_dir={tmp_path / w}", f"objective.mask_weight={w}"])
        losses[w] = train(cfg).losses
    assert all(math.isfinite(v) for v in losses["4"]) and losses["4"] != losses["1"]


def test_packed_masked_resume_equals_uninterrupted(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """Frame pack + region-weighted loss + cached latents and masks: a run resumed from its step-2 checkpoint
    equals the uninterrupted run bitwise (losses and weights)."""
    from safetensors.torch import load_file

    from cinegen.train.config import TrainConfig, load_config
    from cinegen.train.trainer import train
    from tests.test_train_data import make_toy_set

    man = make_toy_set(tmp_path / "data", n_videos=3, frames=9, sizes=[(32, 32), (32, 64)], images=1, masks=True)
    over = [o for o in _pack_run(tiny_2b_folder, man) if not o.startswith("checkpoint.every")]
    over += ["train.steps=4", "objective.mask_weight=4", "checkpoint.every=2", "data.cache=true"]
    over += [f"data.cache_dir={tmp_path / 'cache'}", "optim.ema=true", "log.every=1"]
    a = train(load_config(TrainConfig, None, [*over, f"train.run_dir={tmp_path / 'a'}"]))
    crashed = load_config(TrainConfig, None, [*over, f"train.run_dir={tmp_path / 'b'}"])
    assert train(crashed, stop_at=3).step == 3  # the last checkpoint is step 2
    b = train(crashed)
    assert a.step == b.step == 4 and b.losses == a.losses[2:]  # steps 3-4 re-run after the resume
    assert train_losses(tmp_path / "a") == train_losses(tmp_path / "b") == a.losses  # bitwise
    for name in ("model.safetensors", "ema.safetensors"):
        wa = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / name))
        wb = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name


def train_losses(run_dir: Path) -> list[float]:
    import json

    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
