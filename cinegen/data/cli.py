"""`cinegen data {scan,split,score,filter,caption,bucket,export,report,run}`.

    cinegen data run RAW_DIR --workdir work/ [--config configs/data/default.yaml] [--set score.ocr=false]
                     [--workers 2] [--engine ray] [--dry-run]
    cinegen data score --workdir work/          # one stage on the previous stage's table
    cinegen data report --workdir work/

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


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add `data` with one sub-subcommand per stage; each sets func=_handler."""
    data = subparsers.add_parser("data", help="video data pipeline: raw videos -> training manifest")
    sub = data.add_subparsers(dest="stage", required=True)
    for name in (*STAGES, "report", "run"):
        p = sub.add_parser(name, help=HELP[name], description=HELP[name])
        _add_common(p, with_input=name in ("scan", "run"))
        if name == "run":
            p.add_argument("--no-report", action="store_true", help="skip the report at the end")
        p.set_defaults(func=_handler, stage=name)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cinegen")
    sub = parser.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
