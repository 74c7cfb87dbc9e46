"""HTTP API (FastAPI) with the gradio web UI mounted on the same server.

    POST   /api/jobs                      submit a generation (JSON) -> 202 + job status; 400/413/422/429 on errors
    GET    /api/jobs                      jobs still in memory
    GET    /api/jobs/{id}                 status: queued (position) | running (step / total) | done | failed | cancelled
    DELETE /api/jobs/{id}                 cancel (a running job stops at its next step)
    GET    /api/jobs/{id}/result?format=  the video: mp4 (default) | gif | sheet (png contact sheet) | thumb
    GET    /api/history[?limit=]          finished generations with their settings, newest first
    GET    /api/history/{id}              one entry;  DELETE removes it with its files
    GET    /api/history/{id}/{kind}       a media file of an entry (mp4 | gif | sheet | thumb)
    POST   /api/enhance                   {"prompt": ...} -> the rewritten prompt (or the raw one and why)
    GET    /api/info                      model, modes, presets, samplers, limits, queue
    GET    /api/health                    liveness (never needs the key)
    GET    /openapi.json                  the schema of all of the above
    /                                     the web UI (gradio), when enabled

Errors are JSON `{"error": "<message>"}` with a 4xx code: 400 the model cannot serve the request (the message
names the allowed values), 401 missing / wrong API key, 404 unknown job, 409 result not ready, 413 upload too
large, 422 malformed body, 429 queue full (with Retry-After). With an API key set, every /api route but
/api/health needs `Authorization: Bearer KEY` or `X-API-Key: KEY`, and the UI asks for the key as its password.

The API docs pages (/docs, /redoc) are off: they load Swagger / ReDoc from a CDN, and this server works offline.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cinegen import __version__
from cinegen.app.history import HistoryEntry
from cinegen.app.jobs import QueueFull
from cinegen.app.service import GenerationService, decode_image, decode_video
from cinegen.pipeline import RequestError

__all__ = ["ServerSettings", "create_app", "GenerateBody"]

MediaKind = Literal["mp4", "gif", "sheet", "thumb"]
_MEDIA_TYPES = {"mp4": "video/mp4", "gif": "image/gif", "sheet": "image/png", "thumb": "image/png"}


@dataclass(frozen=True)
class ServerSettings:
    api_key: str | None = None  # None: open (fine on 127.0.0.1; the CLI refuses a public bind without one)
    ui: bool = True  # mount the gradio UI at /
    title: str = "cinegen"


class GenerateBody(BaseModel):
    """A generation request. Omitted fields take the model's defaults (GET /api/info)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="what the video should show")
    negative_prompt: str = ""
    num_frames: int | None = Field(None, ge=1, description="valid counts: /api/info frame_presets (or long=true)")
    height: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0, le=100, description="classifier-free guidance; 1 = off")
    seed: int | None = Field(None, ge=0, description="omit for a random seed (reported in the job status)")
    sampler: str | None = Field(None, description="/api/info samplers: ddim | dpm (CogVideoX) or euler (flow)")
    spacing: str | None = Field(
        None, description="/api/info spacings: scheduler (the model's list) | log_snr (even in log-SNR, down to t=0)"
    )
    strength: float | None = Field(None, gt=0, le=1, description="video-to-video: share of the schedule re-run")
    dynamic_cfg: bool = False
    fps: float | None = Field(None, gt=0, le=120)
    enhance: bool = Field(False, description="rewrite the prompt with the server's prompt enhancer first")
    long: bool = Field(False, description="longer than the native clip: overlapping windows")
    overlap: int | None = Field(None, ge=1, description="long video: latent frames shared by neighbouring windows")
    image: str | None = Field(None, description="image-to-video: base64 (or data: URL) of a PNG / JPEG")
    video: str | None = Field(None, description="video-to-video: base64 (or data: URL) of an MP4 / WebM / GIF")


class EnhanceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": "5"} if status == 429 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _b64(data: str, what: str, limit: int) -> bytes:
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) * 3 // 4 > limit:
        raise HTTPException(413, f"{what} upload is larger than the {limit // 2**20} MiB limit")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise HTTPException(400, f"{what} is not valid base64 ({e})") from e
    if not raw:
        raise HTTPException(400, f"{what} is empty")
    return raw


