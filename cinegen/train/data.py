"""Training data: manifest -> buckets -> deterministic, resumable global batches -> pixel clips.

Dimension legend: F pixel frames, H/W pixel height/width, T latent frames, h/w latent height/width.

Pieces (each small and testable):
- `load_records`: a cinegen manifest (JSONL/CSV/Parquet), EasyAnimate JSON, Open-Sora CSV (both through
  `cinegen.data.manifest.read_manifest`) or CogVideo's `prompt.txt` + `videos.txt`; relative paths resolved.
- `BucketSpec` / `make_buckets` / `assign_bucket`: aspect-ratio x duration buckets under a latent-token budget
  (EasyAnimate's token-length rule, data-pipelines.md §1.6; Open-Sora picks the largest frame bucket that fits,
  §2.3). Shorter clips get a larger area, up to `max_area_scale` x the base area. Frame counts are 8N+1 (16N+1 for
  CogVideoX 1.5; see `valid_frame_counts`) and images are one-frame videos.
- `BatchSampler`: groups clips by bucket, shuffles within buckets and the batch order per epoch from the seed,
  yields *global* batches (every rank slices its share, so a run's data does not depend on the world size), and
  its state (epoch, position) is part of the checkpoint. `bucket_batch_sizes` gives buckets of short sequences
  (images, short clips) proportionally larger batches, so image-video joint training spends its steps evenly.
- `load_clip`: fps-aware frame sampling (stride = source fps / target fps), aspect-preserving resize to cover,
  centre or random crop, pixels in [-1, 1]. Any failure raises `ClipError` with a reason; callers skip and count.
  `load_mask` reads a record's region mask with the same frames, crop and resize (one `SamplePlan` for both),
  and `latent_mask` maps it onto the causal VAE's latent grid for the region-weighted loss.
- `plan_packs` / `PackSampler`: multi-resolution frame pack (CogVideoX): clips of different shapes share one
  sequence up to the token budget; see cinegen/train/framepack.py for the block-diagonal attention.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from cinegen.data.manifest import IMAGE_EXTENSIONS, ClipRecord, read_manifest
from cinegen.data.media import ClipError, decode_video_frames, displayed_size, read_mask_frames

if TYPE_CHECKING:
    from cinegen.train.config import DataConfig

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# Manifests and importers
# ------------------------------------------------------------------------------------------------------------


def read_cogvideo(folder_or_prompt: str | Path) -> list[ClipRecord]:
    """CogVideo fine-tuning layout: `prompt.txt` and `videos.txt`, one line each per clip, same order."""
    p = Path(folder_or_prompt)
    folder = p if p.is_dir() else p.parent
    prompts_file, videos_file = folder / "prompt.txt", folder / "videos.txt"
    for f in (prompts_file, videos_file):
        if not f.is_file():
            raise FileNotFoundError(f"CogVideo dataset: missing {f}")
    prompts = [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    videos = [line.strip() for line in videos_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(prompts) != len(videos):
        raise ValueError(f"CogVideo dataset {folder}: {len(prompts)} prompts but {len(videos)} videos")
    return [
        ClipRecord(
            path=v, text=t, type="image" if Path(v).suffix.lower() in IMAGE_EXTENSIONS else "video", id=Path(v).stem
        )
        for t, v in zip(prompts, videos, strict=True)
    ]


def load_records(manifest: str | Path, fmt: str = "auto", root: str | Path | None = None) -> list[ClipRecord]:
    """Read any supported manifest, keep usable rows (status ok), and make clip paths absolute."""
    path = Path(manifest)
    if fmt == "cogvideo" or (fmt == "auto" and (path.is_dir() or path.name == "prompt.txt")):
        records = read_cogvideo(path)
        base = path if path.is_dir() else path.parent
    else:
        if fmt == "easyanimate" and path.suffix.lower() != ".json":
            raise ValueError(f"EasyAnimate manifests are JSON lists, got {path}")
        if fmt == "opensora" and path.suffix.lower() not in (".csv", ".parquet"):
            raise ValueError(f"Open-Sora manifests are CSV or Parquet, got {path}")
        records = read_manifest(path)
        base = path.parent
    base = Path(root) if root is not None else base
    out = []
    for r in records:
        if not r.ok:
            continue
        if not Path(r.path).is_absolute():
            r.path = str(base / r.path)
        if r.mask and not Path(r.mask).is_absolute():
            r.mask = str(base / r.mask)
        if r.type not in ("video", "image"):
            r.type = "image" if Path(r.path).suffix.lower() in IMAGE_EXTENSIONS else "video"
        out.append(r)
    return out


def probe_record(r: ClipRecord) -> None:
    """Fill missing width/height/num_frames/fps in place (manifests from the data pipeline already have them)."""
    if r.width > 0 and r.height > 0 and (r.type == "image" or (r.num_frames > 0 and r.fps > 0)):
        return
    try:
        if r.type == "image":
            from PIL import Image

            with Image.open(r.path) as im:
                r.width, r.height = im.size
            r.num_frames, r.fps = 1, r.fps or 1.0
            return
        import av

        with av.open(r.path) as c:
            s = c.streams.video[0]
            # the displayed size, as `decode_video_frames` returns the frames
            rotation = int(next(c.decode(s)).rotation or 0)
            r.width, r.height = displayed_size(s.codec_context.width, s.codec_context.height, rotation)
            fps = float(s.average_rate or s.guessed_rate or 0) or 24.0
            n = s.frames
            if not n and s.duration is not None and s.time_base is not None:
                n = int(float(s.duration * s.time_base) * fps)
            if not n and c.duration:
                n = int(c.duration / 1e6 * fps)
            r.num_frames, r.fps = int(n), fps
    except Exception as e:  # noqa: BLE001 - any decoder error means an unusable clip
        raise ClipError("unreadable", f"{r.path}: {type(e).__name__}: {e}") from e
    if r.width <= 0 or r.height <= 0:
        raise ClipError("unreadable", f"{r.path}: no video size")


# ------------------------------------------------------------------------------------------------------------
# Buckets
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    num_frames: int
    height: int
    width: int

    @property
    def key(self) -> str:  # same "FxHxW" form as cinegen.data.manifest.format_bucket
        return f"{self.num_frames}x{self.height}x{self.width}"

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1


@dataclass(frozen=True)
class BucketSpec:
    """Geometry of the model and the bucket rule. `spatial` = VAE spatial factor x patch size (8 x 2 = 16)."""

    height: int
    width: int
    num_frames: int
    aspect_ratios: tuple[float, ...] = (1.0,)
    frame_counts: tuple[int, ...] | None = None
    token_budget: int | None = None
    max_area_scale: float = 1.0
    vae_spatial: int = 8
    vae_temporal: int = 4
    patch: int = 2
    patch_t: int = 1
    fps: float | None = None
    frame_multiple: int = 8  # 8 for CogVideoX 1.0, 16 for 1.5 (see valid_frame_counts)

    @property
    def multiple(self) -> int:
        return self.vae_spatial * self.patch

    def latent_frames(self, f: int) -> int:
        return (f - 1) // self.vae_temporal + 1

    def tokens(self, f: int, h: int, w: int) -> int:
        """Video tokens the transformer sees for a clip of f x h x w pixels (latents padded to patch_t)."""
        t = math.ceil(self.latent_frames(f) / self.patch_t)
        return t * (h // self.multiple) * (w // self.multiple)

    def budget(self) -> int:
        return self.token_budget or self.tokens(self.num_frames, self.height, self.width)


def bucket_spec(
    d: DataConfig,
    height: int,
    width: int,
    num_frames: int,
    *,
    vae_spatial: int,
    vae_temporal: int,
    patch: int,
    patch_t: int = 1,
) -> BucketSpec:
    """The bucket rule of a run's `data` config for one training shape and the model's compression factors."""
    return BucketSpec(
        height=height,
        width=width,
        num_frames=num_frames,
        aspect_ratios=tuple(d.aspect_ratios) if d.buckets else (height / width,),
        frame_counts=tuple(d.frame_counts) if d.frame_counts else None,
        token_budget=d.token_budget,
        max_area_scale=d.max_area_scale,
        vae_spatial=vae_spatial,
        vae_temporal=vae_temporal,
        patch=patch,
        patch_t=patch_t,
        fps=d.fps,
        frame_multiple=2 * vae_temporal * patch_t,
    )


def valid_frame_counts(max_frames: int, frame_multiple: int = 8) -> list[int]:
    """Pixel frame counts a CogVideoX model trains and samples at: 1 (images) and N·frame_multiple + 1.

    The causal VAE maps 4k+1 frames to k+1 latents and decodes latents two at a time (first chunk three), so
    only an odd latent count decodes back to 4(T-1)+1 frames: 8N+1 pixel frames (CogVideoX 1.0). With a
    temporal patch of 2 (CogVideoX 1.5) the reference uses 16N+1 and pads the latents to an even count."""
    return [1] + list(range(frame_multiple + 1, max_frames + 1, frame_multiple))


def check_frame_count(f: int, spec: BucketSpec) -> None:
    allowed = valid_frame_counts(max(f, spec.num_frames), spec.frame_multiple)
    if f not in allowed:
        raise ValueError(f"num_frames={f} is not valid for this VAE/transformer; allowed: {allowed[:12]} ...")


def make_buckets(spec: BucketSpec) -> list[Bucket]:
    """All (aspect, frames) buckets: for each frame count the area is the largest under the token budget, capped
    at max_area_scale x the base area; sides are multiples of `spec.multiple`."""
    counts = list(spec.frame_counts) if spec.frame_counts else valid_frame_counts(spec.num_frames, spec.frame_multiple)
    for f in counts:
        check_frame_count(f, spec)
    m = spec.multiple
    base_area = spec.height * spec.width
    out: list[Bucket] = []
    for f in sorted(set(counts)):
        t = math.ceil(spec.latent_frames(f) / spec.patch_t)
        area = min(spec.budget() / t * m * m, spec.max_area_scale * base_area)
        for a in spec.aspect_ratios:
            h = max(m, int(math.sqrt(area * a) // m) * m)
            w = max(m, int(math.sqrt(area / a) // m) * m)
            while spec.tokens(f, h, w) > spec.budget() and (h > m or w > m):  # rounding guard
                if h >= w:
                    h -= m
                else:
                    w -= m
            b = Bucket(f, h, w)
            if b not in out:
                out.append(b)
    return out


def frame_stride(src_fps: float, target_fps: float | None) -> float:
    """Source frames per sampled frame. Never below 1: we do not invent frames by duplication."""
    if not target_fps or not src_fps or src_fps <= target_fps:
        return 1.0
    return src_fps / target_fps


def assign_bucket(r: ClipRecord, buckets: Sequence[Bucket], spec: BucketSpec) -> Bucket:
    """The bucket of a clip: the longest frame count that fits the clip (at the target fps), then the closest
    aspect ratio (in log space). Raises ClipError("too_short") when no frame bucket fits."""
    if r.type == "image":
        frames = 1
    else:
        stride = frame_stride(r.fps, spec.fps)
        fits = [b.num_frames for b in buckets if b.num_frames > 1 and (b.num_frames - 1) * stride + 1 <= r.num_frames]
        if not fits:
            need = min((b.num_frames for b in buckets if b.num_frames > 1), default=0)
            if need == 0:  # single-frame buckets only: they take image records, never video frames
                raise ClipError("no_bucket", f"{r.path}: a video, but every bucket has 1 frame (image-only training)")
            raise ClipError("too_short", f"{r.path}: {r.num_frames} frames at {r.fps:g} fps < {need} frames needed")
        frames = max(fits)
    cands = [b for b in buckets if b.num_frames == frames]
    if not cands:
        raise ClipError("no_bucket", f"{r.path}: no bucket with {frames} frames")
    ar = r.height / r.width
    return min(cands, key=lambda b: abs(math.log(b.height / b.width) - math.log(ar)))


# ------------------------------------------------------------------------------------------------------------
# Sampler
# ------------------------------------------------------------------------------------------------------------


class _EpochCursor:
    """The resumable walk shared by the samplers: `epoch_batches(epoch)` (a pure function of the seed and the
    epoch) read in order; state = (epoch, position), saved in checkpoints with the global batch size."""

    epoch: int
    position: int
    seed: int

    @property
    def global_batch(self) -> int:
        raise NotImplementedError

    def epoch_batches(self, epoch: int) -> list:
        raise NotImplementedError

    def next(self) -> tuple[str, list]:
        batches = self.epoch_batches(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.epoch_batches(self.epoch)
        out = batches[self.position]
        self.position += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch_size": self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["batch_size"]) != self.global_batch:
            raise ValueError(f"resume: global batch changed from {state['batch_size']} to {self.global_batch}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


@dataclass
class BatchSampler(_EpochCursor):
    """Deterministic, resumable global batches, homogeneous in bucket.

    `groups` maps a bucket key to dataset indices. Per epoch: a seeded shuffle inside each bucket, chunks of
    `batch_size` (the global micro-batch; leftovers wait for the next epoch's shuffle), then a seeded shuffle of
    the chunk order. State = (epoch, position), saved in checkpoints.
    """

    groups: dict[str, list[int]]
    batch_size: int
    seed: int = 0
    epoch: int = 0
    position: int = 0
    _cache: tuple[int, list[tuple[str, list[int]]]] | None = field(default=None, repr=False)

    sizes: dict[str, int] | None = None  # global batch per bucket key (default: batch_size for every bucket)

    def __post_init__(self) -> None:
        usable = {k: v for k, v in self.groups.items() if len(v) >= self.size(k)}
        if not usable:
            counts = {k: len(v) for k, v in self.groups.items()}
            raise ValueError(
                f"no bucket holds a full global batch (bucket sizes: {counts}, batch sizes: "
                f"{ {k: self.size(k) for k in self.groups} }); lower data.batch_size or use fewer buckets"
            )
        for k, v in self.groups.items():
            if len(v) < self.size(k):
                log.warning("bucket %s has %d clips < global batch %d: not used", k, len(v), self.size(k))
        self.groups = usable

    def size(self, key: str) -> int:
        """Global batch of bucket `key`."""
        return self.batch_size if self.sizes is None else self.sizes.get(key, self.batch_size)

    def epoch_batches(self, epoch: int) -> list[tuple[str, list[int]]]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = random.Random(self.seed * 1_000_003 + epoch)
        batches = []
        for key in sorted(self.groups):
            idx = list(self.groups[key])
            rng.shuffle(idx)
            n = self.size(key)
            for i in range(0, len(idx) - n + 1, n):
                batches.append((key, idx[i : i + n]))
        rng.shuffle(batches)
        self._cache = (epoch, batches)
        return batches

    @property
    def global_batch(self) -> int:
        return self.batch_size

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.sizes is not None:  # the per-bucket plan must match on resume as well (keys sorted: stable)
            state["bucket_batches"] = ",".join(f"{k}:{self.sizes[k]}" for k in sorted(self.sizes))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict().get("bucket_batches")
        if state.get("bucket_batches") != mine:
            raise ValueError(f"resume: per-bucket batch sizes changed from {state.get('bucket_batches')} to {mine}")
        super().load_state_dict(state)


def bucket_batch_sizes(seq_lens: dict[str, int], batch_size: int) -> dict[str, int]:
    """Batch size per bucket for an even token load: `batch_size` clips of the longest sequence, and
    floor(batch_size x longest / own) clips of a shorter one (never fewer than batch_size).

    seq_lens maps a bucket key to the transformer sequence of one of its clips (text + video tokens), e.g.
    {"17x96x96": 784, "9x96x96": 496, "1x96x96": 208} with batch 8 -> {17: 8, 9: 12, 1: 30}. The trainer
    passes the global batch, so the plan does not depend on the world size (ranks split a batch as evenly as
    they can). Attention grows faster than linearly in the sequence, so short buckets cost a little less than
    the long one per step.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not seq_lens:
        return {}
    longest = max(seq_lens.values())
    return {k: max(batch_size, batch_size * longest // n) for k, n in seq_lens.items()}


# ------------------------------------------------------------------------------------------------------------
# Decoding, frame sampling, resize and crop
# ------------------------------------------------------------------------------------------------------------


def frame_indices(n_available: int, f: int, stride: float, start: int) -> list[int]:
    """f source-frame indices from `start` with a (fractional) stride, rounded to the nearest frame."""
    return [min(n_available - 1, start + int(round(k * stride))) for k in range(f)]


def pick_start(n_available: int, f: int, stride: float, rng: random.Random | None) -> int:
    """Random start inside the clip (None = centred, used when caching so an entry has one fixed meaning)."""
    span = int(round((f - 1) * stride)) + 1
    slack = max(0, n_available - span)
    return rng.randint(0, slack) if rng is not None else slack // 2


def resize_crop(frames: torch.Tensor, h: int, w: int, crop_pos: tuple[float, float] = (0.5, 0.5)) -> torch.Tensor:
    """(F, 3, H0, W0) uint8/float -> (F, 3, h, w) float: scale to cover (aspect preserved), then crop at crop_pos
    (fractions of the slack; 0.5 = centre)."""
    _, _, h0, w0 = frames.shape
    s = max(h / h0, w / w0)
    nh, nw = max(h, round(h0 * s)), max(w, round(w0 * s))
    x = frames.float()
    if (nh, nw) != (h0, w0):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = int(round((nh - h) * crop_pos[0])), int(round((nw - w) * crop_pos[1]))
    return x[:, :, top : top + h, left : left + w]


@dataclass(frozen=True)
class SamplePlan:
    """Where a clip's training sample comes from: source-frame indices (None for an image), the segment start in
    seconds, and the crop position (fractions of the slack). A clip and its mask share one plan."""

    indices: tuple[int, ...] | None
    segment_start: float
    crop_pos: tuple[float, float]


def sample_plan(r: ClipRecord, bucket: Bucket, spec: BucketSpec, rng: random.Random | None) -> SamplePlan:
    """Draw the frame start and crop position (rng None = centred start and crop, as the cache uses)."""
    indices = None
    if r.type != "image":
        stride = frame_stride(r.fps, spec.fps)
        start = pick_start(r.num_frames, bucket.num_frames, stride, rng)
        indices = tuple(frame_indices(r.num_frames, bucket.num_frames, stride, start))
    seg = r.start if (r.start and r.source_path and Path(r.source_path) == Path(r.path)) else 0.0
    pos = (rng.random(), rng.random()) if rng is not None else (0.5, 0.5)
    return SamplePlan(indices, float(seg), pos)


def _crop_resize(x: torch.Tensor, r: ClipRecord, bucket: Bucket, plan: SamplePlan) -> torch.Tensor:
    """(F, C, H0, W0) -> (F, C, H, W) float: the record's crop box, then resize to cover and crop."""
    if r.crop:  # [x, y, w, h] from the data pipeline (e.g. black borders)
        cx, cy, cw, ch = r.crop
        x = x[:, :, cy : cy + ch, cx : cx + cw]
    return resize_crop(x, bucket.height, bucket.width, plan.crop_pos)


def load_clip(
    r: ClipRecord, bucket: Bucket, spec: BucketSpec, rng: random.Random | None, plan: SamplePlan | None = None
) -> torch.Tensor:
    """A clip as pixels (3, F, H, W) in [-1, 1] for `bucket`; rng None = deterministic (centre start and crop).
    `plan` (from `sample_plan`) replaces the rng's draws, so a mask can follow the same frames and crop."""
    path = Path(r.path)
    if not path.is_file():
        raise ClipError("missing", f"{r.path}: file not found")
    plan = plan if plan is not None else sample_plan(r, bucket, spec, rng)
    try:
        if plan.indices is None:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.array(im.convert("RGB"))[None]  # (1, H, W, 3)
        else:
            arr = decode_video_frames(str(path), plan.indices, plan.segment_start)
    except ClipError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt files raise anything from PIL/av
        raise ClipError("corrupt", f"{r.path}: {type(e).__name__}: {e}") from e
    x = _crop_resize(torch.from_numpy(arr).permute(0, 3, 1, 2), r, bucket, plan)  # (F, 3, H, W)
    x = (x / 127.5 - 1.0).clamp(-1, 1)
    return x.permute(1, 0, 2, 3).contiguous()  # (F, 3, H, W) -> (3, F, H, W)


def load_mask(r: ClipRecord, bucket: Bucket, plan: SamplePlan) -> torch.Tensor | None:
    """The record's region mask (F, H, W) in [0, 1] for `bucket`, sampled with the clip's `plan` (same frames,
    crop box and resize); None when the record has no mask."""
    if not r.mask:
        return None
    if not Path(r.mask).is_file():
        raise ClipError("missing", f"{r.mask}: mask file not found")
    try:
        m = read_mask_frames(r.mask, plan.indices, plan.segment_start)  # (F, H0, W0)
    except ClipError:
        raise
    except Exception as e:  # noqa: BLE001 - unreadable mask files raise anything from numpy/PIL/av
        raise ClipError("bad_mask", f"{r.mask}: {type(e).__name__}: {e}") from e
    if (m.shape[1], m.shape[2]) != (r.height, r.width) and r.width > 0 and r.height > 0:
        raise ClipError("bad_mask", f"{r.mask}: mask is {m.shape[2]}x{m.shape[1]}, clip is {r.width}x{r.height}")
    x = _crop_resize(torch.from_numpy(m)[:, None], r, bucket, plan)  # (F, 1, H, W)
    return x[:, 0].clamp(0, 1)


def latent_mask(mask: torch.Tensor, temporal: int, spatial: int) -> torch.Tensor:
    """Pixel mask (F, H, W) -> the latent cells it touches (T, h, w) of a causal VAE: frame 0 alone, then groups
    of `temporal` frames; `spatial` x `spatial` pixels per cell; a cell takes the largest value it covers."""
    f = mask.shape[0]
    groups = [mask[:1]] + [mask[1 + temporal * k : 1 + temporal * (k + 1)] for k in range((f - 1) // temporal)]
    per_t = torch.stack([g.amax(0) for g in groups]).float()  # (T, H, W)
    return F.max_pool2d(per_t[:, None], spatial)[:, 0]  # (T, h, w)


# ------------------------------------------------------------------------------------------------------------
# The dataset: records + bucket assignment + skip counters
# ------------------------------------------------------------------------------------------------------------


@dataclass
class SkipLog:
    """Unusable clips, counted by reason and kept with their detail (never fatal)."""

    counts: Counter = field(default_factory=Counter)
    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, r: ClipRecord, err: ClipError) -> None:
        if any(it["path"] == r.path and it["reason"] == err.reason for it in self.items):
            return
        self.counts[err.reason] += 1
        self.items.append({"path": r.path, "reason": err.reason, "detail": err.detail})
        log.warning("skipping clip (%s): %s", err.reason, err.detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ClipDataset:
    """Records assigned to buckets. Clips that cannot be probed or fit no bucket are skipped and counted."""

    records: list[ClipRecord]
    spec: BucketSpec
    buckets_enabled: bool = True
    image_repeat: int = 1
    video_repeat: int = 1
    skips: SkipLog = field(default_factory=SkipLog)
    items: list[tuple[int, Bucket]] = field(default_factory=list)  # (record index, bucket) per dataset index

    def __post_init__(self) -> None:
        check_frame_count(self.spec.num_frames, self.spec)
        if self.buckets_enabled:
            self.buckets = make_buckets(self.spec)
        else:  # one shape for all videos (+ the same area for images)
            self.buckets = [Bucket(self.spec.num_frames, self.spec.height, self.spec.width)]
            self.buckets.append(Bucket(1, self.spec.height, self.spec.width))
        for i, r in enumerate(self.records):
            try:
                probe_record(r)
                b = assign_bucket(r, self.buckets, self.spec)
            except ClipError as e:
                self.skips.add(r, e)
                continue
            repeat = self.image_repeat if r.type == "image" else self.video_repeat
            self.items.extend([(i, b)] * repeat)

    def __len__(self) -> int:
        return len(self.items)

    def groups(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for j, (_, b) in enumerate(self.items):
            out.setdefault(b.key, []).append(j)
        return out

    def record(self, j: int) -> ClipRecord:
        return self.records[self.items[j][0]]

    def bucket(self, j: int) -> Bucket:
        return self.items[j][1]

    def pixels(self, j: int, rng: random.Random | None) -> torch.Tensor:
        return load_clip(self.record(j), self.bucket(j), self.spec, rng)

    def pixels_and_mask(self, j: int, rng: random.Random | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pixels (3, F, H, W) and the region mask (F, H, W) or None, drawn with one plan."""
        r, b = self.record(j), self.bucket(j)
        plan = sample_plan(r, b, self.spec, rng)
        return load_clip(r, b, self.spec, rng, plan), load_mask(r, b, plan)

    def mask(self, j: int) -> torch.Tensor | None:
        """The region mask (F, H, W) at the centred plan (what the cache stores), or None."""
        r, b = self.record(j), self.bucket(j)
        return load_mask(r, b, sample_plan(r, b, self.spec, None)) if r.mask else None

    @property
    def has_masks(self) -> bool:
        return any(self.record(j).mask for j in range(len(self)))

    @property
    def kinds(self) -> set[str]:
        """{"image", "video"}: the kinds of items the dataset holds."""
        return {"image" if b.is_image else "video" for _, b in self.items}


def load_pixels(
    ds: ClipDataset, local: Sequence[int], rngs: Sequence[random.Random | None]
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Pixels (3, F, H, W) of dataset items `local` (rng None = centred start and crop) and their weights (N,).
    A clip that fails to load is counted in `ds.skips` and stands in as zeros with weight 0, so the step's
    shapes stay fixed."""
    xs, _, weight = load_pixels_and_masks(ds, local, rngs, masks=False)
    return xs, weight


def load_pixels_and_masks(
    ds: ClipDataset, local: Sequence[int], rngs: Sequence[random.Random | None], masks: bool = True
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], torch.Tensor]:
    """As `load_pixels`, plus each item's region mask (F, H, W) sampled with its clip's frames and crop (None
    without a mask, or when `masks` is False). A clip whose mask fails to load is skipped like a bad clip."""
    xs: list[torch.Tensor] = []
    ms: list[torch.Tensor | None] = []
    weight = torch.ones(len(local))
    for i, (j, rng) in enumerate(zip(local, rngs, strict=True)):
        try:
            x, m = ds.pixels_and_mask(j, rng) if masks else (ds.pixels(j, rng), None)
        except ClipError as e:
            ds.skips.add(ds.record(j), e)
            b = ds.bucket(j)
            x, m = torch.zeros(3, b.num_frames, b.height, b.width), None
            weight[i] = 0.0
        xs.append(x)
        ms.append(m)
    return xs, ms, weight


def bucket_histogram(ds: ClipDataset) -> dict[str, int]:
    return dict(sorted(Counter(b.key for _, b in ds.items).items()))


# ------------------------------------------------------------------------------------------------------------
# Multi-resolution frame pack (CogVideoX): several shapes in one sequence up to the token budget
# ------------------------------------------------------------------------------------------------------------


def plan_packs(tokens: Sequence[int], budget: int, seed: int, epoch: int) -> list[list[int]]:
    """Greedy first-fit-decreasing packing of items (by token count) into sequences of at most `budget` tokens,
    after a seeded shuffle so packs differ per epoch. Items larger than the budget get a pack of their own."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(tokens)))
    rng.shuffle(order)
    order.sort(key=lambda i: -tokens[i])  # stable: ties keep the shuffled order
    packs: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for p, free in enumerate(room):
            if tokens[i] <= free:
                packs[p].append(i)
                room[p] -= tokens[i]
                break
        else:
            packs.append([i])
            room.append(budget - tokens[i])
    rng.shuffle(packs)
    return packs


@dataclass
class PackSampler(_EpochCursor):
    """Frame-pack counterpart of `BatchSampler`: per epoch, the usable items are packed (seeded) into sequences
    of at most `budget` tokens, and `rows` packs form one global micro-batch. Same state and interface."""

    tokens: dict[int, int]  # dataset index -> transformer tokens of that clip
    budget: int
    rows: int
    seed: int = 0
    epoch: int = 0
    position: int = 0
    _cache: tuple[int, list[tuple[str, list[list[int]]]]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.tokens) < self.rows:
            raise ValueError(f"frame pack: {len(self.tokens)} usable clips < {self.rows} rows per step")
        if not self.epoch_batches(0):
            raise ValueError(f"frame pack: the clips fill fewer than {self.rows} packs of {self.budget} tokens")

    def epoch_batches(self, epoch: int) -> list[tuple[str, list[list[int]]]]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        ids = sorted(self.tokens)
        packs = plan_packs([self.tokens[i] for i in ids], self.budget, self.seed, epoch)
        packs = [[ids[k] for k in p] for p in packs]
        batches = [("pack", packs[i : i + self.rows]) for i in range(0, len(packs) - self.rows + 1, self.rows)]
        self._cache = (epoch, batches)
        return batches

    @property
    def global_batch(self) -> int:
        return self.rows
