"""End-to-end training of tiny models on CPU: the loss falls (flow and v-pred, full and LoRA, buckets with
images), resume == uninterrupted, NaN stops the run and keeps the last checkpoint, stale cache entries are never
reused, corrupt clips are skipped and counted, the export loads in cinegen's pipeline, metrics and plots exist."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from cinegen.train.config import TrainConfig, load_config
from cinegen.train.objectives import noisy_input, objective_loss
from cinegen.train.trainer import Components, load_components, make_objective, train
from tests.test_train_data import make_toy_set

BASE = [
    "data.height=32",
    "data.width=32",
    "data.num_frames=9",
    "data.batch_size=2",
    "data.aspect_ratios=[1.0]",
    "optim.lr=2e-3",
    "optim.weight_decay=0",
    "log.every=1",
    "log.tensorboard=false",
    "log.progress=false",
    "checkpoint.every=0",
    "checkpoint.export=false",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 short square clips (2 colours x 2 directions), shared by the tests of this module (with its cache)."""
    return make_toy_set(tmp_path_factory.mktemp("toy"), n_videos=4, frames=9, h=32, w=32)


def _cfg(folder: Path, manifest: Path, run_dir: Path, *extra: str) -> TrainConfig:
    cache = manifest.parent / "cache"
    return load_config(
        TrainConfig,
        None,
        [f"model.path={folder}", f"data.manifest={manifest}", f"train.run_dir={run_dir}", f"data.cache_dir={cache}"]
        + BASE
        + list(extra),
    )


def _fixed_eval(cfg: TrainConfig, comps: Components, n_levels: int = 6) -> tuple[torch.Tensor, ...]:
    """Clean latents and text of the toy clips + fixed noise/levels: a deterministic held-still loss probe."""
    from cinegen.train.data import BucketSpec, ClipDataset, load_records

    recs = [r for r in load_records(cfg.data.manifest) if r.type == "video"]
    spec = BucketSpec(height=32, width=32, num_frames=9)
    ds = ClipDataset(recs, spec, buckets_enabled=False)
    with torch.no_grad():
        x = torch.stack([ds.pixels(j, None) for j in range(len(ds))])
        x0 = comps.vae.scale(comps.vae.encode(x)).permute(0, 2, 1, 3, 4)  # (B, T, C, h, w)
        text = comps.text_encoder.encode([ds.record(j).text for j in range(len(ds))]).float()
    g = torch.Generator().manual_seed(123)
    noise = torch.randn((n_levels, *x0.shape), generator=g)
    levels = torch.linspace(0.1, 0.9, n_levels, dtype=torch.float64)
    return x0, text, noise, levels


@torch.no_grad()
def _eval_loss(cfg: TrainConfig, comps: Components, probe: tuple[torch.Tensor, ...]) -> float:
    x0, text, noise, levels = probe
    obj = make_objective(cfg, comps.schedule)
    model = comps.transformer.eval()
    total = 0.0
    for k, lv in enumerate(levels):
        n = noisy_input(obj, x0, noise[k], lv.expand(x0.shape[0]))
        total += float(objective_loss(obj, model(n.x_t, text, n.timestep), x0, noise[k], n).mean())
    model.train()
    return total / len(levels)


@pytest.mark.parametrize(
    ("objective", "extra"),
    [
        ("flow", ["objective.timesteps=logit_normal"]),
        ("vpred", ["objective.timesteps=explicit_uniform", "optim.grad_accum=2", "train.steps=20"]),
    ],
)
def test_loss_falls_full_finetune(
    tiny_2b_folder: Path, toy: Path, tmp_path: Path, objective: str, extra: list[str]
) -> None:
    cfg = _cfg(tiny_2b_folder, toy, tmp_path / "run", f"objective.kind={objective}", "train.steps=30", *extra)
    comps = load_components(cfg)
    probe = _fixed_eval(cfg, comps)
    before = _eval_loss(cfg, comps, probe)
    result = train(cfg, comps)
    after = _eval_loss(cfg, comps, probe)
    print(f"{objective}: probe loss {before:.4f} -> {after:.4f}")
    assert result.step == cfg.train.steps and len(result.losses) == cfg.train.steps
    assert after < 0.8 * before, (before, after)


