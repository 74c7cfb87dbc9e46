"""Training data: importers, buckets under a token budget, frame sampling, the resumable sampler, corrupt clips.

Also holds the helpers other training tests import (`make_toy_set`): tiny synthetic clips written to tmp dirs.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cinegen.data.manifest import ClipRecord, write_manifest
from cinegen.train.data import (
    BatchSampler,
    Bucket,
    BucketSpec,
    ClipDataset,
    ClipError,
    assign_bucket,
    bucket_batch_sizes,
    decode_video_frames,
    frame_indices,
    frame_stride,
    latent_mask,
    load_clip,
    load_mask,
    load_pixels_and_masks,
    load_records,
    make_buckets,
    plan_packs,
    probe_record,
    read_mask_frames,
    resize_crop,
    sample_plan,
    valid_frame_counts,
)

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 220, 40)}


def square_clip(color: str, frames: int, h: int, w: int, direction: int = 1, seed: int = 0) -> np.ndarray:
    """A coloured square moving horizontally over a grey background: uint8 (F, H, W, 3)."""
    rng = np.random.default_rng(seed)
    out = np.full((frames, h, w, 3), 96, np.uint8)
    s = max(4, min(h, w) // 3)
    y = int(rng.integers(0, h - s + 1))
    for f in range(frames):
        x = int((f * 2 * direction + (0 if direction > 0 else w - s)) % (w - s + 1))
        out[f, y : y + s, x : x + s] = COLORS[color]
    return out


def make_toy_set(
    root: Path,
    n_videos: int = 4,
    frames: int = 9,
    h: int = 32,
    w: int = 32,
    images: int = 0,
    corrupt: int = 0,
    fps: float = 8.0,
    sizes: list[tuple[int, int]] | None = None,
    masks: bool = False,
) -> Path:
    """Write tiny clips (and images, corrupt files) + a JSONL manifest; returns the manifest path. `masks`: each
    clip also gets `clipNN.npz`, its square's region (bool (F, H, W)), as the record's `mask`."""
    from PIL import Image

    from cinegen.video import write_mp4

    root.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    records = []
    for i in range(n_videos):
        color = names[i % len(names)]
        direction = 1 if (i // len(names)) % 2 == 0 else -1
        hh, ww = sizes[i % len(sizes)] if sizes else (h, w)
        path = root / f"clip{i:02d}.mp4"
        clip = square_clip(color, frames, hh, ww, direction, seed=i)
        write_mp4(clip, fps, path)
        mask = None
        if masks:
            mask = f"clip{i:02d}.npz"
            np.savez_compressed(root / mask, mask=(clip != 96).any(-1))
        text = f"{color} {'right' if direction > 0 else 'left'}"  # short: tiny models keep 16 byte tokens
        records.append(
            ClipRecord(
                path=path.name, type="video", text=text, width=ww, height=hh, num_frames=frames, fps=fps, mask=mask
            )
        )
    for i in range(images):
        color = names[i % len(names)]
        path = root / f"image{i:02d}.png"
        Image.fromarray(square_clip(color, 1, h, w, seed=100 + i)[0]).save(path)
        records.append(ClipRecord(path=path.name, type="image", text=f"{color} still", width=w, height=h, num_frames=1))
    for i in range(corrupt):
        path = root / f"corrupt{i:02d}.mp4"
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
        records.append(
            ClipRecord(path=path.name, type="video", text="broken", width=w, height=h, num_frames=frames, fps=fps)
        )
    manifest = root / "manifest.jsonl"
    write_manifest(records, manifest)
    return manifest


# ------------------------------------------------------------------------------------------------- importers


def test_importers_cogvideo_easyanimate_opensora(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "prompt.txt").write_text("a red square\na blue square\n")
    (tmp_path / "videos.txt").write_text("videos/a.mp4\nvideos/b.png\n")
    recs = load_records(tmp_path)
    assert [r.text for r in recs] == ["a red square", "a blue square"]
    assert [r.type for r in recs] == ["video", "image"]
    assert recs[0].path == str(tmp_path / "videos" / "a.mp4")

    ea = tmp_path / "ea.json"
    ea.write_text(json.dumps([{"file_path": "x.mp4", "text": "t", "type": "video", "width": 64, "height": 32}]))
    (r,) = load_records(ea, "easyanimate")
    assert (r.path, r.width, r.height, r.type) == (str(tmp_path / "x.mp4"), 64, 32, "video")

    os_csv = tmp_path / "os.csv"
    os_csv.write_text("path,text,num_frames,height,width,aspect_ratio,fps,aes\n/abs/y.mp4,hi,49,480,720,0.667,24,5.5\n")
    (r,) = load_records(os_csv, "opensora")
    assert (r.path, r.num_frames, r.fps, r.scores["aes"]) == ("/abs/y.mp4", 49, 24.0, 5.5)
    with pytest.raises(ValueError, match="Open-Sora"):
        load_records(ea, "opensora")


# --------------------------------------------------------------------------------------------------- buckets


def test_valid_frame_counts_and_tokens() -> None:
    assert valid_frame_counts(49) == [1, 9, 17, 25, 33, 41, 49]  # CogVideoX 1.0: 8N+1
    assert valid_frame_counts(81, 16) == [1, 17, 33, 49, 65, 81]  # 1.5: 16N+1
    spec = BucketSpec(height=480, width=720, num_frames=49)
    assert spec.tokens(49, 480, 720) == 13 * 30 * 45 == 17550  # CogVideoX-5b at 49x480x720


def test_buckets_respect_token_budget_and_grow_shorter_clips() -> None:
    spec = BucketSpec(height=64, width=64, num_frames=17, aspect_ratios=(0.5, 1.0, 2.0), max_area_scale=4.0)
    budget = spec.budget()
    assert budget == 5 * 4 * 4
    with pytest.raises(ValueError, match="num_frames=13 is not valid"):
        make_buckets(BucketSpec(height=64, width=64, num_frames=17, frame_counts=(13,)))
    buckets = make_buckets(spec)
    for b in buckets:
        assert b.height % 16 == 0 and b.width % 16 == 0
        assert spec.tokens(b.num_frames, b.height, b.width) <= budget, b
    square = {b.num_frames: b.height * b.width for b in buckets if b.height == b.width}
    assert square[17] == 64 * 64
    assert square[1] > square[9] > square[17]  # fewer frames -> more pixels under the same budget
    assert square[1] <= 4 * 64 * 64  # capped by max_area_scale


def test_assign_bucket_fps_aware_and_too_short() -> None:
    spec = BucketSpec(height=32, width=32, num_frames=17, aspect_ratios=(0.5, 1.0, 2.0), fps=8.0)
    buckets = make_buckets(spec)
    wide = ClipRecord(path="w.mp4", width=64, height=30, num_frames=40, fps=24.0)
    b = assign_bucket(wide, buckets, spec)
    # stride 24/8 = 3 source frames per sampled frame: 40 frames hold at most 14 -> the 9-frame bucket, not 17
    assert b.num_frames == 9 and b.height / b.width == 0.5
    assert assign_bucket(ClipRecord(path="i.png", type="image", width=32, height=64), buckets, spec).num_frames == 1
    with pytest.raises(ClipError) as e:
        assign_bucket(ClipRecord(path="s.mp4", width=32, height=32, num_frames=3, fps=8.0), buckets, spec)
    assert e.value.reason == "too_short"


def test_frame_sampling_and_resize_crop() -> None:
    assert frame_stride(30.0, 10.0) == 3.0 and frame_stride(8.0, 24.0) == 1.0  # never duplicates frames
    assert frame_indices(100, 5, 2.5, 10) == [10, 12, 15, 18, 20]
    x = torch.zeros(2, 3, 40, 80)
    x[:, :, :, :40] = 255  # left half white
    y = resize_crop(x, 16, 16, (0.5, 0.0))  # cover: 40x80 -> 16x32, keep the left crop
    assert y.shape == (2, 3, 16, 16) and float(y[..., :15].min()) > 250  # (antialiased edge column)
    y = resize_crop(x, 16, 16, (0.5, 1.0))
    assert float(y[..., 1:].max()) < 5


def test_decode_and_load_clip(tmp_path: Path) -> None:
    manifest = make_toy_set(tmp_path, n_videos=1, frames=9, h=32, w=48, images=1)
    recs = load_records(manifest)
    frames = decode_video_frames(recs[0].path, [0, 4, 8])
    src = square_clip("red", 9, 32, 48, 1, seed=0)
    assert frames.shape == (3, 32, 48, 3)
    assert np.abs(frames.astype(int) - src[[0, 4, 8]].astype(int)).mean() < 6  # H.264 at crf 18
    spec = BucketSpec(height=16, width=32, num_frames=9, aspect_ratios=(0.5,))
    x = load_clip(recs[0], Bucket(9, 16, 32), spec, rng=None)
    assert x.shape == (3, 9, 16, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    img = load_clip(recs[1], Bucket(1, 16, 32), spec, rng=random.Random(0))
    assert img.shape == (3, 1, 16, 32)


def test_decode_by_index_matches_a_plain_decode_and_shows_the_display_rotation(tmp_path: Path) -> None:
    """`decode_video_frames` (seek to a keyframe, count from `start_seconds`, convert only the wanted frames)
    returns exactly the frames of a plain front-to-back PyAV decode; a rotated stream comes out as displayed, in
    the size `probe_record` gives the record, so its bucket and crop box apply to the pixels they were made for."""
    import av

    from cinegen.data import synth
    from cinegen.data.media import apply_rotation

    rng = np.random.default_rng(0)
    src = rng.integers(0, 255, (40, 24, 40, 3), dtype=np.uint8)
    path = synth.write_video(tmp_path / "v.mp4", src, 8.0, rotation=90)
    with av.open(str(path)) as c:  # reference: every frame, no seek, as displayed
        ref = [(f.time, apply_rotation(f.to_ndarray(format="rgb24"), f.rotation)) for f in c.decode(video=0)]
    assert len(ref) == 40 and ref[0][1].shape == (40, 24, 3)  # stored 40 wide, displayed portrait
    for start in (0.0, 1.0, 2.375):  # from frames 0, 8 and 19
        tail = [a for t, a in ref if t >= start - 1e-6]
        idx = [0, 3, 3, 7, 20]  # repeated and unsorted indices keep their order
        got = decode_video_frames(str(path), idx, start)
        assert got.shape == (5, 40, 24, 3) and np.array_equal(got, np.stack([tail[i] for i in idx]))
    with pytest.raises(ClipError, match="truncated"):
        decode_video_frames(str(path), [0, 39], 1.0)  # 32 frames after 1 s
    r = ClipRecord(path=str(path), type="video")
    probe_record(r)
    assert (r.width, r.height, r.num_frames) == (24, 40, 40)
    bucket, spec = Bucket(9, 40, 24), BucketSpec(height=40, width=24, num_frames=9)
    plan = sample_plan(r, bucket, spec, None)
    assert plan.segment_start == 0 and plan.indices is not None
    x = load_clip(r, bucket, spec, rng=None, plan=plan)
    want = torch.from_numpy(np.stack([ref[i][1] for i in plan.indices])).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert torch.allclose(x, want, atol=1e-5)  # same size: no resize, the frames as displayed


def test_corrupt_and_missing_clips_are_skipped_and_counted(tmp_path: Path) -> None:
    manifest = make_toy_set(tmp_path, n_videos=2, corrupt=1)
    recs = load_records(manifest)
    recs.append(ClipRecord(path=str(tmp_path / "gone.mp4"), text="x", width=32, height=32, num_frames=9, fps=8))
    recs.append(ClipRecord(path=str(tmp_path / "clip00.mp4"), text="short", width=32, height=32, num_frames=2, fps=8))
    spec = BucketSpec(height=32, width=32, num_frames=9)
    ds = ClipDataset(recs, spec)
    assert ds.skips.counts["too_short"] == 1 and len(ds) == 4  # 2 good + corrupt + missing (found on load)
    errors = []
    for j in range(len(ds)):
        try:
            ds.pixels(j, None)
        except ClipError as e:
            ds.skips.add(ds.record(j), e)
            errors.append(e.reason)
    assert sorted(errors) == ["corrupt", "missing"]
    assert ds.skips.total == 3 and all("detail" in it for it in ds.skips.items)


# ----------------------------------------------------------------------------------------------- region masks


def test_latent_mask_follows_the_causal_groups() -> None:
    mask = torch.zeros(9, 16, 16)  # frames 0 | 1-4 | 5-8 -> 3 latent frames
    mask[0, 0, 0] = 1.0
    mask[6, 5, 9] = 0.25  # soft values: a cell takes the largest it covers
    mask[7, 6, 10] = 0.5
    cells = latent_mask(mask, temporal=4, spatial=4)
    expected = torch.zeros(3, 4, 4)
    expected[0, 0, 0] = 1.0
    expected[2, 1, 2] = 0.5
    assert torch.equal(cells, expected)
    assert torch.equal(latent_mask(mask > 0, 4, 4), (expected > 0).float())  # bool masks too


def test_mask_follows_the_clips_frames_and_crop(tmp_path: Path) -> None:
    """A random start and crop: the loaded mask covers exactly the square's pixels of the loaded frames."""
    manifest = make_toy_set(tmp_path, n_videos=2, frames=17, h=32, w=48, masks=True)
    spec = BucketSpec(height=24, width=24, num_frames=9, aspect_ratios=(1.0,))
    ds = ClipDataset(load_records(manifest), spec, buckets_enabled=False)
    assert ds.has_masks and ds.record(0).mask.endswith("clip00.npz")
    xs, ms, weight = load_pixels_and_masks(ds, [0, 1], [random.Random(1), random.Random(2)])
    for x, m in zip(xs, ms, strict=True):
        assert m is not None and m.shape == (9, 24, 24) and float(m.min()) >= 0 and float(m.max()) <= 1
        coloured = (x - (96 / 127.5 - 1)).abs().amax(0) > 0.3  # (F, H, W): pixels off the grey background
        inside, outside = m > 0.9, m < 0.1
        assert inside.any() and bool(coloured[inside].all()) and not bool(coloured[outside].any())
    assert weight.tolist() == [1.0, 1.0]
    # the clip's own rng draws, taken once: the same sample as `ds.pixels` with the same rng
    assert torch.equal(xs[0], ds.pixels(0, random.Random(1)))


