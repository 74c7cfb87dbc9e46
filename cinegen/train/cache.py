"""Precomputed VAE posterior moments and text embeddings on disk, keyed by content hashes.

As CogVideo's and finetrainers' fine-tuning do (fast-inference.md §3.5), the frozen VAE and T5 run once per clip
and caption before training instead of every step. An entry's key is the SHA-256 of everything that determines
its value, so a changed input can never reuse a stale entry:

- latents: the fingerprint of the VAE's encoder side (`encoder_fingerprint`: a decoder fine-tuned with the encoder
  frozen keeps the cache), the clip file (resolved path, size, mtime), its segment and crop, the bucket shape
  (F x H x W), the frame sampling (target fps -> stride, centred start) and the pixel transform version;
- text: text-encoder fingerprint, its max length, and the caption itself.

A module fingerprint hashes its config and, per tensor, name, shape, dtype, float64 sum and abs-sum and a strided
sample of its bytes (full-content hashing of a 19 GB T5-XXL would cost minutes; any real change to the weights
moves the sums). Entries are single safetensors files written atomically (temp file + rename), sharded into
256 sub-folders: `<root>/latents/ab/ab12....safetensors`, `<root>/text/cd/cd34....safetensors`.

The latent entry holds the posterior (mean, logvar) of shape (C, T, h, w), so every step can draw a fresh
z = mean + exp(logvar / 2)·eps, as the reference samples `latent_dist.sample()` during training.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cinegen.fsutil import atomic_path, atomic_write
from cinegen.train.data import ClipDataset, ClipError, frame_stride, latent_mask

log = logging.getLogger(__name__)

PIXEL_TRANSFORM_VERSION = 1  # bump when load_clip's resize/crop/normalisation changes


def fingerprint_module(module: nn.Module, config: Any = None) -> str:
    """Stable content fingerprint of a module's weights (and config)."""
    h = hashlib.sha256()
    cfg = config if config is not None else getattr(module, "config", None)
    if cfg is not None:
        data = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
        h.update(json.dumps(data, sort_keys=True, default=str).encode())
    h.update(type(module).__name__.encode())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a parallel float64 sum's rounding depends on the thread count: keep the key stable
    try:
        _hash_tensors(h, module)
    finally:
        torch.set_num_threads(threads)
    return h.hexdigest()[:32]


DECODER_SIDE = ("decoder", "post_quant_conv")  # VAE children a latent does not depend on


def encoder_fingerprint(vae: nn.Module) -> str:
    """Fingerprint of what a VAE's cached latents depend on: its config and every child but the decoder side, so a
    decoder fine-tuned with the encoder frozen (`cinegen train-vae ... model.trainable=decoder`) keeps the cache."""
    parts = nn.ModuleDict({n: m for n, m in vae.named_children() if n not in DECODER_SIDE and m is not None})
    return fingerprint_module(parts, getattr(vae, "config", None))


def _hash_tensors(h: Any, module: nn.Module) -> None:
    with torch.no_grad():
        for name, t in sorted(module.state_dict().items()):
            t = t.detach()
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
            if t.numel() == 0:
                continue
            flat = t.reshape(-1).cpu()
            f64 = flat.double() if flat.is_floating_point() else flat.to(torch.float64)
            h.update(f"{f64.sum().item():.17g}|{f64.abs().sum().item():.17g}".encode())
            step = max(1, flat.numel() // 65536)
            h.update(flat[::step].contiguous().view(torch.uint8).numpy().tobytes())


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class FeatureCache:
    root: Path

    def _file(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.safetensors"

    def has(self, kind: str, key: str) -> bool:
        return self._file(kind, key).is_file()

    def get(self, kind: str, key: str) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self._file(kind, key)))

    def put(self, kind: str, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        from safetensors.torch import save_file

        with atomic_path(self._file(kind, key)) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)

    def skip_file(self, key: str) -> Path:
        """Where a clip that cannot be encoded is recorded (reason and detail, JSON), for every rank to read."""
        return self.root / "skips" / f"{key}.json"


def _sampled_file(ds: ClipDataset, j: int, name: str, file: str) -> dict[str, Any]:
    """What determines a file's sample for item j: the file (resolved path under `name`, size, mtime), the clip's
    segment and crop, the bucket shape, the frame sampling (fps stride, centred start)."""
    r, b = ds.record(j), ds.bucket(j)
    p = Path(file)
    st = p.stat() if p.exists() else None
    return {
        name: str(p.resolve()) if st else file,
        "size": st.st_size if st else None,
        "mtime_ns": st.st_mtime_ns if st else None,
        "segment": [r.start, r.end, r.source_path],
        "crop": r.crop,
        "bucket": b.key,
        "stride": frame_stride(r.fps, ds.spec.fps) if r.type == "video" else None,
        "num_frames_src": r.num_frames,
        "start": "centre",
    }


def latent_key(vae_fp: str, ds: ClipDataset, j: int) -> str:
    fields = _sampled_file(ds, j, "path", ds.record(j).path)
    return _sha({"vae": vae_fp, **fields, "pixels": PIXEL_TRANSFORM_VERSION})


MASK_VERSION = 1  # bump when load_mask / latent_mask change


