"""The web UI end to end: a real server, headless Chromium (Debian's, driven by Playwright), the shipped default
model (a tiny random model in a checkout without it).

Open the page, type a prompt, press Generate, and check that the result video plays (its playhead moves), the
history gallery gains the entry (also on disk), the seed used is shown, and that the page asked for nothing
outside the server (offline: no CDN, fonts or analytics)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the web UI needs gradio (pip install -e '.[app]')")
pytest.importorskip("fastapi")

from cinegen.app.browser import find_chromium, run_ui, serve_in_thread  # noqa: E402
from cinegen.app.enhance import ShapesEnhancer  # noqa: E402
from cinegen.app.history import HistoryStore  # noqa: E402
from cinegen.app.server import ServerSettings, create_app  # noqa: E402
from cinegen.app.service import GenerationService  # noqa: E402
from cinegen.pipeline import DEFAULT_MODEL, load_pipeline  # noqa: E402


def _app(tiny_2b_folder: Path, history: Path, **settings: object):  # type: ignore[no-untyped-def]
    pipe = load_pipeline(tiny_2b_folder, device="cpu")
    service = GenerationService(pipe, HistoryStore(history), enhancer=ShapesEnhancer())
    return create_app(service, ServerSettings(**settings))  # type: ignore[arg-type]


def test_ui_page_is_served_with_the_model_settings(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """Without a browser: the mounted UI answers at / and carries this model's presets; the API still wins /api."""
    from fastapi.testclient import TestClient

    with TestClient(_app(tiny_2b_folder, tmp_path / "h")) as c:
        page = c.get("/")
        assert page.status_code == 200 and "gradio_config" in page.text
        config = c.get("/config").json()
        comps = {x.get("props", {}).get("elem_id"): x.get("props", {}) for x in config["components"]}
        assert comps["frames"]["choices"] == [["9", 9]] and comps["size"]["value"] == "48×32"
        assert c.get("/api/info").json()["variant"] == "CogVideoX-2b-like"
        assert c.get("/api/nothing").json()["error"].startswith("no API route")


def test_ui_with_api_key_asks_for_login(tiny_2b_folder: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(_app(tiny_2b_folder, tmp_path / "h", api_key="k3y")) as c:
        assert c.get("/config").status_code == 401  # the UI's own endpoints are closed too
        r = c.post("/login", data={"username": "me", "password": "k3y"})
        assert r.status_code == 200, r.text
        assert c.get("/config").status_code == 200


def test_browser_generate_plays_and_enters_history(tiny_2b_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("playwright", reason="the browser test needs the playwright package (no browser download)")
    if find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    history = tmp_path / "history"
    shot = os.environ.get("CINEGEN_UI_SCREENSHOT")  # set to write the page (e.g. docs/ui.png) after the run
    folder = DEFAULT_MODEL if (DEFAULT_MODEL / "model_index.json").is_file() else tiny_2b_folder
    with serve_in_thread(_app(folder, history)) as url:
        run = run_ui(url, "a red circle moves to the left", screenshot=shot, timeout_s=90)
    assert run.external_requests == []
    assert "Done" in run.status and "seed" in run.status, run.status
    assert run.video_time > 0 and "/gradio_api/file=" in run.video_src  # the MP4 decoded and played
    assert run.gallery_items == 1
    # live progress: the status line showed the job's state while it ran, before "Done"
    live = [s for s in run.statuses if any(w in s for w in ("Queued", "Starting", "Step ", "Decoding"))]
    assert live, run.statuses
    (line,) = (history / "history.jsonl").read_text().splitlines()
    entry = json.loads(line)
    assert entry["settings"]["prompt"] == "a red circle moves to the left"
    assert entry["settings"]["prompt_used"].startswith("One shape: A large red circle")  # built-in enhancer on
    assert str(entry["settings"]["seed"]) in run.status
    assert (history / "media" / entry["id"] / "video.mp4").is_file()
