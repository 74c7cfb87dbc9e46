"""`cinegen data {scan,split,score,filter,caption,bucket,export,report,run,stills}`.

    cinegen data run RAW_DIR --workdir work/ [--config configs/data/default.yaml] [--set score.ocr=false]
                     [--workers 2] [--engine ray] [--dry-run]
    cinegen data score --workdir work/          # one stage on the previous stage's table
    cinegen data report --workdir work/
    cinegen data stills clips.jsonl -o stills/ --per-clip 2 --joint   # image-video joint training set

Every stage is resumable: re-running skips finished items (see cinegen.data.pipeline). Ctrl-C exits with
code 130 after the finished items are journaled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cinegen.data.config import dump_config, load_config
from cinegen.data.pipeline import STAGES


def _add_common(p: argparse.ArgumentParser, with_input: bool) -> None:
    if with_input:
        p.add_argument("input", nargs="?", default=None, help="folder of raw videos, a file, a .txt list or a manifest")
    p.add_argument("--workdir", "-w", default=None, help="work folder for stage tables, clips and outputs")
    p.add_argument("--config", "-c", default=None, help="data pipeline YAML (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dot-list override, e.g. --set filter.max_text_area=0.05 (repeatable)",
    )
    p.add_argument("--workers", type=int, default=None, help="worker processes (0 = one per core, 1 = inline)")
    p.add_argument("--engine", choices=("local", "ray"), default=None, help="local process pool or Ray Data")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _resolve(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    overrides = list(args.overrides)
    if getattr(args, "input", None):
        overrides.append(f"input={Path(args.input).resolve()}")
    if args.workdir:
        overrides.append(f"workdir={Path(args.workdir).resolve()}")
    if args.workers is not None:
        overrides.append(f"engine.workers={args.workers}")
    if args.engine:
        overrides.append(f"engine.engine={args.engine}")
    return load_config(args.config, overrides)


def _handler(args: argparse.Namespace) -> int:
    try:
        cfg = _resolve(args)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as e:
        print(f"cinegen data: config error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    workdir = Path(cfg.workdir)
    try:
        if args.stage == "report":
            from cinegen.data.report import write_report

            paths = write_report(workdir, cfg)
            print("\n".join(f"wrote {p}" for p in paths))
        elif args.stage == "run":
            from cinegen.data.pipeline import run_all

            run_all(cfg, workdir=workdir)
            if not args.no_report:
                from cinegen.data.report import write_report

                for p in write_report(workdir, cfg):
                    print(f"wrote {p}")
        else:
            from cinegen.data.pipeline import run_stage

            run_stage(args.stage, cfg, workdir)
    except KeyboardInterrupt:
        print("\ninterrupted: finished items are saved; re-run the same command to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"cinegen data {args.stage}: {e}", file=sys.stderr)
        return 1
    return 0


HELP = {
    "scan": "probe raw files (PyAV) into scan.jsonl; broken files are recorded with a reason",
    "split": "scene detection (PySceneDetect) and cutting into 3-10 s clips",
    "score": "motion, camera, OCR text area, sharpness, exposure, frozen frames, borders, phash",
    "filter": "thresholds and near-duplicate removal, every drop keeps its reason",
    "caption": "sidecar / filename / template / local VLM captions, cleanup, optional LLM rewrite",
    "bucket": "aspect x duration buckets (FxHxW)",
    "export": "training manifest (JSONL, Parquet) and CogVideo prompt.txt / videos.txt",
    "report": "Markdown + HTML report: counts per reason, score histograms, contact sheets",
    "run": "every stage in order, then the report",
}


def _stills(args: argparse.Namespace) -> int:
    """`cinegen data stills`: random frames of a manifest's clips as image records (+ the clips with --joint)."""
    import dataclasses
    import os

    from cinegen.data.frames import extract_frames
    from cinegen.data.manifest import read_manifest, write_manifest
    from cinegen.train.progress import CountBar

    src, out = Path(args.manifest), Path(args.out)
    try:
        records = [r for r in read_manifest(src) if r.ok]
    except (FileNotFoundError, ValueError) as e:
        print(f"cinegen data stills: cannot read {src}: {e}", file=sys.stderr)
        return 1
    videos = [r for r in records if r.type == "video"]
    if not videos:
        print(f"cinegen data stills: {src} has no video clips", file=sys.stderr)
        return 1
    bar = CountBar("stills")
    try:
        stills = extract_frames(videos, src.parent, out, args.per_clip, args.seed, progress=bar, first=args.first)
    except (FileNotFoundError, ValueError, OSError) as e:
        bar.close()
        print(f"cinegen data stills: {e}", file=sys.stderr)
        return 1
    rows = stills
    if args.joint:  # the clips too, their paths made relative to the output folder
        rel = os.path.relpath(src.parent.resolve(), out.resolve())

        def rebase(path: str | None) -> str | None:  # clip and mask paths are relative to their manifest
            return path if path is None or Path(path).is_absolute() else f"{rel}/{path}"

        clips = [dataclasses.replace(r, path=rebase(r.path), mask=rebase(r.mask)) for r in records]
        rows = [*clips, *stills]
    path = write_manifest(rows, out / "manifest.jsonl")
    print(f"wrote {len(stills)} stills of {len(videos)} clips" + (f" + {len(records)} records" if args.joint else ""))
    print(f"wrote {path}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add `data` with one sub-subcommand per stage (each sets func=_handler) and `stills`."""
    data = subparsers.add_parser("data", help="video data pipeline: raw videos -> training manifest")
    sub = data.add_subparsers(dest="stage", required=True)
    for name in (*STAGES, "report", "run"):
        p = sub.add_parser(name, help=HELP[name], description=HELP[name])
        _add_common(p, with_input=name in ("scan", "run"))
        if name == "run":
            p.add_argument("--no-report", action="store_true", help="skip the report at the end")
        p.set_defaults(func=_handler, stage=name)
    desc = (
        "random frames of a training manifest's clips as PNG image records with the clip's caption, for "
        "image-video joint training (images train as one-frame videos; see data.batch_by_tokens)"
    )
    p = sub.add_parser("stills", help="random frames of clips as image records", description=desc)
    p.add_argument("manifest", help="training manifest (JSONL/CSV/Parquet/JSON) with video clips")
    p.add_argument("--out", "-o", required=True, help="output folder: frames/*.png + manifest.jsonl")
    p.add_argument("--per-clip", type=int, default=1, help="stills per clip (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame choice")
    p.add_argument(
        "--first",
        action="store_true",
        help="each clip's first frame is one of its stills (the frame token / layout captions describe exactly)",
    )
    p.add_argument("--joint", action="store_true", help="the manifest's own records too: one joint manifest")
    p.set_defaults(func=_stills, stage="stills")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cinegen")
    sub = parser.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