def test_mask_file_formats_and_errors(tmp_path: Path) -> None:
    from PIL import Image

    from cinegen.video import write_mp4

    m = np.zeros((3, 8, 8), np.uint8)
    m[1, 2:4, 2:6] = 255
    np.save(tmp_path / "m.npy", m > 0)
    np.savez(tmp_path / "m.npz", other=m)  # first array when none is named "mask"
    Image.fromarray(m[1]).save(tmp_path / "m.png")
    write_mp4(np.repeat(m[..., None], 3, axis=-1), 8.0, tmp_path / "m.mp4", crf=0)
    want = (m / 255.0).astype(np.float32)
    assert np.array_equal(read_mask_frames(str(tmp_path / "m.npy"), [1, 2]), want[[1, 2]])
    assert np.array_equal(read_mask_frames(str(tmp_path / "m.npz"), [0, 1]), want[[0, 1]])
    assert np.array_equal(read_mask_frames(str(tmp_path / "m.png"), None), want[[1]])
    assert np.array_equal(read_mask_frames(str(tmp_path / "m.png"), [0, 4]), want[[1, 1]])  # static for a video
    np.save(tmp_path / "s.npy", m[1])
    assert np.array_equal(read_mask_frames(str(tmp_path / "s.npy"), [0, 7, 9]), want[[1, 1, 1]])
    assert np.abs(read_mask_frames(str(tmp_path / "m.mp4"), [1]) - want[[1]]).max() < 0.1  # H.264
    with pytest.raises(ClipError, match="mask frames"):
        read_mask_frames(str(tmp_path / "m.npy"), [5])
    rec = ClipRecord(path="x.mp4", width=16, height=8, num_frames=3, fps=8.0, mask=str(tmp_path / "m.npy"))
    spec = BucketSpec(height=8, width=8, num_frames=1)
    plan = sample_plan(rec, Bucket(1, 8, 8), spec, None)
    with pytest.raises(ClipError, match="mask is 8x8, clip is 16x8"):
        load_mask(rec, Bucket(1, 8, 8), plan)
    with pytest.raises(ClipError) as e:
        load_mask(ClipRecord(path="x.mp4", mask=str(tmp_path / "gone.npz")), Bucket(1, 8, 8), plan)
    assert e.value.reason == "missing"
    assert load_mask(ClipRecord(path="x.mp4"), Bucket(1, 8, 8), plan) is None


