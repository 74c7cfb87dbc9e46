"""Engines: the local process pool survives a worker that dies, and keeps every other result."""

from __future__ import annotations

import json
import os
import signal

from cinegen.data.engines import InlineEngine, LocalEngine
from cinegen.data.manifest import ClipRecord
from cinegen.data.pipeline import crash_result, run_item


def _maybe_die(payload: str) -> str:
    if payload == "boom":
        os.kill(os.getpid(), signal.SIGKILL)  # like a segfault in a decoder: no Python exception
    return payload.upper()


def test_local_pool_isolates_an_item_that_kills_its_worker() -> None:
    items = ["a", "b", "boom", "c", "d", "e"]
    with LocalEngine(2, max_in_flight=2) as engine:
        out = list(engine.map(_maybe_die, items, on_crash=lambda p, msg: f"crashed:{p}"))
        assert sorted(out) == ["A", "B", "C", "D", "E", "crashed:boom"]
        # The restarted pool keeps working for the next stage.
        assert sorted(engine.map(_maybe_die, ["x", "y"])) == ["X", "Y"]


def test_inline_engine_and_error_rows() -> None:
    assert list(InlineEngine().map(str.upper, ["a", "b"])) == ["A", "B"]
    payload = json.dumps({"key": "k1", "rec": ClipRecord(path="/nope.mp4", id="n").to_dict()})
    # A Python exception inside a stage becomes an error row for that item only.
    cfg_json = json.dumps({"split": {"detector": "content"}})
    (row,) = json.loads(run_item("split", cfg_json, "/tmp", payload))["out"]
    assert (row["status"], row["stage"], row["reason"]) == ("error", "split", "exception")
    assert row["detail"]
    (row,) = json.loads(crash_result("score", payload, "worker died"))["out"]
    assert (row["status"], row["stage"], row["reason"], row["detail"]) == (
        "error",
        "score",
        "worker_crash",
        "worker died",
    )
