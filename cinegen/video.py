"""The `Video` type and its file formats: MP4 (H.264 via PyAV), GIF, PNG contact sheet.

Dimension legend: F frames, H height, W width; frames are uint8 ``(F, H, W, 3)`` RGB everywhere in this module.
Tensors coming from the VAE are ``(B, 3, F, H, W)`` in [-1, 1]; `from_tensor` converts one of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from cinegen.fsutil import atomic_write

__all__ = ["Video", "contact_sheet", "frames_to_tensor", "read_video", "write_mp4", "write_gif", "VideoReadError"]


class VideoReadError(RuntimeError):
    """A video file could not be opened or decoded; the message names the file."""


@dataclass
class Video:
    """Decoded RGB frames plus their frame rate."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: float = 8.0

    def __post_init__(self) -> None:
        f = self.frames
        if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"Video frames must be uint8 (F, H, W, 3), got {f.dtype} {tuple(f.shape)}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @classmethod
    def from_tensor(cls, video: torch.Tensor, fps: float = 8.0) -> Video:
        """(3, F, H, W) or (1, 3, F, H, W) in [-1, 1] -> Video (the reference postprocess: x/2 + 0.5, clamp)."""
        if video.ndim == 5:
            if video.shape[0] != 1:
                raise ValueError("from_tensor takes one video; index the batch first")
            video = video[0]
        x = (video.float() / 2 + 0.5).clamp(0, 1)  # (3, F, H, W)
        frames = (x.permute(1, 2, 3, 0) * 255).round().to(torch.uint8).cpu().numpy()  # (F, H, W, 3)
        return cls(frames=frames, fps=fps)

    def to_tensor(self) -> torch.Tensor:
        """-> (3, F, H, W) float32 in [-1, 1]."""
        return frames_to_tensor(self.frames).contiguous()

    def save(self, path: str | Path, **kwargs: object) -> Path:
        """Write by extension: .mp4 (H.264), .gif, .png (contact sheet); atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ext = path.suffix.lower()
        if ext == ".mp4":
            write_mp4(self.frames, self.fps, path, **kwargs)  # type: ignore[arg-type]
        elif ext == ".gif":
            write_gif(self.frames, self.fps, path)
        elif ext == ".png":
            with atomic_write(path, "wb") as f:
                contact_sheet(self.frames, **kwargs).save(f, format="PNG")  # type: ignore[arg-type]
        else:
            raise ValueError(f"Unknown video extension {ext!r} for {path}: use .mp4, .gif or .png")
        return path


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> (3, F, H, W) float32 in [-1, 1] (the reference preprocess x / 127.5 - 1); a
    permuted view, not made contiguous."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0  # (F, H, W, 3)
    return x.permute(3, 0, 1, 2)  # (3, F, H, W)


def _even(n: int) -> int:
    return n + (n % 2)


def write_mp4(frames: np.ndarray, fps: float, path: str | Path, crf: int = 18, preset: str = "medium") -> None:
    """H.264 yuv420p MP4 (plays everywhere). Odd sizes are padded by edge replication to even sizes."""
    import av

    frames = np.asarray(frames)
    f, h, w, _ = frames.shape
    eh, ew = _even(h), _even(w)
    if (eh, ew) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, eh - h), (0, ew - w), (0, 0)), mode="edge")
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = ew, eh, "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        tmp.replace(path)  # atomic: a crash never leaves a half-written file under the final name
    except BaseException:
        tmp.unlink(missing_ok=True)  # an encoder error leaves no stray .part file behind
        raise


def write_gif(frames: np.ndarray, fps: float, path: str | Path) -> None:
    """Looping GIF (frame durations in whole ms, at least 20 ms as browsers clamp shorter ones); atomic."""
    images = [Image.fromarray(f) for f in frames]
    duration_ms = max(int(round(1000 / fps)), 20)
    with atomic_write(path, "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def contact_sheet(
    frames: np.ndarray, cols: int | None = None, max_frames: int = 16, label: str | None = None
) -> Image.Image:
    """Grid of evenly spaced frames (at most `max_frames`), with frame indices, for a quick look at a video."""
    f, h, w, _ = frames.shape
    n = min(f, max_frames)
    idx = np.linspace(0, f - 1, n).round().astype(int)
    cols = cols or min(n, 8)
    rows = math.ceil(n / cols)
    pad, top = 2, (14 if label else 0)
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad + top), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    if label:
        draw.text((pad, 1), label[:200], fill=(230, 230, 230))
    for k, i in enumerate(idx):
        r, c = divmod(k, cols)
        x, y = pad + c * (w + pad), top + pad + r * (h + pad)
        sheet.paste(Image.fromarray(frames[i]), (x, y))
        draw.text((x + 2, y + 1), str(int(i)), fill=(255, 255, 255))
    return sheet


def read_video(
    path: str | Path,
    max_frames: int | None = None,
    start: float = 0.0,
    end: float | None = None,
    size: tuple[int, int] | None = None,
) -> Video:
    """Decode RGB frames with PyAV (optionally a [start, end) time window, resized to (H, W))."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 8.0)
            out: list[np.ndarray] = []
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else len(out) / fps
                if t < start - 1e-6:
                    continue
                if end is not None and t >= end - 1e-6:
                    break
                if size is not None:
                    frame = frame.reformat(width=size[1], height=size[0])
                out.append(frame.to_ndarray(format="rgb24"))
                if max_frames is not None and len(out) >= max_frames:
                    break
    except VideoReadError:
        raise
    except Exception as e:  # PyAV raises many error types for corrupt input
        raise VideoReadError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e
    if not out:
        raise VideoReadError(f"{path}: no decodable frames")
    return Video(frames=np.stack(out), fps=fps)
