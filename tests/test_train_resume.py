"""Checkpoints: resume == uninterrupted (bitwise), across a progressive-stage boundary with EMA, warmup + cosine
LR, grad accumulation and live decoding with random crops; NaN loss stops the run and leaves the last good
checkpoint intact; the feature cache never serves a stale entry."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cinegen.train.cache import (
    FeatureCache,
    encoder_fingerprint,
    fingerprint_module,
    latent_key,
    precompute,
    text_key,
)
from cinegen.train.checkpoint import NonFiniteLossError, latest_checkpoint, list_checkpoints
from cinegen.train.config import TrainConfig, load_config
from cinegen.train.data import BucketSpec, ClipDataset, latent_mask, load_records
from cinegen.train.trainer import load_components, train
from tests.test_train_data import make_toy_set

COMMON = [
    "data.batch_size=2",
    "data.aspect_ratios=[1.0]",
    "data.random_crop=true",
    "optim.lr=1e-3",
    "optim.warmup_steps=2",
    "optim.schedule=cosine",
    "optim.grad_accum=2",
    "optim.ema=true",
    "optim.ema_decay=0.9",
    "objective.kind=flow",
    "objective.timesteps=logit_normal",
    "log.every=1",
    "log.tensorboard=false",
    "log.progress=false",
    "checkpoint.every=2",
    "checkpoint.keep_last=2",
    "checkpoint.export=false",
    "train.steps=5",
    "train.stages=[{steps: 3, height: 16, width: 16, num_frames: 9}, {steps: 2, height: 32, width: 32, num_frames: 9}]",
]


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("cache", "masks"), [(False, False), (True, False), (False, True), (True, True)])
def test_resume_equals_uninterrupted(tiny_2b_folder: Path, tmp_path: Path, cache: bool, masks: bool) -> None:
    """(`masks`: a region-weighted loss, the masks following the random crops or read from the cache.)"""
    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=32, w=40, masks=masks)
    over = COMMON + [f"model.path={tiny_2b_folder}", f"data.manifest={man}", f"data.cache={str(cache).lower()}"]
    over += ["objective.mask_weight=4"] if masks else []
    full = load_config(TrainConfig, None, over + [f"train.run_dir={tmp_path / 'a'}"])
    assert train(full).step == 5
    crashed = load_config(TrainConfig, None, over + [f"train.run_dir={tmp_path / 'b'}"])
    rb1 = train(crashed, stop_at=3)  # "crash" after step 3: the last checkpoint is step 2 (stage 0)
    assert rb1.step == 3 and latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_00000002"
    rb2 = train(crashed)  # resumes from step 2, re-runs step 3, crosses into stage 1
    assert rb2.step == 5
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(la) == len(lb) == 5
    assert la == lb, (la, lb)  # bitwise
    ca, cb = tmp_path / "a" / "checkpoints" / "step_00000005", tmp_path / "b" / "checkpoints" / "step_00000005"
    for name in ("model.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(ca / name)), load_file(str(cb / name))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    sa, sb = json.loads((ca / "state.json").read_text()), json.loads((cb / "state.json").read_text())
    assert sa["sampler"] == sb["sampler"] and sa["stage"] == 1
    # keep_last=2: only the two newest complete checkpoints remain; no temp folders
    assert [p.name for p in list_checkpoints(tmp_path / "a" / "checkpoints")] == ["step_00000004", "step_00000005"]
    assert not list((tmp_path / "a" / "checkpoints").glob("*.tmp"))


def test_resume_equals_uninterrupted_with_token_batches(
    tiny_2b_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Image-video joint training with `data.batch_by_tokens`: images come 3 to a micro-batch where 17-frame clips
    come 2 (36 vs 20 tokens with the 16 text tokens), steps mix the two under grad accumulation, and a resumed
    run still equals the uninterrupted one bitwise."""
    man = make_toy_set(tmp_path / "data", n_videos=4, frames=17, images=7)
    stages = "train.stages=[{steps: 6, height: 32, width: 32, num_frames: 17}]"
    over = [o for o in COMMON if not o.startswith("train.stages")] + [
        stages,
        "train.steps=6",
        "data.batch_by_tokens=true",
    ]
    over += [f"model.path={tiny_2b_folder}", f"data.manifest={man}", "data.cache=false"]
    with caplog.at_level("INFO", logger="cinegen.train.trainer"):
        assert train(load_config(TrainConfig, None, over + [f"train.run_dir={tmp_path / 'a'}"])).step == 6
    assert "global batch per bucket {'17x32x32': 2, '1x32x32': 3}" in caplog.text
    crashed = load_config(TrainConfig, None, over + [f"train.run_dir={tmp_path / 'b'}"])
    assert train(crashed, stop_at=3).step == 3  # the last checkpoint is step 2
    assert train(crashed).step == 6
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(la) == 6 and la == lb, (la, lb)  # bitwise
    sa = json.loads((tmp_path / "a" / "checkpoints" / "step_00000006" / "state.json").read_text())
    assert sa["sampler"]["bucket_batches"] == "17x32x32:2,1x32x32:3"
    # each kind's mean sample loss is logged; a step's loss is the mean over its rows of both kinds
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_image" in r for r in rows) and any("loss_video" in r for r in rows)
    for r in rows:
        if "loss_image" in r and "loss_video" in r:  # one micro-batch of each: rows 3 + 2
            assert abs(r["loss"] - (3 * r["loss_image"] + 2 * r["loss_video"]) / 5) < 1e-5 * r["loss"]
        elif "loss_image" in r or "loss_video" in r:
            assert abs(r["loss"] - r.get("loss_image", r.get("loss_video"))) < 1e-5 * r["loss"]
    from cinegen.train.plot import plot_run

    assert plot_run(tmp_path / "a").stat().st_size > 10_000  # with each kind's curve


