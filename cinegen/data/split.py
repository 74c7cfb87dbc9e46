"""Stage `split`: scene detection with PySceneDetect, then clips of `min_seconds`..`max_seconds`.

Reference behaviour (data-pipelines.md §1, §2.1, §6.3): EasyAnimate runs ContentDetector(threshold 27,
min_scene_len 15) and keeps 3-10 s clips; Open-Sora subtracts a frame at scene ends and chunks long scenes.
Here: each detected cut is trimmed by `trim_seconds` on both sides (transition frames; the file's own start
and end are not trimmed), scenes shorter than `min_seconds` are dropped with their reason, longer ones are
chunked into equal pieces of at most `max_seconds` (so no tail shorter than min_seconds is thrown away).

Cutting: "reencode" decodes the time range and re-encodes with libx264 (frame-accurate, applies the display
rotation, resamples VFR sources to a constant rate, optional downscale); "copy" remuxes packets from the
keyframe at or before the start (fast, no quality loss, start snapped to a keyframe).

Times are seconds on the source's presentation timeline.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np

from cinegen.data.config import DataConfig, SplitConfig
from cinegen.data.manifest import ClipRecord
from cinegen.data.media import Mp4Writer, apply_rotation, iter_video_frames
from cinegen.fsutil import atomic_path

STAGE = "split"


def _seconds(tc: object) -> float:
    """FrameTimecode -> seconds (PySceneDetect 0.7 `.seconds`, 0.6 `.get_seconds()`)."""
    s = getattr(tc, "seconds", None)
    return float(s) if s is not None else float(tc.get_seconds())  # type: ignore[attr-defined]


def detect_scenes(path: str | Path, cfg: SplitConfig) -> list[tuple[float, float]]:
    """[(start_s, end_s)] of scenes covering the video (one scene when no cut is found)."""
    import logging

    import scenedetect
    from scenedetect import AdaptiveDetector, ContentDetector

    # Importing scenedetect sets its logger to INFO ("Detecting scenes..." once per video).
    logging.getLogger("pyscenedetect").setLevel(logging.WARNING)

    if cfg.detector == "content":
        detector = ContentDetector(threshold=cfg.threshold, min_scene_len=cfg.min_scene_len)
    else:
        detector = AdaptiveDetector(
            adaptive_threshold=cfg.adaptive_threshold,
            min_scene_len=cfg.min_scene_len,
            min_content_val=cfg.min_content_val,
        )
    # suppress_output: PySceneDetect's PyAV backend otherwise re-installs FFmpeg's default log callback,
    # which floods stderr and changes the text of later error messages.
    kwargs = {"suppress_output": True} if cfg.backend == "pyav" else {}
    video = scenedetect.open_video(str(path), backend=cfg.backend, **kwargs)
    manager = scenedetect.SceneManager()
    manager.add_detector(detector)
    manager.detect_scenes(video=video)
    scenes = manager.get_scene_list(start_in_scene=True)
    return [(_seconds(a), _seconds(b)) for a, b in scenes]


def plan_clips(
    scenes: list[tuple[float, float]], cfg: SplitConfig
) -> tuple[list[tuple[int, int, float, float]], list[tuple[int, float, float, str]]]:
    """Pure planning. Returns kept clips [(scene, chunk, start, end)] and dropped scenes
    [(scene, start, end, detail)]."""
    kept: list[tuple[int, int, float, float]] = []
    dropped: list[tuple[int, float, float, str]] = []
    n = len(scenes)
    for i, (s, e) in enumerate(scenes):
        s2 = s + (cfg.trim_seconds if i > 0 else 0.0)  # trim only at detected cuts
        e2 = e - (cfg.trim_seconds if i < n - 1 else 0.0)
        length = e2 - s2
        if length + 1e-6 < cfg.min_seconds:
            dropped.append((i, s, e, f"scene {i} is {max(length, 0):.2f}s after trimming < {cfg.min_seconds}s"))
            continue
        pieces = max(1, math.ceil(length / cfg.max_seconds - 1e-9))
        step = length / pieces
        for k in range(pieces):
            kept.append((i, k, round(s2 + k * step, 6), round(s2 + (k + 1) * step, 6)))
    return kept, dropped


def _target_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int]:
    if max_short_side is None or min(width, height) <= max_short_side:
        return width - width % 2, height - height % 2
    s = max_short_side / min(width, height)
    w = int(round(width * s / 2)) * 2
    h = int(round(height * s / 2)) * 2
    return w, h


def cut_reencode(
    src: str | Path, dst: Path, start: float, end: float, fps: float, cfg: SplitConfig
) -> tuple[int, int, int, float]:
    """Frame-accurate cut: frames whose time lies on the grid start + k/fps (the latest source frame at or
    before each grid time, so VFR becomes CFR). Returns (frames, width, height, fps)."""
    import cv2

    writer: Mp4Writer | None = None
    size: tuple[int, int] | None = None
    n_out = int(round((end - start) * fps))
    grid = start + np.arange(n_out) / fps
    k = 0
    prev: np.ndarray | None = None
    try:
        for t, arr, rot in iter_video_frames(src, start=max(0.0, start - 1.0), end=end):
            img = apply_rotation(arr, rot)
            # Emit the previous frame for every grid time before this frame's time.
            while k < n_out and prev is not None and grid[k] < t - 1e-6:
                writer, size = _emit(writer, size, prev, dst, fps, cfg, cv2)
                k += 1
            prev = img
            if t > end:
                break
        while k < n_out and prev is not None:
            writer, size = _emit(writer, size, prev, dst, fps, cfg, cv2)
            k += 1
        if writer is None:
            raise ValueError(f"no frames in [{start:.3f}, {end:.3f})")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    assert size is not None
    return k, size[0], size[1], fps


def _emit(writer, size, img, dst, fps, cfg, cv2):  # type: ignore[no-untyped-def]
    if writer is None:
        h, w = img.shape[:2]
        size = _target_size(w, h, cfg.max_short_side)
        writer = Mp4Writer(dst, fps, crf=cfg.crf, preset=cfg.preset)
    if (img.shape[1], img.shape[0]) != size:
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    writer.write(img)
    return writer, size


def cut_copy(src: str | Path, dst: Path, start: float, end: float) -> tuple[int, float, float]:
    """Stream copy from the keyframe at or before `start` to `end`. Returns (frames, start', end')."""
    with av.open(str(src)) as inp, atomic_path(dst) as tmp:
        ist = inp.streams.video[0]
        tb = ist.time_base
        inp.seek(int(start / tb), stream=ist, backward=True, any_frame=False)
        with av.open(str(tmp), "w", format="mp4") as out:
            ost = out.add_stream_from_template(ist)
            first: int | None = None
            n = 0
            first_t = last_t = start
            for packet in inp.demux(ist):
                if packet.pts is None or packet.size == 0:
                    continue
                t = float(packet.pts * tb)
                if first is None:
                    if not packet.is_keyframe:
                        continue
                    first = packet.dts if packet.dts is not None else packet.pts
                    first_t = t
                if t >= end - 1e-6:
                    if packet.is_keyframe or t >= end + 2.0:
                        break
                    continue  # B-frames after `end` in decode order are not needed
                packet.pts -= first
                if packet.dts is not None:
                    packet.dts -= first
                packet.stream = ost
                out.mux(packet)
                n += 1
                last_t = max(last_t, t + float((packet.duration or 0) * tb))
            if n == 0:
                raise ValueError(f"no packets in [{start:.3f}, {end:.3f})")
    return n, first_t, last_t


def split_item(rec: ClipRecord, cfg: DataConfig, workdir: Path) -> list[ClipRecord]:
    """Stage function: one source video -> its clips (kept) and its too-short scenes (dropped)."""
    if rec.type != "video":
        return [rec]  # images pass through
    sc = cfg.split
    src = rec.path
    t0 = float(rec.meta.get("start_time") or 0.0)
    duration = float(rec.meta.get("duration") or rec.duration)
    if sc.detector == "none":
        scenes = [(0.0, duration)]
    else:
        scenes = detect_scenes(src, sc)
        if not scenes:
            scenes = [(0.0, duration)]
    kept, dropped = plan_clips(scenes, sc)
    rotation = int(rec.meta.get("rotation") or 0)
    vfr = bool(rec.meta.get("vfr"))
    out: list[ClipRecord] = []
    clips_dir = workdir / sc.clips_dir
    for scene, s, e, detail in dropped:
        out.append(
            ClipRecord(
                path="",
                type="video",
                text=rec.text,
                width=rec.width,
                height=rec.height,
                num_frames=int(round((e - s) * rec.fps)),
                fps=rec.fps,
                start=t0 + s,
                end=t0 + e,
                id=f"{rec.id}-{scene:03d}-xx",
                source_path=rec.source_path or rec.path,
                meta={"scene": scene, "scene_start": s, "scene_end": e},
            ).dropped(STAGE, "scene_too_short", detail)
        )
    for scene, chunk, s, e in kept:
        clip_id = f"{rec.id}-{scene:03d}-{chunk:02d}"
        rel = Path(sc.clips_dir) / f"{clip_id}.mp4"
        dst = clips_dir / f"{clip_id}.mp4"
        start, end = t0 + s, t0 + e
        mode = sc.mode
        if mode == "copy" and (rotation or vfr or sc.fps or sc.max_short_side):
            mode = "reencode"  # copying cannot rotate, resample or resize
        if mode == "copy":
            n, start, end = cut_copy(src, dst, start, end)
            w, h, fps = rec.width, rec.height, rec.fps
        else:
            fps = float(sc.fps or rec.fps)
            n, w, h, fps = cut_reencode(src, dst, start, end, fps, sc)
        scene_s, scene_e = scenes[scene]
        out.append(
            ClipRecord(
                path=rel.as_posix(),
                type="video",
                text=rec.text,
                width=w,
                height=h,
                num_frames=n,
                fps=round(fps, 6),
                start=round(start, 6),
                end=round(end, 6),
                id=clip_id,
                source_path=rec.source_path or rec.path,
                meta={
                    "scene": scene,
                    "chunk": chunk,
                    "scene_start": round(scene_s, 6),
                    "scene_end": round(scene_e, 6),
                    "cut": mode,
                    "source_fps": rec.fps,
                    "rotation_applied": rotation if mode == "reencode" else 0,
                },
            )
        )
    return out
