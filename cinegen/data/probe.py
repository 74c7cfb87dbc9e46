"""Stage `scan`: find raw media and probe each file with PyAV into a manifest row.

Per file (a pure function of the file and the config): container opens, a video stream exists (audio-only is
recorded), the first frame decodes (its display rotation is read there), packets are demuxed without decoding
to count frames, detect variable frame rate and a truncated tail (last packet far before the declared end).
Unreadable, empty, truncated, audio-only, huge, tiny and (optionally) rotated inputs become rows with
status "error" / "dropped" and a reason, never an exception that stops the run.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import av
import numpy as np

from cinegen.data.config import DataConfig, ScanConfig
from cinegen.data.manifest import STATUS_ERROR, ClipRecord, read_manifest, resolve_path
from cinegen.data.media import displayed_size

STAGE = "scan"


def make_id(rel_path: str) -> str:
    """Readable, stable id: slug of the file stem + 8 hex of the path relative to the input root."""
    stem = Path(rel_path).stem
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-").lower()[:40] or "file"
    return f"{slug}-{hashlib.sha1(rel_path.encode()).hexdigest()[:8]}"


def discover(input_path: str | os.PathLike[str], cfg: ScanConfig) -> list[ClipRecord]:
    """Input = a folder (searched recursively, sorted), one media file, a .txt list of paths, or a manifest
    (.jsonl/.json/.csv/.parquet; its text is kept as a caption source)."""
    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(f"input not found: {root}")
    exts = {e.lower() for e in cfg.extensions}
    img_exts = {e.lower() for e in cfg.image_extensions} if cfg.include_images else set()

    def row(p: Path, base: Path, text: str = "") -> ClipRecord:
        p = p.resolve()
        try:
            rel = p.relative_to(base.resolve()).as_posix()
        except ValueError:
            rel = p.as_posix()
        kind = "image" if p.suffix.lower() in img_exts else "video"
        return ClipRecord(path=str(p), type=kind, text=text, id=make_id(rel), source_path=str(p))

    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts | img_exts)
        return [row(p, root) for p in files]
    suffix = root.suffix.lower()
    if suffix == ".txt":
        base = root.parent
        out = []
        for line in root.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(row(resolve_path(line, base), base))
        return out
    if suffix in (".jsonl", ".json", ".csv", ".parquet"):
        base = root.parent
        out = []
        for r in read_manifest(root):
            out.append(row(resolve_path(r.path, base), base, r.text))
        return out
    return [row(root, root.parent)]


def _frame_intervals(pts: np.ndarray) -> np.ndarray:
    ts = np.unique(pts)  # sorted presentation times (B-frames arrive out of order)
    return np.diff(ts)


def _file_error(rec: ClipRecord, path: Path) -> ClipRecord | None:
    """The error row of a missing or empty input file (None when the file has bytes)."""
    if not path.exists():
        return rec.dropped(STAGE, "missing", f"{path} does not exist", STATUS_ERROR)
    if path.stat().st_size == 0:
        return rec.dropped(STAGE, "empty_file", f"{path.name} has 0 bytes", STATUS_ERROR)
    return None


def probe_video(rec: ClipRecord, cfg: ScanConfig) -> ClipRecord:
    path = Path(rec.path)
    if (err := _file_error(rec, path)) is not None:
        return err
    size = path.stat().st_size
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        return rec.dropped(STAGE, "unreadable", f"{path.name}: {e}", STATUS_ERROR)
    with container:
        if not container.streams.video:
            if container.streams.audio:
                return rec.dropped(STAGE, "audio_only", f"{path.name} has audio but no video stream")
            return rec.dropped(STAGE, "no_video_stream", f"{path.name} has no video stream", STATUS_ERROR)
        stream = container.streams.video[0]
        cc = stream.codec_context
        stored_w, stored_h = int(cc.width or 0), int(cc.height or 0)
        # Read everything needed from the stream while the container is open (PyAV objects dangle after).
        rate_guesses = [float(g) for g in (stream.average_rate, stream.guessed_rate) if g]
        tb = stream.time_base
        declared = None
        if stream.duration is not None and tb is not None:
            declared = float(stream.duration * tb)
        elif container.duration is not None:
            declared = container.duration / av.time_base
        meta = {
            "codec": cc.name,
            "file_size": size,
            "bit_rate": int(container.bit_rate or 0),
            "stored_width": stored_w,
            "stored_height": stored_h,
            "has_audio": bool(container.streams.audio),
            "declared_duration": declared,
        }
        # Decode the first frame: proves the codec works and reveals the display rotation.
        try:
            first = next(container.decode(stream))
        except (av.FFmpegError, StopIteration, ValueError) as e:
            return rec.dropped(STAGE, "undecodable", f"{path.name}: first frame does not decode ({e})", STATUS_ERROR)
        rotation = int(first.rotation or 0) % 360
        # Demux the rest without decoding: frame count, timing (VFR) and a truncated tail.
        container.seek(0, stream=stream)
        pts: list[float] = []
        last_end = 0.0
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                t = float(packet.pts * tb)
                pts.append(t)
                dur = float(packet.duration * tb) if packet.duration else 0.0
                last_end = max(last_end, t + dur)
        except (av.FFmpegError, ValueError) as e:
            return rec.dropped(
                STAGE, "corrupt", f"{path.name}: demuxing failed after {len(pts)} packets ({e})", STATUS_ERROR
            )
    if not pts:
        return rec.dropped(STAGE, "no_frames", f"{path.name}: no video packets", STATUS_ERROR)
    start_t = min(pts)
    num_frames = len(pts)
    intervals = _frame_intervals(np.asarray(pts))
    med = float(np.median(intervals)) if len(intervals) else 0.0
    if med > 0 and last_end <= max(pts):
        last_end = max(pts) + med
    duration = last_end - start_t
    vfr = False
    if len(intervals) >= 4 and med > 0:
        lo, hi = np.percentile(intervals, [5, 95])
        vfr = bool((hi - lo) / med > cfg.vfr_tolerance)
    # Frame rate from the packet timing (container-level average_rate can be wrong for some muxers):
    # CFR -> 1 / median interval, VFR -> frames / duration.
    if vfr or med <= 0:
        fps = num_frames / duration if duration > 0 else 0.0
    else:
        fps = 1.0 / med
        for guess in rate_guesses:
            if abs(guess - fps) < 0.01 * fps:
                fps = guess  # keep the exact rational rate (e.g. 30000/1001)
                break
    width, height = displayed_size(stored_w, stored_h, rotation)
    meta.update({"rotation": rotation, "vfr": vfr, "start_time": start_t})
    out = ClipRecord(
        path=rec.path,
        type="video",
        text=rec.text,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=round(fps, 6),
        start=None,
        end=None,
        id=rec.id,
        source_path=rec.source_path or rec.path,
        meta=meta,
        scores=dict(rec.scores),
    )
    out.meta["duration"] = round(duration, 6)
    if declared and declared > 1.0 / max(fps, 1.0) and duration < (1.0 - cfg.truncated_tolerance) * declared:
        return out.dropped(
            STAGE,
            "truncated",
            f"{path.name}: packets end at {duration:.2f}s of {declared:.2f}s",
            STATUS_ERROR,
        )
    return _size_checks(out, cfg, duration)


def _size_checks(out: ClipRecord, cfg: ScanConfig, duration: float | None) -> ClipRecord:
    name = Path(out.path).name
    if out.width * out.height > cfg.max_pixels:
        return out.dropped(STAGE, "huge_resolution", f"{name}: {out.width}x{out.height} > {cfg.max_pixels} pixels")
    if min(out.width, out.height) < cfg.min_short_side:
        return out.dropped(STAGE, "too_small", f"{name}: {out.width}x{out.height}, short side < {cfg.min_short_side}")
    if duration is not None and duration < cfg.min_duration:
        return out.dropped(STAGE, "too_short", f"{name}: {duration:.2f}s < {cfg.min_duration}s")
    if out.meta.get("rotation") and cfg.rotated == "skip":
        return out.dropped(STAGE, "rotated", f"{name}: display rotation {out.meta['rotation']} deg (scan.rotated=skip)")
    return out


def probe_image(rec: ClipRecord, cfg: ScanConfig) -> ClipRecord:
    from PIL import Image, UnidentifiedImageError

    path = Path(rec.path)
    if (err := _file_error(rec, path)) is not None:
        return err
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            width, height = im.size
            fmt = im.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return rec.dropped(STAGE, "unreadable", f"{path.name}: {e}", STATUS_ERROR)
    out = ClipRecord(
        path=rec.path,
        type="image",
        text=rec.text,
        width=width,
        height=height,
        num_frames=1,
        fps=0.0,
        id=rec.id,
        source_path=rec.source_path or rec.path,
        meta={"codec": fmt, "file_size": path.stat().st_size},
    )
    return _size_checks(out, cfg, None)


def scan_item(rec: ClipRecord, cfg: DataConfig, workdir: Path) -> list[ClipRecord]:
    """Stage function: one discovered file -> one probed row."""
    if rec.type == "image":
        return [probe_image(rec, cfg.scan)]
    return [probe_video(rec, cfg.scan)]
