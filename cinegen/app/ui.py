"""The web UI (gradio), mounted at / on the API server and driving the same job queue as the HTTP API.

Nothing here is hard-coded to one model: the tabs, frame counts, sizes, samplers, step / guidance defaults and
the long-video range all come from `GenerationService.describe()` for the loaded model. A generation is a job
in the shared queue, so UI users and API clients wait in one line and a UI run shows up in /api/history. The
event handler streams the job's state ("queued, 2 ahead" -> "step 3 / 8" -> "decoding" -> done) from
`JobQueue.wait_update`, and the history gallery is read from the on-disk store, so it survives restarts.

Offline: gradio analytics are off, the theme uses local / system fonts only, the footer (links to gradio.app)
and the browser run history are off, and no SSR node server is started; tests/test_app_browser.py checks that
the page loads no URL outside the server.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

from cinegen.app.enhance import SHAPES_STYLES
from cinegen.app.jobs import Job, JobState, QueueFull
from cinegen.app.service import GenerationService
from cinegen.pipeline import RequestError
from cinegen.video import VideoReadError, read_video

__all__ = ["build_ui", "mount_ui"]

_MODE_LABELS = {"t2v": "Text → video", "i2v": "Image → video", "v2v": "Video → video"}
_CSS = """
#status { min-height: 2.5em; }
#history-gallery .caption-label { font-size: 0.8em; }
footer { display: none !important; }
"""


def _gradio() -> Any:
    # before the first import: gradio reads it at import time to decide whether to send usage analytics
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_RUN_HISTORY", "False")
    import gradio as gr

    return gr


def _size_label(hw: list[int] | tuple[int, int]) -> str:
    """(height, width) -> "W×H" as video sizes are usually written (1280×720)."""
    return f"{hw[1]}×{hw[0]}"


def _parse_size(label: str) -> tuple[int, int]:
    """ "W×H" -> (height, width)."""
    w, h = (int(x) for x in str(label).replace("x", "×").split("×"))
    return h, w


def _status_text(job: Job, position: int | None) -> str:
    if job.state is JobState.QUEUED:
        ahead = "next in line" if not position else f"{position} job{'s' if position > 1 else ''} ahead"
        return f"**Queued** ({ahead})"
    if job.state is JobState.RUNNING:
        elapsed = time.time() - (job.started or time.time())
        if job.total and job.step >= job.total:
            return f"**Decoding** the video… ({elapsed:.1f} s)"
        if job.total:
            return f"**Step {job.step} / {job.total}** ({elapsed:.1f} s)"
        return f"**Starting**… ({elapsed:.1f} s)"
    if job.state is JobState.CANCELLED:
        return "**Cancelled**"
    if job.state is JobState.FAILED:
        return f"**Failed**: {job.error}"
    return "**Done**"


def _done_text(job: Job) -> str:
    entry = job.result
    s, st = entry.settings, entry.stats
    text = (
        f"**Done** in {st.get('seconds', 0):.1f} s · seed **{s['seed']}** · {s['num_frames']} frames "
        f"{s['width']}×{s['height']} @ {s['fps']:g} fps · {s['steps']} steps ({s['sampler']})"
    )
    if s.get("enhance") and s.get("enhance_error"):
        text += f"\n\nPrompt enhancer fell back to your prompt: {s['enhance_error']}"
    return text


def build_ui(service: GenerationService, api_key_set: bool = False) -> Any:
    """The gradio Blocks for `service`'s model."""
    gr = _gradio()
    info = service.describe()
    d = info["defaults"]
    modes = info["modes"]
    history = service.history
    long_info = info["long_video"]
    window_frames = int(long_info["window_frames"])
    window_latents = (window_frames - 1) // 4 + 1
    max_steps = int(info["limits"]["max_steps"])

    def gallery_items() -> tuple[list[tuple[str, str]], list[str]]:
        items, ids = [], []
        for e in history.entries(limit=60):
            thumb = history.path(e.id, "thumb")
            if thumb is None:
                continue
            s = e.settings
            caption = f"{s.get('prompt', '')[:60]} · seed {s.get('seed')}"
            items.append((str(thumb), caption))
            ids.append(e.id)
        return items, ids

    def entry_outputs(entry_id: str | None) -> tuple[Any, Any, Any]:
        if entry_id is None:
            return None, None, None
        e = history.get(entry_id)
        if e is None:
            return None, None, None
        files = [str(p) for k in ("mp4", "gif") if (p := history.path(e.id, k)) is not None]
        return str(history.path(e.id, "mp4")), files, {**e.settings, "stats": e.stats, "id": e.id}

    # delete_cache: gradio copies every served file into its cache; drop copies older than a day, daily
    with gr.Blocks(title="cinegen", analytics_enabled=False, delete_cache=(86400, 86400)) as demo:
        mode = gr.State(modes[0])
        job_id = gr.State(None)
        history_ids = gr.State([])
        api_note = "key required" if api_key_set else "open"
        gr.Markdown(
            f"## cinegen · {info['variant']}\n"
            f"{', '.join(_MODE_LABELS[m] for m in modes)} · native clip {window_frames} frames · "
            f"HTTP API: [/openapi.json](/openapi.json) ({api_note})"
        )
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Tabs(selected=modes[0]):
                    with gr.Tab(_MODE_LABELS["t2v"], id="t2v", interactive="t2v" in modes) as tab_t2v:
                        gr.Markdown(
                            "Describe the video below."
                            if "t2v" in modes
                            else "This model is image-to-video: it needs a first frame."
                        )
                    with gr.Tab(_MODE_LABELS["i2v"], id="i2v", interactive="i2v" in modes) as tab_i2v:
                        image = gr.Image(label="First frame", type="numpy", sources=["upload", "clipboard"])
                        if "i2v" not in modes:
                            gr.Markdown("Image-to-video needs an I2V model (e.g. CogVideoX-5b-I2V).")
                    with gr.Tab(_MODE_LABELS["v2v"], id="v2v", interactive="v2v" in modes) as tab_v2v:
                        source = gr.Video(label="Source video", sources=["upload"])
                        strength = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Strength (share re-generated)")
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt", placeholder="a red circle moves left…")
                negative = gr.Textbox(label="Negative prompt", value=d.get("negative_prompt") or "", lines=1)
                with gr.Row():
                    enhance = gr.Checkbox(
                        label=f"Enhance prompt ({info['enhancer'] or 'no enhancer configured'})",
                        value=info["enhancer"] in SHAPES_STYLES,  # the model's own rewriter: on
                        interactive=info["enhancer"] is not None,
                        elem_id="enhance",
                    )
                    preview_btn = gr.Button(
                        "Preview enhanced prompt", size="sm", interactive=info["enhancer"] is not None
                    )
                enhanced = gr.Textbox(label="Prompt used", interactive=False, lines=2, elem_id="prompt-used")
                with gr.Accordion("Settings", open=True):
                    with gr.Row():
                        frames = gr.Dropdown(
                            info["frame_presets"], value=int(d["num_frames"]), label="Frames", elem_id="frames"
                        )
                        sizes = [_size_label(hw) for hw in info["size_presets"]]
                        size = gr.Dropdown(sizes, value=sizes[0], label="Size (width × height)", elem_id="size")
                        sampler = gr.Dropdown(
                            info["samplers"], value=d.get("sampler") or info["samplers"][0], label="Sampler"
                        )
                        spacing = gr.Dropdown(
                            info["spacings"] or ["scheduler"],
                            value=d.get("spacing") or "scheduler",
                            label="Timestep spacing",
                            visible=bool(info["spacings"]),
                            elem_id="spacing",
                        )
                    with gr.Row():
                        steps = gr.Slider(1, max_steps, value=int(d["steps"]), step=1, label="Steps")
                        guidance = gr.Slider(1.0, 15.0, value=float(d["guidance"]), step=0.5, label="Guidance")
                    with gr.Row():
                        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed", elem_id="seed")
                        random_seed = gr.Checkbox(value=True, label="Random seed (the one used is shown after)")
                with gr.Accordion("Long video (overlapping windows)", open=False, visible=long_info["supported"]):
                    long = gr.Checkbox(value=False, label="Generate beyond the native clip length", elem_id="long")
                    max_long = max(int(long_info["max_frames"]), window_frames + 4)
                    long_frames = gr.Slider(
                        window_frames + 4,
                        max_long,
                        value=min(2 * window_frames - 1, max_long),
                        step=4,
                        label="Total frames",
                    )
                    overlap = gr.Slider(
                        1,
                        max(window_latents - 1, 1),
                        value=int(long_info["default_overlap"]),
                        step=1,
                        label="Window overlap (latent frames; 1 latent = 4 frames)",
                    )
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=2):
                status = gr.Markdown("Ready.", elem_id="status")
                result = gr.Video(label="Result", autoplay=True, loop=True, interactive=False, elem_id="result-video")
                downloads = gr.File(label="Download MP4 / GIF", file_count="multiple", interactive=False)
                used = gr.JSON(label="Settings used", open=False)
        gr.Markdown("### History")
        gallery = gr.Gallery(
            label="Earlier results (click one to show it)",
            columns=6,
            height=280,
            allow_preview=False,
            fit_columns=False,
            object_fit="contain",
            elem_id="history-gallery",
        )
        with gr.Row():
            refresh_btn = gr.Button("Refresh history", size="sm")
            delete_btn = gr.Button("Delete selected", size="sm")
        selected = gr.State(None)
        with gr.Accordion("Model info", open=False):
            gr.JSON(info, label=str(info.get("root") or info["variant"]))

        # ------------------------------------------------------------------ events
        tab_t2v.select(lambda: "t2v", None, mode)
        tab_i2v.select(lambda: "i2v", None, mode)
        tab_v2v.select(lambda: "v2v", None, mode)

        def preview(text: str) -> str:
            if not text.strip():
                raise gr.Error("enter a prompt first")
            res = service.enhance(text)
            if res.error:
                gr.Warning(f"kept your prompt: {res.error}")
            return res.prompt

        def run(
            mode_v: str,
            prompt_v: str,
            image_v: Any,
            source_v: str | None,
            strength_v: float,
            negative_v: str,
            enhance_v: bool,
            frames_v: int,
            size_v: str,
            sampler_v: str,
            spacing_v: str,
            steps_v: float,
            guidance_v: float,
            seed_v: float | None,
            random_v: bool,
            long_v: bool,
            long_frames_v: float,
            overlap_v: float,
            progress: Any = gr.Progress(),
        ) -> Any:
            h, w = _parse_size(size_v)
            params: dict[str, Any] = {
                "prompt": prompt_v,
                "negative_prompt": negative_v or "",
                "num_frames": int(long_frames_v) if long_v else int(frames_v),
                "height": h,
                "width": w,
                "steps": int(steps_v),
                "guidance": float(guidance_v),
                "sampler": sampler_v,
                "spacing": spacing_v if service.spacings else None,
                "seed": None if random_v or seed_v is None else int(seed_v),
                "enhance": bool(enhance_v),
                "long": bool(long_v),
                "overlap": int(overlap_v) if long_v else None,
            }
            img = vid = None
            if mode_v == "i2v":
                if image_v is None:
                    raise gr.Error("upload a first frame on the Image → video tab")
                img = image_v
            elif mode_v == "v2v":
                if not source_v:
                    raise gr.Error("upload a source video on the Video → video tab")
                try:
                    vid = read_video(source_v, max_frames=service.limits.max_source_frames)
                except VideoReadError as e:
                    raise gr.Error(str(e)) from e
                params["strength"] = float(strength_v)
                params["num_frames"] = None  # the longest clip the source holds (service default)
                params["long"] = False
                params["overlap"] = None
            try:
                job = service.submit(params, image=img, video=vid)
            except (RequestError, QueueFull) as e:
                raise gr.Error(str(e)) from e
            skip = gr.skip()
            seen = -1
            while True:
                j = service.queue.wait_update(job.id, seen, timeout=1.0)
                if j is None:
                    raise gr.Error("the job disappeared (server restarting?)")
                seen = j.version
                if j.state.finished:
                    break
                if j.total:
                    progress((min(j.step, j.total), j.total), desc="denoising", unit="steps")
                used_prompt = j.params.get("prompt_used", skip) if j.params.get("enhance") else skip
                yield (
                    _status_text(j, service.queue.position(j.id)),
                    skip,
                    skip,
                    skip,
                    skip,
                    used_prompt,
                    j.id,
                    skip,
                    skip,
                )
            if j.state is not JobState.DONE:
                yield (_status_text(j, None), skip, skip, skip, skip, skip, None, skip, skip)
                return
            video_path, files, settings = entry_outputs(j.id)
            items, ids = gallery_items()
            yield (
                _done_text(j),
                video_path,
                files,
                settings,
                int(j.params["seed"]),
                j.params.get("prompt_used", prompt_v),
                None,
                items,
                ids,
            )

        inputs = [
            mode, prompt, image, source, strength, negative, enhance, frames, size, sampler, spacing, steps, guidance,
            seed, random_seed, long, long_frames, overlap,
        ]  # fmt: skip
        outputs = [status, result, downloads, used, seed, enhanced, job_id, gallery, history_ids]
        generate_btn.click(run, inputs, outputs, concurrency_limit=None)
        prompt.submit(run, inputs, outputs, concurrency_limit=None)

        def cancel(jid: str | None) -> str:
            if jid and service.queue.cancel(jid):
                return "**Cancelling**…"
            return "Nothing to cancel."

        cancel_btn.click(cancel, job_id, status)
        preview_btn.click(preview, prompt, enhanced)

        def pick(ids: list[str], evt: gr.SelectData) -> tuple[Any, Any, Any, Any, str | None]:
            entry_id = ids[evt.index] if ids and 0 <= evt.index < len(ids) else None
            video_path, files, settings = entry_outputs(entry_id)
            note = f"History entry `{entry_id}`" if entry_id else "Ready."
            return video_path, files, settings, note, entry_id

        # gradio finds the event-data parameter by its annotation; with postponed annotations (a string here) and
        # gradio imported lazily it cannot resolve "gr.SelectData" itself, so give it the class
        pick.__annotations__["evt"] = gr.SelectData
        gallery.select(pick, history_ids, [result, downloads, used, status, selected])

        def delete(entry_id: str | None) -> tuple[Any, list[str], str, None]:
            if entry_id:
                history.delete(entry_id)
            items, ids = gallery_items()
            return items, ids, (f"Deleted `{entry_id}`." if entry_id else "Select a history entry first."), None

        delete_btn.click(delete, selected, [gallery, history_ids, status, selected])
        refresh_btn.click(gallery_items, None, [gallery, history_ids])
        demo.load(gallery_items, None, [gallery, history_ids])
    return demo


def mount_ui(app: Any, service: GenerationService, settings: Any) -> None:
    """Mount the UI at / on `app` (after the API routes, which keep precedence)."""
    gr = _gradio()
    key = getattr(settings, "api_key", None)
    demo = build_ui(service, api_key_set=bool(key))
    auth = None
    if key:

        def auth(_user: str, password: str) -> bool:
            return hmac.compare_digest(password.encode(), key.encode())

    gr.mount_gradio_app(
        app,
        demo,
        path="/",
        footer_links=[],
        run_history=False,
        auth=auth,
        auth_message="Log in with any user name and this server's API key as the password." if key else None,
        allowed_paths=[str(service.history.root.resolve())],
        max_file_size=service.limits.max_upload_bytes,
        ssr_mode=False,
        mcp_server=False,
        theme=gr.themes.Default(),
        css=_CSS,
    )
