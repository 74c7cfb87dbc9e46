"""Stage `score`: cheap, weight-free quality signals per clip, written as columns of `scores`.

Dimensions: F frames, H height, W width; flow fields are (H, W, 2) in pixels per sampled interval.

| score          | how (reference)                                                                          |
|----------------|------------------------------------------------------------------------------------------|
| motion         | OpenCV Farnebaeck dense flow between frames sampled at `motion_fps`, at a fixed analysis |
|                | size; mean magnitude / frame diagonal x fps = frame diagonals per second, so it does not |
|                | depend on resolution or sampling rate (EasyAnimate's score is raw px at native size,     |
|                | data-pipelines.md §5 recommends normalising, as Data-Juicer's `relative=True`)           |
| camera         | per pair: median flow vector (global translation) and mean radial flow (zoom); majority |
|                | vote of static / pan_left / pan_right / tilt_up / tilt_down / zoom_in / zoom_out         |
|                | (Open-Sora `camera_motion_detect.py` idea: Farnebaeck, magnitude, angle, expansion)      |
| text_area      | RapidOCR text *detection* only; box area / frame area (EasyAnimate's text_score metric)  |
| sharpness      | variance of the Laplacian of luma at the analysis size                                   |
| brightness     | mean luma (0..1); contrast: std of luma (0..1)                                           |
| frozen_ratio   | fraction of consecutive native-rate frame pairs whose max |difference| <= `frozen_diff` |
|                | at the analysis size (repeated / duplicated frames)                                      |
| border_ratio   | black bars: rows / columns whose brightest pixel over the clip is < `border_luma`;      |
|                | the content box goes to `crop` [x, y, w, h] in clip pixels                               |
| phash          | 64-bit DCT perceptual hash of `phash_frames` frames (hex), for near-duplicate search     |
| aesthetic/clip | optional learned plug-ins (`cinegen.data.learned`), None when no local weights are given |
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from cinegen.data.config import DataConfig, ScoreConfig
from cinegen.data.manifest import ClipRecord, resolve_path
from cinegen.data.media import sample_frames

STAGE = "score"

CAMERA_CLASSES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")


# ------------------------------------------------------------------------------------------- pure math


def to_gray(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 RGB -> (F, H, W) float32 luma in 0..1 (BT.601 weights)."""
    f = frames.astype(np.float32)
    return (0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]) / 255.0


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) from gray a to gray b (0..1 floats), OpenCV's standard parameters."""
    import cv2

    a8 = np.clip(a * 255.0, 0, 255).astype(np.uint8)
    b8 = np.clip(b * 255.0, 0, 255).astype(np.uint8)
    return cv2.calcOpticalFlowFarneback(a8, b8, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def flow_stats(flow: np.ndarray) -> tuple[float, float, float, float]:
    """(mean |flow|, median dx, median dy, mean radial component) in pixels for one flow field."""
    h, w = flow.shape[:2]
    mag = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rx, ry = xs - (w - 1) / 2.0, ys - (h - 1) / 2.0
    rn = np.sqrt(rx**2 + ry**2) + 1e-6
    radial = (flow[..., 0] * rx + flow[..., 1] * ry) / rn  # > 0: content moves outwards (zoom in)
    return (
        float(mag.mean()),
        float(np.median(flow[..., 0])),
        float(np.median(flow[..., 1])),
        float(radial.mean()),
    )


def classify_camera(dx: float, dy: float, radial: float, static: float, zoom_ratio: float) -> str:
    """One pair's camera class from its global translation (dx, dy) and radial flow, all in frame
    diagonals per second. Content moving left (dx < 0) means the camera pans right."""
    trans = float(np.hypot(dx, dy))
    if max(trans, abs(radial)) < static:
        return "static"
    if abs(radial) > zoom_ratio * trans:
        return "zoom_in" if radial > 0 else "zoom_out"
    if abs(dx) >= abs(dy):
        return "pan_right" if dx < 0 else "pan_left"
    return "tilt_down" if dy < 0 else "tilt_up"


def motion_and_camera(gray: np.ndarray, fps: float, cfg: ScoreConfig) -> tuple[float, str]:
    """Mean flow magnitude in frame diagonals per second over consecutive sampled frames, and the
    majority camera class (ties broken by CAMERA_CLASSES order)."""
    if len(gray) < 2:
        return 0.0, "static"
    h, w = gray.shape[1:3]
    scale = fps / float(np.hypot(h, w))  # px per interval -> diagonals per second
    mags, votes = [], []
    for a, b in zip(gray[:-1], gray[1:], strict=True):
        mean_mag, dx, dy, radial = flow_stats(farneback(a, b))
        mags.append(mean_mag * scale)
        votes.append(classify_camera(dx * scale, dy * scale, radial * scale, cfg.camera_static, cfg.camera_zoom))
    counts = {c: votes.count(c) for c in CAMERA_CLASSES}
    camera = max(CAMERA_CLASSES, key=lambda c: (counts[c], -CAMERA_CLASSES.index(c)))
    return float(np.mean(mags)), camera


def sharpness(gray: np.ndarray) -> float:
    """Mean over frames of the variance of the Laplacian of luma (0..255 scale)."""
    import cv2

    return float(np.mean([cv2.Laplacian(g * 255.0, cv2.CV_32F).var() for g in gray]))


def frozen_ratio(gray: np.ndarray, threshold: float) -> float:
    """Fraction of consecutive frame pairs in which no pixel changes by more than `threshold` (0..1 luma):
    repeated / duplicated frames. The max, not the mean: slow, small motion (distant cars) changes few
    pixels by a little and must not count, while a repeated frame differs only by codec noise."""
    if len(gray) < 2:
        return 0.0
    peak = np.abs(np.diff(gray, axis=0)).max(axis=(1, 2))  # (F-1,)
    return float((peak <= threshold).mean())


def content_box(gray: np.ndarray, luma: float) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the part inside black bars, at the analysis size; None if the clip is all dark.
    A row / column is border when its brightest pixel over the whole clip is darker than `luma`."""
    peak = gray.max(axis=0)  # (H, W): brightest value each pixel reaches
    rows = np.flatnonzero(np.percentile(peak, 98, axis=1) >= luma)
    cols = np.flatnonzero(np.percentile(peak, 98, axis=0) >= luma)
    if len(rows) == 0 or len(cols) == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return x0, y0, x1 - x0, y1 - y0


def phash(gray: np.ndarray) -> int:
    """64-bit perceptual hash of one (H, W) luma frame: sign of the 8x8 low-frequency DCT block against its
    median (DC excluded from the median)."""
    import cv2

    small = cv2.resize(gray.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    block = cv2.dct(small)[:8, :8].flatten()
    med = np.median(block[1:])
    bits = block > med
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def phash_hex(hashes: list[int]) -> str:
    return "".join(f"{h:016x}" for h in hashes)


def phash_distance(a: str, b: str) -> float:
    """Mean Hamming distance per 64-bit frame hash between two phash strings (inf if lengths differ)."""
    if not a or not b or len(a) != len(b):
        return float("inf")
    n = len(a) // 16
    total = sum(bin(int(a[i * 16 : (i + 1) * 16], 16) ^ int(b[i * 16 : (i + 1) * 16], 16)).count("1") for i in range(n))
    return total / n


# ----------------------------------------------------------------------------------------------- OCR


@functools.lru_cache(maxsize=2)
def _ocr_engine(box_thresh: float) -> Any:
    from rapidocr_onnxruntime import RapidOCR

    # One ONNX thread: parallelism comes from the worker processes.
    # limit_type "max" with a large limit: the detector sees the frame at the size `text_area_ratio` chose
    # (RapidOCR's default "min"/736 would upsample small frames and hallucinate text in blurry texture).
    return RapidOCR(
        det_box_thresh=box_thresh,
        det_limit_type="max",
        det_limit_side_len=4096,
        intra_op_num_threads=1,
        inter_op_num_threads=1,
    )


def text_area_ratio(frame_rgb: np.ndarray, side: int, box_thresh: float = 0.5) -> float:
    """Detected text box area / frame area (RapidOCR detector only, no recognition)."""
    import cv2

    h, w = frame_rgb.shape[:2]
    s = min(1.0, side / max(h, w))  # downscale large frames, never upscale small ones
    img = cv2.resize(frame_rgb, (max(32, int(round(w * s))), max(32, int(round(h * s)))), interpolation=cv2.INTER_AREA)
    engine = _ocr_engine(box_thresh)
    boxes, _ = engine.text_det(np.ascontiguousarray(img[..., ::-1]))  # the detector wants BGR
    if boxes is None or len(boxes) == 0:
        return 0.0
    area = sum(abs(cv2.contourArea(np.asarray(b, dtype=np.float32))) for b in boxes)
    return float(min(1.0, area / float(img.shape[0] * img.shape[1])))


# ------------------------------------------------------------------------------------------ the stage


def ocr_frame_indices(n: int, k: int) -> list[int]:
    """The (at most k) frames of n the OCR looks at: the middle one first, then k evenly spaced ones."""
    order = [n // 2] + [int(round((i + 1) * (n - 1) / (k + 1))) for i in range(k)]
    return list(dict.fromkeys(order))[:k]


def _load_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _resize_long(frames: np.ndarray, long_side: int) -> np.ndarray:
    import cv2

    h, w = frames.shape[1:3]
    s = long_side / max(h, w)
    size = (max(2, int(round(w * s))), max(2, int(round(h * s))))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def compute_scores(frames: np.ndarray, fps: float | None, cfg: ScoreConfig, native: np.ndarray | None = None):
    """All weight-free scores of one clip. `frames` (F, H, W, 3) at the analysis size and the clip's own
    rate `fps` (None for an image); `native` are full-resolution frames for OCR (default: `frames`).
    Returns (scores dict, crop box in analysis pixels or None)."""
    gray = to_gray(frames)
    n = len(gray)
    scores: dict[str, Any] = {}
    if fps and n >= 2:
        step = max(1, int(round(fps / cfg.motion_fps)))
        idx = np.arange(0, n, step)[: cfg.max_analysis_frames]
        motion, camera = motion_and_camera(gray[idx], fps / step, cfg)
        scores["motion"] = round(motion, 6)
        scores["camera"] = camera
        scores["frozen_ratio"] = round(frozen_ratio(gray, cfg.frozen_diff), 6)
        sample = gray[idx]
    else:
        scores["motion"] = None
        scores["camera"] = None
        scores["frozen_ratio"] = None
        sample = gray
    box = content_box(gray, cfg.border_luma)
    h, w = gray.shape[1:3]
    if box is None:
        scores["border_ratio"] = 1.0
        inner = sample
    else:
        x, y, bw, bh = box
        scores["border_ratio"] = round(1.0 - (bw * bh) / float(w * h), 6)
        # Inset by 2 px so the bar edge (and its chroma bleed) does not count as image sharpness.
        m = 2 if scores["border_ratio"] > 0 and min(bw, bh) > 8 else 0
        inner = sample[:, y + m : y + bh - m, x + m : x + bw - m]
    scores["sharpness"] = round(sharpness(inner), 4)
    scores["brightness"] = round(float(inner.mean()), 6)
    scores["contrast"] = round(float(inner.std(axis=(1, 2)).mean()), 6)
    pick = (
        [int(round((k + 1) * (n - 1) / (cfg.phash_frames + 1))) for k in range(cfg.phash_frames)]
        if n > 1
        else [0] * cfg.phash_frames
    )
    scores["phash"] = phash_hex([phash(gray[i]) for i in pick])
    if cfg.ocr:
        src = native if native is not None else frames
        idx_ocr = ocr_frame_indices(len(src), cfg.ocr_frames)
        scores["text_area"] = round(max(text_area_ratio(src[i], cfg.ocr_side, cfg.ocr_box_thresh) for i in idx_ocr), 6)
    else:
        scores["text_area"] = None
    return scores, box


def score_item(rec: ClipRecord, cfg: DataConfig, workdir: Path) -> list[ClipRecord]:
    """Stage function: one clip (or image) -> the same row with its scores (and crop box) filled in."""
    from cinegen.data import learned

    sc = cfg.score
    path = str(resolve_path(rec.path, workdir))
    if rec.type == "image":
        native = _load_image(path)[None]
        frames = _resize_long(native, sc.analysis_size)
        fps = None
    else:
        decoded = sample_frames(path, fps=None, long_side=sc.analysis_size, max_frames=None)
        frames = decoded.frames
        fps = rec.fps or None
        native = None
        if sc.ocr:
            # OCR at native resolution: decode just the frames it looks at (middle first).
            ts = [decoded.times[i] for i in ocr_frame_indices(len(frames), sc.ocr_frames)]
            native = np.stack(
                [
                    sample_frames(path, start=t, end=t + 1e-3 + 1.0 / max(fps or 1.0, 1.0), max_frames=1).frames[0]
                    for t in ts
                ]
            )
    scores, box = compute_scores(frames, fps, sc, native=native)
    scores.update(learned.learned_scores(rec, frames, sc))
    crop = None
    if box is not None and scores["border_ratio"] > 0:
        ah, aw = frames.shape[1:3]
        sx, sy = rec.width / aw, rec.height / ah
        x, y, bw, bh = box
        x0, y0 = int(np.ceil(x * sx)), int(np.ceil(y * sy))
        x1, y1 = int(np.floor((x + bw) * sx)), int(np.floor((y + bh) * sy))
        crop = [x0 - x0 % 2, y0 - y0 % 2, (x1 - x0) - (x1 - x0) % 2, (y1 - y0) - (y1 - y0) % 2]
    return [dataclasses.replace(rec, scores={**rec.scores, **scores}, crop=crop)]
