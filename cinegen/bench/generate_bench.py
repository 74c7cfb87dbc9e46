"""Generation benchmark: wall time and peak RSS of one text-to-video clip at a model's default settings, for
the three aspect ratios (square, landscape, portrait).

    python -m cinegen.bench.generate_bench [--model PATH] [--frames 17] [--repeats 3] [--out outputs/gen-bench.json]

Each aspect runs in a fresh subprocess, so its peak RSS (``ru_maxrss``) is that generation's alone (model load
included). Inside it: load the pipeline, one warm-up generation (first-call allocations and kernel selection),
then `repeats` timed generations with different seeds; we report the median and the spread, and split the
median run into text encoding, denoising (all steps, with CFG) and VAE decode. Absolute times on a shared
machine are noisy (DESIGN.md §6): the load average at the start and end is recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["ASPECTS", "measure_one", "run_bench", "main"]

# (height, width) at the Shapes-world scale of the default model: 96 px short side
ASPECTS: dict[str, tuple[int, int]] = {"square": (96, 96), "landscape": (96, 128), "portrait": (128, 96)}


def _peak_rss_mib() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def measure_one(
    model: str | None,
    prompt: str,
    num_frames: int,
    height: int,
    width: int,
    repeats: int,
    steps: int | None = None,
) -> dict[str, Any]:
    """Load, warm up, time `repeats` generations in this process -> dict of seconds, phases and peak RSS."""
    import torch

    from cinegen.pipeline import load_pipeline

    t0 = time.perf_counter()
    pipe = load_pipeline(model)
    load_s = time.perf_counter() - t0
    kw: dict[str, Any] = {"prompt": prompt, "num_frames": num_frames, "height": height, "width": width}
    if steps is not None:
        kw["steps"] = steps
    runs: list[dict[str, float]] = []
    for i in range(repeats + 1):  # run 0 is the warm-up
        marks: dict[str, float] = {}

        def progress(done: int, total: int, marks: dict[str, float] = marks) -> None:
            now = time.perf_counter()
            marks.setdefault("first_step", now)
            if done >= total:
                marks["last_step"] = now

        start = time.perf_counter()
        pipe.generate(seed=i, progress=progress, **kw)
        end = time.perf_counter()
        if i == 0:
            continue
        runs.append({"total": end - start, "to_first_step": marks["first_step"] - start})
        if "last_step" in marks:
            runs[-1]["decode"] = end - marks["last_step"]
            runs[-1]["denoise"] = marks["last_step"] - marks["first_step"]
    totals = [r["total"] for r in runs]
    median = sorted(runs, key=lambda r: r["total"])[len(runs) // 2]
    d = pipe.defaults
    return {
        "height": height,
        "width": width,
        "num_frames": num_frames,
        "steps": steps or d.steps,
        "guidance": d.guidance,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_s, 3),
        "seconds_median": round(statistics.median(totals), 3),
        "seconds_min": round(min(totals), 3),
        "seconds_max": round(max(totals), 3),
        "median_run": {k: round(v, 3) for k, v in median.items()},
        "peak_rss_mib": round(_peak_rss_mib(), 1),
    }


def run_bench(
    model: str | None = None,
    prompt: str = "a red circle moves from left to right on a navy background",
    num_frames: int = 17,
    repeats: int = 3,
    aspects: list[str] | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Every aspect in its own subprocess (clean peak RSS); returns {"aspects": {name: result}, ...}."""
    out: dict[str, Any] = {"model": model or "default", "prompt": prompt, "load_average_start": os.getloadavg()}
    results = {}
    for name in aspects or list(ASPECTS):
        h, w = ASPECTS[name]
        args = [sys.executable, "-m", "cinegen.bench.generate_bench", "--child", "--frames", str(num_frames)]
        args += ["--height", str(h), "--width", str(w), "--repeats", str(repeats), "--prompt", prompt]
        if model:
            args += ["--model", model]
        if steps is not None:
            args += ["--steps", str(steps)]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child failed for {name}:\n{proc.stderr[-2000:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["aspects"] = results
    out["load_average_end"] = os.getloadavg()
    return out


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "| aspect | size (HxW) | frames | steps | median s | min-max s | denoise s | decode s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["aspects"].items():
        m = r["median_run"]
        lines.append(
            f"| {name} | {r['height']}x{r['width']} | {r['num_frames']} | {r['steps']} | {r['seconds_median']:.2f} | "
            f"{r['seconds_min']:.2f}-{r['seconds_max']:.2f} | {m.get('denoise', float('nan')):.2f} | "
            f"{m.get('decode', float('nan')):.2f} | {r['peak_rss_mib']:.0f} |"
        )
    la0, la1 = result["load_average_start"][0], result["load_average_end"][0]
    lines.append(f"\nLoad average (1 min) at start / end: {la0:.2f} / {la1:.2f} on {os.cpu_count()} CPUs.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cinegen-generate-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    p.add_argument("--prompt", default="a red circle moves from left to right on a navy background")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--aspects", default=",".join(ASPECTS), help="comma list of square,landscape,portrait")
    p.add_argument("--out", default="outputs/gen-bench.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--height", type=int, default=96, help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, default=96, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        r = measure_one(a.model, a.prompt, a.frames, a.height, a.width, a.repeats, a.steps)
        print(json.dumps(r))
        return 0
    aspects = [s.strip() for s in a.aspects.split(",") if s.strip()]
    unknown = [s for s in aspects if s not in ASPECTS]
    if unknown:
        print(f"error: unknown aspect {unknown[0]!r}; choose from {', '.join(ASPECTS)}", file=sys.stderr)
        return 2
    result = run_bench(a.model, a.prompt, a.frames, a.repeats, aspects, a.steps)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    md = to_markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
