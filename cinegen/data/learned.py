"""Optional learned scorers: plug-ins that need local weights and are skipped (with a note) without them.

- `aesthetic`: the LAION "improved aesthetic predictor" recipe (Open-Sora, Open-Sora-Plan, early EasyAnimate;
  data-pipelines.md §0.4): L2-normalised CLIP image embedding -> a stack of Linear layers (the LAION head has
  no activations: Linear/Dropout only), averaged over frames at 10 %, 50 %, 90 % of the clip (Open-Sora's
  frame choice). The CLIP folder is any local transformers CLIP checkpoint; the head is a state dict
  (.pt/.pth/.safetensors) whose `<i>.weight`/`<i>.bias` Linear layers are applied in index order.
- `clip_score`: CLIP logit_scale x cosine(frame, caption) on the middle frame (Open-Sora's `match` column).

Nothing is downloaded: paths must exist locally; a missing path gives score None and a note, never a crash.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from cinegen.data.config import ScoreConfig
from cinegen.data.manifest import ClipRecord


def plugin_notes(cfg: ScoreConfig) -> list[str]:
    """Human notes for the stage summary: which learned scorers run and which are skipped, and why."""
    notes = []
    if cfg.aesthetic_clip_path is None or cfg.aesthetic_head_path is None:
        notes.append("aesthetic: skipped (score.aesthetic_clip_path / aesthetic_head_path not set)")
    elif not Path(cfg.aesthetic_clip_path).exists() or not Path(cfg.aesthetic_head_path).exists():
        notes.append(f"aesthetic: skipped (weights not found: {cfg.aesthetic_clip_path}, {cfg.aesthetic_head_path})")
    else:
        notes.append(f"aesthetic: {cfg.aesthetic_clip_path} + {cfg.aesthetic_head_path}")
    if cfg.clip_path is None:
        notes.append("clip_score: skipped (score.clip_path not set)")
    elif not Path(cfg.clip_path).exists():
        notes.append(f"clip_score: skipped (weights not found: {cfg.clip_path})")
    else:
        notes.append(f"clip_score: {cfg.clip_path}")
    return notes


@functools.lru_cache(maxsize=2)
def _clip(folder: str) -> tuple[Any, Any]:
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    torch.set_num_threads(1)
    return model, processor


@functools.lru_cache(maxsize=2)
def _head(path: str) -> list[tuple[Any, Any]]:
    """Linear layers of an MLP head state dict, ordered by their numeric index."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    layers: dict[int, dict[str, Any]] = {}
    for k, v in sd.items():
        m = re.search(r"(\d+)\.(weight|bias)$", k)
        if m and v.ndim in (1, 2):
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = v.float()
    out = [(layers[i]["weight"], layers[i].get("bias")) for i in sorted(layers) if "weight" in layers[i]]
    if not out:
        raise ValueError(f"{path}: no '<index>.weight' Linear layers found")
    return out


def _image_embeds(folder: str, frames: list[np.ndarray]) -> Any:
    import torch

    model, processor = _clip(folder)
    with torch.no_grad():
        inputs = processor(images=[np.asarray(f) for f in frames], return_tensors="pt")
        emb = model.get_image_features(pixel_values=inputs["pixel_values"])
        emb = getattr(emb, "pooler_output", emb)
    return emb / emb.norm(dim=-1, keepdim=True)


def aesthetic_score(frames: np.ndarray, clip_folder: str, head_path: str) -> float:
    """Mean head output over frames at 10 / 50 / 90 % of the clip."""
    n = len(frames)
    picks = sorted({int(round(p * (n - 1))) for p in (0.1, 0.5, 0.9)})
    x = _image_embeds(clip_folder, [frames[i] for i in picks])
    for w, b in _head(head_path):
        x = x @ w.T + (b if b is not None else 0.0)
    return float(x.mean())


def clip_score(frame: np.ndarray, text: str, clip_folder: str) -> float:
    """logit_scale x cosine similarity between one frame and a caption."""
    import torch
    from transformers import AutoTokenizer

    model, _ = _clip(clip_folder)
    tok = _tokenizer(clip_folder, AutoTokenizer)
    img = _image_embeds(clip_folder, [frame])
    with torch.no_grad():
        t = tok([text], padding=True, truncation=True, return_tensors="pt")
        te = model.get_text_features(input_ids=t["input_ids"], attention_mask=t.get("attention_mask"))
        te = getattr(te, "pooler_output", te)
        te = te / te.norm(dim=-1, keepdim=True)
        return float(model.logit_scale.exp() * (img * te).sum())


@functools.lru_cache(maxsize=2)
def _tokenizer(folder: str, auto: Any) -> Any:
    return auto.from_pretrained(folder, local_files_only=True)


def learned_scores(rec: ClipRecord, frames: np.ndarray, cfg: ScoreConfig) -> dict[str, float | None]:
    """Scores of the configured plug-ins; a configured plug-in whose weights are missing gives None."""
    out: dict[str, float | None] = {}
    if cfg.aesthetic_clip_path is not None and cfg.aesthetic_head_path is not None:
        ok = Path(cfg.aesthetic_clip_path).exists() and Path(cfg.aesthetic_head_path).exists()
        out["aesthetic"] = (
            round(aesthetic_score(frames, cfg.aesthetic_clip_path, cfg.aesthetic_head_path), 6) if ok else None
        )
    if cfg.clip_path is not None:
        ok = Path(cfg.clip_path).exists() and bool(rec.text)
        out["clip_score"] = round(clip_score(frames[len(frames) // 2], rec.text, cfg.clip_path), 6) if ok else None
    return out
