"""`cinegen eval shapes` (ShapesBench) and `cinegen world ...` (render the synthetic Shapes world).

Usage::

    cinegen eval shapes --model PATH [--limit N] [--repeats R] [--out DIR] [--steps N] [--prompt-style dense|short]
    cinegen eval shapes --oracle            # the analyzer on ground-truth renders (validation, no model)
    cinegen eval shapes --model PATH --vae-ceiling   # ground truth through the model's VAE (the ceiling)
    cinegen eval shapes --model PATH --vae-ceiling --latent-noise 0.1   # ... with noisy latents (robustness)
    cinegen eval shapes --model PATH --from-truth 0.4  # ground truth noised to 40 % of the schedule, denoised
    cinegen eval probe --model PATH [--n N] [--out FILE]   # does the model read its caption / object words?
    cinegen eval denoise --model A --model B [--label a --label b] [--out DIR]  # paired one-step x0 error per t
    cinegen world render --out DIR --num N --seed S [--aspects square,landscape] [--frames 9,17]
    cinegen world show "two red circles moving left on a gray background" -o clip.mp4
    cinegen world suite                     # list the ShapesBench prompts
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cinegen.train.progress import CountBar

__all__ = ["register_cli", "main"]


# ------------------------------------------------------------------------------------------- eval shapes
def _cmd_eval_shapes(args: argparse.Namespace) -> int:
    from cinegen.world.bench import oracle_generate, pipeline_generate, run_shapes_bench, vae_roundtrip_generate
    from cinegen.world.captions import ENHANCER_STYLES

    styles = (*ENHANCER_STYLES, "none")
    if args.prompt_enhancer not in (None, *styles):
        print(f"error: --prompt-enhancer {args.prompt_enhancer!r}: use one of {', '.join(styles)}", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"error: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        return 2
    if args.frames is not None and args.frames < 1:
        print(f"error: --frames must be >= 1, got {args.frames}", file=sys.stderr)
        return 2
    modes = [m for m, on in (("--oracle", args.oracle), ("--vae-ceiling", args.vae_ceiling)) if on]
    modes += ["--from-truth"] if args.from_truth is not None else []
    if args.latent_noise and not args.vae_ceiling:
        print("error: --latent-noise applies to --vae-ceiling only", file=sys.stderr)
        return 2
    if len(modes) > 1:
        print(f"error: {' and '.join(modes)} exclude each other", file=sys.stderr)
        return 2
    if args.oracle:
        generate, model_name = oracle_generate, "ground truth (oracle)"
    elif args.model is None:
        print("error: --model PATH is required (or --oracle to validate the analyzer)", file=sys.stderr)
        return 2
    else:
        from cinegen.pipeline import load_pipeline, parse_dtype

        pipe = load_pipeline(args.model, device=args.device, dtype=parse_dtype(args.dtype))
        flags = (("--steps", args.steps), ("--guidance", args.guidance), ("--prompt-enhancer", args.prompt_enhancer))
        unset = [f for f, v in flags if v is None]
        if unset and pipe.defaults_are_reference:
            d = pipe.defaults
            print(
                f"warning: {args.model} has no _cinegen_defaults (a checkpoint export?): sampling with {d.steps} "
                f"steps, CFG {d.guidance}, no prompt enhancer; give {', '.join(unset)} to match the model it is "
                "compared with",
                file=sys.stderr,
            )
        if args.prompt_enhancer is not None:  # e.g. a checkpoint export, which has no `_cinegen_defaults`
            style = None if args.prompt_enhancer == "none" else args.prompt_enhancer
            pipe.defaults = dataclasses.replace(pipe.defaults, prompt_enhancer=style)
        if args.from_truth is not None:
            from cinegen.sampling.loop import kept_steps

            try:  # before the bench starts: (0, 1] and at least one of the run's steps
                kept_steps(args.steps or pipe.defaults.steps, args.from_truth)
            except ValueError as e:
                print(f"error: --from-truth: {e}", file=sys.stderr)
                return 2
        model_name = str(args.model)
        kw = {
            k: v
            for k, v in (("steps", args.steps), ("guidance", args.guidance), ("spacing", args.spacing))
            if v is not None
        }
        if args.vae_ceiling:
            try:  # a negative --latent-noise is the ValueError of vae_roundtrip_generate
                generate = vae_roundtrip_generate(pipe.vae, args.latent_noise)
            except ValueError as e:
                print(f"error: --latent-noise: {e}", file=sys.stderr)
                return 2
            model_name = f"ground truth through the VAE of {args.model}"
            if args.latent_noise:
                model_name += f" with latent noise {args.latent_noise}"
        else:
            generate = pipeline_generate(pipe, args.from_truth, **kw)
            if args.from_truth is not None:
                model_name = f"{args.model} denoising ground truth noised to strength {args.from_truth}"

    out = Path(args.out)
    bar = CountBar("ShapesBench", open_now=True)
    result = run_shapes_bench(
        generate,
        out,
        limit=args.limit,
        prompt_style=args.prompt_style,
        model=model_name,
        save_videos=args.save_videos,
        repeats=args.repeats,
        frames=args.frames,
        progress=lambda i, n, item: bar(i, n),
    )
    bar(result["videos"], result["videos"])
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'samples.png'}")
    return 0


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    # `eval` may be shared with other subsystems: reuse its sub-command table if it exists already.
    if "eval" in subparsers.choices:
        ev = subparsers.choices["eval"]
        esub = getattr(ev, "_cinegen_subparsers", None)
        if esub is None:  # pragma: no cover - someone else owns `eval` without the shared table
            raise RuntimeError("`cinegen eval` is registered without a sub-command table")
    else:
        ev = subparsers.add_parser("eval", help="evaluate a model (ShapesBench)")
        esub = ev.add_subparsers(dest="eval_command", required=True)
        ev._cinegen_subparsers = esub  # type: ignore[attr-defined]
    p = esub.add_parser(
        "shapes",
        help="ShapesBench: generate the fixed Shapes-world suite and score colour/shape/count/motion/...",
        description="Generate every ShapesBench prompt with a model, analyze the videos and write "
        "results.json, results.md and samples.png.",
    )
    p.add_argument("--model", default=None, help="model folder (diffusers layout)")
    p.add_argument("--oracle", action="store_true", help="score ground-truth renders instead of a model")
    p.add_argument(
        "--vae-ceiling",
        action="store_true",
        help="score ground-truth renders passed through the model's VAE (the best any transformer over it can do)",
    )
    p.add_argument(
        "--latent-noise",
        type=float,
        default=0.0,
        metavar="STD",
        help="with --vae-ceiling: add Gaussian noise of this std (transformer latent units) before decoding: "
        "how robust the decoder is to a denoiser's small errors",
    )
    p.add_argument(
        "--from-truth",
        type=float,
        default=None,
        metavar="STRENGTH",
        help="noise each prompt's ground-truth render to this fraction of the schedule and let the model denoise it "
        "(video-to-video): which noise range loses an attribute (1.0 = from pure noise)",
    )
    p.add_argument("--limit", type=int, default=None, help="run only the first N prompts (held-out/seen interleaved)")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="R",
        help="sample every prompt R times with distinct fixed seeds (default 1): a decision between two models wants "
        "R >= 3 and the paired intervals of `cinegen eval compare`",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        metavar="N",
        help="sample N frames per prompt instead of the suite's; 1 = the model's still mode, scored on what one frame "
        "shows (colour, shape, size, count, background): per-frame skills apart from motion",
    )
    p.add_argument("--out", default="outputs/shapesbench", help="output folder")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument(
        "--spacing", choices=["scheduler", "log_snr"], default=None, help="ddim/dpm timesteps (default: the model's)"
    )
    p.add_argument("--prompt-style", choices=["dense", "short"], default="dense")
    p.add_argument(
        "--prompt-enhancer",
        default=None,
        metavar="STYLE",
        help="rewrite each prompt with this Shapes-world enhancer (`captions.ENHANCER_STYLES`, or none; default: the "
        "model's `_cinegen_defaults`): shapes-tokens for a model trained on token captions",
    )
    p.add_argument("--save-videos", action="store_true", help="also write every video as MP4 under OUT/videos")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto", help="auto | fp32 | bf16 | fp16")
    p.set_defaults(func=_cmd_eval_shapes)
    p = esub.add_parser(
        "compare",
        help="ShapesBench results side by side (held-out / seen per attribute, and the bar)",
        description="Read several ShapesBench results.json (or folders holding one) and print one Markdown table.",
    )
    p.add_argument("results", nargs="+", help="results.json files or ShapesBench output folders")
    p.add_argument(
        "--label", action="append", default=None, help="row label, once per result in order (default: the paths)"
    )
    p.add_argument("--attributes", default=None, help="comma-separated attributes (default: all)")
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    p.set_defaults(func=_cmd_eval_compare)
    p = esub.add_parser(
        "probe",
        help="text-conditioning probes: x0 error with the true caption vs the empty one / one word swapped",
        description="cinegen.world.probe.caption_use and attribute_use on fresh Shapes-world clips (v-prediction "
        "models): gain 0 = the words make no difference.",
    )
    p.add_argument("--model", required=True, help="model folder (diffusers layout)")
    p.add_argument("--n", type=int, default=24, help="clips (default 24)")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--out", default=None, help="write the full result as JSON here")
    p.add_argument(
        "--snrs",
        default="0.003,0.03",
        help="signal-to-noise ratios ᾱ/(1-ᾱ) of the object-word probe besides pure noise (default 0.003,0.03; "
        "shapes are drawn later, e.g. 0.3,3)",
    )
    p.add_argument(
        "--history",
        type=int,
        default=0,
        help="also probe the object words with the first K latent frames given clean (continuation)",
    )
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_eval_probe)
    p = esub.add_parser(
        "denoise",
        help="denoising profile: one-step x0 error per timestep on fresh clips, paired across models",
        description="cinegen.world.probe.denoise_profile for each --model on the same clips and noise (v-prediction "
        "models): latent x0 MSE, the first object's x0 MSE and decoded PSNR at fixed timesteps, fp32.",
    )
    p.add_argument("--model", action="append", required=True, help="model folder; repeat to compare")
    p.add_argument("--label", action="append", default=None, help="column label, once per --model")
    p.add_argument("--n", type=int, default=24, help="clips (default 24)")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--timesteps", default=None, help="comma-separated (default 10,40,100,200,400,700,999)")
    p.add_argument("--no-pixels", action="store_true", help="skip the decoded PSNR (no VAE decodes)")
    p.add_argument(
        "--against", action="append", default=None, help="an earlier run's results.json: its columns come first"
    )
    p.add_argument("--out", default=None, help="write results.json and results.md here")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cmd_eval_denoise)


def _cmd_eval_compare(args: argparse.Namespace) -> int:
    from cinegen.world.bench import compare_table

    paths = [Path(r) / "results.json" if Path(r).is_dir() else Path(r) for r in args.results]
    labels = args.label or [str(p.parent if p.name == "results.json" else p) for p in paths]
    try:
        results = [json.loads(p.read_text()) for p in paths]
        attrs = args.attributes.split(",") if args.attributes else None
        table = compare_table(results, labels, attrs)
    except FileNotFoundError as e:
        print(f"error: no ShapesBench results at {e.filename}", file=sys.stderr)
        return 2
    except (ValueError, KeyError) as e:  # bad JSON, other suites, label count, unknown attribute
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table)
    return 0


def _cmd_eval_denoise(args: argparse.Namespace) -> int:
    import torch

    from cinegen.pipeline import load_pipeline
    from cinegen.world import probe

    labels = args.label or list(args.model)
    if len(labels) != len(args.model):
        print(f"error: {len(labels)} --label for {len(args.model)} --model", file=sys.stderr)
        return 2
    try:
        timesteps = [int(t) for t in args.timesteps.split(",")] if args.timesteps else list(probe.PROFILE_TIMESTEPS)
    except ValueError:
        print(f"error: --timesteps must be comma-separated integers, got {args.timesteps!r}", file=sys.stderr)
        return 2
    results = []
    for path in args.against or []:  # earlier runs' columns (profile_table refuses them if not paired)
        try:
            results += [(d["label"], d) for d in json.loads(Path(path).read_text())]
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: --against {path}: not a results.json of eval denoise ({e})", file=sys.stderr)
            return 2
    for model, label in zip(args.model, labels, strict=True):
        pipe = load_pipeline(model, device=args.device, dtype=torch.float32)
        bar = CountBar(f"denoise {label}", unit="pass")
        try:
            r = probe.denoise_profile(
                pipe, n=args.n, seed=args.seed, timesteps=timesteps, pixels=not args.no_pixels, progress=bar
            )
        except ValueError as e:  # a flow-matching model, a timestep out of range
            print(f"error: {model}: {e}", file=sys.stderr)
            return 2
        results.append((label, {"model": str(model), **r}))
    try:
        table = probe.profile_table(results)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps([{**r, "label": lab} for lab, r in results], indent=1))
        (out / "results.md").write_text(f"# Denoising profile ({args.n} clips, seed {args.seed})\n\n" + table)
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}")
    return 0


def _cmd_eval_probe(args: argparse.Namespace) -> int:
    import torch

    from cinegen.pipeline import load_pipeline
    from cinegen.world import probe

    try:
        snrs = tuple(float(v) for v in args.snrs.split(","))
    except ValueError:
        print(f"error: --snrs must be comma-separated numbers, got {args.snrs!r}", file=sys.stderr)
        return 2
    if any(not v > 0 for v in snrs):
        print(f"error: --snrs must be positive, got {args.snrs!r}", file=sys.stderr)
        return 2
    pipe = load_pipeline(args.model, device=args.device, dtype=torch.float32)
    try:
        result = {
            "model": str(args.model),
            "caption_use": probe.caption_use(pipe, n=args.n, seed=args.seed),
            "attribute_use": probe.attribute_use(pipe, n=args.n, seed=args.seed, snrs=snrs),
        }
        if args.history:  # continuation: the first latent frames given clean
            result["attribute_use_history"] = probe.attribute_use(
                pipe, n=args.n, seed=args.seed, snrs=snrs, history=args.history
            )
    except ValueError as e:  # a flow-matching model
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    gains = {f"caption/{k}": v for k, v in result["caption_use"]["gain"].items()} | result["attribute_use"]["gain"]
    gains |= {f"history/{k}": v for k, v in result.get("attribute_use_history", {}).get("gain", {}).items()}
    for k, v in gains.items():
        print(f"{k:<28} {v:+.4f}")
    return 0


# ------------------------------------------------------------------------------------------------- world
def _cmd_world_render(args: argparse.Namespace) -> int:
    from cinegen.world import vocab as V
    from cinegen.world.dataset import export_dataset

    aspects = [a.strip() for a in args.aspects.split(",") if a.strip()]
    frames = [int(f) for f in args.frames.split(",") if f.strip()]
    manifest = export_dataset(
        args.out,
        args.num,
        args.seed,
        aspects=aspects,
        frame_counts=frames,
        max_objects=args.max_objects,
        include_held_out=args.include_held_out,
        camera_prob=args.camera_prob,
        crf=args.crf,
        masks=not args.no_masks,
        layout=args.layout_captions,
        tokens=args.token_captions,
        snap=V.TOKEN_PX if args.snap_starts else None,
        progress=CountBar("rendering", open_now=True),
    )
    print(f"wrote {args.num} clips and {manifest}")
    return 0


def _cmd_world_show(args: argparse.Namespace) -> int:
    from cinegen.video import Video
    from cinegen.world.bench import oracle_generate
    from cinegen.world.captions import enhance_prompt

    try:
        frames = oracle_generate(args.prompt, args.frames, args.height, args.width, args.seed)
    except ValueError as e:  # no shape named, too many objects, or no room for them
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Video(frames, 8.0).save(args.output)
    print(f"{enhance_prompt(args.prompt)}\nwrote {out}")
    return 0


def _cmd_world_suite(args: argparse.Namespace) -> int:
    from cinegen.world.bench import default_suite

    suite = default_suite()
    if args.json:
        rows = [
            {
                "id": it.id,
                "held_out": it.held_out,
                "prompt": it.prompt(),
                "short_prompt": it.prompt("short"),
                "num_frames": it.num_frames,
                "height": it.height,
                "width": it.width,
                "seed": it.seed,
                "truth": it.truth.to_dict(),
            }
            for it in suite
        ]
        print(json.dumps(rows, indent=1))
        return 0
    for it in suite:
        tag = "HO  " if it.held_out else "seen"
        print(f"{it.id:<40} {tag} {it.num_frames}x{it.height}x{it.width} seed {it.seed}: {it.prompt()}")
    return 0


def _add_world(subparsers: argparse._SubParsersAction) -> None:
    w = subparsers.add_parser("world", help="the synthetic Shapes world: render data sets, preview prompts")
    wsub = w.add_subparsers(dest="world_command", required=True)
    p = wsub.add_parser("render", help="export a captioned training set (MP4 clips + manifest.jsonl)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num", type=int, required=True, help="number of clips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aspects", default="square,landscape,portrait", help="comma list of square/landscape/portrait")
    p.add_argument("--frames", default="9,17,33", help="comma list of frame counts")
    p.add_argument("--max-objects", type=int, default=3)
    p.add_argument("--camera-prob", type=float, default=0.25, help="fraction of clips with a moving camera")
    p.add_argument("--include-held-out", action="store_true", help="also draw held-out compositions (not for training)")
    p.add_argument("--crf", type=int, default=10, help="H.264 quality (lower = closer to lossless)")
    p.add_argument("--no-masks", action="store_true", help="do not write the object masks (masks/*.npz)")
    p.add_argument(
        "--layout-captions",
        action="store_true",
        help='captions name each object\'s start cell ("a red circle in the top left ...")',
    )
    p.add_argument(
        "--token-captions",
        action="store_true",
        help='captions name each object\'s start cell and 8-pixel token ("a red circle in the top left at c3 r2 ...")',
    )
    p.add_argument(
        "--snap-starts",
        action="store_true",
        help="start every object on an 8-pixel token corner on screen, so token captions say exactly where it starts",
    )
    p.set_defaults(func=_cmd_world_render)
    p = wsub.add_parser("show", help="render the ground truth of one prompt")
    p.add_argument("prompt")
    p.add_argument("-o", "--output", default="outputs/world.mp4", help=".mp4, .gif or .png (contact sheet)")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_world_show)
    p = wsub.add_parser("suite", help="list the ShapesBench prompts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_world_suite)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `eval shapes` and `world {render,show,suite}` to the `cinegen` command."""
    _add_eval(subparsers)
    _add_world(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cinegen-world")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
