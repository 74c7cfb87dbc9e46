"""The generation service behind the web UI and the HTTP API: validation, queue, prompt enhancing, history.

Both front ends hand the same plain parameters (`PARAM_KEYS`) to `GenerationService.submit`, which validates
them completely before queueing (through `Pipeline.resolve`, so a bad frame count or an unknown sampler is
rejected at once with the allowed values named, DESIGN §3) and returns a `Job`. The single worker thread then
rewrites the prompt (optional), runs `Pipeline.generate` (or `longvideo.generate_long`) — the same call the CLI
makes — and stores the video and its settings in the `HistoryStore`; the history entry's id is the job's id, so
a finished job can still be looked up after a restart.

Server limits (`ServiceLimits`) come on top of the model's own rules: a public endpoint must not accept a
10 000-step or 4K request that would hold the only worker for hours.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cinegen.app.enhance import EnhanceResult, PromptEnhancer, enhance_with_fallback
from cinegen.app.history import HistoryEntry, HistoryStore
from cinegen.app.jobs import Job, JobQueue, JobState, Progress
from cinegen.longvideo import LongVideoSpec, default_overlap, generate_long, native_window, plan_long
from cinegen.pipeline import GenerateRequest, Pipeline, RequestError
from cinegen.video import Video, VideoReadError, read_video

__all__ = ["GenerationService", "ServiceLimits", "PARAM_KEYS", "size_presets", "decode_image", "decode_video"]

# What a client may set (JSON names); everything else about a run is the model's default.
PARAM_KEYS = (
    "prompt",
    "negative_prompt",
    "num_frames",
    "height",
    "width",
    "steps",
    "guidance",
    "seed",
    "sampler",
    "spacing",
    "strength",
    "dynamic_cfg",
    "fps",
    "enhance",
    "long",
    "overlap",
)
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ServiceLimits:
    """Server-side bounds on a request (None = derived from the model's defaults, see `resolved`)."""

    max_steps: int = 200
    max_side: int | None = None  # None: twice the model's default long side
    max_frames: int | None = None  # long videos; None: 8 native clips
    max_upload_bytes: int = 32 * 2**20
    max_prompt_chars: int = 2000
    max_source_frames: int = 1024  # V2V uploads are decoded up to this many frames

    def resolved(self, pipe: Pipeline) -> ServiceLimits:
        d = pipe.defaults
        return replace(
            self,
            max_side=self.max_side or 2 * max(d.height, d.width),
            max_frames=self.max_frames or 8 * (d.num_frames - 1) + 1,
        )


def size_presets(pipe: Pipeline, max_side: int | None = None) -> list[tuple[int, int]]:
    """(height, width) choices valid for the model: its default size first, then about the same pixel count at
    common aspect ratios, then half the default area (a quick preview). Fixed-resolution models (learned
    positions) get their one size."""
    d, c, m = pipe.defaults, pipe.config, pipe.spatial_multiple
    if c.use_learned_positional_embeddings:
        return [pipe.sample_size()]
    limit_h = limit_w = max_side or 10**9
    if c.patch_size_t is not None:  # CogVideoX 1.5: the RoPE table bounds the size
        sh, sw = pipe.sample_size()
        limit_h, limit_w = min(limit_h, sh), min(limit_w, sw)

    def snap(v: float, limit: int) -> int:
        return int(min(max(m, round(v / m) * m), limit // m * m))

    out = [(d.height, d.width)]
    area = d.height * d.width
    for ar in (1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 3 / 2, 2 / 3):  # width / height
        hw = (snap(math.sqrt(area / ar), limit_h), snap(math.sqrt(area * ar), limit_w))
        if hw not in out:
            out.append(hw)
    half = (snap(d.height / math.sqrt(2), limit_h), snap(d.width / math.sqrt(2), limit_w))
    if half not in out:
        out.append(half)
    return out


def decode_image(data: bytes) -> np.ndarray:
    """Uploaded image bytes -> uint8 (H, W, 3); RequestError if they are not a readable image."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RequestError(f"image is not a readable image file ({e})") from e


def decode_video(data: bytes, max_frames: int) -> Video:
    """Uploaded video bytes (mp4, webm, gif, ...) -> Video; RequestError if they do not decode."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".video") as f:
        f.write(data)
        f.flush()
        try:
            return read_video(f.name, max_frames=max_frames)
        except VideoReadError as e:
            raise RequestError(f"video is not a readable video file ({str(e).split(': ', 1)[-1]})") from e


class GenerationService:
    """One loaded model, its job queue (one worker thread), prompt enhancer and history store."""

    def __init__(
        self,
        pipe: Pipeline,
        history: HistoryStore,
        enhancer: PromptEnhancer | None = None,
        queue_size: int = 8,
        limits: ServiceLimits | None = None,
    ) -> None:
        self.pipe = pipe
        self.history = history
        self.enhancer = enhancer
        self.limits = (limits or ServiceLimits()).resolved(pipe)
        self._info = pipe.info()  # static facts about the loaded model, computed once
        self.queue = JobQueue(self._run, max_pending=queue_size, name=str(self._info.get("variant", "model")))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.queue.start()

    def stop(self) -> None:
        self.queue.stop()

    # ------------------------------------------------------------------ facts for clients
    @property
    def modes(self) -> list[str]:
        """What this model can do: an I2V model needs an image; a T2V model does text and video-to-video."""
        return ["i2v"] if self.pipe.is_i2v else ["t2v", "v2v"]

    @property
    def samplers(self) -> list[str]:
        return ["euler"] if self.pipe.scheduler.kind == "flow" else ["ddim", "dpm"]

    @property
    def spacings(self) -> list[str]:
        """Timestep spacings of the DDIM/DPM samplers (flow models sample on their flow schedule instead)."""
        return [] if self.pipe.scheduler.kind == "flow" else ["scheduler", "log_snr"]

    def native_frame_counts(self) -> list[int]:
        """Valid clip lengths up to the model's native (default) length."""
        n = self.pipe.defaults.num_frames
        return self.pipe.valid_frame_counts(up_to=max(n, 1 + self.pipe.frame_multiple))

    def describe(self) -> dict[str, Any]:
        """Model info plus what the UI / API offer (presets, samplers, limits, long video, queue)."""
        base = dict(self._info)
        d, lim = self.pipe.defaults, self.limits
        base.update(
            {
                "modes": self.modes,
                "samplers": self.samplers,
                "spacings": self.spacings,
                "frame_presets": self.native_frame_counts(),
                "size_presets": [list(hw) for hw in size_presets(self.pipe, lim.max_side)],
                "long_video": {
                    "supported": not self.pipe.is_i2v,
                    "window_frames": d.num_frames,
                    "max_frames": lim.max_frames,
                    "default_overlap": default_overlap(native_window(self.pipe)[1]),
                },
                "limits": asdict(lim),
                "queue": {"max_pending": self.queue.max_pending, "pending": self.queue.pending()},
                "enhancer": self.enhancer.name if self.enhancer is not None else None,
                "history_entries": len(self.history),
            }
        )
        return base

    # ------------------------------------------------------------------ requests
    def prepare(
        self, params: dict[str, Any], image: np.ndarray | None = None, video: Video | None = None
    ) -> dict[str, Any]:
        """Validate `params` (+ decoded inputs) completely; return the resolved settings to queue.

        Raises RequestError with a message naming the allowed values. Nothing is computed here.
        """
        unknown = sorted(set(params) - set(PARAM_KEYS))
        if unknown:
            raise RequestError(f"unknown parameters {unknown}; known: {list(PARAM_KEYS)}")
        p = {k: v for k, v in params.items() if v is not None}
        prompt = p.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("prompt must be a non-empty string")
        lim = self.limits
        if len(prompt) > lim.max_prompt_chars:
            raise RequestError(f"prompt has {len(prompt)} characters; the limit is {lim.max_prompt_chars}")
        seed = p.get("seed")
        if seed is None or int(seed) < 0:
            seed = secrets.randbelow(2**31)  # "random seed": drawn here so the client sees it at once
        if int(seed) > MAX_SEED:
            raise RequestError(f"seed must be at most {MAX_SEED}")
        mode = "i2v" if image is not None else ("v2v" if video is not None else "t2v")
        if mode not in self.modes:
            need = "an image (image-to-video)" if self.pipe.is_i2v else "text or a source video"
            raise RequestError(f"this model does not do {mode}; it needs {need}")
        steps = p.get("steps")
        if steps is not None and not 1 <= int(steps) <= lim.max_steps:
            raise RequestError(f"steps={steps} is out of range: use 1 to {lim.max_steps} on this server")
        for name in ("height", "width"):
            v = p.get(name)
            if v is not None and int(v) > int(lim.max_side or 0):
                raise RequestError(f"{name}={v} exceeds this server's limit of {lim.max_side} pixels")
        if p.get("spacing") is not None and p["spacing"] not in self.spacings:
            ok = f"choose one of {self.spacings}" if self.spacings else "this flow model samples on its flow schedule"
            raise RequestError(f"spacing {p['spacing']!r} does not apply: {ok}")
        long = bool(p.get("long", False))
        num_frames = p.get("num_frames")
        if mode == "v2v" and num_frames is None and video is not None:
            # the longest valid clip the source holds, at most the native length (the server's bound on V2V)
            fits = [f for f in self.native_frame_counts() if f <= video.num_frames]
            if not fits:
                m = self.pipe.frame_multiple
                raise RequestError(f"source video has {video.num_frames} frames; video-to-video needs at least {m + 1}")
            num_frames = fits[-1]
        if long and num_frames is not None and int(num_frames) > int(lim.max_frames or 0):
            raise RequestError(f"num_frames={num_frames} exceeds this server's limit of {lim.max_frames} frames")
        req = self._request(p, prompt, int(seed), num_frames, image, video)
        if long:
            r, plan = plan_long(self.pipe, req, LongVideoSpec(overlap=p.get("overlap")))
            overlap: int | None = plan.overlap
        else:
            r = self.pipe.resolve(req)  # the model's own rules first (valid counts, sizes, sampler)
            native = max(self.native_frame_counts())
            if r.num_frames is not None and r.num_frames > native:
                raise RequestError(
                    f"num_frames={r.num_frames} is longer than this model's native clip ({native} frames): "
                    f"pick one of {self.native_frame_counts()} or ask for a long video (long=true)"
                )
            overlap = None
        settings: dict[str, Any] = {
            "mode": mode,
            "prompt": prompt,
            "negative_prompt": r.negative_prompt,
            "num_frames": r.num_frames,
            "height": r.height,
            "width": r.width,
            "steps": r.steps,
            "guidance": r.guidance,
            "sampler": r.sampler,
            "spacing": r.spacing if self.spacings else None,
            "seed": int(seed),
            "fps": r.fps,
            "dynamic_cfg": bool(r.dynamic_cfg),
            "enhance": bool(p.get("enhance", False)),
            "long": long,
            "overlap": overlap,
        }
        if mode == "v2v":
            settings["strength"] = r.strength
        return settings

    def _request(
        self,
        p: dict[str, Any],
        prompt: str,
        seed: int,
        num_frames: int | None,
        image: np.ndarray | None,
        video: Video | None,
    ) -> GenerateRequest:
        try:
            return GenerateRequest(
                prompt=prompt,
                negative_prompt=str(p.get("negative_prompt", "")),
                num_frames=None if num_frames is None else int(num_frames),
                height=None if p.get("height") is None else int(p["height"]),
                width=None if p.get("width") is None else int(p["width"]),
                steps=None if p.get("steps") is None else int(p["steps"]),
                guidance=None if p.get("guidance") is None else float(p["guidance"]),
                seed=seed,
                sampler=p.get("sampler"),
                spacing=p.get("spacing"),
                strength=float(p.get("strength", 0.8)),
                dynamic_cfg=bool(p.get("dynamic_cfg", False)),
                fps=None if p.get("fps") is None else float(p["fps"]),
                image=image,
                video=video,
                enhance_prompt=False,  # the service enhances itself (configurable enhancer, shown to the user)
            )
        except (TypeError, ValueError) as e:
            raise RequestError(f"invalid parameter: {e}") from e

    def submit(self, params: dict[str, Any], image: np.ndarray | None = None, video: Video | None = None) -> Job:
        """Validate and queue; raises RequestError (bad request) or QueueFull (try later)."""
        settings = self.prepare(params, image, video)
        return self.queue.submit(settings, payload={"image": image, "video": video})

    def enhance(self, prompt: str) -> EnhanceResult:
        return enhance_with_fallback(self.enhancer, prompt)

    # ------------------------------------------------------------------ the worker
    def _run(self, job: Job, progress: Progress) -> HistoryEntry:
        s = job.params
        payload = job.payload or {}
        prompt = s["prompt"]
        if s.get("enhance"):
            res = self.enhance(prompt)
            s["prompt_used"], s["enhancer"], s["enhance_error"] = res.prompt, res.enhancer, res.error
            prompt = res.prompt
        else:
            s["prompt_used"] = prompt
        req = self._request(s, prompt, int(s["seed"]), s.get("num_frames"), payload.get("image"), payload.get("video"))
        if s.get("long"):
            video = generate_long(self.pipe, req, LongVideoSpec(overlap=s.get("overlap")), progress=progress)
        else:
            video = self.pipe.generate(req, progress=progress)
        st = self.pipe.last_stats
        stats = {"seconds": round(st.seconds, 3), "steps": st.steps, "peak_rss_mb": round(st.peak_rss_mb, 1)}
        settings = dict(s, num_frames=video.num_frames, height=video.height, width=video.width, fps=video.fps)
        settings["model"] = self._info.get("variant")
        return self.history.add(job.id, video, settings, stats, label=prompt)

    # ------------------------------------------------------------------ status
    def status(self, job_id: str) -> dict[str, Any] | None:
        """Job status (from memory while the server runs; from the history for finished jobs after a restart)."""
        job = self.queue.get(job_id)
        if job is not None:
            out = job.snapshot()
            out["position"] = self.queue.position(job_id) if job.state is JobState.QUEUED else None
            out["result"] = job.result if job.state is JobState.DONE else None
            return out
        entry = self.history.get(job_id)
        if entry is None:
            return None
        steps = int(entry.stats.get("steps", 0) or 0)
        return {
            "id": entry.id,
            "status": JobState.DONE.value,
            "step": steps,
            "total": steps,
            "progress": 1.0,
            "created": entry.created,
            "started": None,
            "finished": entry.created,
            "elapsed": entry.stats.get("seconds"),
            "error": None,
            "params": entry.settings,
            "position": None,
            "result": entry,
        }

    def media_path(self, entry_id: str, kind: str) -> Path | None:
        return self.history.path(entry_id, kind)
