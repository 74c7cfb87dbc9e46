"""How fast does a from-scratch Shapes transformer learn? A small paired bench for training-recipe ideas.

    .venv/bin/python scripts/learning_speed.py --arm default --out runs/speed/default.json
    .venv/bin/python scripts/learning_speed.py --arm scale --out runs/speed/scale.json   # one core each, side by side
    .venv/bin/python scripts/learning_speed.py --compare runs/speed/default.json runs/speed/scale.json

The model folder's VAE and text encoder (default: round 5, `runs/shapes-dit-parse/model`) encode `--clips` fresh
Shapes-world clips (square, 17 frames; seed 0) for training and `--eval-clips` 64 (seed 777, held-out compositions
allowed) for evaluation, once, into `--cache`. A transformer of the folder's architecture is then trained from
scratch on them (plain PyTorch loop: v-prediction, the folder's noise schedule, stratified timesteps, caption
dropout 0.1, AdamW, bf16 autocast), and every `--every` steps the x̂0 MSE on the evaluation clips is measured at
fixed noise levels (ᾱ = 0 ... 0.91, the same noise for every arm) *in the folder's latent units*, so arms that
rescale the latent compare directly. Arms (one difference each from `default`):

- `scale`: every latent channel divided by its RMS over the training clips (what `cinegen normalize-vae` folds
  into a VAE); `whiten`: mean and std per channel (not foldable exactly: the decoder zero-pads);
- `dit-init`: DiT's adaLN-Zero initialisation (`model.init=dit`); `sincos`: 3D sin-cos positions instead of RoPE;
- `stills-first`: the first `--stills-steps` steps train on stills, the first latent frame of each clip (the causal
  VAE encodes frame 0 alone, so it is exactly that frame's image latent), T stills per clip of the batch (the
  same number of video tokens per step), then clips as the other arms.

Every arm starts from the same seed, draws the same batches, timesteps and noise. The JSON log is rewritten at
each evaluation, so a cut loses nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

ARMS = ("default", "scale", "whiten", "dit-init", "sincos", "stills-first")
LEVELS = (0.0, 0.06, 0.22, 0.45, 0.66, 0.91)  # ᾱ of the evaluation (nearest timestep of the schedule)


def encode_clips(pipe, seed: int, n: int, held_out: bool) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Scaled latents (n, T, C, h, w) bf16 and caption embeddings (n, L, D) of n square 17-frame world clips."""
    from cinegen.world.captions import dense_caption
    from cinegen.world.dataset import clip_spec
    from cinegen.world.probe import _clip_latents
    from cinegen.world.render import render_clip

    xs, es = [], []
    with torch.no_grad():
        for i in range(n):
            spec, _ = clip_spec(seed, i, aspects=["square"], frame_counts=[17], include_held_out=held_out)
            xs.append(_clip_latents(pipe, render_clip(spec)).to(torch.bfloat16))
            es.append(pipe.encode_prompts(dense_caption(spec.truth()), "", False).float())
    return {"X": torch.cat(xs), "E": torch.cat(es)}


def x0_errors(model, XV, EV, noise, ac, levels: dict, std, chunk: int = 8) -> dict[str, float]:  # noqa: ANN001
    """Held-out x̂0 MSE (v-prediction) at fixed noise levels {ᾱ: timestep}, in latent units x `std`: the same
    clips `XV` (N, T, C, h, w), captions `EV` and `noise` for every arm."""
    model.eval()
    res = {}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for a_bar, t in levels.items():
            a = ac[t]
            err = []
            for i in range(0, len(XV), chunk):
                x0 = XV[i : i + chunk]
                xt = a.sqrt() * x0 + (1 - a).sqrt() * noise[i : i + chunk]
                v = model(xt, EV[i : i + chunk], torch.full((len(x0),), t)).float()
                err.append((((a.sqrt() * xt - (1 - a).sqrt() * v - x0) * std) ** 2).flatten(1).mean(1))
            res[str(a_bar)] = round(float(torch.cat(err).mean()), 5)
    model.train()
    return res


def train_step(model, opt, X, E, ac, g, n: int, first_frame: bool = False, aux=None, perturb=None) -> float:  # noqa: ANN001
    """One v-prediction step on n random clips of X (N, T, C, h, w) with captions E (N, L, D): stratified timesteps,
    caption dropout 0.1, bf16 autocast, clip 1.0. Draws (clips, timesteps, noise, dropout) come from `g` in a fixed
    order, so arms with the same `g` see the same batches. `first_frame`: train on each clip's first latent frame.
    `aux(idx)`: an extra loss term (e.g. from features a hook kept during the forward) for the clips `idx`, added
    to the v-loss; its parameters must be in `opt`. Returns the auxiliary loss (0 without one).
    `perturb(idx, x0, ᾱ, kept)`: the clean latents to noise for the model's input (`kept`: the caption was not
    dropped); the target stays the true x0 (v = (√ᾱ x_t - x0) / √(1 - ᾱ), the usual v when nothing is changed)."""
    idx = torch.randint(0, len(X), (n,), generator=g)
    x0, text = (X[idx, :1] if first_frame else X[idx]), E[idx].clone()  # (n, T or 1, C, h, w)
    t = torch.arange(n) * 1000 // n + torch.randint(0, max(1, 1000 // n), (n,), generator=g)  # stratified
    a = ac[t].view(n, 1, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=g)
    dropped = torch.rand(n, generator=g) < 0.1
    text[dropped] = 0.0  # caption dropout
    xt, target = a.sqrt() * x0 + (1 - a).sqrt() * noise, a.sqrt() * noise - (1 - a).sqrt() * x0
    if perturb is not None:
        xt = a.sqrt() * perturb(idx, x0, a, ~dropped) + (1 - a).sqrt() * noise
        target = (a.sqrt() * xt - x0) / (1 - a).sqrt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = model(xt, text, t)
    loss = ((v.float() - target) ** 2).mean()
    extra = aux(idx) if aux is not None else torch.zeros(())
    opt.zero_grad(set_to_none=True)
    (loss + extra).backward()
    torch.nn.utils.clip_grad_norm_([p for grp in opt.param_groups for p in grp["params"]], 1.0)
    opt.step()
    return float(extra.detach())


