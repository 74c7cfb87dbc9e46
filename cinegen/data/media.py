"""Small PyAV helpers the data stages and the training loader share: decode frames (by time, at an analysis fps
and size, or by index), read region masks, and write H.264 clips atomically.

Dimensions: F frames, H height, W width; frames are uint8 RGB arrays (F, H, W, 3).

The pipeline decodes with PyAV directly (not `cinegen.video.read_video`) because it needs time ranges,
resampling to an analysis fps and downscaling inside the decoder (swscale) to stay fast on long sources.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cinegen.data.manifest import IMAGE_EXTENSIONS
from cinegen.fsutil import atomic_path


class ClipError(RuntimeError):
    """A clip that cannot be used; `reason` is a short key for the skip counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Decoded:
    frames: np.ndarray  # (F, H, W, 3) uint8
    times: np.ndarray  # (F,) seconds of each frame in the source
    rotation: int  # counter-clockwise degrees (PyAV `VideoFrame.rotation`), already applied to `frames`


def fit_size(width: int, height: int, long_side: int | None, multiple: int = 2) -> tuple[int, int]:
    """(w, h) scaled so the long side is `long_side` (None: unchanged), rounded to `multiple`."""
    if long_side is None:
        return width, height
    s = long_side / max(width, height)
    w = max(multiple, int(round(width * s / multiple)) * multiple)
    h = max(multiple, int(round(height * s / multiple)) * multiple)
    return w, h


def quarter_turns(rotation: int) -> int:
    """Counter-clockwise quarter turns (0-3) of a display rotation in degrees (multiples of 90)."""
    return (int(round(rotation / 90.0)) % 4) if rotation else 0


