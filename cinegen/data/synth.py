"""Synthetic videos with known truth, for the data pipeline's tests, benchmark and demos.

Each generator returns uint8 frames (F, H, W, 3) and is deterministic for a seed: textured backgrounds (so
optical flow has something to track), moving shapes, camera pans, hard cuts, burnt-in text, letterboxing,
and broken files (corrupt, truncated, zero-length, audio-only, rotated).

Dimensions: F frames, H height, W width.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from cinegen.data.media import write_mp4


def texture(seed: int, height: int, width: int, scale: int = 8) -> np.ndarray:
    """Smooth colourful noise (H, W, 3) uint8: random values on a coarse grid, bilinearly upsampled."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 226, size=(height // scale + 2, width // scale + 2, 3)).astype(np.uint8)
    big = cv2.resize(coarse, (width + 2 * scale, height + 2 * scale), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(big[scale : scale + height, scale : scale + width])


def static_scene(seed: int, frames: int, height: int, width: int) -> np.ndarray:
    """The same textured image every frame (a frozen / static clip)."""
    img = texture(seed, height, width)
    return np.repeat(img[None], frames, axis=0)  # (F, H, W, 3)


def moving_scene(
    seed: int,
    frames: int,
    height: int,
    width: int,
    speed: float = 3.0,
    pan: tuple[float, float] = (0.0, 0.0),
    shapes: int = 2,
) -> np.ndarray:
    """Textured background, optionally panning by `pan` = (dx, dy) px/frame (content moves by +pan), with
    `shapes` filled discs moving at about `speed` px/frame in random directions (bouncing off the edges)."""
    import cv2

    rng = np.random.default_rng(seed)
    margin = int(np.ceil(max(abs(pan[0]), abs(pan[1])) * frames)) + 1
    bg = texture(seed, height + 2 * margin, width + 2 * margin)
    pos = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height], size=(shapes, 2))
    ang = rng.uniform(0, 2 * np.pi, size=shapes)
    vel = speed * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    colors = rng.integers(0, 256, size=(shapes, 3))
    radius = max(3, min(height, width) // 8)
    out = np.empty((frames, height, width, 3), np.uint8)
    for i in range(frames):
        # Camera pan: the visible window moves by -pan so the content appears to move by +pan.
        ox = int(round(margin - pan[0] * i))
        oy = int(round(margin - pan[1] * i))
        img = np.ascontiguousarray(bg[oy : oy + height, ox : ox + width])
        for s in range(shapes):
            cx, cy = pos[s]
            cv2.circle(img, (int(cx), int(cy)), radius, tuple(int(c) for c in colors[s]), -1, cv2.LINE_AA)
        out[i] = img
        pos += vel
        for d, lim in ((0, width), (1, height)):
            hit = (pos[:, d] < radius) | (pos[:, d] > lim - radius)
            vel[hit, d] *= -1
            pos[:, d] = np.clip(pos[:, d], radius, lim - radius)
    return out


def zoom_scene(seed: int, frames: int, height: int, width: int, rate: float = 0.02) -> np.ndarray:
    """Zoom into the centre of a textured image by `rate` scale per frame (negative: zoom out)."""
    import cv2

    big = texture(seed, height * 2, width * 2, scale=12)
    out = np.empty((frames, height, width, 3), np.uint8)
    s0 = 1.0 if rate >= 0 else (1.0 + rate) ** -(frames - 1)  # zoom out starts zoomed in
    for i in range(frames):
        s = s0 * (1.0 + rate) ** i  # magnification relative to the 2x image shown whole
        cw, ch = (2 * width) / s, (2 * height) / s  # source window size
        x0, y0 = width - cw / 2, height - ch / 2
        crop = big[int(round(y0)) : int(round(y0 + ch)), int(round(x0)) : int(round(x0 + cw))]
        out[i] = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def add_text(frames: np.ndarray, text: str, scale: float | None = None, thickness: int | None = None) -> np.ndarray:
    """Burn white text with a black outline into the middle band of every frame (subtitles / captions)."""
    import cv2

    out = frames.copy()
    h, w = frames.shape[1:3]
    scale = scale or max(0.4, w / 320)
    thickness = thickness or max(1, int(round(scale * 2)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    lines = text.split("\n")
    line_h = int(cv2.getTextSize("Ag", font, scale, thickness)[0][1] * 1.8)
    y0 = h // 2 - (len(lines) - 1) * line_h // 2
    for f in out:
        for j, line in enumerate(lines):
            (tw, _), _ = cv2.getTextSize(line, font, scale, thickness)
            org = ((w - tw) // 2, y0 + j * line_h)
            cv2.putText(f, line, org, font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
            cv2.putText(f, line, org, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def letterbox(frames: np.ndarray, top: int, bottom: int | None = None, left: int = 0, right: int | None = None):
    """Black bars: `top`/`bottom` rows and `left`/`right` columns set to black (content is kept, covered)."""
    out = frames.copy()
    bottom = top if bottom is None else bottom
    right = left if right is None else right
    if top:
        out[:, :top] = 0
    if bottom:
        out[:, -bottom:] = 0
    if left:
        out[:, :, :left] = 0
    if right:
        out[:, :, -right:] = 0
    return out


def concat(*clips: np.ndarray) -> np.ndarray:
    """Hard cuts between clips: frame len(a) is the first frame of the second scene, and so on."""
    return np.concatenate(clips, axis=0)


# ------------------------------------------------------------------------------------------- broken files


def write_corrupt(path: str | os.PathLike[str], size: int = 4096, seed: int = 0) -> Path:
    """Random bytes with a video suffix (no container can open it)."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return Path(path)


def write_truncated(src: str | os.PathLike[str], path: str | os.PathLike[str], keep: float = 0.5) -> Path:
    """The first `keep` fraction of a valid file's bytes (an interrupted download)."""
    data = Path(src).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def write_empty(path: str | os.PathLike[str]) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def write_audio_only(path: str | os.PathLike[str], seconds: float = 1.0, rate: int = 16000) -> Path:
    """An MP4 (M4A) with one AAC audio stream and no video stream: a 440 Hz tone."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=rate)
        s.layout = "mono"
        frame_size = 1024
        for i in range(0, len(samples), frame_size):
            chunk = samples[i : i + frame_size]
            fr = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            fr.sample_rate = rate
            fr.pts = i
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return Path(path)


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: float, rotation: int = 0) -> Path:
    """Lossless-ish H.264 (crf 12) so the synthetic truth survives compression."""
    return write_mp4(path, frames, fps, crf=12, preset="veryfast", rotation=rotation)


def make_corpus(root: str | os.PathLike[str], height: int = 96, width: int = 128, fps: float = 10.0) -> dict:
    """A small raw-video folder with known truth (used by the tests, the benchmark and demos).

    Returns {"cuts": [frame indices of the hard cuts in cuts.mp4], "expect": {file stem: expected outcome}}
    where an outcome is "kept", or the reason key the pipeline should record.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    h, w = height, width
    n = int(round(4 * fps))
    a, b, c = int(round(4.5 * fps)), int(round(4.0 * fps)), int(round(5.0 * fps))
    cuts = [a, a + b]
    write_video(
        root / "cuts.mp4",
        concat(
            moving_scene(11, a, h, w),
            moving_scene(12, b, h, w, pan=(-2, 0), shapes=1),
            moving_scene(13, c, h, w, speed=2),
        ),
        fps,
    )
    (root / "cuts.txt").write_text(
        "The video shows three scenes of colourful discs. The video shows three scenes of colourful discs.\n"
    )
    write_video(root / "text.mp4", add_text(moving_scene(21, n, h, w), "SALE 50%\nBUY NOW"), fps)
    write_video(root / "static.mp4", static_scene(31, n, h, w), fps)
    bar = int(round(h * 0.3))
    write_video(root / "letterbox.mp4", letterbox(moving_scene(41, n, h, w), bar), fps)
    dup = moving_scene(51, n, h, w)
    write_video(root / "dup_a.mp4", dup, fps)
    write_mp4(root / "dup_b.mp4", dup, fps, crf=28)  # the same content, re-encoded at a lower quality
    write_video(root / "rotated.mp4", moving_scene(61, n, h, w), fps, rotation=90)
    write_corrupt(root / "corrupt.mp4")
    write_empty(root / "empty.mp4")
    write_audio_only(root / "audio_only.mp4")
    write_truncated(root / "dup_a.mp4", root / "truncated.mp4", keep=0.5)
    return {
        "cuts": cuts,
        "expect": {
            "cuts": "kept",
            "text": "text",
            "static": "static",
            "letterbox": "black_borders",
            "dup_a": "kept",
            "dup_b": "near_duplicate",
            "rotated": "kept",
            "corrupt": "unreadable",
            "empty": "empty_file",
            "audio_only": "audio_only",
            "truncated": "unreadable",
        },
    }
