"""Stage `caption`: pluggable captioners tried in order (the first non-empty caption wins), cleanup, an
optional score-as-condition suffix, and an optional LLM rewrite through an OpenAI-compatible endpoint.

Captioners (`caption.captioners`):
- `keep`: the text already in the manifest (e.g. imported from an Open-Sora CSV / EasyAnimate JSON);
- `sidecar`: a text file beside the clip or its source video (`name.txt`, `name.caption`, `name.json` with a
  "text" / "caption" key);
- `filename`: words of the source file name ("red_ball-bouncing_02.mp4" -> "red ball bouncing");
- `template`: `caption.template` filled from the scores ({camera}, {motion}, {duration}, {fps}, {width},
  {height}, {text}); Open-Sora 1.2/1.3 append such score phrases to captions (data-pipelines.md §2.1);
- `vlm`: a local vision-language model folder loaded with transformers (`caption.vlm_path`), never downloaded.
Cleanup (Open-Sora `datautil --clean-caption` / Open-Sora-Plan prefix list): boilerplate prefixes such as
"The video shows", URLs, repeated sentences, whitespace; empty captions are dropped ("empty_caption").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from cinegen.data.config import CaptionConfig, DataConfig
from cinegen.data.manifest import ClipRecord, resolve_path

STAGE = "caption"

CAMERA_PHRASES = {
    "static": "static",
    "pan_left": "panning left",
    "pan_right": "panning right",
    "tilt_up": "tilting up",
    "tilt_down": "tilting down",
    "zoom_in": "zooming in",
    "zoom_out": "zooming out",
}

# Motion words by mean flow (frame diagonals / second), in the spirit of Open-Sora 1.3's word bins.
MOTION_WORDS = (
    (0.002, "no"),
    (0.006, "slow"),
    (0.02, "moderate"),
    (0.06, "fast"),
    (float("inf"), "very fast"),
)

_URL = re.compile(r"(https?://\S+|www\.\S+)", re.IGNORECASE)
_JUNK_WORDS = {"final", "copy", "edit", "clip", "video", "untitled", "raw", "hd", "4k", "1080p", "720p"}


def motion_word(motion: float | None) -> str:
    if motion is None:
        return "unknown"
    return next(w for limit, w in MOTION_WORDS if motion < limit)


def fields(rec: ClipRecord) -> dict[str, Any]:
    """Values available to `caption.template` / `caption.append`."""
    return {
        "text": rec.text,
        "camera": CAMERA_PHRASES.get(str(rec.scores.get("camera")), "unknown"),
        "motion": motion_word(rec.scores.get("motion")),  # type: ignore[arg-type]
        "duration": f"{rec.duration:.1f}",
        "fps": f"{rec.fps:g}",
        "width": rec.width,
        "height": rec.height,
    }


def _strip_prefixes(t: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed and t:
        changed = False
        low = t.lower()
        for p in sorted(prefixes, key=len, reverse=True):
            if low.startswith(p):
                t = t[len(p) :].lstrip(" ,:;-").strip()
                changed = True
                break
    return t


def clean_caption(text: str, cfg: CaptionConfig) -> str:
    """Strip boilerplate prefixes of every sentence (repeatedly, case-insensitive), URLs and repeated
    sentences; tidy spaces and capitalise. Pure."""
    t = _URL.sub("", text or "")
    t = re.sub(r"\s+", " ", t).strip().strip("\"'").strip()
    sentences = re.split(r"(?<=[.!?])\s+", t)
    seen: set[str] = set()
    kept = []
    for s in sentences:
        s = _strip_prefixes(s, cfg.strip_prefixes)
        key = re.sub(r"\W+", " ", s.lower()).strip()
        if key and key not in seen:
            seen.add(key)
            kept.append(s[0].upper() + s[1:])
    t = " ".join(kept).strip()
    if cfg.max_words is not None:
        words = t.split()
        if len(words) > cfg.max_words:
            t = " ".join(words[: cfg.max_words])
    if t:
        t = t[0].upper() + t[1:]
    return t


def filename_caption(path: str) -> str:
    stem = Path(path).stem
    words = [w for w in re.split(r"[\W_]+", stem) if w]
    words = [w for w in words if not w.isdigit() and w.lower() not in _JUNK_WORDS]
    words = [w for w in words if not re.fullmatch(r"[0-9a-f]{8,}", w.lower())]  # hashes
    return " ".join(words).lower()


def sidecar_caption(rec: ClipRecord, workdir: Path) -> str:
    candidates: list[Path] = []
    for p in (rec.path, rec.source_path):
        if not p:
            continue
        base = resolve_path(p, workdir)
        candidates += [base.with_suffix(".txt"), base.with_suffix(".caption"), base.with_suffix(".json")]
    for c in candidates:
        if not c.is_file():
            continue
        if c.suffix == ".json":
            try:
                d = json.loads(c.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(d, dict):
                text = d.get("text") or d.get("caption") or ""
                if text:
                    return str(text)
            continue
        text = c.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text
    return ""


# ------------------------------------------------------------------------------------------------- VLM


@functools.lru_cache(maxsize=1)
def _vlm(path: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoProcessor

    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = None
    errors = []
    import transformers

    for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM"):
        cls = getattr(transformers, name, None)
        if cls is None:
            continue
        try:
            model = cls.from_pretrained(path, local_files_only=True)
            break
        except (ValueError, KeyError, OSError) as e:
            errors.append(f"{name}: {e}")
    if model is None:
        raise ValueError(f"{path}: no transformers vision-language model class fits ({'; '.join(errors)})")
    return processor, model.eval()


def vlm_caption(frames: list[np.ndarray], cfg: CaptionConfig) -> str:
    """Caption frames with the local VLM: a chat-template prompt when the processor has one (Qwen2-VL,
    LLaVA, ...), else plain image captioning (BLIP-style). Greedy decoding, only new tokens are decoded."""
    import torch
    from PIL import Image

    assert cfg.vlm_path is not None
    processor, model = _vlm(cfg.vlm_path)
    images = [Image.fromarray(f) for f in frames]
    template = getattr(processor, "chat_template", None)
    if template:
        content: list[dict[str, str]] = [{"type": "image"} for _ in images]
        content.append({"type": "text", "text": cfg.vlm_prompt})
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = processor(images=images, text=prompt, return_tensors="pt")
    else:
        inputs = processor(images=images[:1], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=cfg.vlm_max_new_tokens, do_sample=False)
    ids = out[0]
    if "input_ids" in inputs and not model.config.is_encoder_decoder and ids.shape[0] > inputs["input_ids"].shape[1]:
        ids = ids[inputs["input_ids"].shape[1] :]
    tok = getattr(processor, "tokenizer", processor)
    return str(tok.decode(ids, skip_special_tokens=True)).strip()


def _vlm_frames(rec: ClipRecord, workdir: Path, n: int) -> list[np.ndarray]:
    from cinegen.data.media import sample_frames

    path = resolve_path(rec.path, workdir)
    if rec.type == "image":
        from PIL import Image

        with Image.open(path) as im:
            return [np.asarray(im.convert("RGB"))]
    frames = sample_frames(path).frames
    picks = sorted({int(round((k + 1) * (len(frames) - 1) / (n + 1))) for k in range(n)})
    return [frames[i] for i in picks]


# ------------------------------------------------------------------------------------------------- LLM


def llm_recaption(text: str, cfg: CaptionConfig) -> str:
    """One chat-completions call to the configured OpenAI-compatible endpoint (stdlib HTTP)."""
    assert cfg.llm_base_url is not None
    body = {
        "model": cfg.llm_model,
        "messages": [{"role": "user", "content": cfg.llm_prompt.format(text=text)}],
        "temperature": 0,
    }
    req = urllib.request.Request(
        cfg.llm_base_url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    key = os.environ.get(cfg.llm_api_key_env, "")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=cfg.llm_timeout) as resp:
        data = json.loads(resp.read().decode())
    return str(data["choices"][0]["message"]["content"]).strip()


# ----------------------------------------------------------------------------------------------- stage


def caption_item(rec: ClipRecord, cfg: DataConfig, workdir: Path) -> list[ClipRecord]:
    """Stage function: one clip -> the same row with `text` set (or dropped as "empty_caption")."""
    cc = cfg.caption
    text, source = "", None
    for name in cc.captioners:
        if name == "keep":
            candidate = rec.text
        elif name == "sidecar":
            candidate = sidecar_caption(rec, workdir)
        elif name == "filename":
            candidate = filename_caption(rec.source_path or rec.path)
        elif name == "template":
            candidate = cc.template.format(**fields(rec))
        elif name == "vlm":
            if cc.vlm_path is None or not Path(cc.vlm_path).exists():
                continue  # not configured / not on disk: fall through to the next captioner
            candidate = vlm_caption(_vlm_frames(rec, workdir, cc.vlm_frames), cc)
        else:
            raise ValueError(f"unknown captioner {name!r} (keep, sidecar, filename, template, vlm)")
        candidate = clean_caption(candidate, cc)
        if candidate:
            text, source = candidate, name
            break
    meta = dict(rec.meta)
    if text and cc.llm_base_url:
        try:
            rewritten = clean_caption(llm_recaption(text, cc), cc)
            if rewritten:
                meta["caption_original"] = text
                text, source = rewritten, f"{source}+llm"
        except (urllib.error.URLError, OSError, KeyError, ValueError, IndexError) as e:
            meta["caption_llm_error"] = str(e)[:200]
    if text and cc.append:
        text = text.rstrip(" .") + cc.append.format(**{**fields(rec), "text": text})
    meta["caption_source"] = source
    out = dataclasses.replace(rec, text=text, meta=meta)
    if not text and cc.drop_empty:
        return [out.dropped(STAGE, "empty_caption", f"no captioner in {list(cc.captioners)} produced text")]
    return [out]