# --------------------------------------------------------------------------------------------------- sampler


def test_sampler_deterministic_homogeneous_and_resumable() -> None:
    groups = {"a": list(range(0, 7)), "b": list(range(7, 12)), "c": [12]}
    s1 = BatchSampler(groups, batch_size=2, seed=3)
    assert "c" not in s1.groups  # fewer clips than a batch: dropped with a warning
    seq = [s1.next() for _ in range(9)]  # crosses an epoch boundary (5 batches per epoch)
    for key, idx in seq:
        assert all(i in groups[key] for i in idx) and len(idx) == 2
    assert s1.epoch == 1
    first_epoch = [tuple(i) for _, i in seq[:5]]
    assert len({i for b in first_epoch for i in b}) == 10  # no clip twice within an epoch
    s2 = BatchSampler(groups, batch_size=2, seed=3)
    for _ in range(4):
        s2.next()
    s3 = BatchSampler(groups, batch_size=2, seed=3)
    s3.load_state_dict(s2.state_dict())
    assert [s3.next() for _ in range(5)] == seq[4:9]
    other = BatchSampler(groups, batch_size=2, seed=4)
    assert [other.next() for _ in range(5)] != seq[:5]


def test_bucket_batch_sizes_even_token_load() -> None:
    """Images (208 tokens: 64 text + 144 video) take 30 rows where 17-frame clips (784) take 8."""
    sizes = bucket_batch_sizes({"17x96x96": 784, "9x96x96": 496, "1x96x96": 208}, 8)
    assert sizes == {"17x96x96": 8, "9x96x96": 12, "1x96x96": 30}
    assert all(sizes[k] * n <= 8 * 784 for k, n in {"17x96x96": 784, "9x96x96": 496, "1x96x96": 208}.items())
    assert bucket_batch_sizes({"a": 100, "b": 99}, 4) == {"a": 4, "b": 4}  # never below the base batch
    assert bucket_batch_sizes({}, 4) == {}
    with pytest.raises(ValueError, match="batch size"):
        bucket_batch_sizes({"a": 1}, 0)


