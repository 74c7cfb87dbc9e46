"""Per-item stage functions on videos made here: probe robustness, scene split / cutting, and scores."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cinegen.data import synth
from cinegen.data.config import DataConfig, ScoreConfig, SplitConfig, load_config
from cinegen.data.manifest import ClipRecord
from cinegen.data.media import sample_frames
from cinegen.data.probe import probe_video, scan_item
from cinegen.data.score import classify_camera, compute_scores, phash_distance, score_item
from cinegen.data.split import cut_copy, detect_scenes, plan_clips, split_item

H, W, FPS = 96, 128, 10.0


def _rec(path: Path, **kw) -> ClipRecord:
    return ClipRecord(path=str(path), id=path.stem, source_path=str(path), **kw)


# ------------------------------------------------------------------------------------------------ probe


def _write_container(path: Path, frames: np.ndarray, pts_ms: list[int], fmt: str) -> None:
    """Frames with explicit presentation times in milliseconds (VFR when the gaps differ)."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=int(FPS))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for f, t in zip(frames, pts_ms, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_probe_reads_geometry_and_flags_vfr(tmp_path: Path) -> None:
    cfg = DataConfig().scan
    frames = synth.moving_scene(0, 30, H, W)
    synth.write_video(tmp_path / "cfr.mp4", frames, FPS)
    r = probe_video(_rec(tmp_path / "cfr.mp4"), cfg)
    assert r.ok and (r.width, r.height, r.num_frames, r.fps) == (W, H, 30, 10.0)
    assert r.meta["vfr"] is False and abs(r.meta["duration"] - 3.0) < 1e-6
    # Alternating 50 ms / 150 ms gaps: variable frame rate, 10 fps on average.
    pts = np.cumsum([0] + [50 if i % 2 else 150 for i in range(29)]).tolist()
    _write_container(tmp_path / "vfr.mkv", frames, pts, "matroska")
    v = probe_video(_rec(tmp_path / "vfr.mkv"), cfg)
    assert v.ok and v.meta["vfr"] is True and abs(v.fps - 30 / 3.0) < 0.5
    # Cutting a VFR source re-encodes on a constant grid: frame k shows the latest source frame at k / fps.
    cfg = load_config(None, ["split.detector=none", "split.min_seconds=1", "split.fps=10"])
    (clip,) = split_item(v, cfg, tmp_path)
    out = sample_frames(tmp_path / clip.path).frames
    assert clip.fps == 10.0 and clip.num_frames == len(out) == 30
    times = np.asarray(pts) / 1000.0
    for k in range(0, 30, 3):
        want = int(np.searchsorted(times, k / 10.0 + 1e-6) - 1)
        best = int(np.argmin([np.abs(out[k].astype(float) - f.astype(float)).mean() for f in frames]))
        assert best == want, (k, best, want)


def test_probe_records_broken_inputs_with_reasons(tmp_path: Path) -> None:
    cfg = DataConfig()
    good = synth.moving_scene(0, 40, H, W)
    _write_container(tmp_path / "good.mkv", good, [i * 100 for i in range(40)], "matroska")
    synth.write_truncated(tmp_path / "good.mkv", tmp_path / "cut.mkv", keep=0.5)
    synth.write_corrupt(tmp_path / "noise.mp4")
    synth.write_empty(tmp_path / "zero.mp4")
    synth.write_audio_only(tmp_path / "audio.mp4")
    synth.write_video(tmp_path / "tiny.mp4", synth.moving_scene(0, 10, 32, 48), FPS)
    synth.write_video(tmp_path / "rot.mp4", good[:20], FPS, rotation=90)
    expect = {
        "cut.mkv": ("error", "truncated"),
        "noise.mp4": ("error", "unreadable"),
        "zero.mp4": ("error", "empty_file"),
        "audio.mp4": ("dropped", "audio_only"),
        "tiny.mp4": ("dropped", "too_small"),
        "missing.mp4": ("error", "missing"),
        "good.mkv": ("ok", None),
        "rot.mp4": ("ok", None),
    }
    for name, (status, reason) in expect.items():
        (r,) = scan_item(_rec(tmp_path / name), cfg, tmp_path)
        assert (r.status, r.reason) == (status, reason), (name, r.detail)
        assert r.stage == (None if status == "ok" else "scan")
    # Huge inputs and (optionally) rotated inputs are skipped by configuration, with the reason kept.
    strict = load_config(None, ["scan.max_pixels=10000", "scan.rotated=skip"])
    assert scan_item(_rec(tmp_path / "good.mkv"), strict, tmp_path)[0].reason == "huge_resolution"
    rot = probe_video(_rec(tmp_path / "rot.mp4"), load_config(None, ["scan.rotated=skip"]).scan)
    assert rot.reason == "rotated" and rot.meta["rotation"] == 90 and (rot.width, rot.height) == (H, W)


# ------------------------------------------------------------------------------------------------ split


