"""Typed configuration of the data pipeline: frozen dataclasses loaded from one YAML file plus dot-list
overrides (`score.motion_fps=4`). Unknown keys and wrong types are errors that name the key.

Defaults follow data-pipelines.md: ContentDetector(27, min_scene_len 15) and 3-10 s clips (EasyAnimate), a
0.02 text-area limit (EasyAnimate's OCR filter), Farnebaeck motion at a fixed analysis size and fps, CogVideoX
8N+1 frame buckets at 8 fps with a 480x720 pixel budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cinegen.config import load_config as generic_load
from cinegen.config import to_dict
from cinegen.data.manifest import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")


@dataclass(frozen=True)
class ScanConfig:
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    include_images: bool = True
    min_short_side: int = 64  # smaller frames are dropped ("too_small")
    max_pixels: int = 4096 * 2304  # larger frames are dropped ("huge_resolution"): decoding them OOMs workers
    min_duration: float = 0.5  # seconds
    rotated: str = "apply"  # "apply": cut clips upright; "skip": drop rotated sources ("rotated")
    vfr_tolerance: float = 0.1  # relative spread of frame intervals above which a stream counts as VFR
    truncated_tolerance: float = 0.15  # last packet earlier than (1 - tol) x declared duration: "truncated"


@dataclass(frozen=True)
class SplitConfig:
    detector: str = "content"  # "content" (ContentDetector) | "adaptive" (AdaptiveDetector) | "none"
    threshold: float = 27.0  # ContentDetector threshold (EasyAnimate / Data-Juicer default)
    adaptive_threshold: float = 3.0  # AdaptiveDetector (Open-Sora uses 2.0 with min_content_val 10)
    min_content_val: float = 15.0
    min_scene_len: int = 15  # frames
    backend: str = "pyav"  # PySceneDetect decoder: "pyav" (frame-accurate) or "opencv"
    min_seconds: float = 3.0  # shorter scenes (after trimming) are dropped ("scene_too_short")
    max_seconds: float = 10.0  # longer scenes are chunked into equal pieces of at most this length
    trim_seconds: float = 0.5  # removed at each side of a detected cut (transition frames)
    mode: str = "reencode"  # "reencode" (frame-accurate, libx264) | "copy" (keyframe-aligned stream copy)
    fps: float | None = None  # output fps when re-encoding (None: the source's)
    max_short_side: int | None = None  # downscale the output so its short side is at most this (never up)
    crf: int = 20
    preset: str = "veryfast"
    clips_dir: str = "clips"  # inside the work dir


@dataclass(frozen=True)
class ScoreConfig:
    analysis_size: int = 256  # long side (px) at which flow / sharpness / borders are measured (fixed size)
    motion_fps: float = 4.0  # frames per second sampled for optical flow
    max_analysis_frames: int = 64
    camera_static: float = 0.02  # median flow below this (frame diagonals / second) = static camera
    camera_zoom: float = 0.5  # |radial| / |median flow| above this = zoom
    frozen_diff: float = 0.01  # a frame pair is frozen when no pixel changes by more than this (0..1 luma)
    border_luma: float = 0.08  # rows/columns darker than this (0..1, max over frames) count as black border
    ocr: bool = True
    ocr_frames: int = 1  # frames (evenly spaced, middle first) for the OCR text-area ratio; the max is kept
    ocr_side: int = 640  # long side of the frame fed to the text detector
    ocr_box_thresh: float = 0.5
    phash_frames: int = 3  # perceptual hash frames at 1/(n+1) .. n/(n+1) of the clip
    aesthetic_clip_path: str | None = None  # local CLIP folder (transformers) for the aesthetic plug-in
    aesthetic_head_path: str | None = None  # LAION-style MLP head (.pt / .pth / .safetensors)
    clip_path: str | None = None  # local CLIP folder: text-frame similarity plug-in (needs a caption)


@dataclass(frozen=True)
class FilterConfig:
    min_duration: float | None = None
    max_duration: float | None = None
    min_motion: float | None = 0.002  # mean flow, frame diagonals / second
    max_motion: float | None = 1.0
    max_text_area: float | None = 0.02  # EasyAnimate drops clips with > 2 % text area
    min_sharpness: float | None = None
    min_brightness: float | None = 0.05
    max_brightness: float | None = 0.95
    min_contrast: float | None = 0.02
    max_frozen_ratio: float | None = 0.5
    max_border_ratio: float | None = 0.5  # more border than this is dropped; less is cropped (`crop`)
    dedup_hamming: int | None = 6  # max mean Hamming distance (of 64 bits per frame) for a near-duplicate
    min_aesthetic: float | None = None
    min_clip_score: float | None = None


DEFAULT_PREFIXES = (
    "the video shows",
    "the video features",
    "the video depicts",
    "the video captures",
    "this video shows",
    "this video features",
    "in this video,",
    "in the video,",
    "the image shows",
    "the image depicts",
    "this image shows",
    "the clip shows",
    "a video of",
    "video of",
)


@dataclass(frozen=True)
class CaptionConfig:
    captioners: tuple[str, ...] = ("keep", "sidecar", "filename")  # fallbacks: first non-empty caption wins
    template: str = "a video, {camera} camera, {motion} motion"  # the "template" captioner
    append: str = ""  # appended to every caption, e.g. ", {camera} camera" (score-as-condition, Open-Sora)
    vlm_path: str | None = None  # local transformers vision-language model folder ("vlm" captioner)
    vlm_prompt: str = "Describe this video in one detailed sentence."
    vlm_frames: int = 1
    vlm_max_new_tokens: int = 64
    llm_base_url: str | None = None  # OpenAI-compatible endpoint for the optional recaption
    llm_model: str = ""
    llm_api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key
    llm_prompt: str = (
        "Rewrite this video caption as one vivid, concrete sentence for a text-to-video model. "
        "Reply with the caption only.\n\nCaption: {text}"
    )
    llm_timeout: float = 60.0
    strip_prefixes: tuple[str, ...] = DEFAULT_PREFIXES
    drop_empty: bool = True
    max_words: int | None = 200


@dataclass(frozen=True)
class BucketConfig:
    fps: float = 8.0  # training fps: a bucket of F frames needs F / fps seconds of clip
    frames: tuple[int, ...] = (49, 33, 25, 17, 9)  # CogVideoX 8N+1 frame counts
    aspect_ratios: tuple[str, ...] = ("16:9", "3:2", "4:3", "1:1", "3:4", "2:3", "9:16")  # width:height
    pixels: int = 480 * 720  # pixel budget per frame; bucket sizes are rounded to `multiple`
    multiple: int = 16
    min_bucket_count: int = 1  # buckets with fewer clips are reported (and dropped if drop_small_buckets)
    drop_small_buckets: bool = False


@dataclass(frozen=True)
class ExportConfig:
    formats: tuple[str, ...] = ("jsonl", "parquet")
    cogvideo: bool = True  # also write prompt.txt / videos.txt with videos/ (CogVideo finetune layout)
    link: str = "symlink"  # how clips are placed in videos/: "symlink" | "hardlink" | "copy"
    paths: str = "absolute"  # clip paths in the training manifest: "absolute" | "relative" (to the export dir)
    out_dir: str = "export"  # inside the work dir


@dataclass(frozen=True)
class EngineConfig:
    engine: str = "local"  # "local" (process pool) | "ray" (Ray Data, optional extra)
    workers: int = 0  # 0: one per CPU core; 1: in-process (no pool)
    ray_address: str | None = None  # None: start a local Ray instance
    max_in_flight: int = 4  # per worker, for the local pool


@dataclass(frozen=True)
class ReportConfig:
    samples: int = 4  # clips per contact sheet (kept / dropped)
    frames_per_clip: int = 6
    bins: int = 20
    out_dir: str = "report"


@dataclass(frozen=True)
class DataConfig:
    input: str | None = None  # folder of raw videos, a file, a list (.txt) or a manifest
    workdir: str = "data_work"
    scan: ScanConfig = field(default_factory=ScanConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    bucket: BucketConfig = field(default_factory=BucketConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def validate(self) -> DataConfig:
        _choice("scan.rotated", self.scan.rotated, ("apply", "skip"))
        _choice("split.detector", self.split.detector, ("content", "adaptive", "none"))
        _choice("split.mode", self.split.mode, ("reencode", "copy"))
        _choice("split.backend", self.split.backend, ("pyav", "opencv"))
        _choice("export.link", self.export.link, ("symlink", "hardlink", "copy"))
        _choice("export.paths", self.export.paths, ("absolute", "relative"))
        _choice("engine.engine", self.engine.engine, ("local", "ray"))
        for f in self.export.formats:
            _choice("export.formats", f, ("jsonl", "parquet", "csv", "json"))
        if self.split.min_seconds > self.split.max_seconds:
            raise ValueError("split.min_seconds must be <= split.max_seconds")
        for ar in self.bucket.aspect_ratios:
            parse_ratio(ar)
        if not self.bucket.frames or min(self.bucket.frames) < 1:
            raise ValueError("bucket.frames must be a non-empty list of positive frame counts")
        return self


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}: expected one of {list(allowed)}")


def parse_ratio(s: str) -> float:
    """'16:9' -> width / height = 1.777..."""
    try:
        w, h = s.split(":")
        r = float(w) / float(h)
    except (ValueError, ZeroDivisionError) as e:
        raise ValueError(f"aspect ratio {s!r} must look like 'W:H', e.g. '16:9'") from e
    if r <= 0:
        raise ValueError(f"aspect ratio {s!r} must be positive")
    return r


# ------------------------------------------------------------------------------------------ strict loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DataConfig:
    """Defaults <- YAML file <- dot-list overrides (`cinegen.config`'s strict loader: unknown keys and wrong
    types raise ConfigError naming the key), then the pipeline's own checks (`DataConfig.validate`)."""
    return generic_load(DataConfig, path, list(overrides or [])).validate()


def dump_config(cfg: DataConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