def test_sampler_per_bucket_batches() -> None:
    """Each bucket's batches have its own size; an epoch covers every clip once; resume checks the plan."""
    groups = {"img": list(range(0, 13)), "vid": list(range(13, 20))}
    s1 = BatchSampler(groups, batch_size=2, seed=1, sizes={"img": 6, "vid": 2})
    epoch = s1.epoch_batches(0)
    assert sorted(len(i) for k, i in epoch if k == "img") == [6, 6]  # 13 images: 2 full batches, 1 waits
    assert sorted(len(i) for k, i in epoch if k == "vid") == [2, 2, 2]
    assert len({i for _, b in epoch for i in b}) == 18
    for _ in range(3):
        s1.next()
    s2 = BatchSampler(groups, batch_size=2, seed=1, sizes={"img": 6, "vid": 2})
    s2.load_state_dict(s1.state_dict())
    assert s2.next() == s1.next()
    changed = BatchSampler(groups, batch_size=2, seed=1, sizes={"img": 4, "vid": 2})
    with pytest.raises(ValueError, match="per-bucket batch sizes changed"):
        changed.load_state_dict(s1.state_dict())
    with pytest.raises(ValueError, match="per-bucket batch sizes changed"):
        BatchSampler(groups, batch_size=2, seed=1).load_state_dict(s1.state_dict())
    small = BatchSampler({"img": list(range(5)), "vid": list(range(5, 9))}, batch_size=2, sizes={"img": 6})
    assert "img" not in small.groups  # 5 images < a batch of 6: dropped with a warning


def test_plan_packs_fit_budget() -> None:
    tokens = [64, 16, 48, 32, 16, 8, 100]
    packs = plan_packs(tokens, budget=64, seed=0, epoch=0)
    assert sorted(i for p in packs for i in p) == list(range(len(tokens)))
    for p in packs:
        assert sum(tokens[i] for i in p) <= 64 or len(p) == 1
    assert len(packs) <= math.ceil(sum(tokens) / 64) + 2


def test_rank_slice_covers_the_batch_once() -> None:
    from cinegen.train.trainer import rank_slice

    for n, world in ((8, 2), (7, 2), (35, 2), (5, 3), (3, 3)):
        parts = [rank_slice(n, world, r) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))  # contiguous, no overlap
        assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 1
    assert rank_slice(7, 2, 0) == (0, 4) and rank_slice(7, 2, 1) == (4, 7)
