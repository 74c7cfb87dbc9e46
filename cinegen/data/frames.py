"""Still frames of video clips as image records, for image-video joint training (CogVideoX trains on images as
one-frame videos; images are ~4x cheaper per sample than 17-frame clips, see `data.batch_by_tokens`).

    records = extract_frames(read_manifest("data/manifest.jsonl"), "data", "data/frames", per_clip=2)
    write_manifest(records, "data/frames/manifest.jsonl")

Each image keeps its clip's caption (and the clip's other caption fields), so a still of "a red circle moves to
the left" is trained as that caption's first frame would be. A clip's region mask (`mask` column) follows its
stills as a grayscale PNG of the same frame (`frames/<still>.mask.png`), so masked losses (the transformer's
`objective.mask_weight`, the VAE's coverage channels) also work on stills.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cinegen.data.manifest import ClipRecord, resolve_path
from cinegen.data.media import read_mask_frames


def pick_frames(n_frames: int, per_clip: int, rng: random.Random, first: bool = False) -> list[int]:
    """`per_clip` distinct frame indices of a clip of n_frames (all of them when it has fewer), sorted; with
    `first`, frame 0 and random others."""
    if per_clip < 1:
        raise ValueError(f"per_clip must be >= 1, got {per_clip}")
    if first:
        return [0, *sorted(rng.sample(range(1, n_frames), min(per_clip, n_frames) - 1))]
    return sorted(rng.sample(range(n_frames), min(per_clip, n_frames)))


def extract_frames(
    records: Sequence[ClipRecord],
    root: str | Path,
    out_dir: str | Path,
    per_clip: int = 1,
    seed: int = 0,
    read_frames: Callable[[Path, float, float | None], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    first: bool = False,
) -> list[ClipRecord]:
    """Write `per_clip` random frames of every video record (paths relative to `root`) as PNG files under
    out_dir/frames/ and return their image records, paths relative to out_dir. Image records pass through
    unchanged in content (path rebased). A clip's time range (start/end) is honoured and its crop carried over
    (same pixel grid). Frame choice depends only on the seed and the record order. With `first`, each clip's
    stills include its first frame: the one a caption that states where each object starts (token captions)
    describes exactly.
    `read_frames(path, start, end) -> (F, H, W, 3) uint8` defaults to PyAV decoding."""
    if read_frames is None:
        from cinegen.video import read_video

        def read_frames(path: Path, start: float, end: float | None) -> np.ndarray:
            return read_video(path, start=start, end=end).frames

    root, out_dir = Path(root), Path(out_dir)
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out: list[ClipRecord] = []
    for i, r in enumerate(records):
        src = resolve_path(r.path, root)
        if r.type == "image":
            mask = os.path.relpath(resolve_path(r.mask, root).resolve(), out_dir.resolve()) if r.mask else None
            out.append(dataclasses.replace(r, path=os.path.relpath(src.resolve(), out_dir.resolve()), mask=mask))
        else:
            out.extend(_stills(r, i, src, root, out_dir, per_clip, rng, read_frames, first))
        if progress is not None:
            progress(i + 1, len(records))
    return out


def _stills(
    r: ClipRecord,
    i: int,
    src: Path,
    root: Path,
    out_dir: Path,
    per_clip: int,
    rng: random.Random,
    read_frames: Callable[[Path, float, float | None], np.ndarray],
    first: bool = False,
) -> list[ClipRecord]:
    """The PNG stills of video record r (number i of the manifest) and their image records."""
    from PIL import Image

    frames = read_frames(src, r.start or 0.0, r.end)  # (F, H, W, 3) uint8
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ValueError(f"{src}: no frames decoded")
    out = []
    for k in pick_frames(frames.shape[0], per_clip, rng, first):
        name = f"frames/{i:06d}-{Path(r.path).stem}-{k:03d}.png"  # record index: stems may repeat
        Image.fromarray(frames[k]).save(out_dir / name)
        mask = None
        if r.mask:  # the same frame of the clip's mask, as load_mask reads it for the clip
            m = read_mask_frames(str(resolve_path(r.mask, root)), [k], r.start or 0.0)[0]  # (H, W) in [0, 1]
            mask = name.removesuffix(".png") + ".mask.png"
            Image.fromarray(np.round(m * 255).astype(np.uint8)).save(out_dir / mask)
        out.append(
            dataclasses.replace(
                r,
                path=name,
                type="image",
                num_frames=1,
                fps=0.0,
                start=None,
                end=None,
                bucket=None,
                id=f"{r.id}-{k:03d}" if r.id else "",
                width=int(frames.shape[2]),
                height=int(frames.shape[1]),
                mask=mask,
            )
        )
    return out
