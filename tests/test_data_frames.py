"""Still frames of clips as image records (image-video joint training): content, determinism, path rebasing,
time ranges, and the trainer's data pipeline reading them as one-frame videos."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinegen.data.frames import extract_frames, pick_frames
from cinegen.data.manifest import read_manifest, write_manifest
from cinegen.train.data import BucketSpec, ClipDataset, load_records
from cinegen.video import read_video
from tests.test_train_data import make_toy_set


def test_pick_frames() -> None:
    rng = random.Random(0)
    picks = pick_frames(9, 3, rng)
    assert len(set(picks)) == 3 and picks == sorted(picks) and all(0 <= k < 9 for k in picks)
    assert pick_frames(2, 5, rng) == [0, 1]  # fewer frames than asked: all of them
    with pytest.raises(ValueError, match="per_clip"):
        pick_frames(9, 0, rng)
    for seed in range(20):  # `first`: frame 0 always, then distinct random others
        firsts = pick_frames(9, 3, random.Random(seed), first=True)
        assert firsts[0] == 0 and len(set(firsts)) == 3 and firsts == sorted(firsts) and max(firsts) < 9
    assert pick_frames(9, 1, rng, first=True) == [0] and pick_frames(2, 5, rng, first=True) == [0, 1]


def test_extract_frames_content_and_records(tmp_path: Path) -> None:
    man = make_toy_set(tmp_path / "data", n_videos=3, frames=9, h=32, w=40, images=1, masks=True)
    records = read_manifest(man)
    out = tmp_path / "frames"
    done: list[int] = []
    imgs = extract_frames(records, man.parent, out, per_clip=2, seed=5, progress=lambda i, n: done.append(i))
    assert done == [1, 2, 3, 4]
    assert len(imgs) == 3 * 2 + 1 and all(r.type == "image" for r in imgs)
    for r in imgs[:6]:  # each still is the decoded frame of its clip, caption kept, no bucket, the mask's frame
        src = next(c for c in records if Path(c.path).stem in r.path)
        k = int(Path(r.path).stem.rsplit("-", 1)[1])
        frame = read_video(man.parent / src.path).frames[k]
        assert np.array_equal(np.asarray(Image.open(out / r.path)), frame)
        assert (r.text, r.width, r.height, r.num_frames, r.bucket) == (src.text, 40, 32, 1, None)
        assert r.mask == r.path.removesuffix(".png") + ".mask.png"
        with np.load(man.parent / str(src.mask)) as z:
            want = z["mask"][k].astype(np.uint8) * 255  # bool (F, H, W) -> the still's grayscale mask
        assert np.array_equal(np.asarray(Image.open(out / r.mask)), want)
    # the manifest's own image keeps its content, its path rebased onto the output folder
    assert (out / imgs[6].path).resolve() == (man.parent / records[3].path).resolve()
    again = extract_frames(records, man.parent, tmp_path / "again", per_clip=2, seed=5)
    assert [r.path for r in again] == [r.path for r in imgs]  # same seed, same frames
    other = extract_frames(records, man.parent, tmp_path / "other", per_clip=2, seed=6)
    assert [r.path for r in other] != [r.path for r in imgs]
    first = extract_frames(records[:3], man.parent, tmp_path / "first", per_clip=1, first=True)
    assert [Path(r.path).stem[-4:] for r in first] == ["-000"] * 3  # the frame a token caption describes
    src0 = read_video(man.parent / records[0].path).frames[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "first" / first[0].path)), src0)

    # the trainer's data pipeline puts them in image buckets
    write_manifest(imgs, out / "manifest.jsonl")
    spec = BucketSpec(height=32, width=40, num_frames=9, aspect_ratios=(0.8,), vae_spatial=4, patch=2)
    ds = ClipDataset(load_records(out / "manifest.jsonl"), spec)
    assert len(ds) == 7 and ds.skips.total == 0 and all(ds.bucket(j).is_image for j in range(7))
    x, m = ds.pixels_and_mask(0, None)  # (3, 1, 32, 40) in [-1, 1]: the still, as a one-frame video; its mask
    assert x.shape == (3, 1, 32, 40) and -1 <= float(x.min()) <= float(x.max()) <= 1
    assert m is not None and m.shape == (1, 32, 40) and set(m.unique().tolist()) == {0.0, 1.0}


def test_extract_frames_honours_time_ranges(tmp_path: Path) -> None:
    """A clip given as a time range of a longer file: only frames inside the range are candidates."""
    man = make_toy_set(tmp_path / "data", n_videos=1, frames=17, h=32, w=32)
    rec = read_manifest(man)[0]
    seen: list[tuple[float, float | None]] = []

    def fake_reader(path: Path, start: float, end: float | None) -> np.ndarray:
        seen.append((start, end))
        return np.zeros((4, 8, 8, 3), np.uint8)

    ranged = dataclasses.replace(rec, start=0.5, end=1.0)
    imgs = extract_frames([ranged], man.parent, tmp_path / "f", per_clip=9, read_frames=fake_reader)
    assert seen == [(0.5, 1.0)] and len(imgs) == 4
    assert all(r.start is None and r.end is None and (r.width, r.height) == (8, 8) for r in imgs)


def test_cli_stills_joint_manifest_trains_as_one_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cinegen data stills --joint`: stills + the clips in one manifest whose paths all resolve; bad input
    fails with a message."""
    from cinegen.cli import main

    man = make_toy_set(tmp_path / "data", n_videos=3, frames=9, h=32, w=32, masks=True)
    out = tmp_path / "joint"
    assert main(["data", "stills", str(man), "-o", str(out), "--per-clip", "2", "--joint"]) == 0
    assert "wrote 6 stills of 3 clips + 3 records" in capsys.readouterr().out
    recs = load_records(out / "manifest.jsonl")
    assert [r.type for r in recs] == ["video"] * 3 + ["image"] * 6
    assert all(Path(r.path).is_file() for r in recs)  # load_records made them absolute; all exist
    assert all((out / str(r.mask)).is_file() for r in read_manifest(out / "manifest.jsonl")[:3])  # masks rebased
    spec = BucketSpec(height=32, width=32, num_frames=9, vae_spatial=4, patch=2)
    ds = ClipDataset(recs, spec)
    assert ds.skips.total == 0 and sorted(ds.groups()) == ["1x32x32", "9x32x32"]

    assert main(["data", "stills", str(tmp_path / "missing.jsonl"), "-o", str(out)]) == 1
    assert "cannot read" in capsys.readouterr().err
    images_only = tmp_path / "images.jsonl"
    write_manifest([r for r in read_manifest(man)][:0], images_only)
    assert main(["data", "stills", str(images_only), "-o", str(out)]) == 1
    assert "has no video clips" in capsys.readouterr().err