def apply_rotation(img: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate (H, W, C) by `rotation` degrees counter-clockwise, the display convention of PyAV's
    `VideoFrame.rotation` / `set_display_rotation` (multiples of 90 only)."""
    k = quarter_turns(rotation)
    return np.ascontiguousarray(np.rot90(img, k=k)) if k else img


def displayed_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    """(width, height) of a stored frame as displayed: a quarter turn (90 / 270, as `apply_rotation`) swaps them."""
    return (height, width) if quarter_turns(rotation) % 2 else (width, height)


def iter_av_frames(
    path: str | os.PathLike[str], start: float | None = None, end: float | None = None
) -> Iterator[av.VideoFrame]:
    """The one PyAV decode loop: yield the decoded frames with start <= time < end (frames without a time are
    skipped). Seeks to the keyframe before `start` when given; the container closes when the generator does."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # No codec threads: the pipeline runs one worker process per core, and frame threading makes
        # `to_ndarray` of small frames several times slower (measured 4x at 128x96).
        if start is not None and start > 0 and stream.time_base is not None:
            # Seek lands on the keyframe at or before `start`; frames before it are skipped below.
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            t = frame.time
            if t is None:
                continue
            if start is not None and t < start - 1e-6:
                continue
            if end is not None and t >= end - 1e-6:
                break
            yield frame


def iter_video_frames(
    path: str | os.PathLike[str],
    start: float | None = None,
    end: float | None = None,
    size: tuple[int, int] | None = None,
    gray: bool = False,
) -> Iterator[tuple[float, np.ndarray, int]]:
    """Yield (time_s, frame, rotation) for frames with start <= t < end. `size` = (w, h) of the *stored*
    frame (before rotation); the decoder scales it. Seeks to the keyframe before `start` when given."""
    fmt = "gray" if gray else "rgb24"
    kw = {"width": size[0], "height": size[1]} if size else {}
    for frame in iter_av_frames(path, start, end):
        yield float(frame.time), frame.to_ndarray(format=fmt, **kw), int(frame.rotation or 0)


def sample_frames(
    path: str | os.PathLike[str],
    fps: float | None = None,
    long_side: int | None = None,
    start: float | None = None,
    end: float | None = None,
    gray: bool = False,
    max_frames: int | None = None,
) -> Decoded:
    """Decode frames at (about) `fps` (None: every frame), resized so the long side is `long_side`, with the
    stream's display rotation applied. Sampling picks the first frame at or after each grid time
    start + k/fps, which is correct for VFR streams too."""
    size = None
    if long_side is not None:
        w, h = probe_size(path)
        size = fit_size(w, h, long_side)
    frames: list[np.ndarray] = []
    times: list[float] = []
    rotation = 0
    next_t = None
    for t, arr, rot in iter_video_frames(path, start, end, size, gray):
        rotation = rot
        if fps is not None:
            if next_t is None:
                next_t = t
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            while next_t <= t:  # a gap in a VFR stream: move the grid past it
                next_t += 1.0 / fps
        frames.append(apply_rotation(arr, rot))
        times.append(t)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise ValueError(f"{path}: no decodable video frames in [{start}, {end})")
    return Decoded(np.stack(frames), np.asarray(times, dtype=np.float64), rotation)


def probe_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    with av.open(str(path)) as container:
        cc = container.streams.video[0].codec_context
        return int(cc.width), int(cc.height)


class Mp4Writer:
    """Incremental H.264 writer into a temp file, renamed over `path` on `close()` (atomic)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        crf: int = 20,
        preset: str = "veryfast",
        rotation: int = 0,
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self._container = av.open(str(self._tmp), "w", format="mp4")
        # Fractional rates (29.97) stay exact; the x264 bitstream is deterministic for fixed options.
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(
            "libx264", rate=rate, options={"crf": str(crf), "preset": preset, "threads": str(threads)}
        )
        self._stream.pix_fmt = "yuv420p"
        self._rotation = rotation
        self._opened = False
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if not self._opened:
            # yuv420p needs even sizes; an odd edge row/column is cropped.
            self._stream.width, self._stream.height = w - w % 2, h - h % 2
            if self._rotation:
                self._stream.set_display_rotation(self._rotation)
            self._opened = True
        frame = frame[: self._stream.height, : self._stream.width]
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        try:
            if not self._opened:
                raise ValueError(f"{self.path}: no frames written")
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException as e:
            with contextlib.suppress(Exception):
                self._container.close()
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()
        err = RuntimeError("aborted")
        with contextlib.suppress(RuntimeError):
            self._ctx.__exit__(RuntimeError, err, None)

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        if et is None:
            self.close()
        else:
            self.abort()


def write_mp4(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: float,
    crf: int = 20,
    preset: str = "veryfast",
    rotation: int = 0,
) -> Path:
    """Write (F, H, W, 3) uint8 frames as H.264 MP4, atomically."""
    with Mp4Writer(path, fps, crf=crf, preset=preset, rotation=rotation) as w:
        for f in frames:
            w.write(f)
    return Path(path)


def decode_video_frames(path: str, indices: Sequence[int], start_seconds: float = 0.0) -> np.ndarray:
    """Decode the frames at `indices` (counted from the first frame at or after `start_seconds`) -> uint8
    (F, H, W, 3), as displayed: the stream's rotation is applied, as in the manifest's width and height
    (`cinegen.data.probe`) and the pipeline's crop boxes. Only the wanted frames are converted."""
    want = set(indices)
    last = max(want)
    got: dict[int, np.ndarray] = {}
    decoded = 0
    for frame in iter_av_frames(path, start_seconds if start_seconds > 0 else None):
        if decoded in want:
            got[decoded] = apply_rotation(frame.to_ndarray(format="rgb24"), int(frame.rotation or 0))
        decoded += 1
        if decoded > last:
            break
    missing = sorted(want - got.keys())
    if missing:
        raise ClipError("truncated", f"{path}: frames {missing[:3]} missing (decoded {decoded})")
    return np.stack([got[k] for k in indices])


def read_mask_frames(path: str, indices: Sequence[int] | None, segment_start: float = 0.0) -> np.ndarray:
    """A mask file's frames at `indices` (None: an image's single frame) -> float32 (F, H, W) in [0, 1].

    .npz (first array, or the one named "mask") / .npy: (F, H, W) or (H, W), bool -> {0, 1}, uint8 -> / 255,
    floats as they are; images and videos: brightness (mean of RGB) / 255. A single (H, W) array or an image is a
    static mask: every requested frame gets it.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    n = len(indices) if indices is not None else 1  # frames a static mask is repeated to
    if suffix in (".npz", ".npy"):
        if suffix == ".npz":
            with np.load(p) as z:
                arr = z["mask"] if "mask" in z.files else z[z.files[0]]
        else:
            arr = np.load(p)
        if arr.ndim == 2:  # static
            arr = np.repeat(arr[None], n, axis=0)
        elif arr.ndim != 3:
            raise ClipError("bad_mask", f"{path}: mask array must be (F, H, W) or (H, W), got {arr.shape}")
        elif indices is not None:
            if max(indices) >= arr.shape[0]:
                raise ClipError("bad_mask", f"{path}: {arr.shape[0]} mask frames, frame {max(indices)} needed")
            arr = arr[list(indices)]
        else:  # an image's mask: the first frame
            arr = arr[:1]
        if arr.dtype == np.uint8:
            return arr.astype(np.float32) / 255.0
        return arr.astype(np.float32)
    if suffix in IMAGE_EXTENSIONS:
        from PIL import Image

        with Image.open(p) as im:
            rgb = np.array(im.convert("RGB"))[None]  # (1, H, W, 3): static
        rgb = np.repeat(rgb, n, axis=0)
    else:
        rgb = decode_video_frames(str(p), indices if indices is not None else [0], segment_start)
    return rgb.astype(np.float32).mean(-1) / 255.0
