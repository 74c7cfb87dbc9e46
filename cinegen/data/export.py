"""Stage `export`: the training manifest (kept clips only) in JSONL / Parquet / CSV / JSON, and the CogVideo
finetune layout (`prompt.txt`, `videos.txt` with one `videos/<id>.mp4` per line, `videos/` holding links or
copies of the clips). All files are written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from cinegen.data.config import ExportConfig
from cinegen.data.manifest import ClipRecord, resolve_path, write_manifest
from cinegen.fsutil import atomic_write

STAGE = "export"


def training_records(records: list[ClipRecord], workdir: Path, cfg: ExportConfig, out_dir: Path) -> list[ClipRecord]:
    """Kept clips with their paths made absolute or relative to the export folder."""
    out = []
    for r in records:
        if not r.ok:
            continue
        p = resolve_path(r.path, workdir).resolve()
        path = str(p) if cfg.paths == "absolute" else os.path.relpath(p, out_dir.resolve())
        out.append(dataclasses.replace(r, path=path))
    return out


def _place(src: Path, dst: Path, how: str) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if how == "symlink":
        os.symlink(src.resolve(), dst)
    elif how == "hardlink":
        os.link(src, dst)
    else:
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


def write_cogvideo(records: list[ClipRecord], workdir: Path, out_dir: Path, how: str) -> tuple[Path, Path]:
    """CogVideo's finetune data root: prompt.txt and videos.txt line-aligned, paths relative to the root."""
    videos = out_dir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    prompts, names = [], []
    for r in records:
        if not r.ok or r.type != "video":
            continue
        src = resolve_path(r.path, workdir)
        name = f"{r.id}{src.suffix or '.mp4'}"
        _place(src, videos / name, how)
        prompts.append(" ".join(r.text.split()))  # one line per caption
        names.append(f"videos/{name}")
    keep = {Path(n).name for n in names}
    for stale in videos.iterdir():  # clips dropped since an earlier export
        if stale.name not in keep and (stale.is_symlink() or stale.is_file()):
            stale.unlink()
    with atomic_write(out_dir / "prompt.txt", "w", encoding="utf-8") as f:
        f.write("".join(p + "\n" for p in prompts))
    with atomic_write(out_dir / "videos.txt", "w", encoding="utf-8") as f:
        f.write("".join(n + "\n" for n in names))
    return out_dir / "prompt.txt", out_dir / "videos.txt"


def export_records(records: list[ClipRecord], workdir: Path, cfg: ExportConfig) -> list[Path]:
    out_dir = workdir / cfg.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    train = training_records(records, workdir, cfg, out_dir)
    written = [write_manifest(train, out_dir / f"train.{fmt}") for fmt in cfg.formats]
    if cfg.cogvideo:
        written += list(write_cogvideo(records, workdir, out_dir, cfg.link))
    return written