# ------------------------------------------------------------------------------------------ middleware
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class GuardMiddleware:
    """API key check and request-size limit for /api routes, before the body is read (pure ASGI, so gradio's
    streamed responses pass through untouched)."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/api/"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and scope["path"] != "/api/health" and scope.get("method") != "OPTIONS":
            given = headers.get("x-api-key") or ""
            auth = headers.get("authorization", "")
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                msg = "missing API key" if not given else "wrong API key"
                resp = _error(401, f"{msg}: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
                resp.headers["WWW-Authenticate"] = "Bearer"
                await resp(scope, receive, send)
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            resp = _error(413, f"request body of {int(length)} bytes exceeds the {self.max_body} byte limit")
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------ the app
def create_app(service: GenerationService, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app; the service's worker starts and stops with the app's lifespan."""
    settings = settings or ServerSettings()
    limit = service.limits.max_upload_bytes

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title=f"{settings.title} API",
        version=__version__,
        description="Text/image/video-to-video generation jobs on a CogVideoX-family model (one worker per model).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    # base64 inflates uploads by 4/3; allow the JSON around them
    app.add_middleware(GuardMiddleware, api_key=settings.api_key, max_body=limit * 4 // 3 + 2**20)
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        detail = json.loads(json.dumps(exc.errors(), default=str))
        return _error(422, "; ".join(parts) or "invalid request", detail=detail)

    @app.exception_handler(HTTPException)
    async def _http(_: Any, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestError)
    async def _bad_request(_: Any, exc: RequestError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(QueueFull)
    async def _full(_: Any, exc: QueueFull) -> JSONResponse:
        return _error(429, str(exc))

    def entry_json(entry: HistoryEntry) -> dict[str, Any]:
        d = entry.to_json()
        d["urls"] = {k: f"/api/history/{entry.id}/{k}" for k in entry.files}
        return d

    def status_json(st: dict[str, Any]) -> dict[str, Any]:
        out = dict(st)
        result = out.pop("result", None)
        out["result"] = None
        if isinstance(result, HistoryEntry):
            out["result"] = entry_json(result)
            out["result"]["urls"] = {k: f"/api/jobs/{st['id']}/result?format={k}" for k in result.files}
        return out

    @app.get("/api/health", tags=["server"])
    def health() -> dict[str, Any]:
        q = service.queue
        return {"status": "ok", "worker": q.running, "pending": q.pending(), "max_pending": q.max_pending}

    @app.get("/api/info", tags=["server"])
    def info() -> dict[str, Any]:
        return service.describe()

    @app.post("/api/jobs", status_code=202, tags=["jobs"])
    def submit(body: GenerateBody) -> JSONResponse:
        params = body.model_dump(exclude={"image", "video"}, exclude_none=True)
        image = decode_image(_b64(body.image, "image", limit)) if body.image else None
        video = decode_video(_b64(body.video, "video", limit), service.limits.max_source_frames) if body.video else None
        job = service.submit(params, image=image, video=video)  # RequestError -> 400, QueueFull -> 429
        st = service.status(job.id)
        assert st is not None
        return JSONResponse(status_json(st), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    @app.get("/api/jobs", tags=["jobs"])
    def jobs() -> dict[str, Any]:
        out = []
        for job in service.queue.jobs():
            st = service.status(job.id)
            if st is not None:
                out.append(status_json(st))
        return {"jobs": out}

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def job_status(job_id: str) -> dict[str, Any]:
        st = service.status(job_id)
        if st is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        return status_json(st)

    @app.delete("/api/jobs/{job_id}", tags=["jobs"])
    def cancel(job_id: str) -> dict[str, Any]:
        st = service.status(job_id)
        if st is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        if not service.queue.cancel(job_id):
            raise HTTPException(409, f"job {job_id} is already {st['status']}")
        st = service.status(job_id)
        assert st is not None
        return status_json(st)

    @app.get("/api/jobs/{job_id}/result", tags=["jobs"])
    def result(job_id: str, format: MediaKind = Query("mp4")) -> FileResponse:
        st = service.status(job_id)
        if st is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        if st["status"] != "done":
            where = f" (step {st['step']}/{st['total']})" if st["status"] == "running" and st["total"] else ""
            why = f": {st['error']}" if st.get("error") else ""
            raise HTTPException(409, f"job {job_id} is {st['status']}{where}{why}; no result")
        return media(job_id, format)

    @app.get("/api/history", tags=["history"])
    def history(limit: int = Query(100, ge=1, le=10_000)) -> dict[str, Any]:
        return {"entries": [entry_json(e) for e in service.history.entries(limit)], "total": len(service.history)}

    @app.get("/api/history/{entry_id}", tags=["history"])
    def history_entry(entry_id: str) -> dict[str, Any]:
        entry = service.history.get(entry_id)
        if entry is None:
            raise HTTPException(404, f"unknown history entry {entry_id!r}")
        return entry_json(entry)

    @app.delete("/api/history/{entry_id}", tags=["history"])
    def history_delete(entry_id: str) -> dict[str, Any]:
        if not service.history.delete(entry_id):
            raise HTTPException(404, f"unknown history entry {entry_id!r}")
        return {"deleted": entry_id}

    @app.get("/api/history/{entry_id}/{kind}", tags=["history"])
    def media(entry_id: str, kind: MediaKind) -> FileResponse:
        path = service.media_path(entry_id, kind)
        if path is None:
            raise HTTPException(404, f"no {kind} for history entry {entry_id!r}")
        ext = path.suffix
        return FileResponse(path, media_type=_MEDIA_TYPES[kind], filename=f"cinegen-{entry_id}-{kind}{ext}")

    @app.post("/api/enhance", tags=["prompt"])
    def enhance(body: EnhanceBody) -> dict[str, Any]:
        return service.enhance(body.prompt).to_json()

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    def unknown(rest: str) -> JSONResponse:
        # keeps unknown /api paths away from the UI app mounted at /
        return _error(404, f"no API route /api/{rest}; see /openapi.json")

    if settings.ui:
        from cinegen.app.ui import mount_ui

        mount_ui(app, service, settings)
    return app
