"""Training observability: a progress bar, `metrics.jsonl` and TensorBoard scalars (rank 0 only).

`metrics.jsonl` has one JSON object per logged step (`{"step": 12, "loss": 0.41, "lr": ..., "tokens_per_s": ...,
"mfu": ..., "time": ...}`); `cinegen plot RUN_DIR` draws it. On resume, lines after the resumed step (written by
the interrupted run after its last checkpoint) are dropped so the file is one clean curve.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cinegen.fsutil import atomic_write
from cinegen.train.config import LogConfig

METRICS_FILE = "metrics.jsonl"


class CountBar:
    """A `(done, total)` progress callback drawn as a tqdm bar, for loops that report counts (cache fill, data
    export, ShapesBench). The bar opens at the first call, so work with nothing to do draws none (`open_now`
    draws it at once), and closes when done reaches total or on `close()`."""

    def __init__(self, label: str, unit: str = "clip", open_now: bool = False) -> None:
        self.label, self.unit, self.bar = label, unit, None
        if open_now:
            self._open(None)

    def _open(self, total: int | None) -> Any:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=self.label, unit=self.unit, dynamic_ncols=True)
        return self.bar

    def __call__(self, done: int, total: int, *_: object) -> None:
        bar = self.bar if self.bar is not None else self._open(total)
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.close()


def _records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(line, parsed record) of every complete line of a metrics file."""
    for line in path.read_text().splitlines():
        try:
            yield line, json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash


def truncate_metrics(path: Path, keep_through_step: int) -> None:
    if not path.is_file():
        return
    kept = [line for line, rec in _records(path) if rec.get("step", 0) <= keep_through_step]
    with atomic_write(path) as f:
        f.write("".join(k + "\n" for k in kept))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run_dir}")
    return [rec for _, rec in _records(path)]


class MetricsLogger:
    def __init__(
        self,
        run_dir: Path,
        cfg: LogConfig,
        is_main: bool,
        resume_step: int = 0,
        total_steps: int = 0,
        prefix: str = "train",
    ) -> None:
        self.cfg, self.is_main, self.prefix = cfg, is_main, prefix
        self.path = run_dir / METRICS_FILE
        self.bar = None
        self.tb = None
        self.t_start = time.time()
        if not is_main:
            return
        truncate_metrics(self.path, resume_step)
        if cfg.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=resume_step, desc=prefix, dynamic_ncols=True)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra (cinegen[train])
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self.tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=resume_step + 1)

    def step(self, step: int, values: dict[str, float]) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.update(1)
            post = {"loss": f"{values.get('loss', float('nan')):.4f}"}
            if "tokens_per_s" in values:
                post["tok/s"] = f"{values['tokens_per_s']:.0f}"
            if "mfu" in values:
                post["mfu"] = f"{100 * values['mfu']:.1f}%"
            self.bar.set_postfix(post, refresh=False)
        if self.writes(step):
            self.write(step, values)

    def writes(self, step: int) -> bool:
        """Whether `step` goes to metrics.jsonl (every `log.every` steps and the first)."""
        return self.is_main and self.cfg.every > 0 and (step % self.cfg.every == 0 or step == 1)

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.is_main:
            return
        rec = {"step": step, **values, "time": round(time.time() - self.t_start, 3)}
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{self.prefix}/{k}", v, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