def mask_key(ds: ClipDataset, j: int, grid: tuple[int, int]) -> str | None:
    """Key of item j's latent region mask (None without a mask): the mask file sampled as the clip (as in
    `latent_key`) and the VAE's (temporal, spatial) compression."""
    mask = ds.record(j).mask
    if not mask:
        return None
    return _sha({**_sampled_file(ds, j, "mask", mask), "grid": list(grid), "version": MASK_VERSION})


def text_key(te_fp: str, caption: str) -> str:
    return _sha({"text_encoder": te_fp, "caption": caption})


@dataclass
class CachedData:
    """Which dataset items have a cache entry, plus the keys to read them."""

    cache: FeatureCache
    latent_keys: list[str]  # per dataset index
    text_keys: dict[str, str]  # caption -> key
    ok: list[bool] = field(default_factory=list)
    mask_keys: list[str | None] = field(default_factory=list)  # per dataset index; empty: masks not cached

    def latents(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.cache.get("latents", self.latent_keys[j])
        return d["mean"], d["logvar"]

    def mask(self, j: int) -> torch.Tensor | None:
        """Item j's latent region mask (T, h, w), or None (no mask, or masks not cached)."""
        key = self.mask_keys[j] if self.mask_keys else None
        return None if key is None else self.cache.get("masks", key)["mask"].float()

    def text(self, caption: str) -> torch.Tensor:
        return self.cache.get("text", self.text_keys[caption])["emb"]


def precompute(
    ds: ClipDataset,
    cache: FeatureCache,
    encode_moments: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    vae_fp: str,
    encode_text: Callable[[list[str]], torch.Tensor],
    te_fp: str,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] | None = None,
    text_batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
    mask_grid: tuple[int, int] | None = None,
) -> CachedData:
    """Fill the cache for every item of `ds` (items j with j % world == rank on this rank), then report.

    With `mask_grid` (the VAE's temporal and spatial compression), items with a region mask also get their
    latent mask (`latent_mask`, (T, h, w)); an unreadable mask makes its clip unusable, as a bad clip does.
    Unusable clips are recorded in `ds.skips` (reason and detail) and in `<root>/skips/<key>.json`, so every
    rank learns about failures found by other ranks; they are left out of training, never fatal.
    """
    keys = [latent_key(vae_fp, ds, j) for j in range(len(ds))]
    captions = sorted({ds.record(j).text for j in range(len(ds))} | {""})  # "" = caption dropout
    tkeys = {c: text_key(te_fp, c) for c in captions}
    todo = [j for j in range(len(ds)) if j % world == rank and not cache.has("latents", keys[j])]
    seen: set[str] = set()
    for n, j in enumerate(todo):
        if keys[j] in seen:  # repeated items share an entry
            continue
        seen.add(keys[j])
        skip_file = cache.skip_file(keys[j])
        if skip_file.is_file() or cache.has("latents", keys[j]):  # another process may have filled it meanwhile
            continue
        try:
            x = ds.pixels(j, rng=None)[None]  # (1, 3, F, H, W)
            with torch.no_grad():
                mean, logvar = encode_moments(x)
            cache.put(
                "latents",
                keys[j],
                {"mean": mean[0].float(), "logvar": logvar[0].float()},
                {"path": ds.record(j).path},
            )
        except ClipError as e:
            with atomic_write(skip_file) as f:
                json.dump({"path": ds.record(j).path, "reason": e.reason, "detail": e.detail}, f)
        if progress is not None:
            progress(n + 1, len(todo))
    mkeys = [mask_key(ds, j, mask_grid) for j in range(len(ds))] if mask_grid is not None else []
    for j in range(len(ds)) if mkeys else ():
        mk = mkeys[j]
        if j % world != rank or mk is None or cache.has("masks", mk) or not cache.has("latents", keys[j]):
            continue
        try:
            m = ds.mask(j)
            assert m is not None  # the record has a mask (its key exists)
            cache.put("masks", mk, {"mask": latent_mask(m, *mask_grid).half()}, {"path": str(ds.record(j).mask)})
        except ClipError as e:
            with atomic_write(cache.skip_file(mk)) as f:
                json.dump({"path": str(ds.record(j).mask), "reason": e.reason, "detail": e.detail}, f)
    mine = [c for i, c in enumerate(captions) if i % world == rank and not cache.has("text", tkeys[c])]
    for i in range(0, len(mine), text_batch):
        chunk = mine[i : i + text_batch]
        with torch.no_grad():
            emb = encode_text(chunk)
        for c, e in zip(chunk, emb, strict=True):
            cache.put("text", tkeys[c], {"emb": e}, {"caption": c[:200]})
    if barrier is not None:
        barrier()
    ok = []
    for j in range(len(ds)):
        good = cache.has("latents", keys[j])
        if good and mkeys and mkeys[j] is not None and not cache.has("masks", mkeys[j]):
            good = False
            skip_file = cache.skip_file(mkeys[j])
            info = json.loads(skip_file.read_text()) if skip_file.is_file() else {"reason": "missing_cache"}
            ds.skips.add(ds.record(j), ClipError(info["reason"], info.get("detail", "")))
        elif not good:
            skip_file = cache.skip_file(keys[j])
            info = (
                json.loads(skip_file.read_text()) if skip_file.is_file() else {"reason": "missing_cache", "detail": ""}
            )
            ds.skips.add(ds.record(j), ClipError(info["reason"], info["detail"]))
        ok.append(good)
    return CachedData(cache, keys, tkeys, ok, mkeys)