def compare(paths: list[str]) -> str:
    """Markdown table of several arms' logs: x̂0 MSE per noise level at each step they share, and each arm's
    change against the first arm (in %)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    by_step = [{e["step"]: e["x0_mse"] for e in r["log"]} for r in runs]
    steps = sorted(set.intersection(*(set(b) for b in by_step)))
    levels = list(by_step[0][steps[0]]) if steps else []
    rows = ["| step | arm | " + " | ".join(f"ᾱ {lv}" for lv in levels) + " |", "|---:|---|" + "---:|" * len(levels)]
    for step in steps:
        base = by_step[0][step]
        for r, b in zip(runs, by_step, strict=True):
            cells = [f"{b[step][lv]:.4f}" for lv in levels]
            if b is not by_step[0]:
                cells = [
                    f"{c} ({100 * (b[step][lv] / base[lv] - 1):+.0f} %)" for c, lv in zip(cells, levels, strict=True)
                ]
            rows.append(f"| {step} | {r['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", nargs="+", metavar="LOG", help="print the logs of several arms side by side, exit")
    ap.add_argument("--arm", choices=ARMS, default="default")
    ap.add_argument("--model", default="runs/shapes-dit-parse/model")
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--eval-clips", type=int, default=64)
    ap.add_argument("--cache", default="runs/speed/clips.pt")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--stills-steps", type=int, default=500, help="stills-first: steps on stills before clips")
    ap.add_argument("--out", help="JSON log of the run (required unless --compare)")
    args = ap.parse_args(argv)
    if args.compare:
        print(compare(args.compare))
        return
    if not args.out:
        ap.error("--out is required")

    from cinegen.models.latent_norm import channel_rms
    from cinegen.models.transformer import init_dit_weights
    from cinegen.pipeline import load_pipeline
    from cinegen.sampling.schedules import alphas_cumprod

    pipe = load_pipeline(args.model)
    cache = Path(args.cache)
    meta = {"model": str(Path(args.model).resolve()), "clips": args.clips}
    if args.eval_clips != 64:  # the default's caches (made before this option) carry no such key
        meta["eval_clips"] = args.eval_clips
    if not cache.is_file():
        cache.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "train": encode_clips(pipe, 0, args.clips, False),
            "eval": encode_clips(pipe, 777, args.eval_clips, True),
        }
        torch.save({**data, "meta": meta}, cache)
    data = torch.load(cache)
    if data.get("meta") != meta:
        raise SystemExit(f"{cache} holds {data.get('meta')}, not {meta}: pass another --cache")
    X, E = data["train"]["X"].float(), data["train"]["E"]  # (N, T, C, h, w), (N, L, D)
    XV, EV = data["eval"]["X"].float(), data["eval"]["E"]
    C = X.shape[2]
    mean, std = torch.zeros(1, 1, C, 1, 1), torch.ones(1, 1, C, 1, 1)
    if args.arm == "scale":
        std = channel_rms(X.transpose(1, 2)).view(1, 1, C, 1, 1)  # (N, C, T, h, w) -> (C,)
    elif args.arm == "whiten":
        mean, std = X.mean(dim=(0, 1, 3, 4), keepdim=True), X.std(dim=(0, 1, 3, 4), keepdim=True)
    X, XV = (X - mean) / std, (XV - mean) / std

    torch.manual_seed(0)
    cfg = pipe.transformer.config
    if args.arm == "sincos":
        cfg = dataclasses.replace(cfg, use_rotary_positional_embeddings=False)
    model = type(pipe.transformer)(cfg).float().train()
    if args.arm == "dit-init":
        init_dit_weights(model)
    ac = alphas_cumprod(pipe.scheduler).float()  # (1000,)
    levels = {a: int((ac - a).abs().argmin()) for a in LEVELS}
    eval_noise = torch.randn(XV.shape, generator=torch.Generator().manual_seed(123))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    g = torch.Generator().manual_seed(1)  # batches, timesteps, noise: the same draws for every arm
    B, log, t0 = args.batch, [], time.time()
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps:
            res = x0_errors(model, XV, EV, eval_noise, ac, levels, std)
            log.append({"step": step, "x0_mse": res, "seconds": round(time.time() - t0)})
            print(json.dumps(log[-1]), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"arm": args.arm, "levels": levels, "log": log}, indent=1) + "\n")
        if step == args.steps:
            break
        n = B * X.shape[1] if args.arm == "stills-first" and step < args.stills_steps else B
        train_step(model, opt, X, E, ac, g, n, first_frame=n != B)


if __name__ == "__main__":
    main()
