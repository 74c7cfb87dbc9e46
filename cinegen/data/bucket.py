"""Stage `bucket`: precompute each clip's training shape (aspect x duration bucket) offline.

A bucket is "FxHxW": F frames (the largest of `bucket.frames` the clip can fill at the training `fps`;
CogVideoX uses 8N+1 frames at 8 fps), H x W the size of the clip's nearest aspect ratio (in log space) at the
pixel budget `pixels`, rounded to `multiple` (EasyAnimate's ASPECT_RATIO_512 idea, data-pipelines.md §1.6,
§6.5). Images get F = 1. A crop box from the score stage (black borders) is used for the aspect ratio.
The histogram is printed and small buckets are reported loudly (Open-Sora #468/#636: "0 training batches"
when a small dataset is spread over many buckets) and dropped if `drop_small_buckets`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

from cinegen.data.config import BucketConfig, parse_ratio
from cinegen.data.manifest import ClipRecord, format_bucket

STAGE = "bucket"


def bucket_size(ratio: float, pixels: int, multiple: int) -> tuple[int, int]:
    """(H, W) with W / H ~ ratio and H * W ~ pixels, both multiples of `multiple`."""
    h = math.sqrt(pixels / ratio)
    w = h * ratio
    return max(multiple, int(round(h / multiple)) * multiple), max(multiple, int(round(w / multiple)) * multiple)


def nearest_ratio(width: int, height: int, names: tuple[str, ...]) -> str:
    r = math.log(width / height)
    return min(names, key=lambda n: (abs(math.log(parse_ratio(n)) - r), names.index(n)))


def frames_for(duration: float, fps: float, choices: tuple[int, ...]) -> int | None:
    """Largest frame count in `choices` that fits: F frames at `fps` span (F - 1) / fps seconds."""
    fit = [f for f in choices if (f - 1) / fps <= duration + 1e-6]
    return max(fit) if fit else None


def assign_bucket(rec: ClipRecord, cfg: BucketConfig) -> ClipRecord:
    """Pure per-clip assignment (or a drop when the clip is shorter than the smallest bucket)."""
    if not rec.ok:
        return rec
    w, h = (rec.crop[2], rec.crop[3]) if rec.crop else (rec.width, rec.height)
    if w <= 0 or h <= 0:
        return rec.dropped(STAGE, "no_size", f"{rec.id} has size {w}x{h}")
    name = nearest_ratio(w, h, cfg.aspect_ratios)
    bh, bw = bucket_size(parse_ratio(name), cfg.pixels, cfg.multiple)
    if rec.type == "image":
        frames: int | None = 1
    else:
        frames = frames_for(rec.duration, cfg.fps, cfg.frames)
        if frames is None:
            shortest = (min(cfg.frames) - 1) / cfg.fps
            return rec.dropped(STAGE, "too_short_for_buckets", f"{rec.duration:.2f}s < {shortest:.2f}s")
    return dataclasses.replace(rec, bucket=format_bucket(frames, bh, bw), meta={**rec.meta, "aspect": name})


def bucket_records(records: list[ClipRecord], cfg: BucketConfig) -> tuple[list[ClipRecord], dict[str, int], list[str]]:
    """The stage over the whole table: returns (records, histogram of kept buckets, warnings)."""
    out = [assign_bucket(r, cfg) for r in records]
    hist = Counter(r.bucket for r in out if r.ok and r.bucket)
    warnings = []
    small = {b: n for b, n in hist.items() if n < cfg.min_bucket_count}
    if small:
        warnings.append(
            f"{len(small)} bucket(s) have fewer than {cfg.min_bucket_count} clips: "
            + ", ".join(f"{b} ({n})" for b, n in sorted(small.items()))
        )
        if cfg.drop_small_buckets:
            for i, r in enumerate(out):
                if r.ok and r.bucket in small:
                    out[i] = r.dropped(STAGE, "small_bucket", f"{r.bucket} has {small[r.bucket]} clips")
            hist = Counter(r.bucket for r in out if r.ok and r.bucket)
    kept = sum(hist.values())
    if records and kept < 0.5 * sum(1 for r in records if r.ok):
        warnings.append(f"only {kept} of {sum(1 for r in records if r.ok)} clips got a bucket")
    return out, dict(sorted(hist.items())), warnings
