"""`generate()`: the one entry point behind the CLI, the Python API, the web UI and the HTTP API.

Dimension legend: B batch, T latent frames, F pixel frames, C latent channels, H/W pixel size, h/w latent size,
L text tokens, D text width.

The numerics follow the diffusers CogVideoX pipelines step for step (reference §5), so that a cinegen run and a
diffusers run with the same weights, seed and settings produce the same latents:

- noise is drawn on the CPU from a seeded generator in ``(B, T, C, h, w)`` order, in the text-embedding dtype;
- I2V/V2V draw the VAE posterior sample from the same generator *before* the noise;
- the transformer output is cast to fp32 before guidance; latents return to the model dtype after every step;
- CogVideoX 1.5 pads the latent frame count to a multiple of ``patch_size_t`` and drops the padding before decode.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from cinegen.models.io import ModelBundle, load_model_folder, read_generation_defaults, variant_name
from cinegen.models.text import TextEncoder
from cinegen.models.vae import TemporalTiling
from cinegen.sampling.guidance import cfg_batched, guidance_scale_at
from cinegen.sampling.loop import Plan, SamplerSpec, default_sampler, make_plan, noise_latents, sample
from cinegen.video import Video, frames_to_tensor, read_video

__all__ = ["GenerateRequest", "Pipeline", "load_pipeline", "DEFAULT_MODEL", "RequestError"]

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "cinegen-shapes"

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


class RequestError(ValueError):
    """A generation request the loaded model cannot serve; raised before any compute, naming the allowed values."""


@dataclass
class GenerateRequest:
    """One generation. `None` fields take the model's defaults (see `Pipeline.defaults`)."""

    prompt: str
    negative_prompt: str = ""
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    sampler: Literal["ddim", "dpm", "euler"] | None = None
    # flow models only: "linear_quadratic" (Movie Gen), "uniform", "shifted", or "diffusers" (the exact
    # FlowMatchEulerDiscreteScheduler list, for parity); None = the model's default
    flow_schedule: Literal["linear_quadratic", "uniform", "shifted", "diffusers"] | None = None
    # ddim/dpm only: "scheduler" (the scheduler config's timestep list, as the reference) or "log_snr" (uniform in
    # the model's log-SNR, down to t = 0); None = the model's default
    spacing: Literal["scheduler", "log_snr"] | None = None
    image: Any = None  # I2V conditioning: path, PIL image or uint8 (H, W, 3) array
    video: Any = None  # V2V source: path, Video or uint8 (F, H, W, 3) array
    strength: float = 0.8  # V2V: fraction of the schedule re-run
    # rewrite a short prompt into the model's dense training-caption style; None = the model's default
    enhance_prompt: bool | None = None
    raw_prompt: str | None = None  # set by `resolve` when the prompt was enhanced
    dynamic_cfg: bool = False
    dynamic_cfg_mode: Literal["original", "diffusers"] = "original"
    fps: float | None = None

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> GenerateRequest:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unknown generate() arguments {unknown}; known: {sorted(names)}")
        return cls(**kwargs)


