"""Export a Shapes-world training set: rendered MP4 clips + a JSONL manifest of shared `ClipRecord`s.

Each record: `path` (relative to the manifest), `type` "video", `text` = the dense caption (what the model
trains on), `width`, `height`, `num_frames`, `fps`, `bucket` "FxHxW", `id`, `mask` (the objects' coverage,
`masks/<name>.npz`, for the region-weighted loss), and in `meta`: `short_text` (a
varied user-style caption, for prompt-rewriting / caption-dropout experiments), `spec` (the full ClipSpec,
so the clip can be re-rendered or analyzed) and `held_out` (always False unless `include_held_out`).

Clip i depends only on (seed, i) (`np.random.default_rng([seed, i])`), so an export can be resumed or
extended to more clips without changing the clips already written, and the same seed always gives the same
data set. Held-out compositions (vocab.HELD_OUT) are excluded by default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cinegen.fsutil import atomic_write
from cinegen.world import vocab as V
from cinegen.world.captions import dense_caption, short_caption
from cinegen.world.render import ClipSpec, render_clip_and_mask, sample_spec

__all__ = ["clip_spec", "export_dataset", "write_clip"]


def clip_spec(
    seed: int,
    index: int,
    *,
    aspects: Sequence[str | tuple[int, int]] = tuple(V.ASPECTS),
    frame_counts: Sequence[int] = V.FRAME_COUNTS,
    fps: float = V.FPS,
    max_objects: int = V.MAX_OBJECTS,
    include_held_out: bool = False,
    camera_prob: float = 0.25,
    snap: int | None = None,
) -> tuple[ClipSpec, str]:
    """The spec and short caption of clip `index` of the data set `seed` (pure function of its arguments). `snap`:
    starts on whole multiples of that many pixels on screen (`render.layout_truth`; `vocab.TOKEN_PX` for token
    captions that say exactly where each object starts)."""
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(
        rng,
        aspects=aspects,
        frame_counts=frame_counts,
        fps=fps,
        max_objects=max_objects,
        exclude_held_out=not include_held_out,
        camera_prob=camera_prob,
        snap=snap,
    )
    return spec, short_caption(spec.truth(), rng)


def write_clip(frames: np.ndarray, fps: float, path: Path, crf: int = 10) -> None:
    """H.264 MP4 through `cinegen.video.write_mp4` (atomic); a low crf keeps flat colours and edges clean."""
    from cinegen.video import write_mp4

    write_mp4(frames, fps, path, crf=crf)


def export_dataset(
    out_dir: str | os.PathLike[str],
    num_clips: int,
    seed: int = 0,
    *,
    aspects: Sequence[str | tuple[int, int]] = tuple(V.ASPECTS),
    frame_counts: Sequence[int] = V.FRAME_COUNTS,
    fps: float = V.FPS,
    max_objects: int = V.MAX_OBJECTS,
    include_held_out: bool = False,
    camera_prob: float = 0.25,
    crf: int = 10,
    manifest_name: str = "manifest.jsonl",
    masks: bool = True,
    layout: bool = False,
    tokens: bool = False,
    snap: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Render `num_clips` clips into `out_dir/clips/` and write `out_dir/manifest.jsonl`; returns its path.

    With `masks`, each clip's object mask (`render_clip_and_mask`, uint8 (F, H, W)) goes to
    `out_dir/masks/<name>.npz` and the record's `mask` column (for `objective.mask_weight`).
    Files already on disk (same name) are kept, not re-rendered: an interrupted export resumes, and a later
    export with `masks` adds the masks to an existing set. The manifest is written atomically at the end and
    every 200 clips. With `layout` the captions are layout captions (each object's start cell, "in the top left";
    `ClipSpec.truth(layout=True)`); with `tokens`, token captions (the cell and the start token, "in the top left
    at c3 r9"); the clips are the same. `snap` starts every object on screen on whole multiples of that many pixels
    (`clip_spec`; other clips than without it).
    """
    from cinegen.data.manifest import ClipRecord, format_bucket, write_manifest

    if num_clips < 0:
        raise ValueError(f"num_clips must be >= 0, got {num_clips}")
    for a in aspects:
        if isinstance(a, str) and a not in V.ASPECTS:
            raise ValueError(f"unknown aspect {a!r}; use one of {', '.join(V.ASPECTS)} or (width, height)")
    out = Path(out_dir)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    if masks:
        (out / "masks").mkdir(exist_ok=True)
    manifest = out / manifest_name
    records: list[ClipRecord] = []
    for i in range(num_clips):
        spec, short = clip_spec(
            seed,
            i,
            aspects=aspects,
            frame_counts=frame_counts,
            fps=fps,
            max_objects=max_objects,
            include_held_out=include_held_out,
            camera_prob=camera_prob,
            snap=snap,
        )
        rel = f"clips/{seed}-{i:06d}.mp4"
        mask_rel = f"masks/{seed}-{i:06d}.npz" if masks else None
        need_clip = not (out / rel).is_file()
        if need_clip or (mask_rel and not (out / mask_rel).is_file()):
            frames, mask = render_clip_and_mask(spec)
            if need_clip:
                write_clip(frames, spec.fps, out / rel, crf=crf)
            if mask_rel:
                with atomic_write(out / mask_rel, "wb") as f:
                    np.savez_compressed(f, mask=mask)
        records.append(
            ClipRecord(
                path=rel,
                type="video",
                text=dense_caption(spec.truth(layout=layout, tokens=tokens)),
                width=spec.width,
                height=spec.height,
                num_frames=spec.num_frames,
                fps=spec.fps,
                bucket=format_bucket(spec.num_frames, spec.height, spec.width),
                mask=mask_rel,
                id=f"shapes-{seed}-{i:06d}",
                meta={
                    "short_text": short,
                    "spec": spec.to_dict(),
                    "held_out": spec.held_out,
                    "source": "shapes",
                },
            )
        )
        if progress is not None:
            progress(i + 1, num_clips)
        if (i + 1) % 200 == 0:
            write_manifest(records, manifest)
    write_manifest(records, manifest)
    return manifest
