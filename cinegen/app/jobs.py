"""A bounded job queue with one worker thread: generation jobs for one loaded model run one at a time.

Why one worker per model: a video model fills the accelerator (or all CPU cores) on its own, so running two
generations at once only makes both slower and doubles peak memory. Waiting jobs sit in a bounded FIFO; when
`max_pending` jobs already wait, `submit` raises `QueueFull` (the HTTP API answers 429) instead of letting the
backlog and its uploads grow without bound.

A job moves queued -> running -> done | failed | cancelled. The runner reports progress through the callback
it is handed, which also raises `JobCancelled` when a cancel was requested, so a running job stops at its next
denoising step. Every change bumps `Job.version` and wakes `wait_update`, which the web UI uses to stream
"step i / n" without polling on a timer.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["JobState", "Job", "JobQueue", "QueueFull", "JobCancelled", "Progress"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class QueueFull(RuntimeError):
    """The queue already holds `max_pending` waiting jobs."""


class JobCancelled(Exception):
    """Raised inside a running job (from its progress callback) after a cancel request."""


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass
class Job:
    """One unit of work. `params` is the JSON-able request as reported back; `payload` holds inputs that are not
    (decoded images / videos) and is dropped once the job finishes."""

    id: str
    params: dict[str, Any]
    payload: Any = None
    state: JobState = JobState.QUEUED
    step: int = 0
    total: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: Any = None
    cancel_requested: bool = False
    version: int = 0

    def snapshot(self) -> dict[str, Any]:
        """JSON-able status (without the result object; callers add what they expose of it)."""
        now = time.time()
        elapsed = None
        if self.started is not None:
            elapsed = round((self.finished or now) - self.started, 3)
        return {
            "id": self.id,
            "status": self.state.value,
            "step": self.step,
            "total": self.total,
            "progress": round(self.step / self.total, 4) if self.total else (1.0 if self.state.finished else 0.0),
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "elapsed": elapsed,
            "error": self.error,
            "params": dict(self.params),  # a copy: the worker adds keys (prompt_used) while clients read
        }


Runner = Callable[[Job, Progress], Any]


class JobQueue:
    """FIFO of at most `max_pending` waiting jobs plus one running job, served by one daemon thread.

    run(job, progress) does the work and returns the job's result; an exception marks the job failed with the
    exception's message (`JobCancelled` marks it cancelled). Finished jobs are kept in memory (the newest
    `keep_finished`) so clients can poll them; anything longer-lived belongs in the history store.
    """

    def __init__(self, run: Runner, max_pending: int = 8, name: str = "model", keep_finished: int = 256) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._run = run
        self.max_pending = max_pending
        self.name = name
        self._cond = threading.Condition()
        self._pending: collections.deque[Job] = collections.deque()
        self._jobs: dict[str, Job] = {}
        self._finished: collections.deque[str] = collections.deque()
        self._keep_finished = keep_finished
        self._running: Job | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._worker, name=f"cinegen-jobs-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Cancel waiting jobs, ask the running one to stop at its next step, and join the worker."""
        with self._cond:
            self._stopping = True
            while self._pending:
                self._finish(self._pending.popleft(), JobState.CANCELLED, error="server shutting down")
            if self._running is not None:
                self._running.cancel_requested = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ client side
    def submit(self, params: dict[str, Any], payload: Any = None, job_id: str | None = None) -> Job:
        """Queue a job; raises `QueueFull` when `max_pending` jobs already wait (nothing is queued then)."""
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._pending) >= self.max_pending:
                raise QueueFull(f"the queue is full ({self.max_pending} jobs waiting); retry later")
            job = Job(id=job_id or uuid.uuid4().hex[:12], params=params, payload=payload)
            if job.id in self._jobs:
                raise ValueError(f"duplicate job id {job.id}")
            self._jobs[job.id] = job
            self._pending.append(job)
            self._cond.notify_all()
            return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """All jobs still in memory, oldest first."""
        with self._cond:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def position(self, job_id: str) -> int | None:
        """0-based place in the waiting line (0 = runs next), None if the job is not waiting."""
        with self._cond:
            for i, job in enumerate(self._pending):
                if job.id == job_id:
                    return i
            return None

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def cancel(self, job_id: str) -> bool:
        """Cancel a waiting job at once or ask a running one to stop; False if unknown or already finished."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state.finished:
                return False
            if job.state is JobState.QUEUED:
                self._pending.remove(job)
                self._finish(job, JobState.CANCELLED, error="cancelled")
            else:
                job.cancel_requested = True
                self._bump(job)
            return True

    def wait_update(self, job_id: str, seen_version: int, timeout: float | None = None) -> Job | None:
        """Block until the job's version differs from `seen_version` (or it is finished, or the timeout)."""
        return self._wait_until(job_id, lambda job: job.version != seen_version, timeout)

    def wait(self, job_id: str, timeout: float | None = None) -> Job | None:
        """Block until the job is finished (or the timeout); returns the job."""
        return self._wait_until(job_id, lambda job: False, timeout)

    def _wait_until(self, job_id: str, changed: Callable[[Job], bool], timeout: float | None) -> Job | None:
        """The job once it is gone, finished or `changed(job)`, or at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                job = self._jobs.get(job_id)
                if job is None or job.state.finished or changed(job):
                    return job
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return job
                self._cond.wait(remaining)

    # ------------------------------------------------------------------ worker side
    def _bump(self, job: Job) -> None:
        job.version += 1
        self._cond.notify_all()

    def _finish(self, job: Job, state: JobState, error: str | None = None, result: Any = None) -> None:
        job.state, job.error, job.result = state, error, result
        job.finished = time.time()
        job.payload = None  # uploads can be large; nothing needs them after the run
        self._finished.append(job.id)
        while len(self._finished) > self._keep_finished:
            self._jobs.pop(self._finished.popleft(), None)
        self._bump(job)

    def _progress_for(self, job: Job) -> Progress:
        def progress(step: int, total: int) -> None:
            with self._cond:
                job.step, job.total = int(step), int(total)
                self._bump(job)
                if job.cancel_requested:
                    raise JobCancelled(job.id)

        return progress

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
                job.state, job.started = JobState.RUNNING, time.time()
                self._running = job
                self._bump(job)
            try:
                result = self._run(job, self._progress_for(job))
            except JobCancelled:
                with self._cond:
                    self._running = None
                    self._finish(job, JobState.CANCELLED, error="cancelled")
            except Exception as e:  # a failed job must never take the worker down with it
                log.warning("job %s failed: %s", job.id, e, exc_info=not isinstance(e, ValueError))
                with self._cond:
                    self._running = None
                    self._finish(job, JobState.FAILED, error=str(e) or type(e).__name__)
            else:
                with self._cond:
                    self._running = None
                    self._finish(job, JobState.DONE, result=result)
