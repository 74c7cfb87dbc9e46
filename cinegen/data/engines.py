"""Engines that map one stage function over many items: in-process, a local process pool, or Ray Data.

An engine only sees opaque JSON strings (one record in, a list of records out) and a picklable function,
so the same stage code runs everywhere (data-pipelines.md §5: "design the per-clip step as a pure function
clip -> record so the same code can be mapped by a process pool locally or by Ray later"). Results are
yielded as they finish, in any order; the caller journals them, so an interrupted map loses no finished work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

from cinegen.data.config import EngineConfig

MapFn = Callable[[str], str]
CrashFn = Callable[[str, str], str]  # (payload, message) -> result standing in for an item that crashed


def resolve_workers(n: int) -> int:
    return n if n > 0 else max(1, os.cpu_count() or 1)


def worker_setup() -> None:
    """Per-process setup: quiet FFmpeg logs, one OpenCV thread (parallelism comes from processes)."""
    import av

    # No FFmpeg logging at all (PyAV's default): broken inputs are reported as rows, not as log noise. A level
    # (even PANIC) installs a Python log callback that FFmpeg's decoder threads call with the GIL, which can
    # deadlock when a frame-threaded decoder is closed early (seen in a test run: closing in avcodec_free_context).
    av.logging.set_level(None)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


class Engine:
    name = "base"

    def map(self, fn: MapFn, payloads: Iterable[str], on_crash: CrashFn | None = None) -> Iterator[str]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineEngine(Engine):
    """Runs items one after another in this process (workers=1; easiest to debug)."""

    name = "inline"

    def map(self, fn: MapFn, payloads: Iterable[str], on_crash: CrashFn | None = None) -> Iterator[str]:
        worker_setup()
        for p in payloads:
            yield fn(p)


class LocalEngine(Engine):
    """A spawn-context process pool with a bounded number of items in flight (memory stays flat for
    millions of items). Ctrl-C cancels what has not started; finished results were already yielded."""

    name = "local"

    def __init__(self, workers: int, max_in_flight: int = 4) -> None:
        self.workers = workers
        self.window = max(1, workers * max_in_flight)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=worker_setup)
        return self._pool

    def map(self, fn: MapFn, payloads: Iterable[str], on_crash: CrashFn | None = None) -> Iterator[str]:
        """Results in completion order. A worker process that dies (segfault in a decoder, OOM kill) breaks
        the pool: the pool is restarted and the items that were in flight are retried one at a time, so
        the item that kills its worker alone is reported through `on_crash` and the run goes on."""
        it = iter(payloads)
        pending: dict[Future[str], str] = {}
        suspects: list[str] = []
        try:
            for p in it:
                pending[self._executor().submit(fn, p)] = p
                if len(pending) >= self.window:
                    yield from self._drain(pending, suspects)
            while pending:
                yield from self._drain(pending, suspects)
            for p in suspects:  # isolate: one item in flight at a time
                try:
                    yield self._executor().submit(fn, p).result()
                except BrokenProcessPool:
                    self.close(cancel=True)
                    if on_crash is None:
                        raise
                    yield on_crash(p, "the worker process died while processing this item")
        except BaseException:
            for f in pending:
                f.cancel()
            self.close(cancel=True)
            raise

    def _drain(self, pending: dict[Future[str], str], suspects: list[str]) -> Iterator[str]:
        done, _ = wait(set(pending), return_when=FIRST_COMPLETED)
        broken = False
        for f in done:
            p = pending.pop(f)
            try:
                yield f.result()
            except BrokenProcessPool:
                suspects.append(p)
                broken = True
        if broken:  # the other in-flight items fail the same way: keep finished ones, retry the rest alone
            for f, p in list(pending.items()):
                if f.done() and not f.cancelled() and f.exception() is None:
                    yield f.result()
                else:
                    f.cancel()
                    suspects.append(p)
            pending.clear()
            self.close(cancel=True)

    def close(self, cancel: bool = False) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=not cancel, cancel_futures=True)
            self._pool = None


def _ray_row(fn: MapFn, row: dict[str, str]) -> dict[str, str]:
    return {"result": fn(row["payload"])}


class RayEngine(Engine):
    """Ray Data: `from_items` -> `map` -> streamed `iter_rows`. Starts a local Ray instance with `workers`
    CPUs unless `ray_address` names a running cluster; shuts down only what it started."""

    name = "ray"

    def __init__(self, workers: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError as e:
            raise ImportError("engine 'ray' needs Ray Data: pip install 'cinegen[ray]'") from e
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            # Workers must import cinegen from this checkout even when it is not pip-installed.
            root = str(Path(__file__).resolve().parents[2])
            env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
            kw: dict[str, object] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "runtime_env": {"env_vars": env},
            }
            if address is None:
                kw["num_cpus"] = workers
            ray.init(address=address, **kw)
            self._started = True
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        with contextlib.suppress(AttributeError):
            ctx.print_on_execution_start = False
        self.workers = workers

    def map(self, fn: MapFn, payloads: Iterable[str], on_crash: CrashFn | None = None) -> Iterator[str]:
        import functools

        items = [{"payload": p} for p in payloads]
        if not items:
            return
        ds = self._ray.data.from_items(items, override_num_blocks=min(len(items), 4 * self.workers))
        ds = ds.map(functools.partial(_ray_row, fn), num_cpus=1)
        for row in ds.iter_rows():
            yield row["result"]

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False


def make_engine(cfg: EngineConfig) -> Engine:
    workers = resolve_workers(cfg.workers)
    if cfg.engine == "ray":
        return RayEngine(workers, cfg.ray_address)
    if workers == 1:
        return InlineEngine()
    return LocalEngine(workers, cfg.max_in_flight)