def test_plan_clips_trims_at_cuts_chunks_long_and_drops_short() -> None:
    cfg = SplitConfig(min_seconds=3.0, max_seconds=10.0, trim_seconds=0.5)
    scenes = [(0.0, 2.0), (2.0, 26.0), (26.0, 29.9), (29.9, 34.0)]
    kept, dropped = plan_clips(scenes, cfg)
    assert [d[0] for d in dropped] == [0, 2]  # 1.5 s and 2.9 s after trimming
    chunks = [(s, e) for i, _, s, e in kept if i == 1]
    assert len(chunks) == 3 and chunks[0][0] == 2.5 and chunks[-1][1] == 25.5
    assert all(abs((e - s) - 23.0 / 3) < 1e-5 for s, e in chunks)  # equal pieces, each <= 10 s
    assert [(s, e) for i, _, s, e in kept if i == 3] == [(30.4, 34.0)]  # the file's end is not trimmed
    for _, _, s, e in kept:
        assert cfg.min_seconds - 1e-6 <= e - s <= cfg.max_seconds + 1e-6


def test_detect_scenes_finds_hard_cuts_within_two_frames(tmp_path: Path) -> None:
    a, b = 23, 31
    v = synth.concat(synth.moving_scene(1, a, H, W), synth.moving_scene(2, b, H, W), synth.static_scene(3, 30, H, W))
    synth.write_video(tmp_path / "cuts.mp4", v, FPS)
    for backend in ("pyav", "opencv"):
        scenes = detect_scenes(tmp_path / "cuts.mp4", SplitConfig(backend=backend, min_scene_len=10))
        starts = [s for s, _ in scenes]
        assert len(starts) == 3, (backend, scenes)
        assert abs(starts[1] * FPS - a) <= 2 and abs(starts[2] * FPS - (a + b)) <= 2


