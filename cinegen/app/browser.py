"""Drive the web UI in headless Chromium: the end-to-end browser test and the README screenshot share this.

    python -m cinegen.app.browser --model models/cinegen-shapes -o docs/ui.png \
        --prompt "a red circle moves to the right on a navy background"

runs a server on a free loopback port in this process, opens the page in Debian's Chromium through Playwright
(never `playwright install`: it downloads a browser), types the prompt, presses Generate, waits until the
result video plays and the history gallery shows the entry, and saves a screenshot. Every request the page
makes to a host other than the server is recorded and blocked, so a UI that needs the internet fails here.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_ARGS", "find_chromium", "serve_in_thread", "UIRun", "run_ui", "main"]

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def find_chromium() -> str | None:
    """Debian's chromium (the wrapper script in /usr/bin, which Playwright can launch), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` with uvicorn on a free port in a daemon thread; yields the base URL; stops on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        yield f"http://{host}:{port}/"
    finally:  # also on a failed start: stop the thread and close the socket
        server.should_exit = True
        thread.join(30)
        sock.close()


@dataclass
class UIRun:
    """What the browser saw."""

    status: str = ""
    video_src: str = ""
    video_time: float = 0.0
    video_paused: bool = True
    gallery_items: int = 0
    statuses: list[str] = field(default_factory=list)  # every text the status line showed during the run
    external_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


_WATCH_STATUS = """() => {
  window.__cinegenStatuses = [];
  const el = document.querySelector('#status');
  new MutationObserver(() => window.__cinegenStatuses.push(el.innerText))
    .observe(el, {subtree: true, childList: true, characterData: true});
}"""
_PLAY = "() => { const v = document.querySelector('#result-video video'); v.muted = true; v.play(); }"
_VIDEO_STATE = """() => {
  const v = document.querySelector('#result-video video');
  if (!v) return null;
  return {src: v.currentSrc || v.src || '', t: v.currentTime, paused: v.paused, ready: v.readyState,
          error: v.error ? v.error.code : null};
}"""


def run_ui(
    url: str,
    prompt: str,
    screenshot: str | Path | None = None,
    chromium: str | None = None,
    timeout_s: float = 120.0,
    viewport: tuple[int, int] = (1400, 1000),
) -> UIRun:
    """Open the UI at `url`, generate a video from `prompt`, wait for it to play and enter the history."""
    from playwright.sync_api import sync_playwright

    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    out = UIRun()
    base = url.rstrip("/")
    t0 = time.perf_counter()
    ms = int(timeout_s * 1000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})

            def route(r: Any) -> None:  # offline check: anything not from our server is recorded and blocked
                u = r.request.url
                if u.startswith((base, "data:", "blob:")):
                    r.continue_()
                else:
                    out.external_requests.append(u)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: out.console_errors.append(m.text) if m.type == "error" else None)
            page.goto(url, timeout=ms)
            page.wait_for_selector("#prompt textarea", timeout=ms)
            before = page.locator("#history-gallery img").count()
            page.fill("#prompt textarea", prompt)
            page.evaluate(_WATCH_STATUS)
            page.click("#generate")
            page.wait_for_function(
                "() => { const s = document.querySelector('#status'); return s && /Done|Failed|Cancelled/"
                ".test(s.innerText); }",
                timeout=ms,
            )
            out.status = page.inner_text("#status")
            out.statuses = list(page.evaluate("() => window.__cinegenStatuses"))
            page.wait_for_selector("#result-video video", timeout=ms)
            # autoplay is on; play() again in case the browser's autoplay policy held it, then wait for the
            # playhead to move: proof that the browser decodes the MP4, not just that the element exists
            page.evaluate(_PLAY)
            page.wait_for_function(
                "() => { const v = document.querySelector('#result-video video'); return v && v.currentTime > 0; }",
                timeout=ms,
            )
            state = page.evaluate(_VIDEO_STATE)
            out.video_src, out.video_time, out.video_paused = state["src"], state["t"], state["paused"]
            page.wait_for_function(
                f"() => document.querySelectorAll('#history-gallery img').length > {before}", timeout=ms
            )
            out.gallery_items = page.locator("#history-gallery img").count()
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    out.seconds = time.perf_counter() - t0
    return out


def _shrink_png(path: str | Path) -> None:
    """256-colour palette PNG (a UI screenshot loses nothing visible; ~3x smaller in the repository)."""
    from PIL import Image

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cinegen.app.browser", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model folder")
    ap.add_argument("-o", "--output", default="docs/ui.png", help="screenshot path")
    ap.add_argument("--prompt", default="a red circle moves to the right on a navy background")
    ap.add_argument("--history", default=None, help="history folder (default: a fresh temporary one)")
    ap.add_argument("--runs", type=int, default=3, help="generations before the screenshot (fills the gallery)")
    args = ap.parse_args(argv)

    from cinegen.app.cli import build_service, register_cli
    from cinegen.app.server import ServerSettings, create_app

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    history = args.history or tempfile.mkdtemp(prefix="cinegen-ui-")
    sargs = parser.parse_args(["serve", "--model", args.model, "--history", history])
    service = build_service(sargs)
    app = create_app(service, ServerSettings())
    with serve_in_thread(app) as url:
        for i in range(args.runs - 1):  # earlier results for the gallery (through the API's queue)
            service.submit({"prompt": args.prompt, "seed": i})
        for job in service.queue.jobs():
            service.queue.wait(job.id, timeout=600)
        run = run_ui(url, args.prompt, screenshot=args.output)
    _shrink_png(args.output)
    print(f"{args.output}: {run.status!r}; gallery {run.gallery_items}; external requests {run.external_requests}")
    return 0 if not run.external_requests else 1


if __name__ == "__main__":
    sys.exit(main())
