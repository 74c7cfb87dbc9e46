"""Shapes-world data export and CLI: MP4 clips + a ClipRecord manifest, deterministic and resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")

from cinegen.data.manifest import read_manifest  # noqa: E402
from cinegen.video import read_video  # noqa: E402
from cinegen.world import vocab as V  # noqa: E402
from cinegen.world.captions import parse_prompt  # noqa: E402
from cinegen.world.cli import main  # noqa: E402
from cinegen.world.dataset import clip_spec, export_dataset  # noqa: E402
from cinegen.world.render import ClipSpec, render_clip  # noqa: E402


def test_export_dataset(tmp_path) -> None:
    manifest = export_dataset(tmp_path, 5, seed=3, aspects=("square", "landscape"), frame_counts=(9,))
    records = read_manifest(manifest)
    assert [r.id for r in records] == [f"shapes-3-{i:06d}" for i in range(5)]
    for r in records:
        spec = ClipSpec.from_dict(r.meta["spec"])
        assert (r.width, r.height, r.num_frames, r.fps) == (
            spec.width,
            spec.height,
            spec.num_frames,
            spec.fps,
        )
        assert r.type == "video" and r.bucket == f"9x{r.height}x{r.width}" and r.meta["held_out"] is False
        assert parse_prompt(r.text).canonical() == spec.truth().canonical()  # text = the dense caption
        assert r.meta["short_text"] and r.meta["short_text"] != r.text
        # The MP4 decodes to the render (low-crf H.264: small error, flat colours preserved).
        video = read_video(tmp_path / r.path)
        assert video.frames.shape == (spec.num_frames, spec.height, spec.width, 3)
        err = np.abs(video.frames.astype(np.int16) - render_clip(spec).astype(np.int16))
        assert err.mean() < 3.0
    # Deterministic and resumable: a second export keeps the files and reproduces the records.
    mtimes = [(tmp_path / r.path).stat().st_mtime_ns for r in records]
    again = read_manifest(export_dataset(tmp_path, 6, seed=3, aspects=("square", "landscape"), frame_counts=(9,)))
    assert [r.to_dict() for r in again[:5]] == [r.to_dict() for r in records]
    assert [(tmp_path / r.path).stat().st_mtime_ns for r in records] == mtimes
    assert clip_spec(3, 2, aspects=("square", "landscape"), frame_counts=(9,))[0] == ClipSpec.from_dict(
        records[2].meta["spec"]
    )
    with pytest.raises(ValueError, match="unknown aspect"):
        export_dataset(tmp_path, 1, aspects=("wide",))


def test_export_writes_object_masks_and_adds_them_to_an_existing_set(tmp_path) -> None:
    """masks/<name>.npz is the objects' coverage (uint8, 255 inside)."""
    import dataclasses

    plain = read_manifest(export_dataset(tmp_path, 3, seed=4, frame_counts=(9,), masks=False))
    assert all(r.mask is None for r in plain) and not (tmp_path / "masks").exists()
    mtimes = [(tmp_path / r.path).stat().st_mtime_ns for r in plain]
    records = read_manifest(export_dataset(tmp_path, 3, seed=4, frame_counts=(9,)))
    assert [(tmp_path / r.path).stat().st_mtime_ns for r in records] == mtimes  # clips kept, masks added
    for r in records:
        spec = ClipSpec.from_dict(r.meta["spec"])
        assert r.mask == f"masks/{r.id.removeprefix('shapes-')}.npz"
        with np.load(tmp_path / r.mask) as z:
            mask = z["mask"]
        assert mask.dtype == np.uint8 and mask.shape == (spec.num_frames, spec.height, spec.width)
        # every object recoloured: the pixels that change are object pixels, and only those are masked
        names = list(V.COLORS)
        other = [dataclasses.replace(o, color=names[(names.index(o.color) + 1) % len(names)]) for o in spec.objects]
        differs = (render_clip(spec) != render_clip(dataclasses.replace(spec, objects=tuple(other)))).any(-1)
        assert not (differs & (mask == 0)).any() and (mask == 255).any()
        assert (differs == (mask > 0)).mean() > 0.99  # (the faintest anti-aliased edges may round to no change)


def test_cli_world_and_eval(tmp_path, capsys) -> None:
    assert main(["world", "render", "--out", str(tmp_path / "ds"), "--num", "2", "--frames", "9"]) == 0
    assert len(read_manifest(tmp_path / "ds" / "manifest.jsonl")) == 2
    out = tmp_path / "show.png"
    assert main(["world", "show", "two blue stars spinning on a gray background", "-o", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["world", "suite", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 52 and {"prompt", "short_prompt", "truth", "seed"} <= set(rows[0])
    code = main(["eval", "shapes", "--oracle", "--limit", "2", "--out", str(tmp_path / "bench")])
    assert code == 0 and (tmp_path / "bench" / "results.md").is_file()
    assert main(["eval", "shapes", "--out", str(tmp_path / "x")]) == 2  # --model is required without --oracle
