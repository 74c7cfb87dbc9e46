"""The stage runner: input table -> stage -> output table, resumable and atomic.

Work dir layout:
    <stage>.jsonl          the stage's output table (every row, kept and dropped), written atomically
    .journal/<stage>.jsonl one line per finished item: {"key": fingerprint, "out": [records]}; appended and
                           flushed as items finish, so a crash or Ctrl-C loses no finished work
    stats.json             per-stage counts, throughput and notes (read by the report)
    clips/                 cut clips;  export/  training manifest;  report/  the report

Resume = set difference by fingerprint (data-pipelines.md §0.6): the fingerprint of an item is a hash of the
stage name, the stage's config section and the input row, so re-running skips finished items, and changing a
threshold or an input re-does exactly the affected items. The output table is assembled in input order from
the journal, so an interrupted-then-resumed run writes the same table as one clean run.

Mapped stages (scan, split, score, caption) go through an engine (inline / process pool / Ray); the table
stages (filter, bucket, export) are fast whole-table passes done in this process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinegen.config import from_dict, to_dict
from cinegen.data.config import DataConfig, dump_config
from cinegen.data.manifest import (
    STATUS_ERROR,
    ClipRecord,
    atomic_write,
    dumps_record,
    read_manifest,
    write_manifest,
)

if TYPE_CHECKING:  # engines import multiprocessing: loaded when a stage runs, not by `cinegen --help`
    from cinegen.data.engines import Engine

STAGES = ("scan", "split", "score", "filter", "caption", "bucket", "export")
MAPPED = ("scan", "split", "score", "caption")
PREVIOUS = {
    "split": "scan",
    "score": "split",
    "filter": "score",
    "caption": "filter",
    "bucket": "caption",
    "export": "bucket",
}


@dataclass
class StageStats:
    stage: str
    items: int = 0  # input rows
    processed: int = 0  # items computed in this run (the rest were resumed from the journal or passed through)
    resumed: int = 0
    outputs: int = 0  # output rows
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count (new drops of this stage)
    seconds: float = 0.0
    items_per_s: float | None = None  # processed items / wall seconds
    clips_per_s: float | None = None  # output rows of processed items / wall seconds
    workers: int = 1
    engine: str = "inline"
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- worker side


def _stage_fn(stage: str) -> Callable[[ClipRecord, DataConfig, Path], list[ClipRecord]]:
    if stage == "scan":
        from cinegen.data.probe import scan_item

        return scan_item
    if stage == "split":
        from cinegen.data.split import split_item

        return split_item
    if stage == "score":
        from cinegen.data.score import score_item

        return score_item
    if stage == "caption":
        from cinegen.data.caption import caption_item

        return caption_item
    raise ValueError(f"{stage} is not a mapped stage")


@functools.lru_cache(maxsize=1)
def _setup_once() -> None:
    # Same process setup under every engine (Ray workers have no pool initializer): FFmpeg's log level
    # changes the text of error messages, which end up in the manifest.
    from cinegen.data.engines import worker_setup

    worker_setup()


@functools.lru_cache(maxsize=4)
def _config(cfg_json: str) -> DataConfig:
    return from_dict(DataConfig, json.loads(cfg_json))


def run_item(stage: str, cfg_json: str, workdir: str, payload: str) -> str:
    """Worker entry point (picklable, top-level): one input row -> its output rows, as JSON. Any exception
    becomes an "error" row for this item only; the run goes on."""
    _setup_once()
    item = json.loads(payload)
    rec = ClipRecord.from_dict(item["rec"])
    try:
        outs = _stage_fn(stage)(rec, _config(cfg_json), Path(workdir))
    except Exception as e:  # noqa: BLE001 - a broken item must never stop the run
        outs = [rec.dropped(stage, "exception", f"{type(e).__name__}: {e}"[:500], STATUS_ERROR)]
    return json.dumps({"key": item["key"], "out": [json.loads(dumps_record(o)) for o in outs]})


def crash_result(stage: str, payload: str, message: str) -> str:
    """Stand-in result for an item whose worker process died (the engine could not run `run_item`)."""
    item = json.loads(payload)
    rec = ClipRecord.from_dict(item["rec"]).dropped(stage, "worker_crash", message, STATUS_ERROR)
    return json.dumps({"key": item["key"], "out": [json.loads(dumps_record(rec))]})


# ---------------------------------------------------------------------------------------- driver side


def fingerprint(stage: str, cfg: DataConfig, rec: ClipRecord) -> str:
    section = to_dict(getattr(cfg, stage))
    blob = json.dumps([stage, section, rec.to_dict()], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def read_journal(path: Path) -> dict[str, list[dict[str, Any]]]:
    done: dict[str, list[dict[str, Any]]] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                item = json.loads(line)
                done[item["key"]] = item["out"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by a crash: that item is simply done again
    return done


def stage_table(workdir: Path, stage: str) -> Path:
    return workdir / f"{stage}.jsonl"


def stage_input(stage: str, cfg: DataConfig, workdir: Path) -> list[ClipRecord]:
    if stage == "scan":
        from cinegen.data.probe import discover

        if cfg.input is None:
            raise ValueError("no input: pass an input folder / file (or set `input` in the config)")
        return discover(cfg.input, cfg.scan)
    prev = stage_table(workdir, PREVIOUS[stage])
    if not prev.exists():
        raise FileNotFoundError(f"{prev} not found: run `cinegen data {PREVIOUS[stage]}` first")
    return read_manifest(prev)


def _count(stats: StageStats, records: list[ClipRecord], stage: str) -> None:
    stats.outputs = len(records)
    stats.kept = sum(r.ok for r in records)
    stats.dropped = dict(sorted(Counter(r.reason or "?" for r in records if not r.ok and r.stage == stage).items()))


def run_mapped(
    stage: str, records: list[ClipRecord], cfg: DataConfig, workdir: Path, engine: Engine, stats: StageStats
) -> list[ClipRecord]:
    journal_path = workdir / ".journal" / f"{stage}.jsonl"
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_journal(journal_path)
    keys = [fingerprint(stage, cfg, r) if r.ok else None for r in records]
    todo = [(k, r) for k, r in zip(keys, records, strict=True) if k is not None and k not in done]
    stats.resumed = sum(1 for k in keys if k is not None and k in done)
    cfg_json = json.dumps(to_dict(cfg))
    fn = functools.partial(run_item, stage, cfg_json, str(workdir))
    payloads = (json.dumps({"key": k, "rec": r.to_dict()}) for k, r in todo)
    t0 = time.perf_counter()
    produced = 0
    with open(journal_path, "a", encoding="utf-8") as journal:
        for result in engine.map(fn, payloads, on_crash=functools.partial(crash_result, stage)):
            item = json.loads(result)
            journal.write(json.dumps(item, ensure_ascii=False) + "\n")
            journal.flush()  # in the OS after each item: survives a killed process
            done[item["key"]] = item["out"]
            stats.processed += 1
            produced += len(item["out"])
        os.fsync(journal.fileno())
    stats.seconds = time.perf_counter() - t0
    if stats.processed and stats.seconds > 0:
        stats.items_per_s = stats.processed / stats.seconds
        stats.clips_per_s = produced / stats.seconds
    out: list[ClipRecord] = []
    for k, r in zip(keys, records, strict=True):
        if k is None:
            out.append(r)  # dropped / errored upstream: passed through untouched
        else:
            out.extend(ClipRecord.from_dict(d) for d in done[k])
    return out


def run_stage(
    stage: str,
    cfg: DataConfig,
    workdir: Path | None = None,
    engine: Engine | None = None,
    log: Callable[[str], None] | None = print,
) -> StageStats:
    """Run one stage on the previous stage's table (or the input for `scan`) and write its table."""
    if stage == "report":
        raise ValueError("use cinegen.data.report.write_report for the report")
    workdir = Path(workdir or cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    records = stage_input(stage, cfg, workdir)
    stats = StageStats(stage=stage, items=len(records))
    own_engine = engine is None and stage in MAPPED
    if stage in MAPPED:
        from cinegen.data.engines import make_engine

        engine = engine or make_engine(cfg.engine)
        stats.engine = engine.name
        stats.workers = getattr(engine, "workers", 1)
        if stage == "score":
            from cinegen.data.learned import plugin_notes

            stats.notes += plugin_notes(cfg.score)
        try:
            out = run_mapped(stage, records, cfg, workdir, engine, stats)
        finally:
            if own_engine and engine is not None:
                engine.close()
        if stage == "caption":
            texts = Counter(r.text for r in out if r.ok)
            shared = sum(n for n in texts.values() if n > 1)
            if shared:
                stats.notes.append(
                    f"{shared} kept clips share their caption with another clip "
                    f"({sum(1 for n in texts.values() if n > 1)} distinct captions)"
                )
    else:
        t0 = time.perf_counter()
        out = _table_stage(stage, records, cfg, workdir, stats)
        stats.seconds = time.perf_counter() - t0
        stats.processed = len(records)
        if stats.seconds > 0 and records:
            stats.items_per_s = len(records) / stats.seconds
            stats.clips_per_s = sum(r.ok for r in out) / stats.seconds
    if stage != "export":
        write_manifest(out, stage_table(workdir, stage))
    _count(stats, out, stage)
    save_stats(workdir, stats)
    if log is not None:
        log(format_stats(stats))
    return stats


def _table_stage(
    stage: str, records: list[ClipRecord], cfg: DataConfig, workdir: Path, stats: StageStats
) -> list[ClipRecord]:
    if stage == "filter":
        from cinegen.data.filters import filter_records

        return filter_records(records, cfg.filter)
    if stage == "bucket":
        from cinegen.data.bucket import bucket_records

        out, hist, warnings = bucket_records(records, cfg.bucket)
        stats.notes += [f"bucket {b}: {n}" for b, n in hist.items()] + [f"WARNING: {w}" for w in warnings]
        return out
    if stage == "export":
        from cinegen.data.export import export_records

        written = export_records(records, workdir, cfg.export)
        stats.notes += [f"wrote {p}" for p in written]
        return records
    raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def save_stats(workdir: Path, stats: StageStats) -> None:
    path = workdir / "stats.json"
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = {}
    data[stats.stage] = dataclasses.asdict(stats)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def format_stats(s: StageStats) -> str:
    rate = f"{s.items_per_s:.2f} items/s, {s.clips_per_s:.2f} clips/s" if s.items_per_s else "no new work"
    drops = ", ".join(f"{k}={v}" for k, v in s.dropped.items()) or "none"
    line = (
        f"[{s.stage}] {s.items} in -> {s.outputs} out ({s.kept} kept); processed {s.processed}, "
        f"resumed {s.resumed}; {s.seconds:.2f}s ({rate}; {s.engine} x{s.workers}); dropped: {drops}"
    )
    return "\n".join([line] + [f"  {n}" for n in s.notes])


def run_all(
    cfg: DataConfig,
    stages: tuple[str, ...] = STAGES,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = print,
) -> list[StageStats]:
    """Every stage in order with one engine (one pool / one Ray instance for the whole run)."""
    workdir = Path(workdir or cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with atomic_write(workdir / "config.yaml", "w", encoding="utf-8") as f:
        f.write(dump_config(cfg))
    out = []
    from cinegen.data.engines import make_engine

    with make_engine(cfg.engine) as engine:
        for stage in stages:
            out.append(run_stage(stage, cfg, workdir, engine=engine if stage in MAPPED else None, log=log))
    return out