@dataclass(frozen=True)
class PipelineDefaults:
    """Per-model defaults; a cinegen folder stores them under `_cinegen_defaults` in model_index.json."""

    num_frames: int = 49
    height: int = 480
    width: int = 720
    steps: int = 50
    guidance: float = 6.0
    sampler: str | None = None  # None: DDIM for CogVideoX schedulers, Euler for flow matching
    flow_schedule: str = "linear_quadratic"
    spacing: str = "scheduler"  # ddim/dpm timesteps: "scheduler" or "log_snr" (cinegen.sampling.loop.SamplerSpec)
    fps: float = 8.0
    negative_prompt: str = ""
    prompt_enhancer: str | None = None  # "shapes" / "shapes-layout" / "shapes-tokens": Shapes-world rewriters
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerationStats:
    seconds: float = 0.0
    steps: int = 0
    peak_rss_mb: float = 0.0
    latent_shape: tuple[int, ...] = ()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (`ru_maxrss`: KiB on Linux, bytes on macOS)."""
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _uses_cfg(r: GenerateRequest) -> bool:
    """Classifier-free guidance runs (a [negative; positive] batch) only for a guidance scale above 1."""
    return float(r.guidance or 0.0) > 1.0


class Pipeline:
    """A loaded CogVideoX-family model. `generate(...)` returns a `Video`."""

    def __init__(self, bundle: ModelBundle, defaults: PipelineDefaults | None = None) -> None:
        self.bundle = bundle
        self.transformer = bundle.transformer
        self.vae = bundle.vae
        self.text_encoder = bundle.text_encoder
        self.tokenizer = bundle.tokenizer
        self.scheduler = bundle.scheduler
        self.config = bundle.transformer.config
        self.defaults = defaults or self._reference_defaults()
        # no `_cinegen_defaults` (e.g. a checkpoint export): sampling follows the reference model, not this one
        self.defaults_are_reference = defaults is None
        self.last_stats = GenerationStats()
        self._text: TextEncoder | None = None
        if self.text_encoder is not None and self.tokenizer is not None:
            self._text = TextEncoder(self.text_encoder, self.tokenizer, self.config.max_text_seq_length)

    # ----------------------------------------------------------------- facts about the model
    def _reference_defaults(self) -> PipelineDefaults:
        c = self.config
        if c.patch_size_t is not None:  # 1.5: the hub sample size (300) is a RoPE bound, not a resolution
            return PipelineDefaults(num_frames=c.sample_frames, height=768, width=1360, fps=16.0)
        s = self.vae_spatial
        return PipelineDefaults(num_frames=c.sample_frames, height=c.sample_height * s, width=c.sample_width * s)

    @property
    def vae_spatial(self) -> int:
        """Pixels per latent pixel (8 for the published VAEs, 4 for the default model's)."""
        return int(self.vae.config.spatial_compression)

    @property
    def vae_temporal(self) -> int:
        """Pixel frames per latent frame after the first (4 for every CogVideoX VAE)."""
        return int(self.vae.config.temporal_compression_ratio)

    def sample_size(self) -> tuple[int, int]:
        """The transformer's position-table size in pixels (height, width)."""
        return self.config.sample_height * self.vae_spatial, self.config.sample_width * self.vae_spatial

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def is_i2v(self) -> bool:
        return self.config.is_i2v

    @property
    def spatial_multiple(self) -> int:
        return self.vae_spatial * self.config.patch_size  # VAE compression, then the transformer's patches

    @property
    def frame_multiple(self) -> int:
        """Valid frame counts are k*m + 1: m = 8 for 1.0 (odd latent count), 16 for 1.5 (temporal patch 2)."""
        return self.vae_temporal * 2 * (self.config.patch_size_t or 1)

    def valid_frame_counts(self, up_to: int = 161) -> list[int]:
        m = self.frame_multiple
        return list(range(m + 1, up_to + 1, m))

    def info(self) -> dict[str, Any]:
        """Components, sizes and valid shapes (what `cinegen info` prints)."""

        def n_params(m: torch.nn.Module | None) -> int:
            return sum(p.numel() for p in m.parameters()) if m is not None else 0

        out = {
            "variant": variant_name(self.config),
            "root": str(self.bundle.root) if self.bundle.root else None,
            "device": str(self.device),
            "components": {
                "transformer": {"params": n_params(self.transformer), "dtype": str(self.dtype)},
                "vae": {"params": n_params(self.vae), "dtype": str(self.vae.dtype)},
                "text_encoder": {
                    "params": n_params(self.text_encoder),
                    "dtype": str(next(self.text_encoder.parameters()).dtype) if self.text_encoder else None,
                },
                "tokenizer": type(self.tokenizer).__name__ if self.tokenizer is not None else None,
                "scheduler": self.scheduler.to_dict().get("_class_name"),
            },
            "modes": ["i2v"] if self.is_i2v else ["t2v", "v2v"],
            "valid_frame_counts": self.valid_frame_counts(),
            "resolution_multiple": self.spatial_multiple,
            "defaults": {k: v for k, v in asdict(self.defaults).items() if k != "extra"},
            "text_length": self.config.max_text_seq_length,
        }
        if self.config.use_learned_positional_embeddings:
            out["fixed_resolution"] = list(self.sample_size())
        elif self.config.patch_size_t is not None:
            out["max_resolution"] = list(self.sample_size())
        return out

    def enhance(self, prompt: str, request: GenerateRequest | None = None) -> str:
        """The model's built-in prompt rewriter; falls back to the raw prompt when it cannot parse it.

        "shapes": the Shapes-world rewriter (deterministic defaults); "shapes-layout": the same plus each object's
        start cell, drawn from the request's seed and clip format when the prompt states none; "shapes-tokens":
        the start cell and token ("in the top left at c3 r2")."""
        style = self.defaults.prompt_enhancer
        if style is None:
            return prompt
        from cinegen.world.captions import ENHANCER_STYLES, enhance_prompt

        if style in ENHANCER_STYLES:
            try:
                if style == "shapes":
                    return enhance_prompt(prompt)
                r = request or GenerateRequest(prompt=prompt)
                fmt = {
                    "width": int(r.width or self.defaults.width),
                    "height": int(r.height or self.defaults.height),
                    "num_frames": int(r.num_frames or self.defaults.num_frames),
                }
                tokens = style == "shapes-tokens"
                return enhance_prompt(prompt, np.random.default_rng(int(r.seed)), layout=True, tokens=tokens, **fmt)
            except ValueError as e:
                log.warning("prompt enhancer could not rewrite %r (%s); using it as it is", prompt, e)
        return prompt

    # ----------------------------------------------------------------- validation
    def resolve(self, req: GenerateRequest) -> GenerateRequest:
        """Fill defaults and validate everything before any compute; errors name the allowed values."""
        d = self.defaults
        r = replace(
            req,
            num_frames=req.num_frames if req.num_frames is not None else d.num_frames,
            height=req.height if req.height is not None else d.height,
            width=req.width if req.width is not None else d.width,
            steps=req.steps if req.steps is not None else d.steps,
            guidance=req.guidance if req.guidance is not None else d.guidance,
            sampler=req.sampler or d.sampler or default_sampler(self.scheduler),
            fps=req.fps or d.fps,
            flow_schedule=req.flow_schedule or d.flow_schedule,
            spacing=req.spacing or d.spacing,  # type: ignore[arg-type]
        )
        if not isinstance(r.prompt, str):
            raise RequestError("prompt must be a string")
        if r.enhance_prompt is None:
            r.enhance_prompt = d.prompt_enhancer is not None
        if r.enhance_prompt:
            r = replace(r, raw_prompt=r.prompt, prompt=self.enhance(r.prompt, r), enhance_prompt=False)
        if r.video is not None and req.num_frames is None:
            r.num_frames = None  # taken from the source video in _prepare_v2v
        elif r.num_frames is None or (r.num_frames - 1) % self.frame_multiple or r.num_frames < 1:
            allowed = self.valid_frame_counts()
            raise RequestError(
                f"num_frames={r.num_frames} is not valid for {variant_name(self.config)}: use "
                f"{self.frame_multiple}N+1 frames, e.g. {allowed[:6]}"
            )
        m = self.spatial_multiple
        for name, v in (("height", r.height), ("width", r.width)):
            if v is None or v < m or v % m:
                raise RequestError(f"{name}={v} is not valid: use a positive multiple of {m} (e.g. {m * 6}, {m * 8})")
        c = self.config
        sh, sw = self.sample_size()
        if c.use_learned_positional_embeddings and (r.height, r.width) != (sh, sw):
            raise RequestError(
                f"{variant_name(c)} has learned position embeddings and only supports "
                f"{sh}x{sw} (height x width), got {r.height}x{r.width}"
            )
        if c.patch_size_t is not None and (r.height > sh or r.width > sw):
            raise RequestError(f"{r.height}x{r.width} exceeds this model's RoPE table ({sh}x{sw})")
        if r.dynamic_cfg_mode not in ("original", "diffusers"):
            raise RequestError(f"unknown dynamic_cfg_mode {r.dynamic_cfg_mode!r}: use original or diffusers")
        if r.flow_schedule not in ("linear_quadratic", "uniform", "shifted", "diffusers"):
            raise RequestError(
                f"unknown flow_schedule {r.flow_schedule!r}: use linear_quadratic, uniform, shifted or diffusers"
            )
        if r.steps < 1:
            raise RequestError(f"steps must be >= 1, got {r.steps}")
        if r.sampler not in ("ddim", "dpm", "euler"):
            raise RequestError(f"unknown sampler {r.sampler!r}: choose ddim, dpm or euler")
        flow = self.scheduler.kind == "flow"
        if flow != (r.sampler == "euler"):
            ok = "euler" if flow else "ddim or dpm"
            raise RequestError(
                f"sampler {r.sampler!r} does not fit this model's {self.scheduler.kind} schedule: use {ok}"
            )
        if r.image is not None and not self.is_i2v:
            raise RequestError(f"{variant_name(c)} is a text-to-video model: image conditioning needs an I2V model")
        if self.is_i2v and r.image is None:
            raise RequestError(f"{variant_name(c)} is an image-to-video model: pass an image")
        if r.video is not None and r.image is not None:
            raise RequestError("pass either image (I2V) or video (V2V), not both")
        if not 0.0 < r.strength <= 1.0:
            raise RequestError(f"strength must be in (0, 1], got {r.strength}")
        if r.spacing not in ("scheduler", "log_snr"):
            raise RequestError(f"unknown spacing {r.spacing!r}: choose scheduler or log_snr")
        if flow and r.spacing == "log_snr":
            raise RequestError("spacing 'log_snr' is for ddim/dpm; this flow model samples on its flow schedule")
        if self._text is None:
            raise RequestError("this pipeline was loaded without a text encoder")
        return r

    # ----------------------------------------------------------------- the run
    @torch.inference_mode()
    def generate(
        self, request: GenerateRequest | None = None, *, progress: Progress | None = None, **kwargs: Any
    ) -> Video:
        req = request if request is not None else GenerateRequest.from_kwargs(**kwargs)
        if request is not None and kwargs:
            req = replace(req, **kwargs)
        r = self.resolve(req)
        t0 = time.perf_counter()
        latents = self.generate_latents(r, progress=progress)  # (B, T, C, h, w)
        video = self.decode(latents)
        self.last_stats = GenerationStats(
            seconds=time.perf_counter() - t0,
            steps=int(r.steps or 0),
            peak_rss_mb=peak_rss_mb(),
            latent_shape=tuple(latents.shape),
        )
        return Video.from_tensor(video, fps=float(r.fps or 8.0))

    def encode_prompts(self, prompt: str, negative: str, cfg: bool) -> torch.Tensor:
        """-> (B', L, D): [negative; positive] with CFG, as the reference concatenates them."""
        assert self._text is not None
        pos = self._text.encode([prompt])
        if not cfg:
            return pos
        return torch.cat([self._text.encode([negative]), pos], dim=0)

    def _pad_frames(self, latent_frames: int) -> int:
        """CogVideoX 1.5: latent frames padded up to a multiple of patch_size_t (reference §5.1 step 3)."""
        pt = self.config.patch_size_t
        return (pt - latent_frames % pt) if pt and latent_frames % pt else 0

    def prepare_sampling(self, r: GenerateRequest, strength: float = 1.0) -> tuple[torch.Generator, torch.Tensor, Plan]:
        """What every run of a resolved request starts from: the seeded CPU generator (noise is drawn on the CPU,
        as the reference), the prompt embeddings (B', L, D) ([negative; positive] with CFG) and the sampling plan."""
        generator = torch.Generator("cpu").manual_seed(int(r.seed))
        embeds = self.encode_prompts(r.prompt, r.negative_prompt, _uses_cfg(r))  # (B', L, D)
        spec = SamplerSpec(
            kind=r.sampler,  # type: ignore[arg-type]
            num_steps=int(r.steps),
            flow_schedule=r.flow_schedule,  # type: ignore[arg-type]
            spacing=r.spacing,  # type: ignore[arg-type]
        )
        return generator, embeds, make_plan(spec, self.scheduler, strength=strength)

    def generate_latents(
        self, r: GenerateRequest, progress: Progress | None = None, history: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Denoised latents (B, T, C, h, w) with the 1.5 padding frames dropped, before decoding (tests, UI).

        `history` (1, k, C, h, w), text-to-video only: clean scaled latents that stand in for the first k latent
        frames before every model call and in the result, so the rest is generated from them and the caption
        (two-stage sampling: a still first, then the clip from it; what `objective.history_prob` trains).
        """
        if history is not None and (r.video is not None or self.is_i2v):
            raise RequestError("history latents are for text-to-video requests only")
        device, c = self.device, self.config
        generator, embeds, plan = self.prepare_sampling(r, strength=r.strength if r.video is not None else 1.0)
        cfg = _uses_cfg(r)  # embeds are [negative; positive]
        dtype = embeds.dtype

        image_latents: torch.Tensor | None = None
        if r.video is not None:
            latents = self._prepare_v2v(r, plan, generator, dtype)
            extra = 0
        else:
            num_frames = int(r.num_frames)  # type: ignore[arg-type]
            t_lat = (num_frames - 1) // self.vae_temporal + 1
            extra = self._pad_frames(t_lat)
            channels = c.in_channels // 2 if self.is_i2v else c.in_channels
            if self.is_i2v:
                image_latents = self._image_latents(r, t_lat + extra, generator, dtype)  # (B, T, C, h, w)
            latents = self.initial_noise(r, t_lat + extra, generator, dtype, channels)  # (1, T, C, h, w)

        image_in = None
        if image_latents is not None:
            image_in = torch.cat([image_latents] * 2) if cfg else image_latents
        denoise = self.guided_predictor(r, embeds, len(plan.timesteps), image_in=image_in)
        if history is None:
            return sample(denoise, latents, plan, generator=generator, callback=progress)[:, extra:]
        given = _with_history(history.to(device=device, dtype=dtype), extra, tuple(latents.shape))
        latents = sample(lambda x, t, i: denoise(given(x), t, i), latents, plan, generator=generator, callback=progress)
        return given(latents)[:, extra:]

    def initial_noise(
        self, r: GenerateRequest, latent_frames: int, generator: torch.Generator, dtype: torch.dtype, channels: int = 0
    ) -> torch.Tensor:
        """The start latents (1, latent_frames, C, h, w) of a request (C = `channels` or the transformer's input
        channels): drawn from the CPU `generator` in (B, T, C, h, w) order, as the reference, then moved to the
        device. `generate_latents` and the long-video sampler draw their noise here, so their seeds agree."""
        h, w = int(r.height) // self.vae_spatial, int(r.width) // self.vae_spatial  # type: ignore[arg-type]
        shape = (1, latent_frames, channels or self.config.in_channels, h, w)
        return torch.randn(shape, generator=generator, dtype=dtype).to(self.device)

    def guided_predictor(
        self, r: GenerateRequest, embeds: torch.Tensor, num_steps: int, image_in: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
        """(latents, t, step index) -> the guided model output in fp32, as the reference loop computes it.

        With CFG the batch is [uncond; cond] (embeds ordered the same way); I2V appends the image latents on the
        channel axis (noise channels first); 1.5-I2V passes ofs = 2.0; dynamic CFG follows `r.dynamic_cfg_mode`.
        """
        device, dtype = self.device, embeds.dtype
        guidance, cfg = float(r.guidance or 0.0), _uses_cfg(r)
        ofs = torch.full((1,), 2.0, device=device, dtype=dtype) if self.config.ofs_embed_dim else None

        def predict(x: torch.Tensor, t: torch.Tensor, i: int) -> torch.Tensor:
            x_in = torch.cat([x] * 2) if cfg else x  # (B', T, C, h, w)
            if image_in is not None:
                x_in = torch.cat([x_in, image_in], dim=2)  # noise channels first, image second
            t_b = t.to(device).expand(x_in.shape[0])
            out = self.transformer(x_in, embeds, t_b, ofs=ofs).float()
            if not cfg:
                return out
            scale = guidance_scale_at(guidance, i, t, num_steps, r.dynamic_cfg, r.dynamic_cfg_mode)
            return cfg_batched(out, scale)  # [uncond; cond] -> uncond + scale * (cond - uncond)

        return predict

    def decode(self, latents: torch.Tensor, temporal_tiling: TemporalTiling | None = None) -> torch.Tensor:
        """(B, T, C, h, w) scaled latents -> (B, 3, F, H, W) video in [-1, 1] (the VAE casts to its dtype)."""
        z = latents.permute(0, 2, 1, 3, 4)  # (B, C, T, h, w)
        return self.vae.decode(self.vae.unscale(z), temporal_tiling=temporal_tiling)

    # ----------------------------------------------------------------- conditioning inputs
    def _to_pixels(self, frames: np.ndarray, height: int, width: int) -> torch.Tensor:
        """uint8 (F, H0, W0, 3) -> (1, 3, F, H, W) in [-1, 1]; aspect-preserving resize + centre crop if needed."""
        if frames.shape[1:3] != (height, width):
            out = []
            for f in frames:
                img = Image.fromarray(f)
                s = max(height / img.height, width / img.width)
                rw, rh = max(width, math.ceil(img.width * s)), max(height, math.ceil(img.height * s))
                img = img.resize((rw, rh), Image.Resampling.LANCZOS)
                left, top = (rw - width) // 2, (rh - height) // 2
                out.append(np.asarray(img.crop((left, top, left + width, top + height))))
            frames = np.stack(out)
        return frames_to_tensor(frames).unsqueeze(0)  # (1, 3, F, H, W)

    def _image_latents(
        self, r: GenerateRequest, t_total: int, generator: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        """I2V conditioning: the image's posterior sample, scaled, then zero frames: (1, T, C, h, w)."""
        img = r.image
        if isinstance(img, (str, Path)):
            if not Path(img).is_file():
                raise RequestError(f"image not found: {img}")
            img = np.asarray(Image.open(img).convert("RGB"))
        elif isinstance(img, Image.Image):
            img = np.asarray(img.convert("RGB"))
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise RequestError(f"image must be RGB (H, W, 3), got shape {img.shape}")
        x = self._to_pixels(img[None], int(r.height), int(r.width))  # (1, 3, 1, H, W)
        x = x.to(self.device, dtype)  # in the prompt dtype first, as the reference; the VAE casts to its own
        z = self.vae.sample_posterior(x, generator=generator)  # (1, C, 1, h, w)
        z = self.vae.scale_image_latents(z.to(dtype)).permute(0, 2, 1, 3, 4)  # (1, 1, C, h, w)
        # the reference pads to the 1.5-padded length first (image latent at index 0, which 1.5 drops after
        # denoising together with the padding), then prefixes z[:, : T % pt] (a no-op once T is padded)
        pad = torch.zeros((1, t_total - 1, *z.shape[2:]), device=z.device, dtype=dtype)
        z = torch.cat([z, pad], dim=1)  # (1, T, C, h, w)
        pt = self.config.patch_size_t
        if pt:
            z = torch.cat([z[:, : z.shape[1] % pt], z], dim=1)
        if z.shape[1] != t_total:
            raise RequestError(f"I2V latent length {z.shape[1]} != {t_total}; use a valid frame count")
        return z

    def _prepare_v2v(
        self, r: GenerateRequest, plan: Plan, generator: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        src = r.video
        if isinstance(src, (str, Path)):
            src = read_video(src)
        frames = src.frames if isinstance(src, Video) else np.asarray(src)
        if r.num_frames is not None:
            if frames.shape[0] < r.num_frames:
                raise RequestError(f"source video has {frames.shape[0]} frames, fewer than num_frames={r.num_frames}")
            frames = frames[: r.num_frames]
        n = frames.shape[0]
        if (n - 1) % self.frame_multiple:
            k = (n - 1) // self.frame_multiple * self.frame_multiple + 1
            if k < 1 + self.frame_multiple:
                raise RequestError(f"source video has {n} frames; V2V needs at least {1 + self.frame_multiple}")
            frames = frames[:k]  # trim to the longest valid length
        x = self._to_pixels(frames, int(r.height), int(r.width)).to(self.device, dtype)  # (1, 3, F, H, W)
        z = self.vae.sample_posterior(x, generator=generator)  # (1, C, T, h, w)
        z = self.vae.scale(z.to(dtype)).permute(0, 2, 1, 3, 4)  # (1, T, C, h, w)
        noise = torch.randn(tuple(z.shape), generator=generator, dtype=dtype).to(self.device)
        return noise_latents(z, noise, plan).to(dtype)


def _with_history(history: torch.Tensor, offset: int, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (B, T, C, h, w) -> x with frames [offset, offset + k) replaced by `history` (1, k, C, h, w)."""
    if history.dim() != 5 or history.shape[0] != 1 or history.shape[2:] != torch.Size(shape[2:]):
        raise RequestError(f"history latents of shape {tuple(history.shape)} do not fit latents of shape {shape}")
    k = history.shape[1]
    if not 0 < k < shape[1] - offset:
        raise RequestError(f"history of {k} latent frames leaves nothing to generate in {shape[1] - offset}")

    def given(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :offset], history.to(x.dtype), x[:, offset + k :]], dim=1)

    return given


def _read_defaults(root: Path) -> PipelineDefaults | None:
    raw = read_generation_defaults(root)
    if not raw:
        return None
    known = {f.name for f in fields(PipelineDefaults)} - {"extra"}
    return PipelineDefaults(**{k: v for k, v in raw.items() if k in known}, extra=raw)


def load_pipeline(
    path: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
) -> Pipeline:
    """Load a diffusers-layout CogVideoX folder (None = the shipped default model) into a `Pipeline`."""
    root = Path(path) if path is not None else DEFAULT_MODEL
    if isinstance(dtype, str):
        dtype = parse_dtype(dtype)
    bundle = load_model_folder(root, device=device, dtype=dtype)
    return Pipeline(bundle, _read_defaults(root))


def parse_dtype(name: str) -> torch.dtype | None:
    table = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
    }
    table |= {"fp16": torch.float16, "float16": torch.float16, "auto": None}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}: use fp32, bf16, fp16 or auto")
    return table[name]
