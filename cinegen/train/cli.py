"""`cinegen train`, `cinegen train-vae`, `cinegen plot` and `cinegen export-checkpoint` (registered into the main
CLI by `register_cli`).

    cinegen train CONFIG.yaml [key=value ...] [--dry-run]
    cinegen train-vae CONFIG.yaml [key=value ...] [--dry-run]
    cinegen plot RUN_DIR [-o loss.png]
    cinegen export-checkpoint RUN_DIR [--step N] [-o DIR] [--no-ema] [--vae DIR] [--defaults-from FOLDER]
    cinegen grow-transformer SRC OUT [--no-widen] [--add-blocks N] [--noise 0.01] [--seed 0]
    cinegen normalize-vae SRC OUT --manifest M [--n 64]   # unit-RMS latent channels, folded into the VAE

Multi-process: `torchrun --nproc_per_node N -m cinegen.train.cli train CONFIG.yaml parallel.strategy=ddp`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cinegen.train.config import ConfigError, TrainConfig, VAETrainConfig, load_config, to_yaml


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config YAML (see configs/)")
    # REMAINDER so `--dry-run` may also come after the overrides (argparse cannot intermix otherwise)
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="dot-list overrides, e.g. optim.lr=3e-4 train.steps=100")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")


def _run(args: argparse.Namespace, cls: type, fn_name: str) -> int:
    flags = [o for o in args.overrides if o.startswith("--")]
    args.overrides = [o for o in args.overrides if not o.startswith("--")]
    unknown = [f for f in flags if f != "--dry-run"]
    if unknown:
        print(f"error: unknown option {unknown[0]} (only --dry-run)", file=sys.stderr)
        return 2
    args.dry_run = args.dry_run or bool(flags)
    try:
        cfg = load_config(cls, args.config, args.overrides)
        if isinstance(cfg, TrainConfig):
            from cinegen.train.trainer import resolve_stages

            resolve_stages(cfg)  # stage steps must add up to train.steps
    except (ConfigError, ValueError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cinegen.train.checkpoint import NonFiniteLossError

    if fn_name == "train":
        from cinegen.train.trainer import train as fn
    else:
        from cinegen.train.vae_trainer import train_vae as fn
    try:
        result = fn(cfg)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"done: {result.step} steps; skipped clips: {result.skipped or 0}; export: {result.export}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    return _run(args, TrainConfig, "train")


def _cmd_train_vae(args: argparse.Namespace) -> int:
    return _run(args, VAETrainConfig, "train_vae")


def _cmd_plot(args: argparse.Namespace) -> int:
    from cinegen.train.plot import plot_run

    try:
        out = plot_run(args.run_dir, args.output)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from cinegen.train.trainer import export_checkpoint

    try:
        out = export_checkpoint(
            Path(args.run_dir),
            args.step,
            Path(args.output) if args.output else None,
            ema=not args.no_ema,
            vae=Path(args.vae) if args.vae else None,
            defaults_from=Path(args.defaults_from) if args.defaults_from else None,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _cmd_grow(args: argparse.Namespace) -> int:
    from cinegen.models.grow import grow_transformer_folder

    try:  # bad --noise / --add-blocks are ValueErrors of the growth functions
        out, cfg = grow_transformer_folder(
            args.src, args.out, widen=not args.no_widen, extra_blocks=args.add_blocks, noise=args.noise, seed=args.seed
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{out / 'transformer'}: width {cfg.inner_dim} ({cfg.num_attention_heads} heads x {cfg.attention_head_dim}), "
        f"{cfg.num_layers} blocks; train it with model.transformer_init={out} and model.transformer.num_layers="
        f"{cfg.num_layers} model.transformer.num_attention_heads={cfg.num_attention_heads}"
    )
    return 0


def _cmd_normalize_vae(args: argparse.Namespace) -> int:
    from cinegen.models.latent_norm import normalize_vae_folder
    from cinegen.train.progress import CountBar

    bar = CountBar("latents", unit="item")
    try:
        folder, stats = normalize_vae_folder(args.src, args.out, args.manifest, n=args.n, progress=bar)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rms = stats["rms_before"]
    print(
        f"{folder}: {len(rms)} channels folded to unit RMS (measured on {stats['items']} items: RMS "
        f"{min(rms):.3f}-{max(rms):.3f}); cached latents of the old VAE do not apply to it"
    )
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train the transformer (LoRA, full fine-tune, from scratch)")
    _add_run_args(p)
    p.set_defaults(func=_cmd_train)
    p = subparsers.add_parser("train-vae", help="train the 3D causal VAE")
    _add_run_args(p)
    p.set_defaults(func=_cmd_train_vae)
    p = subparsers.add_parser("plot", help="draw the loss curves of a training run to PNG")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default=None, help="PNG path (default RUN_DIR/loss.png)")
    p.set_defaults(func=_cmd_plot)
    p = subparsers.add_parser(
        "export-checkpoint",
        help="export a training checkpoint (latest or --step) as a model folder or LoRA file, as the run would",
    )
    p.add_argument("run_dir")
    p.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the latest)")
    p.add_argument("-o", "--output", default=None, help="output folder (default RUN_DIR/export-step_N)")
    p.add_argument("--no-ema", action="store_true", help="the raw weights, not the EMA")
    p.add_argument(
        "--vae", default=None, help="model or VAE folder to ship instead of the run's (same encoder: a decoder tune)"
    )
    p.add_argument(
        "--defaults-from",
        default=None,
        metavar="FOLDER",
        help="copy this model folder's generation defaults (_cinegen_defaults: steps, guidance, prompt enhancer)",
    )
    p.set_defaults(func=_cmd_export)
    p = subparsers.add_parser(
        "grow-transformer",
        help="a wider (2x) and/or deeper transformer computing the same function, as a warm start (Net2Net)",
    )
    p.add_argument("src", help="model folder or transformer component folder")
    p.add_argument("out", help="output folder (gets out/transformer/)")
    p.add_argument("--no-widen", action="store_true", help="keep the width (only add blocks)")
    p.add_argument("--add-blocks", type=int, default=0, help="identity blocks (zero gates) to insert")
    p.add_argument("--noise", type=float, default=0.01, help="symmetry-breaking noise, relative to each tensor's std")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_grow)
    p = subparsers.add_parser(
        "normalize-vae",
        help="rescale each latent channel to unit RMS inside the VAE's weights (exact; decoded videos unchanged)",
    )
    p.add_argument("src", help="model folder or VAE folder")
    p.add_argument("out", help="output folder (gets out/vae/)")
    p.add_argument("--manifest", required=True, help="clips/images to measure the latent RMS on")
    p.add_argument("--n", type=int, default=64, help="items of the manifest to measure (default 64)")
    p.set_defaults(func=_cmd_normalize_vae)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cinegen-train")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
