"""Stage `filter`: thresholds on the score columns, then near-duplicate removal. Every dropped clip keeps
its reason key (for the report's counts), and a detail naming the value and the limit.

Checks run in cascade order (cheap, decisive ones first) and the first failure is the reason; the detail lists
every failed check. A score that is None (skipped plug-in, image without motion) is not checked.
Near-duplicates: among the clips that passed, clips whose perceptual hashes are within `dedup_hamming` bits
(mean per frame) form groups; the largest (pixels x duration, then id) of each group is kept.
"""

from __future__ import annotations

import numpy as np

from cinegen.data.config import FilterConfig
from cinegen.data.manifest import ClipRecord

STAGE = "filter"

# (reason, score key or "duration", config attribute, "min" | "max")
CHECKS: tuple[tuple[str, str, str, str], ...] = (
    ("too_short", "duration", "min_duration", "min"),
    ("too_long", "duration", "max_duration", "max"),
    ("too_dark", "brightness", "min_brightness", "min"),
    ("too_bright", "brightness", "max_brightness", "max"),
    ("low_contrast", "contrast", "min_contrast", "min"),
    ("black_borders", "border_ratio", "max_border_ratio", "max"),
    ("static", "motion", "min_motion", "min"),
    ("frozen", "frozen_ratio", "max_frozen_ratio", "max"),
    ("too_much_motion", "motion", "max_motion", "max"),
    ("text", "text_area", "max_text_area", "max"),
    ("blurry", "sharpness", "min_sharpness", "min"),
    ("low_aesthetic", "aesthetic", "min_aesthetic", "min"),
    ("low_clip_score", "clip_score", "min_clip_score", "min"),
)


def check_thresholds(rec: ClipRecord, cfg: FilterConfig) -> ClipRecord:
    """Pure per-clip check; returns the record unchanged or a dropped copy."""
    if not rec.ok:
        return rec
    failed: list[tuple[str, str]] = []
    for reason, key, attr, kind in CHECKS:
        limit = getattr(cfg, attr)
        if limit is None:
            continue
        value = rec.duration if key == "duration" else rec.scores.get(key)
        if value is None or isinstance(value, str):
            continue
        if rec.type == "image" and key == "duration":
            continue
        bad = value < limit if kind == "min" else value > limit
        if bad:
            op = "<" if kind == "min" else ">"
            failed.append((reason, f"{key}={value:.4g} {op} {attr}={limit:g}"))
    if not failed:
        return rec
    return rec.dropped(STAGE, failed[0][0], "; ".join(d for _, d in failed))


def _hash_array(records: list[ClipRecord]) -> np.ndarray:
    """(N, K) uint64 frame hashes from the `phash` hex strings (equal K required)."""
    rows = []
    for r in records:
        h = str(r.scores.get("phash") or "")
        rows.append([int(h[i : i + 16], 16) for i in range(0, len(h), 16)])
    return np.asarray(rows, dtype=np.uint64)


def near_duplicates(records: list[ClipRecord], max_distance: float) -> dict[int, tuple[int, float]]:
    """Indices of near-duplicates -> (index of the kept clip, distance). Greedy over the clips sorted by
    preference; O(N^2) vectorised popcounts (fine up to ~1e5 clips per call)."""
    by_len: dict[int, list[int]] = {}
    for i, r in enumerate(records):
        h = r.scores.get("phash")
        if isinstance(h, str) and h and len(h) % 16 == 0:
            by_len.setdefault(len(h), []).append(i)
    out: dict[int, tuple[int, float]] = {}
    for idx in by_len.values():
        order = sorted(idx, key=lambda i: (-records[i].width * records[i].height * records[i].duration, records[i].id))
        hashes = _hash_array([records[i] for i in order])  # (N, K)
        kept: list[int] = []  # positions in `order`
        for pos in range(len(order)):
            if kept:
                x = np.bitwise_xor(hashes[kept], hashes[pos][None, :])  # (M, K)
                dist = np.bitwise_count(x).astype(np.float64).mean(axis=1)  # (M,)
                j = int(np.argmin(dist))
                if dist[j] <= max_distance:
                    out[order[pos]] = (order[kept[j]], float(dist[j]))
                    continue
            kept.append(pos)
    return out


def filter_records(records: list[ClipRecord], cfg: FilterConfig) -> list[ClipRecord]:
    """The stage over the whole table: thresholds per clip, then near-duplicate removal among survivors."""
    out = [check_thresholds(r, cfg) for r in records]
    if cfg.dedup_hamming is not None:
        alive = [i for i, r in enumerate(out) if r.ok]
        dups = near_duplicates([out[i] for i in alive], cfg.dedup_hamming)
        for local, (keep_local, dist) in dups.items():
            i, keep = alive[local], out[alive[keep_local]]
            out[i] = out[i].dropped(STAGE, "near_duplicate", f"of {keep.id} (phash distance {dist:.1f} bits)")
    return out