class _NaNAfter(torch.nn.Module):
    """Wraps a transformer; its output turns NaN from the `after`-th call on (a diverging run)."""

    def __init__(self, inner: torch.nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0
        self.config = inner.config

    def forward(self, *args, **kwargs):
        self.calls += 1
        out = self.inner(*args, **kwargs)
        return out * float("nan") if self.calls > self.after else out


def test_nan_loss_stops_and_keeps_last_checkpoint(tiny_2b_folder: Path, tmp_path: Path) -> None:
    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=32, w=32)
    over = COMMON + [f"model.path={tiny_2b_folder}", f"data.manifest={man}", f"train.run_dir={tmp_path / 'r'}"]
    cfg = load_config(
        TrainConfig,
        None,
        over
        + [
            "optim.grad_accum=1",
            "train.stages=[]",
            "train.steps=6",
            "data.height=32",
            "data.width=32",
            "data.num_frames=9",
        ],
    )
    comps = load_components(cfg)
    comps.transformer = _NaNAfter(comps.transformer, after=3)  # steps 1-3 fine, step 4 NaN
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4.*step_00000002.*intact"):
        train(cfg, comps)
    ck = tmp_path / "r" / "checkpoints"
    assert [p.name for p in list_checkpoints(ck)] == ["step_00000002"]
    w = load_file(str(ck / "step_00000002" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())
    assert json.loads((ck / "step_00000002" / "state.json").read_text())["step"] == 2


def test_fingerprint_does_not_depend_on_the_thread_count() -> None:
    """A parallel float64 sum rounds differently with 1 and 2 threads; the cache key must not (else a cache made
    by a 2-thread run is silently recomputed by a 1-thread one)."""
    torch.manual_seed(0)
    m = torch.nn.Linear(3000, 1000)  # big enough that PyTorch splits the sums across threads
    before = torch.get_num_threads()
    keys = []
    for n in (1, 2):
        torch.set_num_threads(n)
        keys.append(fingerprint_module(m, {"k": 1}))
        assert torch.get_num_threads() == n  # restored
    torch.set_num_threads(before)
    assert keys[0] == keys[1]


def test_cache_keys_and_no_stale_entries(tiny_2b_folder: Path, tmp_path: Path) -> None:
    man = make_toy_set(tmp_path / "data", n_videos=2, frames=9, h=32, w=32)
    cfg = load_config(TrainConfig, None, [f"model.path={tiny_2b_folder}", f"data.manifest={man}"])
    comps = load_components(cfg)
    spec = BucketSpec(height=32, width=32, num_frames=9)
    cache = FeatureCache(tmp_path / "cache")
    vae_fp = fingerprint_module(comps.vae)
    te_fp = fingerprint_module(comps.text_encoder.model)
    calls = {"vae": 0, "text": []}

    def enc(x):
        calls["vae"] += 1
        return comps.vae.encode_moments(x)

    def txt(c):
        calls["text"] += list(c)
        return comps.text_encoder.encode(c)

    def run(records):
        ds = ClipDataset(records, spec, buckets_enabled=False)
        return ds, precompute(ds, cache, enc, vae_fp, txt, te_fp)

    ds, c1 = run(load_records(man))
    assert calls["vae"] == 2 and sorted(calls["text"]) == sorted(["", *(r.text for r in ds.records)])
    calls.update(vae=0, text=[])
    run(load_records(man))
    assert calls == {"vae": 0, "text": []}  # everything reused
    # caption change: a new text entry; the old caption's embedding is not served for the new caption
    recs = load_records(man)
    recs[0].text = "blue left"
    ds2, c2 = run(recs)
    assert calls["vae"] == 0 and calls["text"] == ["blue left"]
    assert c2.text_keys["blue left"] != c1.text_keys.get(ds.records[0].text)
    assert not torch.equal(c2.text("blue left"), c1.text(ds.records[0].text))
    # clip content change (same path): a new latent key, re-encoded
    calls.update(vae=0, text=[])
    shutil.copy(tmp_path / "data" / "clip01.mp4", tmp_path / "data" / "clip00.mp4")
    ds3, c3 = run(load_records(man))
    assert calls["vae"] == 1 and c3.latent_keys[0] != c1.latent_keys[0]
    # another shape or another VAE: other keys
    other = ClipDataset(load_records(man), BucketSpec(height=16, width=16, num_frames=9), buckets_enabled=False)
    assert latent_key(vae_fp, other, 0) != c3.latent_keys[0]
    with torch.no_grad():
        comps.vae.encoder.conv_in.conv.weight.add_(1e-3)
    assert fingerprint_module(comps.vae) != vae_fp
    assert text_key(te_fp, "x") != text_key(te_fp + "!", "x")


def test_latent_cache_key_ignores_the_decoder(tiny_2b_folder: Path) -> None:
    """The latent cache is keyed by `encoder_fingerprint`: a fine-tuned decoder (encoder frozen) keeps every cached
    latent, while any change to the encoder side or the config gives new keys."""
    import copy

    cfg = load_config(TrainConfig, None, [f"model.path={tiny_2b_folder}"])
    vae = load_components(cfg).vae
    key = encoder_fingerprint(vae)
    other = copy.deepcopy(vae)
    with torch.no_grad():
        other.decoder.conv_in.conv.weight.add_(1e-3)
    assert encoder_fingerprint(other) == key and fingerprint_module(other) != fingerprint_module(vae)
    with torch.no_grad():
        other.encoder.conv_out.conv.weight.add_(1e-3)
    assert encoder_fingerprint(other) != key
    scaled = copy.deepcopy(vae)
    scaled.config = type(vae.config).from_dict({**vae.config.to_dict(), "scaling_factor": 0.5})
    assert encoder_fingerprint(scaled) != key


def test_cache_stores_latent_masks_without_touching_latent_keys(tiny_2b_folder: Path, tmp_path: Path) -> None:
    masked = make_toy_set(tmp_path / "masked", n_videos=2, frames=9, h=32, w=32, masks=True)
    cfg = load_config(TrainConfig, None, [f"model.path={tiny_2b_folder}", f"data.manifest={masked}"])
    comps = load_components(cfg)
    spec = BucketSpec(height=32, width=32, num_frames=9)
    vae_fp, te_fp = fingerprint_module(comps.vae), fingerprint_module(comps.text_encoder.model)
    cache = FeatureCache(tmp_path / "cache")

    def fill(ds: ClipDataset, grid: tuple[int, int] | None = (4, 8)):  # type: ignore[no-untyped-def]
        return precompute(ds, cache, comps.vae.encode_moments, vae_fp, comps.text_encoder.encode, te_fp, mask_grid=grid)

    ds = ClipDataset(load_records(masked), spec, buckets_enabled=False)
    got = fill(ds)
    assert all(got.ok) and all(k is not None for k in got.mask_keys)
    for j in range(len(ds)):
        m = got.mask(j)
        assert m is not None and m.shape == got.latents(j)[0].shape[1:]  # (T, h, w) of the latents
        assert torch.equal(m, latent_mask(ds.mask(j), 4, 8).half().float()) and 0 < float(m.mean()) < 1
    # the mask column does not change the latent keys (an existing latent cache stays valid)
    ds_nomask = ClipDataset([dataclasses.replace(r, mask=None) for r in load_records(masked)], spec, False)
    assert [latent_key(vae_fp, ds_nomask, j) for j in range(2)] == got.latent_keys
    assert fill(ds_nomask, None).mask(0) is None
    # a mask that cannot be read makes its clip unusable, counted with the reason
    (tmp_path / "masked" / "clip01.npz").write_bytes(b"not a mask")
    ds_bad = ClipDataset(load_records(masked), spec, buckets_enabled=False)
    bad = fill(ds_bad)
    assert bad.ok == [True, False] and ds_bad.skips.counts["bad_mask"] == 1


def test_export_checkpoint_equals_the_runs_own_export(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """`cinegen export-checkpoint` of the last checkpoint writes the same folder the run exported at its end; an
    earlier step exports that step's EMA weights; a missing step is a clear error. `--vae` swaps in a decoder
    tuned on the run's encoder (and refuses another encoder); `--defaults-from` copies generation defaults."""
    from cinegen.models.io import load_model_folder
    from cinegen.train.cli import main

    man = make_toy_set(tmp_path / "data", n_videos=2, frames=9, h=32, w=32)
    over = [f"model.path={tiny_2b_folder}", f"data.manifest={man}", f"train.run_dir={tmp_path / 'run'}"]
    over += ["data.batch_size=2", "data.aspect_ratios=[1.0]", "optim.ema=true", "optim.ema_decay=0.5"]
    over += ["log.tensorboard=false", "log.progress=false", "checkpoint.every=2", "checkpoint.export=true"]
    train(load_config(TrainConfig, None, [*over, "train.steps=4"]))
    run = tmp_path / "run"
    assert main(["export-checkpoint", str(run), "-o", str(tmp_path / "last")]) == 0
    assert main(["export-checkpoint", str(run), "--step", "2"]) == 0
    ours = load_model_folder(tmp_path / "last", dtype=torch.float32)
    ref = load_model_folder(run / "model", dtype=torch.float32)
    for name in ("transformer", "vae"):
        a, b = getattr(ours, name).state_dict(), getattr(ref, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    for f in ("model_index.json", "scheduler/scheduler_config.json", "transformer/config.json"):
        assert (tmp_path / "last" / f).read_text() == (run / "model" / f).read_text(), f
    early = load_model_folder(run / "export-step_00000002", dtype=torch.float32).transformer.state_dict()
    ema2 = load_file(str(run / "checkpoints" / "step_00000002" / "ema.safetensors"))
    assert all(torch.equal(early[k], ema2[k].float()) for k in ema2)
    assert not all(torch.equal(early[k], ours.transformer.state_dict()[k]) for k in ema2)
    assert main(["export-checkpoint", str(run), "--step", "3"]) == 2  # no such checkpoint
    assert main(["export-checkpoint", str(tmp_path / "nothing")]) == 2

    # --vae: a decoder tuned on the run's frozen encoder ships in place of the run's VAE; --defaults-from copies
    # another folder's generation defaults; the transformer is the same export either way
    from cinegen.models.io import save_component_folder
    from cinegen.train.trainer import load_vae_folder

    def vae_variant(part: str, name: str) -> Path:
        vae = load_vae_folder(run / "model")
        with torch.no_grad():
            next(p for n, p in vae.named_parameters() if n.startswith(part)).add_(0.5)
        return save_component_folder(vae, vae.config, tmp_path / name)

    tuned, re_encoded = vae_variant("decoder.", "tuned"), vae_variant("encoder.", "re-encoded")
    shipped = tmp_path / "shipped"
    shutil.copytree(run / "model", shipped)
    index = json.loads((shipped / "model_index.json").read_text())
    defaults = {"steps": 20, "guidance": 4.0, "prompt_enhancer": "shapes-tokens"}
    (shipped / "model_index.json").write_text(json.dumps({**index, "_cinegen_defaults": defaults}))
    cmd = ["export-checkpoint", str(run), "-o", str(tmp_path / "swapped"), "--vae", str(tuned)]
    assert main([*cmd, "--defaults-from", str(shipped)]) == 0
    swapped = load_model_folder(tmp_path / "swapped", dtype=torch.float32)
    want = load_vae_folder(tuned).state_dict()
    got = swapped.vae.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert not all(torch.equal(got[k], ref.vae.state_dict()[k]) for k in got)
    t = swapped.transformer.state_dict()
    assert all(torch.equal(t[k], v) for k, v in ours.transformer.state_dict().items())
    assert json.loads((tmp_path / "swapped" / "model_index.json").read_text())["_cinegen_defaults"] == defaults
    # another encoder is another latent space; a folder without defaults has none to copy: clear errors
    assert main(["export-checkpoint", str(run), "-o", str(tmp_path / "bad"), "--vae", str(re_encoded)]) == 2
    assert (
        main(["export-checkpoint", str(run), "-o", str(tmp_path / "bad"), "--defaults-from", str(run / "model")]) == 2
    )
    assert not (tmp_path / "bad").exists()


def test_stop_at_keeps_the_schedule_and_resumes(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """`train.stop_at`: the run ends at that step with a checkpoint (off the checkpoint.every grid), keeps the
    full run's LR schedule, does nothing when re-run with the same stop, and goes on to the end without it,
    equal to a run that never stopped."""
    man = make_toy_set(tmp_path / "data", n_videos=4, frames=9, h=32, w=40)
    over = COMMON + [f"model.path={tiny_2b_folder}", f"data.manifest={man}", "data.cache=false"]
    full = train(load_config(TrainConfig, None, over + [f"train.run_dir={tmp_path / 'a'}"]))
    stopped = over + [f"train.run_dir={tmp_path / 'b'}", "train.stop_at=3"]
    assert train(load_config(TrainConfig, None, stopped)).step == 3
    assert latest_checkpoint(tmp_path / "b" / "checkpoints").name == "step_00000003"  # every=2: off the grid
    assert train(load_config(TrainConfig, None, stopped)).step == 3  # already there: nothing to do
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")[:3]
    assert train(load_config(TrainConfig, None, over + [f"train.run_dir={tmp_path / 'b'}"])).step == 5
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a") and full.step == 5
    with pytest.raises(ValueError, match="stop_at must be in 1..5"):
        train(load_config(TrainConfig, None, over + [f"train.run_dir={tmp_path / 'c'}", "train.stop_at=9"]))


def test_cache_fill_shows_progress_once(
    tiny_2b_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The feature cache fill shows a progress bar on its first run; a run that finds everything cached does not."""
    man = make_toy_set(tmp_path / "data", n_videos=3, frames=9, h=32, w=32)
    over = [f"model.path={tiny_2b_folder}", f"data.manifest={man}", "data.height=32", "data.width=32"]
    over += ["data.num_frames=9", "data.aspect_ratios=[1.0]", "train.steps=1", "data.batch_size=1"]
    over += ["checkpoint.export=false", "log.tensorboard=false", f"data.cache_dir={tmp_path / 'cache'}"]
    train(load_config(TrainConfig, None, [*over, f"train.run_dir={tmp_path / 'a'}"]))
    err = capsys.readouterr().err
    assert "caching latents" in err and "3/3" in err
    train(load_config(TrainConfig, None, [*over, f"train.run_dir={tmp_path / 'b'}"]))
    assert "caching latents" not in capsys.readouterr().err