def test_reencode_cut_applies_rotation_fps_and_downscale(tmp_path: Path) -> None:
    src = synth.moving_scene(4, 40, H, W)
    synth.write_video(tmp_path / "rot.mp4", src, FPS, rotation=90)
    cfg = load_config(None, ["split.detector=none", "split.fps=5", "split.max_short_side=48"])
    (probed,) = scan_item(_rec(tmp_path / "rot.mp4"), cfg, tmp_path)
    (clip,) = split_item(probed, cfg, tmp_path)
    assert clip.ok and clip.fps == 5.0 and clip.num_frames == 20
    assert (clip.width, clip.height) == (48, 64)  # portrait after rotation, short side 48
    out = sample_frames(tmp_path / clip.path).frames
    assert out.shape == (20, 64, 48, 3)
    # Frame k of the clip is source frame 2k rotated 90 degrees counter-clockwise (PyAV's convention).
    import cv2

    want = cv2.resize(np.rot90(src[10]), (48, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(out[5].astype(np.float32) - want).mean() < 12
    wrong = cv2.resize(np.rot90(src[10], k=-1), (48, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(out[5].astype(np.float32) - wrong).mean() > 20


def test_copy_cut_starts_on_a_keyframe(tmp_path: Path) -> None:
    frames = synth.moving_scene(5, 60, H, W)
    with av.open(str(tmp_path / "gop.mp4"), "w") as c:  # keyframe every 10 frames
        s = c.add_stream("libx264", rate=10, options={"g": "10", "keyint_min": "10", "sc_threshold": "0"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    n, start, end = cut_copy(tmp_path / "gop.mp4", tmp_path / "piece.mp4", 2.3, 4.6)
    assert start == pytest.approx(2.0) and n == 26 and end == pytest.approx(4.6)
    out = sample_frames(tmp_path / "piece.mp4").frames
    assert len(out) == 26
    assert np.abs(out[0].astype(float) - frames[20].astype(float)).mean() < 6


# ------------------------------------------------------------------------------------------------ score


def _scores(frames: np.ndarray, fps: float = FPS) -> dict:
    """Scores at the 256 px analysis size (frames resized like `score_item` does), no OCR."""
    import cv2

    h, w = frames.shape[1:3]
    s = 256 / max(h, w)
    size = (int(round(w * s)), int(round(h * s)))
    small = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
    return compute_scores(small, fps, ScoreConfig(ocr=False))[0]


@pytest.mark.parametrize(
    ("frames", "camera"),
    [
        (lambda: synth.static_scene(1, 20, H, W), "static"),
        (lambda: synth.moving_scene(1, 20, H, W, speed=3), "static"),  # objects move, the camera does not
        (lambda: synth.moving_scene(2, 20, H, W, pan=(-2, 0), shapes=0), "pan_right"),
        (lambda: synth.moving_scene(2, 20, H, W, pan=(2, 0), shapes=0), "pan_left"),
        (lambda: synth.moving_scene(3, 20, H, W, pan=(0, 2), shapes=0), "tilt_up"),
        (lambda: synth.moving_scene(3, 20, H, W, pan=(0, -2), shapes=0), "tilt_down"),
        (lambda: synth.zoom_scene(4, 20, H, W, 0.03), "zoom_in"),
        (lambda: synth.zoom_scene(4, 20, H, W, -0.03), "zoom_out"),
    ],
)
def test_camera_motion_class(frames, camera: str) -> None:
    assert _scores(frames())["camera"] == camera


def test_classify_camera_rules() -> None:
    assert classify_camera(0.001, 0.0, 0.0, 0.02, 1.0) == "static"
    assert classify_camera(-0.1, 0.01, 0.0, 0.02, 1.0) == "pan_right"
    assert classify_camera(0.0, 0.1, 0.01, 0.02, 1.0) == "tilt_up"
    assert classify_camera(0.01, 0.0, -0.1, 0.02, 1.0) == "zoom_out"


def test_motion_orders_speed_and_is_resolution_and_fps_invariant() -> None:
    import cv2

    static = _scores(synth.static_scene(1, 20, H, W))
    slow = _scores(synth.moving_scene(2, 20, H, W, pan=(1, 0), shapes=0))
    fast = _scores(synth.moving_scene(2, 20, H, W, pan=(3, 0), shapes=0))
    assert static["motion"] < 1e-4 < slow["motion"] < fast["motion"]
    assert fast["motion"] == pytest.approx(3 * slow["motion"], rel=0.25)
    # The same video at twice the resolution: the same score (fixed analysis size, diagonal units).
    mid = synth.moving_scene(2, 20, H, W, pan=(2, 0), shapes=0)
    big = np.stack([cv2.resize(f, (2 * W, 2 * H), interpolation=cv2.INTER_CUBIC) for f in mid])
    assert _scores(big)["motion"] == pytest.approx(_scores(mid)["motion"], rel=0.05)
    # The same motion per second recorded at twice the frame rate: the same score (per-second units).
    double = synth.moving_scene(2, 40, H, W, pan=(1, 0), shapes=0)
    assert _scores(double, fps=2 * FPS)["motion"] == pytest.approx(_scores(mid)["motion"], rel=0.2)
    assert static["frozen_ratio"] == 1.0 and fast["frozen_ratio"] == 0.0
    # Every frame shown twice (a 5 fps clip padded to 10 fps): half the frame pairs are frozen.
    padded = np.repeat(synth.moving_scene(5, 20, H, W), 2, axis=0)
    assert _scores(padded)["frozen_ratio"] == pytest.approx(20 / 39)


def test_text_area_borders_and_phash(tmp_path: Path) -> None:
    cfg = DataConfig()
    base = synth.moving_scene(7, 30, H, W)
    clips = {
        "plain": base,
        "text": synth.add_text(base, "SALE 50%\nBUY NOW"),
        "bars": synth.letterbox(base, 12, left=16),
        "other": synth.moving_scene(8, 30, H, W),
    }
    scored = {}
    for name, frames in clips.items():
        synth.write_video(tmp_path / f"{name}.mp4", frames, FPS)
        rec = _rec(tmp_path / f"{name}.mp4", width=W, height=H, num_frames=30, fps=FPS)
        (scored[name],) = score_item(rec, cfg, tmp_path)
    assert scored["plain"].scores["text_area"] < 0.005
    assert scored["text"].scores["text_area"] > 0.05
    # Letterbox 12 rows top/bottom, pillarbox 16 columns left/right -> content box [16, 12, 96, 72].
    crop = scored["bars"].crop
    assert crop is not None and all(abs(a - b) <= 2 for a, b in zip(crop, [16, 12, 96, 72], strict=True))
    assert scored["bars"].scores["border_ratio"] == pytest.approx(1 - 96 * 72 / (W * H), abs=0.04)
    assert scored["plain"].crop is None and scored["plain"].scores["border_ratio"] == 0.0
    # Perceptual hash: text overlay / other content are far, a re-encode is near.
    synth.write_video(tmp_path / "again.mp4", base, FPS)
    from cinegen.data.media import write_mp4

    write_mp4(tmp_path / "again.mp4", base, FPS, crf=30)
    (again,) = score_item(_rec(tmp_path / "again.mp4", width=W, height=H, num_frames=30, fps=FPS), cfg, tmp_path)
    ph = {k: v.scores["phash"] for k, v in scored.items()}
    assert phash_distance(ph["plain"], again.scores["phash"]) <= 3
    assert phash_distance(ph["plain"], ph["other"]) > 15
    assert scored["plain"].scores["sharpness"] > 0 and 0.3 < scored["plain"].scores["brightness"] < 0.7


def test_images_are_scored_without_motion(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(synth.texture(3, H, W)).save(tmp_path / "still.png")
    (rec,) = scan_item(_rec(tmp_path / "still.png", type="image"), DataConfig(), tmp_path)
    assert rec.ok and rec.type == "image" and (rec.width, rec.height, rec.num_frames) == (W, H, 1)
    (s,) = score_item(rec, DataConfig(), tmp_path)
    assert s.scores["motion"] is None and s.scores["camera"] is None and len(s.scores["phash"]) == 48
