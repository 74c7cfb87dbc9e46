"""End to end: synthetic raw folder -> every stage -> manifest; resume after a kill; local pool == Ray.

The corpus (cinegen.data.synth.make_corpus) is made here, in a temp dir: a video with two hard cuts, a clip
with burnt-in text, a static clip, a heavily letterboxed clip, two encodes of the same content, a rotated
clip, and corrupt / zero-length / audio-only / truncated files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cinegen.data import synth
from cinegen.data.config import load_config
from cinegen.data.manifest import read_manifest
from cinegen.data.pipeline import run_all

# Relative export paths so manifests from different work dirs compare equal.
OVERRIDES = ["export.paths=relative", "engine.workers=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("raw")
    truth = synth.make_corpus(root)
    return root, truth


@pytest.fixture(scope="module")
def clean_run(corpus: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw, _ = corpus
    work = tmp_path_factory.mktemp("clean")
    cfg = load_config(None, [f"input={raw}", f"workdir={work}", *OVERRIDES])
    run_all(cfg, log=None)
    return work


def _outcome(rows: list, stem: str) -> set[str]:
    """Outcomes of every row that came from the source file `stem`: "kept" or the drop reason."""
    return {"kept" if r.ok else r.reason for r in rows if Path(r.source_path or r.path).stem == stem}


def test_every_input_ends_where_it_should(corpus: tuple[Path, dict], clean_run: Path) -> None:
    _, truth = corpus
    final = read_manifest(clean_run / "bucket.jsonl")
    for stem, expected in truth["expect"].items():
        assert _outcome(final, stem) == {expected}, (stem, [(r.id, r.reason, r.detail) for r in final])
    # The corrupt file is reported (with the file named), not fatal.
    bad = [r for r in final if Path(r.path).stem == "corrupt"]
    assert bad and bad[0].status == "error" and "corrupt.mp4" in bad[0].detail


def test_scene_cuts_within_two_frames(corpus: tuple[Path, dict], clean_run: Path) -> None:
    _, truth = corpus
    clips = [r for r in read_manifest(clean_run / "split.jsonl") if Path(r.source_path).stem == "cuts"]
    scene_starts = sorted({r.meta["scene_start"] for r in clips} - {0.0})
    fps = 10.0
    assert len(scene_starts) == len(truth["cuts"])
    for got, want in zip(scene_starts, truth["cuts"], strict=True):
        assert abs(got * fps - want) <= 2, (scene_starts, truth["cuts"])
    # 0.5 s trimmed on both sides of each cut, nothing at the file's own start / end.
    kept = sorted((r.start, r.end) for r in clips if r.ok)
    assert kept == [(0.0, 4.0), (5.0, 8.0), (9.0, 13.5)]
    assert [r.num_frames for r in sorted(clips, key=lambda r: r.start)] == [40, 30, 45]


def test_training_manifest_and_cogvideo_layout(clean_run: Path) -> None:
    export = clean_run / "export"
    train = read_manifest(export / "train.jsonl")
    assert {r.id.rsplit("-", 3)[0] for r in train} == {"cuts", "dup-a", "rotated"}
    assert all(r.ok and r.bucket and r.text for r in train)
    assert read_manifest(export / "train.parquet") == train
    for r in train:
        assert (export / r.path).is_file()
    # Sidecar caption cleaned: boilerplate prefix removed, repeated sentence removed.
    cuts = [r for r in train if r.id.startswith("cuts-")]
    assert {r.text for r in cuts} == {"Three scenes of colourful discs."}
    # Rotated source (display rotation 90) -> upright portrait clip and a portrait bucket.
    rot = next(r for r in train if r.id.startswith("rotated-"))
    assert (rot.width, rot.height) == (96, 128) and rot.bucket == "33x672x512"
    prompts = (export / "prompt.txt").read_text().splitlines()
    videos = (export / "videos.txt").read_text().splitlines()
    assert len(prompts) == len(videos) == len(train)
    assert all((export / v).is_file() for v in videos)


def test_report(clean_run: Path) -> None:
    from cinegen.data.report import write_report

    paths = write_report(clean_run)
    md = (clean_run / "report" / "report.md").read_text()
    for reason in (
        "unreadable",
        "audio_only",
        "empty_file",
        "text",
        "static",
        "near_duplicate",
        "black_borders",
    ):
        assert f"| {reason} |" in md
    assert (clean_run / "report" / "report.html").read_text().count("<img") >= 3
    names = {p.name for p in paths}
    assert {"hist_motion.png", "hist_text_area.png", "sheet_kept.png", "sheet_dropped.png"} <= names
    stats = json.loads((clean_run / "stats.json").read_text())
    assert all(stats[s]["clips_per_s"] > 0 for s in ("scan", "split", "score", "caption"))


def _cli(raw: Path, work: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cinegen.data.cli",
        "run",
        str(raw),
        "--workdir",
        str(work),
        "--no-report",
        "--set",
        "export.paths=relative",
        *extra,
    ]


def _journal_lines(work: Path, stage: str) -> int:
    p = work / ".journal" / f"{stage}.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def _interrupt_when(cmd: list[str], work: Path, stage: str, sig: int) -> int | None:
    """Start the CLI, send `sig` to its process group once `stage` has journaled one item (and before the
    stage's table exists, i.e. truly mid-stage); returns the exit code, or None when the stage ran to its end
    between two polls (a timing race on a fast machine: the caller retries)."""
    # Ctrl-C must reach the CLI as a KeyboardInterrupt even if this test process inherited an ignored SIGINT
    # (a child keeps SIG_IGN and Python then installs no handler: the run would finish with exit code 0).
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    sent = False
    try:
        while time.time() < deadline and proc.poll() is None:
            if _journal_lines(work, stage) >= 1:
                if (work / f"{stage}.jsonl").exists():  # finished before we could interrupt it
                    break
                os.killpg(proc.pid, sig)
                sent = True
                break
            time.sleep(0.01)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return rc if sent else None


@pytest.mark.slow
def test_resume_after_interrupt_and_kill_equals_clean_run(
    corpus: tuple[Path, dict], clean_run: Path, tmp_path: Path
) -> None:
    raw, _ = corpus
    work = tmp_path / "work"
    # Local process pool with 2 workers (the clean run was in-process): also checks pool == inline.
    cmd = _cli(raw, work, "--workers", "2")
    for _attempt in range(3):  # a fresh work dir per attempt; retried only if a stage outran the signal
        shutil.rmtree(work, ignore_errors=True)
        # Ctrl-C in the middle of `split`: exit code 130, finished items journaled.
        rc = _interrupt_when(cmd, work, "split", signal.SIGINT)
        if rc is None:
            continue
        assert rc == 130
        assert _journal_lines(work, "split") >= 1 and not (work / "split.jsonl").exists()
        # SIGKILL in the middle of `score` (no cleanup at all).
        rc = _interrupt_when(cmd, work, "score", signal.SIGKILL)
        if rc is not None:
            break
    assert rc == -signal.SIGKILL, "could not interrupt the run mid-stage in 3 attempts"
    done_before = _journal_lines(work, "score")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    # The resumed run re-did only what was missing.
    score_line = res.stdout.split("[score]")[1].splitlines()[0]
    assert done_before >= 1 and f"processed {9 - done_before}, resumed {done_before};" in score_line
    for name in (
        "scan.jsonl",
        "split.jsonl",
        "score.jsonl",
        "filter.jsonl",
        "bucket.jsonl",
        "export/train.jsonl",
    ):
        assert (work / name).read_text() == (clean_run / name).read_text(), name
    # A further re-run (in-process: the engine is not part of an item's fingerprint) does no new work.
    res = subprocess.run([*cmd[:-2], "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert "processed 0," in res.stdout.split("[score]")[1].splitlines()[0]


@pytest.mark.slow
def test_ray_engine_gives_the_same_manifest(corpus: tuple[Path, dict], clean_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray.data")
    raw, _ = corpus
    work = tmp_path / "ray"
    cfg = load_config(None, [f"input={raw}", f"workdir={work}", *OVERRIDES, "engine.engine=ray", "engine.workers=2"])
    stats = run_all(cfg, log=None)
    assert {s.engine for s in stats if s.stage in ("scan", "split", "score", "caption")} == {"ray"}
    for name in ("split.jsonl", "score.jsonl", "bucket.jsonl", "export/train.jsonl"):
        assert (work / name).read_text() == (clean_run / name).read_text(), name