def test_lora_trains_only_adapters_and_saves_diffusers_format(tiny_2b_folder: Path, toy: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from safetensors import safe_open

    cfg = _cfg(
        tiny_2b_folder,
        toy,
        tmp_path / "run",
        "objective.kind=vpred",
        "train.steps=15",
        "lora.enabled=true",
        "lora.rank=4",
        "lora.alpha=8",
        "optim.lr=5e-3",
        "checkpoint.export=true",
        "lora.targets=[to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2]",
    )
    comps = load_components(cfg)
    base = {k: v.clone() for k, v in comps.transformer.state_dict().items()}
    probe = _fixed_eval(cfg, comps)
    before = _eval_loss(cfg, comps, probe)
    result = train(cfg, comps)
    after = _eval_loss(cfg, comps, probe)
    print(f"lora: probe loss {before:.4f} -> {after:.4f}")
    assert after < 0.9 * before, (before, after)
    state = comps.transformer.state_dict()
    for k, v in base.items():  # base weights frozen (peft renames x.weight to x.base_layer.weight)
        k2 = k if k in state else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(state[k2], v), k
    path = result.export
    assert path is not None and path.name == "pytorch_lora_weights.safetensors"
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert all(k.startswith("transformer.transformer_blocks.") for k in keys)
    assert "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert meta["transformer.r"] == 4 and meta["transformer.lora_alpha"] == 8


def test_buckets_images_and_corrupt_clip(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """Two aspect ratios + images (one-frame videos) train together; a corrupt clip is skipped and counted."""
    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, sizes=[(32, 32), (32, 64)], images=2, corrupt=1)
    cfg = _cfg(
        tiny_2b_folder,
        man,
        tmp_path / "run",
        "train.steps=6",
        "data.aspect_ratios=[0.5, 1.0]",
        "data.max_area_scale=2.0",
        "train.precision=bf16",  # bf16 autocast (CPU AMX / CUDA); master weights and loss stay fp32
    )
    result = train(cfg)
    assert all(math.isfinite(x) for x in result.losses)
    assert result.skipped == {"corrupt": 1}
    skipped = json.loads((tmp_path / "run" / "skipped_stage0.json").read_text())
    assert skipped[0]["reason"] == "corrupt" and "corrupt00.mp4" in skipped[0]["path"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(r["skipped"] == 1 for r in rows)
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in rows)
    shapes = {tuple(p.name for p in (tmp_path / "data" / "cache" / "latents").rglob("*.safetensors"))}
    assert shapes  # entries exist for every bucket shape


def test_region_weighted_loss_needs_masks_and_changes_the_loss(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """objective.mask_weight weighs the masked latent cells (cached or live); without masks it is an error."""
    plain = make_toy_set(tmp_path / "plain", n_videos=2, frames=9, h=32, w=32)
    with pytest.raises(ValueError, match="no clip .* has a `mask`"):
        train(_cfg(tiny_2b_folder, plain, tmp_path / "none", "train.steps=1", "objective.mask_weight=4"))
    masked = make_toy_set(tmp_path / "masked", n_videos=2, frames=9, h=32, w=32, masks=True)
    losses = {}
    for name, extra in (("off", []), ("on", ["objective.mask_weight=4"]), ("live", ["objective.mask_weight=4"])):
        cache = ["data.cache=false"] if name == "live" else []
        cfg = _cfg(tiny_2b_folder, masked, tmp_path / name, "train.steps=2", *extra, *cache)
        losses[name] = train(cfg).losses
    assert losses["on"][0] != losses["off"][0]  # same step-0 sample, other weights
    assert losses["live"] == pytest.approx(losses["on"], rel=1e-4)  # masks from the cache == masks decoded live
    with pytest.raises(ValueError, match="mask_weight must be > 0"):
        train(_cfg(tiny_2b_folder, masked, tmp_path / "neg", "train.steps=1", "objective.mask_weight=0"))


def test_history_frames_train_and_keep_the_main_stream(tiny_2b_folder: Path, toy: Path, tmp_path: Path) -> None:
    """objective.history_prob trains (finite losses, not the plain ones) from the same sample stream: with
    probability 0 the run is bitwise the plain run; frame packs refuse it."""
    runs = {}
    for name, p in (("plain", None), ("zero", "0.0"), ("history", "1.0")):
        extra = [] if p is None else [f"objective.history_prob={p}"]
        runs[name] = train(_cfg(tiny_2b_folder, toy, tmp_path / name, "train.steps=2", *extra)).losses
    assert runs["zero"] == runs["plain"]
    assert all(math.isfinite(v) for v in runs["history"]) and runs["history"][0] != runs["plain"][0]
    with pytest.raises(ValueError, match="history_prob needs bucketed"):
        train(
            _cfg(
                tiny_2b_folder, toy, tmp_path / "pack", "train.steps=1", "objective.history_prob=0.5", "data.pack=true"
            )
        )


def test_activation_checkpointing_changes_nothing(tiny_2b_folder: Path, toy: Path, tmp_path: Path) -> None:
    """Activation checkpointing applied from outside the model gives bitwise the same losses and weights."""
    runs = []
    for ac in ("false", "true"):
        cfg = _cfg(tiny_2b_folder, toy, tmp_path / ac, "train.steps=3", f"parallel.gradient_checkpointing={ac}")
        comps = load_components(cfg)
        runs.append((train(cfg, comps).losses, comps.transformer.state_dict()))
        assert getattr(comps.transformer.transformer_blocks[0], "_cinegen_ckpt", False) == (ac == "true")
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())


def test_transformer_init_warm_starts_weights_under_the_config_schedule(tiny_2b_folder: Path, toy: Path) -> None:
    """`model.transformer_init` copies a folder's transformer weights into the preset-built model, while the
    noise schedule comes from the config (a `model.path` fine-tune would keep the folder's)."""
    from cinegen.models.io import load_model_folder

    folder_model = load_model_folder(tiny_2b_folder, device="cpu", dtype=torch.float32)
    shift = folder_model.scheduler.snr_shift_scale + 4.0
    warm = [
        "model.transformer_preset=tiny-cogvideox-2b",
        f"model.vae_path={tiny_2b_folder}",
        f"model.text_encoder_path={tiny_2b_folder}",
        f"objective.snr_shift_scale={shift}",
    ]
    cfg = load_config(TrainConfig, None, [*warm, f"model.transformer_init={tiny_2b_folder}", *BASE])
    comps = load_components(cfg)
    ref = folder_model.transformer.state_dict()
    got = comps.transformer.state_dict()
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert comps.schedule.snr_shift_scale == shift

    fresh = load_components(load_config(TrainConfig, None, [*warm, *BASE]))  # no warm start: random weights
    assert not torch.equal(fresh.transformer.state_dict()["proj_out.weight"], ref["proj_out.weight"])

    wrong = load_config(
        TrainConfig, None, [*warm, "model.transformer.num_layers=3", f"model.transformer_init={tiny_2b_folder}"]
    )
    with pytest.raises(Exception, match="missing|unexpected"):
        load_components(wrong)


def test_dit_init_starts_every_block_as_the_identity_and_predicts_zero(tiny_2b_folder: Path) -> None:
    """`model.init=dit` (adaLN-Zero): zero modulation and output layers, so each block returns its input and the
    untrained model predicts 0; Xavier weights elsewhere; same keys as the default init. It only applies to a
    from-scratch transformer: with `model.transformer_init` (or `model.path`) it is refused."""
    from cinegen.models.transformer import init_dit_weights

    scratch = [
        "model.transformer_preset=tiny-cogvideox-2b",
        f"model.vae_path={tiny_2b_folder}",
        f"model.text_encoder_path={tiny_2b_folder}",
    ]
    base = BASE
    default = load_components(load_config(TrainConfig, None, [*scratch, *base])).transformer
    comps = load_components(load_config(TrainConfig, None, [*scratch, "model.init=dit", *base]))
    model = comps.transformer
    assert model.state_dict().keys() == default.state_dict().keys()
    blocks = model.transformer_blocks
    for lin in [b.norm1.linear for b in blocks] + [b.norm2.linear for b in blocks] + [model.proj_out]:
        assert not lin.weight.any() and not lin.bias.any()
    assert default.transformer_blocks[0].norm1.linear.weight.abs().max() > 0.01  # PyTorch's default is not zero
    q = blocks[0].attn1.to_q.weight  # Xavier-uniform bound sqrt(6 / (fan_in + fan_out))
    assert q.abs().max() <= (6 / sum(q.shape)) ** 0.5 and not blocks[0].attn1.to_q.bias.any()

    cfg = model.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, cfg.in_channels, 8, 8, generator=g)  # (B, T, C, H, W)
    text = torch.randn(1, 5, cfg.text_embed_dim, generator=g)  # (B, L, D_text)
    with torch.no_grad():
        assert not model(x, text, torch.tensor([500])).any()
        h = torch.randn(1, 5 + 2 * 4 * 4, cfg.inner_dim, generator=g)  # (B, Lt + Lv, D)
        temb = torch.randn(1, cfg.time_embed_dim, generator=g)
        torch.testing.assert_close(blocks[0](h.clone(), 5, temb, None), h, rtol=0, atol=0)
    assert init_dit_weights(default) is default and not default.proj_out.weight.any()

    warm = [*scratch, "model.init=dit", f"model.transformer_init={tiny_2b_folder}", *base]
    with pytest.raises(ValueError, match="from-scratch"):
        load_components(load_config(TrainConfig, None, warm))
