"""`cinegen` command line: generate, info, bench, and the subsystems' own commands (data, train, eval, serve)."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]

# Subsystems that add their own subcommands through `register_cli(subparsers)`.
_SUBSYSTEMS = (
    "cinegen.data.cli",
    "cinegen.world.cli",
    "cinegen.train.cli",
    "cinegen.app.cli",
    "cinegen.bench.cli",
)


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="text/image/video to video with a CogVideoX-family model folder")
    p.add_argument("prompt", help="what the video should show")
    p.add_argument("--model", default=None, help="model folder (diffusers layout); default: the shipped model")
    p.add_argument(
        "-o",
        "--output",
        default="outputs/video.mp4",
        help="output .mp4 (a .png contact sheet is written beside it) or .gif",
    )
    p.add_argument("--frames", type=int, default=None, help="number of frames (8N+1; 16N+1 for CogVideoX 1.5)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--dynamic-cfg", action="store_true", help="CogVideoX dynamic CFG (cosine ramp on the step index)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--sampler", choices=["ddim", "dpm", "euler"], default=None)
    p.add_argument(
        "--spacing",
        choices=["scheduler", "log_snr"],
        default=None,
        help="ddim/dpm timesteps: the scheduler's list (the reference) or uniform in log-SNR (default: the model's)",
    )
    p.add_argument("--image", default=None, help="conditioning image (I2V models)")
    p.add_argument("--video", default=None, help="source video (video-to-video)")
    p.add_argument("--strength", type=float, default=0.8, help="video-to-video: how much of the schedule is re-run")
    p.add_argument("--fps", type=float, default=None)
    p.add_argument(
        "--enhance-prompt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite the prompt into the model's training-caption style (default: the model's setting)",
    )
    p.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    p.add_argument("--vae-tiling", action="store_true", help="decode in overlapping spatial tiles (less memory)")
    p.add_argument(
        "--long",
        action="store_true",
        help="longer than the model's native clip: overlapping windows blended at every step (--frames = total, 4k+1)",
    )
    p.add_argument("--long-overlap", type=int, default=None, help="long video: latent frames shared by neighbours")
    p.add_argument("--lora", default=None, help="LoRA weights (PEFT/diffusers format) merged into the transformer")
    p.add_argument("--lora-scale", type=float, default=1.0)
    p.set_defaults(func=_cmd_generate)


def default_device(name: str | None) -> str:
    """`--device`: the given name, else cuda if available, else cpu (`generate` and `serve`)."""
    import torch

    if name:
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def _tiny_random_model(folder: Path) -> Path:
    """A tiny random CogVideoX-2b-like folder: lets the whole path run before a trained model exists."""
    from cinegen.models.io import save_model_folder
    from cinegen.models.presets import build_bundle

    if not (folder / "model_index.json").is_file():
        defaults = {"num_frames": 17, "height": 96, "width": 96, "steps": 8, "guidance": 6.0}
        save_model_folder(build_bundle("tiny-cogvideox-2b", seed=0), folder, defaults=defaults)
    return folder


def _cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cinegen.pipeline import DEFAULT_MODEL, GenerateRequest, load_pipeline, parse_dtype

    out = Path(args.output)
    if out.suffix.lower() not in (".mp4", ".gif"):
        print(f"error: --output must end in .mp4 or .gif, got {out}", file=sys.stderr)
        return 2
    model = Path(args.model) if args.model else DEFAULT_MODEL
    if args.model is None:
        if (model / "model_index.json").is_file():
            print(f"using the default model {model}")
        else:
            model = _tiny_random_model(out.parent / "tiny-random-model")
            print(
                f"NOTE: the default model is not complete in this checkout ({DEFAULT_MODEL / 'model_index.json'} is "
                "missing: its transformer is not committed yet); "
                f"generating with a tiny RANDOM model from {model} (the output is noise, not your prompt)"
            )
    pipe = load_pipeline(model, device=default_device(args.device), dtype=parse_dtype(args.dtype))
    if args.vae_tiling:
        pipe.vae.enable_tiling()
    req = GenerateRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        sampler=args.sampler,
        spacing=args.spacing,
        image=args.image,
        video=args.video,
        strength=args.strength,
        dynamic_cfg=args.dynamic_cfg,
        fps=args.fps,
        enhance_prompt=args.enhance_prompt,
    )
    long_spec = None
    if args.long:
        from cinegen.longvideo import LongVideoSpec, plan_long

        long_spec = LongVideoSpec(overlap=args.long_overlap)
        r, _ = plan_long(pipe, req, long_spec)  # validates before any compute
    else:
        r = pipe.resolve(req)  # validate before any compute
    if r.raw_prompt is not None and r.raw_prompt != r.prompt:
        print(f"prompt enhanced: {r.prompt!r}")
    if args.lora:
        from cinegen.train.lora import merge_lora

        merge_lora(pipe.transformer, args.lora, args.lora_scale)
        print(f"merged LoRA {args.lora} (scale {args.lora_scale:g})")
    bar = tqdm(total=None, desc="denoising", unit="step")

    def progress(i: int, n: int) -> None:
        bar.total = n
        bar.update(1)

    if long_spec is not None:
        from cinegen.longvideo import generate_long

        video = generate_long(pipe, r, long_spec, progress=progress)
    else:
        video = pipe.generate(r, progress=progress)
    bar.close()
    video.save(out)
    sheet = video.save(out.with_suffix(".png"), label=args.prompt)
    s = pipe.last_stats
    print(
        f"wrote {out} and {sheet}: {video.num_frames} frames {video.width}x{video.height} @ {video.fps:g} fps, "
        f"{s.steps} steps ({r.sampler}), {s.seconds:.1f} s, peak RSS {s.peak_rss_mb:.0f} MiB, seed {r.seed}"
    )
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="components, sizes, dtypes and valid shapes of a model folder")
    p.add_argument("path", nargs="?", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)


def _cmd_info(args: argparse.Namespace) -> int:
    from cinegen.pipeline import load_pipeline

    info = load_pipeline(args.path, device="cpu").info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['variant']}  ({info['root']})")
    for name, comp in info["components"].items():
        if isinstance(comp, dict):
            print(f"  {name:<13} {comp['params'] / 1e6:10.2f} M params  {comp['dtype']}")
        else:
            print(f"  {name:<13} {comp}")
    print(f"  modes: {', '.join(info['modes'])}")
    print(f"  frames: {info['valid_frame_counts'][:8]} ...  (N*{info['valid_frame_counts'][0] - 1}+1)")
    print(f"  height/width: multiples of {info['resolution_multiple']}", end="")
    if "fixed_resolution" in info:
        print(f", fixed at {info['fixed_resolution'][0]}x{info['fixed_resolution'][1]}", end="")
    if "max_resolution" in info:
        print(f", at most {info['max_resolution'][0]}x{info['max_resolution'][1]}", end="")
    print()
    print(f"  defaults: {info['defaults']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cinegen", description="cinegen: open text-to-video (CogVideoX family)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    _add_info(sub)
    for mod_name in _SUBSYSTEMS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as e:
            if e.name != mod_name:
                raise
            continue
        mod.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from cinegen.models.io import ModelFolderError
    from cinegen.pipeline import RequestError

    try:
        return int(args.func(args) or 0)
    except (ModelFolderError, RequestError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
