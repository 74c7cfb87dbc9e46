"""`cinegen bench ...`: benchmarks (not tests): ratios against reference implementations, measured in one run."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register_cli"]


def _cmd_core(args: argparse.Namespace) -> int:
    from cinegen.bench.core import main_core

    return main_core(Path(args.out) if args.out else None, args.quick)


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks: ours vs the reference, side by side")
    bsub = p.add_subparsers(dest="bench", required=True)
    core = bsub.add_parser("core", help="transformer forward and VAE decode vs diffusers (time, memory, FLOP/s)")
    core.add_argument("--out", default="outputs/bench-core.json", help="JSON result (a .md table is written beside)")
    core.add_argument("--quick", action="store_true", help="smaller config, fewer repeats")
    core.set_defaults(func=_cmd_core)
