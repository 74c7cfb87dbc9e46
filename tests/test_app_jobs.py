"""Job queue (bounded, one worker, cancel, failures) and history store (persistence, atomicity, corruption)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cinegen.app.history import MEDIA_FILES, HistoryStore
from cinegen.app.jobs import JobCancelled, JobQueue, JobState, QueueFull
from cinegen.video import Video, read_video


class Gate:
    """A runner that blocks until released and records how many jobs ran at the same time."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.order: list[str] = []

    def __call__(self, job, progress):  # type: ignore[no-untyped-def]
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.order.append(job.id)
        self.started.set()
        try:
            for i in range(3):
                if job.params.get("block"):
                    assert self.release.wait(10)
                progress(i + 1, 3)
            if job.params.get("fail"):
                raise ValueError("boom: bad input")
            return job.params["x"] * 2
        finally:
            with self.lock:
                self.active -= 1


def _wait_state(q: JobQueue, job_id: str, state: JobState, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while q.get(job_id).state is not state:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}"
        time.sleep(0.01)


def test_queue_runs_fifo_one_at_a_time_and_reports_progress() -> None:
    gate = Gate()
    q = JobQueue(gate, max_pending=8)
    q.start()
    try:
        jobs = [q.submit({"x": i}) for i in range(5)]
        for j in jobs:
            assert q.wait(j.id, timeout=10).state is JobState.DONE  # type: ignore[union-attr]
        assert [j.result for j in jobs] == [0, 2, 4, 6, 8]
        assert gate.order == [j.id for j in jobs]
        assert gate.max_active == 1
        snap = jobs[-1].snapshot()
        assert (snap["step"], snap["total"], snap["progress"], snap["status"]) == (3, 3, 1.0, "done")
        assert snap["elapsed"] is not None and snap["elapsed"] >= 0
    finally:
        q.stop()


def test_full_queue_raises_and_position_is_reported() -> None:
    gate = Gate()
    q = JobQueue(gate, max_pending=2)
    q.start()
    try:
        running = q.submit({"x": 1, "block": True})
        assert gate.started.wait(10)
        _wait_state(q, running.id, JobState.RUNNING)
        a, b = q.submit({"x": 2}), q.submit({"x": 3})
        assert (q.position(a.id), q.position(b.id), q.position(running.id)) == (0, 1, None)
        with pytest.raises(QueueFull, match="2 jobs waiting"):
            q.submit({"x": 4})
        assert len(q.jobs()) == 3  # the refused job was not kept
        gate.release.set()
        assert q.wait(b.id, timeout=10).state is JobState.DONE  # type: ignore[union-attr]
        q.submit({"x": 5})  # room again
    finally:
        gate.release.set()
        q.stop()


def test_cancel_waiting_and_running_jobs() -> None:
    gate = Gate()
    q = JobQueue(gate, max_pending=4)
    q.start()
    try:
        running = q.submit({"x": 1, "block": True})
        waiting = q.submit({"x": 2})
        _wait_state(q, running.id, JobState.RUNNING)
        assert q.cancel(waiting.id)
        assert waiting.state is JobState.CANCELLED and waiting.id not in gate.order
        assert q.cancel(running.id)  # stops at its next progress report
        gate.release.set()
        assert q.wait(running.id, timeout=10).state is JobState.CANCELLED  # type: ignore[union-attr]
        assert running.result is None and running.step == 1  # stopped at its first report, not 3
        assert not q.cancel(running.id)  # already finished
        assert not q.cancel("nope")
    finally:
        gate.release.set()
        q.stop()


def test_failed_job_keeps_the_worker_alive() -> None:
    q = JobQueue(Gate(), max_pending=4)
    q.start()
    try:
        bad, good = q.submit({"x": 1, "fail": True}), q.submit({"x": 21})
        assert q.wait(bad.id, 10).state is JobState.FAILED  # type: ignore[union-attr]
        assert bad.error == "boom: bad input"
        assert q.wait(good.id, 10).result == 42  # type: ignore[union-attr]
    finally:
        q.stop()


