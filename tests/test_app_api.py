"""HTTP API on a tiny random model: submit -> poll -> fetch, 4xx errors with messages, 429 on a full queue,
API key, cancel, V2V / long / enhanced jobs, and a restart that keeps the history."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cinegen.app.enhance import ShapesEnhancer  # noqa: E402
from cinegen.app.history import HistoryStore  # noqa: E402
from cinegen.app.jobs import JobQueue  # noqa: E402
from cinegen.app.server import ServerSettings, create_app  # noqa: E402
from cinegen.app.service import GenerationService, ServiceLimits  # noqa: E402
from cinegen.pipeline import load_pipeline  # noqa: E402
from cinegen.video import read_video, write_mp4  # noqa: E402


@pytest.fixture(scope="module")
def pipe(tiny_2b_folder: Path):  # type: ignore[no-untyped-def]
    return load_pipeline(tiny_2b_folder, device="cpu")


@pytest.fixture(scope="module")
def history_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history")


def _service(pipe: Any, history: Path, **kw: Any) -> GenerationService:
    limits = kw.pop("limits", ServiceLimits(max_upload_bytes=200_000))
    return GenerationService(pipe, HistoryStore(history), enhancer=ShapesEnhancer(), limits=limits, **kw)


@pytest.fixture(scope="module")
def client(pipe: Any, history_dir: Path) -> Iterator[TestClient]:
    app = create_app(_service(pipe, history_dir), ServerSettings(ui=False))
    with TestClient(app) as c:  # the context runs the lifespan: the worker thread starts and stops
        yield c


def _poll(c: TestClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        st = c.get(f"/api/jobs/{job_id}").json()
        if st["status"] in ("done", "failed", "cancelled"):
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)


def test_submit_poll_fetch(client: TestClient) -> None:
    r = client.post("/api/jobs", json={"prompt": "a red circle moves left", "seed": 7, "steps": 2})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/api/jobs/{job['id']}"
    assert job["status"] in ("queued", "running") and job["params"]["seed"] == 7
    assert job["params"]["num_frames"] == 9 and job["params"]["sampler"] == "ddim"  # the model's defaults
    st = _poll(client, job["id"])
    assert st["status"] == "done", st
    assert (st["step"], st["total"], st["progress"]) == (2, 2, 1.0)
    assert st["params"]["prompt_used"] == "a red circle moves left"  # enhance was not asked for
    urls = st["result"]["urls"]
    assert set(urls) == {"mp4", "gif", "sheet", "thumb"}
    mp4 = client.get(urls["mp4"])
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    tmp = Path(client.app.state.service.history.root) / "fetched.mp4"  # type: ignore[attr-defined]
    tmp.write_bytes(mp4.content)
    v = read_video(tmp)
    assert (v.num_frames, v.height, v.width) == (9, 32, 48)
    assert client.get(urls["gif"]).content[:6] == b"GIF89a"
    assert client.get(urls["sheet"]).content[:8] == b"\x89PNG\r\n\x1a\n"
    hist = client.get("/api/history").json()
    assert hist["entries"][0]["id"] == job["id"] and hist["entries"][0]["settings"]["seed"] == 7
    assert client.get(f"/api/history/{job['id']}/mp4").content == mp4.content


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"prompt": "x", "sampler": "heun"}, 400, "unknown sampler 'heun': choose ddim, dpm or euler"),
        ({"prompt": "x", "sampler": "euler"}, 400, "use ddim or dpm"),
        ({"prompt": "x", "spacing": "cosine"}, 400, "spacing 'cosine' does not apply: choose one of ['scheduler', 'l"),
        ({"prompt": "x", "num_frames": 10}, 400, "use 8N+1 frames"),
        ({"prompt": "x", "num_frames": 17}, 400, "longer than this model's native clip (9 frames)"),
        ({"prompt": "x", "height": 40}, 400, "height=40 is not valid: use a positive multiple of 16"),
        ({"prompt": "x", "width": 4096}, 400, "exceeds this server's limit of 96 pixels"),
        ({"prompt": "x", "steps": 201}, 400, "use 1 to 200"),
        ({"prompt": "x", "long": True, "num_frames": 5}, 400, "shorter than one window"),
        ({"prompt": "x", "long": True, "num_frames": 999}, 400, "limit of 65 frames"),
        ({"prompt": "x", "image": base64.b64encode(b"abc").decode()}, 400, "not a readable image"),
        ({"prompt": "x", "image": "***"}, 400, "not valid base64"),
        ({"prompt": "x", "video": base64.b64encode(b"not a video").decode()}, 400, "not a readable video"),
        ({"prompt": "   "}, 400, "prompt must be a non-empty string"),
        ({"negative_prompt": "x"}, 422, "prompt: Field required"),
        ({"prompt": "x", "steps": 0}, 422, "steps: Input should be greater than or equal to 1"),
        ({"prompt": "x", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"prompt": "x", "seed": -1}, 422, "seed"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(client: TestClient, body: dict, code: int, needle: str) -> None:
    r = client.post("/api/jobs", json=body)
    assert r.status_code == code, r.text
    assert needle in r.json()["error"]


def test_i2v_upload_on_t2v_model_and_oversize_upload(client: TestClient) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 10, 10)).save(buf, format="PNG")
    img = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.post("/api/jobs", json={"prompt": "x", "image": img})
    assert r.status_code == 400 and "this model does not do i2v" in r.json()["error"]
    big = base64.b64encode(b"\0" * 300_000).decode()  # limit in this fixture: 200 kB
    r = client.post("/api/jobs", json={"prompt": "x", "video": big})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.post("/api/jobs", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["error"]


def test_unknown_job_and_routes(client: TestClient) -> None:
    assert client.get("/api/jobs/nope").status_code == 404
    r = client.get("/api/jobs/nope/result")
    assert r.status_code == 404 and "unknown job 'nope'" in r.json()["error"]
    assert client.get("/api/history/nope").status_code == 404
    assert client.get("/api/whatever").status_code == 404
    r = client.get("/api/jobs/nope/result?format=avi")
    assert r.status_code == 422 and "format" in r.json()["error"]


def test_openapi_info_health(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/result", "/api/history", "/api/enhance"):
        assert path in schema["paths"], path
    assert "GenerateBody" in schema["components"]["schemas"]
    info = client.get("/api/info").json()
    assert info["modes"] == ["t2v", "v2v"] and info["samplers"] == ["ddim", "dpm"]
    assert info["spacings"] == ["scheduler", "log_snr"]
    assert info["frame_presets"] == [9] and info["size_presets"][0] == [32, 48]
    assert info["long_video"] == {"supported": True, "window_frames": 9, "max_frames": 65, "default_overlap": 1}
    assert info["enhancer"] == "shapes"
    assert client.get("/api/health").json()["worker"] is True


def test_log_snr_spacing_reaches_the_sampler(client: TestClient) -> None:
    """The same seed and steps with the two spacings: different timesteps, so different videos; the job and
    the history record the spacing used (default: the scheduler's list)."""
    videos = {}
    for spacing in ("scheduler", "log_snr", None):
        body = {"prompt": "a red circle", "seed": 3, "steps": 3, **({"spacing": spacing} if spacing else {})}
        st = _poll(client, client.post("/api/jobs", json=body).json()["id"])
        assert st["status"] == "done", st
        assert st["params"]["spacing"] == (spacing or "scheduler")
        assert st["result"]["settings"]["spacing"] == (spacing or "scheduler")
        videos[spacing] = client.get(st["result"]["urls"]["mp4"]).content
    assert videos["scheduler"] == videos[None]
    assert videos["scheduler"] != videos["log_snr"]


def test_enhance_endpoint_and_enhanced_job(client: TestClient) -> None:
    r = client.post("/api/enhance", json={"prompt": "two green stars spin"}).json()
    assert r["enhanced"] and r["prompt"].startswith("Two shapes: Two small green stars both")
    r = client.post("/api/enhance", json={"prompt": "a dog"}).json()
    assert not r["enhanced"] and r["prompt"] == "a dog" and "no shape" in r["error"]
    job = client.post("/api/jobs", json={"prompt": "a pink ring", "enhance": True, "seed": 1}).json()
    st = _poll(client, job["id"])
    assert st["status"] == "done"
    assert st["params"]["prompt"] == "a pink ring"  # what the user typed is kept next to what was used
    assert st["params"]["prompt_used"].startswith("One shape: A large pink ring")
    assert st["result"]["settings"]["prompt_used"] == st["params"]["prompt_used"]


def test_v2v_and_long_jobs(client: TestClient, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "src.mp4"
    write_mp4(rng.integers(0, 255, (12, 32, 48, 3), dtype=np.uint8), 8.0, src)
    video_b64 = base64.b64encode(src.read_bytes()).decode()
    v2v = client.post("/api/jobs", json={"prompt": "x", "video": video_b64, "strength": 0.5, "seed": 2}).json()
    long = client.post("/api/jobs", json={"prompt": "x", "long": True, "num_frames": 17, "seed": 3}).json()
    assert long["params"]["overlap"] == 1 and long["params"]["long"] is True
    st = _poll(client, v2v["id"])
    assert st["status"] == "done", st
    assert st["params"]["mode"] == "v2v" and st["params"]["strength"] == 0.5
    assert st["result"]["settings"]["num_frames"] == 9  # 12 source frames -> the longest valid clip, 9
    assert st["total"] == 1  # strength 0.5 of 2 steps
    st = _poll(client, long["id"])
    assert st["status"] == "done", st
    assert st["result"]["settings"]["num_frames"] == 17


def test_full_queue_gets_429_and_cancel(pipe: Any, tmp_path: Path) -> None:
    service = _service(pipe, tmp_path / "h", queue_size=1)
    release, started = threading.Event(), threading.Event()

    def blocking_run(job, progress):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(30)
        progress(1, 1)

    service.queue = JobQueue(blocking_run, max_pending=1)  # a slow "model": the worker stays busy
    with TestClient(create_app(service, ServerSettings(ui=False))) as c:
        try:
            first = c.post("/api/jobs", json={"prompt": "one"}).json()
            assert started.wait(10)
            second = c.post("/api/jobs", json={"prompt": "two"})
            assert second.status_code == 202 and second.json()["position"] == 0
            third = c.post("/api/jobs", json={"prompt": "three"})
            assert third.status_code == 429 and third.headers["retry-after"] == "5"
            assert "queue is full (1 jobs waiting)" in third.json()["error"]
            r = c.get(f"/api/jobs/{first['id']}/result")
            assert r.status_code == 409 and "is running" in r.json()["error"]
            r = c.delete(f"/api/jobs/{second.json()['id']}")
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
            assert c.delete(f"/api/jobs/{second.json()['id']}").status_code == 409
            assert c.post("/api/jobs", json={"prompt": "four"}).status_code == 202  # room again
        finally:
            release.set()


def test_api_key(pipe: Any, tmp_path: Path) -> None:
    app = create_app(_service(pipe, tmp_path / "h"), ServerSettings(api_key="s3cret", ui=False))
    with TestClient(app) as c:
        r = c.get("/api/info")
        assert r.status_code == 401 and "missing API key" in r.json()["error"]
        assert c.get("/api/info", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/api/jobs", json={"prompt": "x"}).status_code == 401
        assert c.get("/api/health").status_code == 200  # liveness probes need no key


def test_restart_keeps_history(client: TestClient, pipe: Any, history_dir: Path) -> None:
    before = client.get("/api/history").json()["entries"]
    assert before, "earlier tests in this module made videos"
    # a second server on the same history folder (the first one's worker is idle; one writer at a time)
    with TestClient(create_app(_service(pipe, history_dir), ServerSettings(ui=False))) as c2:
        after = c2.get("/api/history").json()["entries"]
        assert [e["id"] for e in after] == [e["id"] for e in before]
        assert [e["settings"] for e in after] == [e["settings"] for e in before]
        old = before[-1]["id"]
        st = c2.get(f"/api/jobs/{old}").json()  # a job id from before the restart still answers
        assert st["status"] == "done" and st["result"]["id"] == old
        assert c2.get(f"/api/jobs/{old}/result?format=mp4").status_code == 200


def test_cli_serve_refuses_public_bind_without_key(tiny_2b_folder: Path, capsys: pytest.CaptureFixture) -> None:
    from cinegen.app.cli import is_loopback, main, resolve_api_key

    assert main(["serve", "--model", str(tiny_2b_folder), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    env = {"MY_KEY": "abc", "CINEGEN_API_KEY": "dflt"}
    assert resolve_api_key("MY_KEY", env) == "abc" and resolve_api_key("env:MY_KEY", env) == "abc"
    assert resolve_api_key("literal-key", env) == "literal-key" and resolve_api_key(None, env) == "dflt"
    assert resolve_api_key(None, {}) is None
    with pytest.raises(ValueError, match="not set"):
        resolve_api_key("env:NOPE", env)
