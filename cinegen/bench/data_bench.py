"""Throughput of the data pipeline, per stage, on this machine: clips/s (and source seconds per second).

    python -m cinegen.bench.data_bench [--videos DIR] [--workers 1 2] [--out outputs/bench-data.md]

Inputs: the real camera clips in `../shared/data/real-videos/` (CC BY 4.0, read in place, never copied into
the repo) and a synthetic corpus made in a temp dir (`cinegen.data.synth.make_corpus`). Every stage runs
through the same `run_stage` the CLI uses, with a fresh work dir per configuration, so the numbers include
process-pool start-up and the journal writes. Absolute numbers on a shared 2-core machine are noisy: compare
rows of one run.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

from cinegen.data import synth
from cinegen.data.config import load_config
from cinegen.data.engines import make_engine
from cinegen.data.manifest import read_manifest
from cinegen.data.pipeline import MAPPED, STAGES, run_stage

DEFAULT_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-videos"


def bench_once(raw: Path, workers: int, overrides: list[str]) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="cinegen-data-bench-"))
    try:
        cfg = load_config(None, [f"input={raw}", f"workdir={work}", f"engine.workers={workers}", *overrides])
        rows = []
        with make_engine(cfg.engine) as engine:
            for stage in STAGES:
                t0 = time.perf_counter()
                st = run_stage(stage, cfg, work, engine=engine if stage in MAPPED else None, log=None)
                wall = time.perf_counter() - t0  # includes reading / writing the tables
                src_seconds = None
                if stage == "scan":
                    src_seconds = sum(r.meta.get("duration") or 0.0 for r in read_manifest(work / "scan.jsonl"))
                elif stage in ("split", "score"):
                    table = read_manifest(work / f"{stage}.jsonl")
                    src_seconds = sum(r.duration for r in table if r.ok)
                rows.append(
                    {
                        "stage": stage,
                        "workers": workers,
                        "items": st.processed,
                        "out": st.kept,
                        "seconds": wall,
                        "items_per_s": st.processed / wall if wall > 0 else None,
                        "clips_per_s": st.kept / wall if wall > 0 else None,
                        "video_s_per_s": src_seconds / wall if src_seconds and wall > 0 else None,
                    }
                )
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(title: str, rows: list[dict]) -> list[str]:
    out = [
        f"#### {title}",
        "",
        "| stage | workers | items in | kept out | wall s | items/s | clips/s | video s / s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        vps = f"{r['video_s_per_s']:.1f}" if r["video_s_per_s"] else "-"
        out.append(
            f"| {r['stage']} | {r['workers']} | {r['items']} | {r['out']} | {r['seconds']:.2f} | "
            f"{r['items_per_s']:.2f} | {r['clips_per_s']:.2f} | {vps} |"
        )
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of real videos (read in place)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown section here")
    args = ap.parse_args(argv)

    # The real clips are short single shots (1.6-40 s): keep >= 1 s pieces so every file yields clips.
    real_overrides = ["split.min_seconds=1.0", "split.trim_seconds=0.2"]
    lines = [
        "### Data pipeline throughput (`python -m cinegen.bench.data_bench`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, 2 cores shared with other jobs; "
        f"Python {platform.python_version()}. Default config except where noted; `workers=1` runs "
        "in-process, `workers=2` is the spawn process pool (start-up included). *items/s* counts the "
        "stage's inputs (files for scan/split, clips after), *clips/s* the rows it keeps, *video s / s* "
        "seconds of source video (scan, split) or of clip (score) handled per wall second.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="cinegen-synth-") as tmp:
        synth.make_corpus(tmp)
        for name, raw, overrides in (
            (
                f"Real camera footage: {args.videos.name}/ (10 files, 2 x 30-40 s 640x360-768x432, "
                "8 x 1.6-3.7 s 640x480; `split.min_seconds=1`)",
                args.videos,
                real_overrides,
            ),
            (
                "Synthetic corpus: `synth.make_corpus` (11 files incl. 4 broken, 128x96 at 10 fps)",
                Path(tmp),
                [],
            ),
        ):
            if not raw.exists():
                print(f"skipping {raw}: not found")
                continue
            rows = []
            for w in args.workers:
                rows += bench_once(raw, w, overrides)
            lines += table(name, rows)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