def test_wait_update_wakes_on_progress_and_stop_cancels_pending() -> None:
    gate = Gate()
    q = JobQueue(gate, max_pending=4)
    q.start()
    running = q.submit({"x": 1, "block": True})
    pending = q.submit({"x": 2})
    _wait_state(q, running.id, JobState.RUNNING)
    v = running.version
    t0 = time.monotonic()
    assert q.wait_update(running.id, v, timeout=0.2) is running  # times out: nothing changed
    assert time.monotonic() - t0 >= 0.19
    gate.release.set()
    j = q.wait_update(running.id, v, timeout=10)
    assert j is not None and j.version != v
    q.wait(running.id, 10)
    q.stop()
    assert pending.state in (JobState.DONE, JobState.CANCELLED)
    with pytest.raises(QueueFull):
        q.submit({"x": 3})


def test_progress_raises_cancelled_inside_runner() -> None:
    seen: list[str] = []

    def run(job, progress):  # type: ignore[no-untyped-def]
        job.cancel_requested = True
        try:
            progress(1, 2)
        except JobCancelled:
            seen.append("cancelled")
            raise

    q = JobQueue(run)
    q.start()
    try:
        job = q.submit({})
        assert q.wait(job.id, 10).state is JobState.CANCELLED  # type: ignore[union-attr]
        assert seen == ["cancelled"]
    finally:
        q.stop()


# ------------------------------------------------------------------------------------------ history
def _video(seed: int = 0, frames: int = 5) -> Video:
    rng = np.random.default_rng(seed)
    return Video(rng.integers(0, 255, (frames, 16, 24, 3), dtype=np.uint8), fps=8.0)


def test_history_persists_across_restarts_with_media(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    a = store.add("aaa111", _video(0), {"prompt": "one", "seed": 1}, {"seconds": 1.5})
    b = store.add("bbb222", _video(1), {"prompt": "two", "seed": 2})
    assert [e.id for e in store.entries()] == ["bbb222", "aaa111"]  # newest first
    assert set(a.files) == set(MEDIA_FILES)
    back = read_video(store.path("aaa111", "mp4"))  # type: ignore[arg-type]
    assert back.num_frames == 5 and (back.height, back.width) == (16, 24)
    reopened = HistoryStore(tmp_path)
    assert [e.to_json() for e in reopened.entries()] == [b.to_json(), a.to_json()]
    assert reopened.get("aaa111").settings == {"prompt": "one", "seed": 1}  # type: ignore[union-attr]
    assert reopened.skipped == 0
    with pytest.raises(ValueError, match="already exists"):
        reopened.add("aaa111", _video(), {})


def test_history_skips_corrupt_lines_and_leftovers(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    store.add("good01", _video(), {"prompt": "p"})
    store.add("gone02", _video(), {"prompt": "q"})
    index = tmp_path / "history.jsonl"
    # a hand-edited / truncated line, a line for an entry whose media were deleted, a crashed write's leftovers
    with open(index, "a") as f:
        f.write('{"id": "half", "created": \n')
    import shutil

    shutil.rmtree(tmp_path / "media" / "gone02")
    (tmp_path / "media" / "crash03.part").mkdir()
    (tmp_path / "history.jsonl.tmp").write_text("garbage")
    reopened = HistoryStore(tmp_path)
    assert [e.id for e in reopened.entries()] == ["good01"]
    assert reopened.skipped == 2
    reopened.add("new04", _video(), {"prompt": "r"})  # rewriting the index drops the bad lines
    lines = index.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["good01", "new04"]


def test_history_rejects_path_ids_and_trims(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, max_entries=2)
    for bad in ("../evil", "a/b", "", "x" * 65):
        with pytest.raises(ValueError, match="invalid history id"):
            store.add(bad, _video(), {})
    for i in range(3):
        store.add(f"e{i}", _video(i), {"i": i})
    assert [e.id for e in store.entries()] == ["e2", "e1"]
    assert not (tmp_path / "media" / "e0").exists()
    assert store.delete("e1") and not store.delete("e1")
    assert [e.id for e in HistoryStore(tmp_path).entries()] == ["e2"]
    assert store.path("e2", "nope") is None and store.path("zzz", "mp4") is None
