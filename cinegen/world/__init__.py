"""The Shapes world: a deterministic, seeded renderer of captioned clips, and ShapesBench.

    vocab.py     colours, shapes, sizes, motions, backgrounds, cameras, formats, held-out compositions
    render.py    SceneTruth / ClipSpec -> uint8 video (F, H, W, 3); sample_spec(rng) for training data
    captions.py  dense (training) and short (user-style) captions; parse_prompt; enhance_prompt
    dataset.py   export_dataset(out_dir, num_clips, seed): MP4 clips + a ClipRecord manifest
    analyze.py   programmatic analyzer of generated videos (OpenCV)
    bench.py     the fixed ShapesBench suite and run_shapes_bench(generate_fn, out_dir)
    cli.py       `cinegen eval shapes`, `cinegen world render|show|suite`

Names are imported lazily (no import-time work; the analyzer's OpenCV loads only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClipSpec": "render",
    "ObjectSpec": "render",
    "SceneTruth": "render",
    "ObjectTruth": "render",
    "sample_spec": "render",
    "render_clip": "render",
    "render_truth": "render",
    "dense_caption": "captions",
    "short_caption": "captions",
    "parse_prompt": "captions",
    "enhance_prompt": "captions",
    "export_dataset": "dataset",
    "analyze_video": "analyze",
    "score_video": "analyze",
    "default_suite": "bench",
    "run_shapes_bench": "bench",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"cinegen.world.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'cinegen.world' has no attribute {name!r}")
