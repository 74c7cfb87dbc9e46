"""Can the Shapes transformer tie a caption word to a shape? A six-still toy for the text pathway.

    .venv/bin/python scripts/shape_word_toy.py --text random --out runs/toy/random    # one core each
    .venv/bin/python scripts/shape_word_toy.py --text t5 --out runs/toy/t5
    .venv/bin/python scripts/shape_word_toy.py --text t5-train --out runs/toy/t5-train

Six stills, one large red object in the centre of a plain white 96x96 frame, one per shape, in the PCA-8 space of
`layout_screen.py --space pca` (fitted on that screen's cached train stills, `--cache`). The default model's
transformer architecture learns them from scratch (`learning_speed.train_step`: v-prediction, batch 16, lr 3e-4,
same seeds for every mode); only the caption embeddings differ:

- `random`: an unrelated random 8-token sequence per still (every token says which still it is);
- `t5`: the layout captions ("One shape: A large red star in the center stays still. ...") through a fresh random,
  frozen T5 (the screen's recipe): the captions differ in one word, whose token alone carries the difference;
- `t5-train`: the same T5 trained with the transformer.

`--variants N --vary color|position|grid|jitter|size|background|count` makes the ladder between this toy and the
world: N stills per shape with a random colour, place, size, background and / or 0-2 more objects (`toy_specs`).
`--token-captions` captions them as the product's token captions ("... in the top left at c3 r2 ...").

`--space factored` trains in another code of the same stills: the object's coverage per 4x4 patch (PCA-8) plus the
object and background colours, multiplied only in a fixed decoder, so the transformer draws a colour-free shape
(solid backgrounds). `--space vae` trains in a VAE's latents of the stills (`--vae`: any VAE folder, default the
model's), each channel at unit RMS, decoded by that VAE: the screen of a learned code such as the coverage VAE of
`configs/shapes-vae-cover-img.yaml`. `--init W` starts from another run's weights (a curriculum). `--unsaid color
background` drops those words from every caption while the stills still vary in them.

`--patch P` and `--positions rope|sincos` change the transformer (patch size; 3D RoPE as the default model, or
added 3D sin-cos positions as CogVideoX 2B); everything else stays paired.

Every `--every` steps each caption is sampled `--samples` times (with variants: the first K stills of each shape;
20 DDIM steps, CFG 4) and scored by the ShapesBench analyzer (JSON lines in OUT.jsonl, a PNG strip OUT.STEP.png:
circle, square, triangle, star, ring, cross, K times; the weights in OUT.weights.pt). Those samples are of training
stills; `--eval-seed S` (no training) samples K fresh stills per shape drawn with seed S (other places and, with
`--vary color`, colours) with OUT.weights.pt and the same T5: does the toy generalise or only memorise?
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_screen as screen  # noqa: E402
from learning_speed import train_step  # noqa: E402

MODES = ("random", "t5", "t5-train")


VARY = ("color", "position", "grid", "jitter", "size", "background", "count")


def toy_specs(size: str = "large", variants: int = 1, vary: tuple[str, ...] = (), seed: int = 11) -> list[dict]:
    """`variants` stills per shape (shape-major order), one object on plain white, 96x96, one frame: red and centred,
    or, per `vary`, a random colour (of `vocab.COLORS`) and / or a random place: `position` anywhere with its centre in
    [0.25, 0.75]^2, `grid` there on whole 8-pixel steps from the centre (a patch-2 token of a 4x latent), `jitter`
    the centre moved by under 4 pixels. The rungs towards the world: `size` a random size, `background` a random
    solid background colour, `count` 0-2 more objects of random shapes (and colours with `color`) placed the same
    way without overlap. The first object of each still is the one of the shape it is listed under; options added
    later draw after the earlier ones, so the earlier rungs' stills stay as they were."""
    from cinegen.world.render import ClipSpec, ObjectSpec
    from cinegen.world.vocab import BACKGROUND_COLORS, COLORS, SHAPES, SIZES

    def place(rng: np.random.Generator) -> tuple[float, float]:
        if "position" in vary:  # anywhere in the middle half
            return tuple(rng.uniform(0.25, 0.75, 2))
        if "grid" in vary:  # the middle half, on whole 8-pixel steps from the centre (one token of patch 2)
            return tuple(0.5 + rng.integers(-3, 4, 2) * 8 / 96)
        if "jitter" in vary:  # the centre, shifted by less than a token
            return tuple(0.5 + rng.uniform(-4, 4, 2) / 96)
        return 0.5, 0.5

    def clear(o: ObjectSpec, objs: list[ObjectSpec]) -> bool:  # no overlap: centres beyond both outer radii
        return all(math.hypot(o.x - p.x, o.y - p.y) > 1.3 * (SIZES[o.size] + SIZES[p.size]) for p in objs)

    rng = np.random.default_rng(seed)
    out = []
    for s in SHAPES:
        for _ in range(variants):
            color = str(rng.choice(list(COLORS))) if "color" in vary else "red"
            x, y = place(rng)
            sz = str(rng.choice(list(SIZES))) if "size" in vary else size
            background = str(rng.choice(list(BACKGROUND_COLORS))) if "background" in vary else "white"
            objs = [ObjectSpec(s, color, sz, "still", None, float(x), float(y))]
            for _ in range(int(rng.integers(0, 3)) if "count" in vary else 0):
                c = str(rng.choice(list(COLORS))) if "color" in vary else "red"
                z = str(rng.choice(list(SIZES))) if "size" in vary else size
                shape = str(rng.choice(SHAPES))
                for _ in range(20):  # a free place, or no extra object
                    o = ObjectSpec(shape, c, z, "still", None, *(float(v) for v in place(rng)))
                    if clear(o, objs):
                        objs.append(o)
                        break
            out.append(ClipSpec(tuple(objs), width=96, height=96, num_frames=1, background=background).to_dict())
    return out


def token_cell_caption(spec: dict, token_px: int = 8) -> str:
    """A sentence naming the transformer token (a `token_px` square, row-major from the top left) that holds the
    object's centre: the exact place that a 3x3 layout cell leaves open, as words the T5 vocabulary gets."""
    from cinegen.world.vocab import token_of

    obj = spec["objects"][0]
    col, row = token_of(obj["x"] * spec["width"], obj["y"] * spec["height"], token_px)
    return f" Its centre is in column c{col} and row r{row}."


def unsay(caption: str, kinds: list[str]) -> str:
    """The caption without its words of these kinds (`color`: the object colours, `background`: the background
    colours): the stills still vary in them, but the caption no longer says how."""
    from cinegen.world.vocab import BACKGROUND_COLORS, COLORS

    words = {w for k in kinds for w in {"color": COLORS, "background": BACKGROUND_COLORS}[k]}
    return " ".join(w for w in caption.split() if w.strip(".,;:").lower() not in words)


MASK_K = 8  # --space factored: principal components of the 4x4 coverage patches


def factored_stills(specs: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`--space factored`: stills on solid backgrounds split into what the picture is made of: the objects'
    anti-aliased coverage per 4x4 patch, (N, 16, h, w) in [0, 1], and per patch the colour of the nearest object
    (by centre) and the background colour, (N, 6, h, w) in [-1, 1]; with the renders, (N, 3, H, W) in [-1, 1], to
    check that coverage x colours rebuilds them."""
    from cinegen.world.render import ClipSpec, render_clip_and_mask
    from cinegen.world.vocab import BACKGROUND_COLORS, COLORS

    f = screen.PIXEL_FACTOR
    masks, colours, renders = [], [], []
    for sd in specs:
        spec = ClipSpec.from_dict(sd)
        if spec.background_style != "solid":
            raise SystemExit("--space factored: solid backgrounds only")
        frames, mask = render_clip_and_mask(spec)  # (1, H, W, 3), (1, H, W) uint8
        m = torch.from_numpy(mask[:1].astype(np.float32) / 255)[None]  # (1, 1, H, W)
        masks.append(torch.nn.functional.pixel_unshuffle(m, f))  # (1, 16, h, w)
        h, w = spec.height // f, spec.width // f
        py, px = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")  # (h, w)
        dist = torch.stack([(px - o.x).square() + (py - o.y).square() for o in spec.objects])  # (n_obj, h, w)
        rgb = torch.tensor([COLORS[o.color] for o in spec.objects], dtype=torch.float32)  # (n_obj, 3)
        obj = rgb[dist.argmin(0)].permute(2, 0, 1)  # (3, h, w): the nearest object's colour
        bg = torch.tensor(BACKGROUND_COLORS[spec.background], dtype=torch.float32).view(3, 1, 1).expand(3, h, w)
        colours.append(torch.cat([obj, bg]) / 127.5 - 1)  # (6, h, w)
        renders.append(torch.from_numpy(frames[0].astype(np.float32) / 127.5 - 1).permute(2, 0, 1))  # (3, H, W)
    return torch.cat(masks), torch.stack(colours), torch.stack(renders)


def factored_latents(specs: list[dict]) -> tuple[torch.Tensor, dict]:
    """(X (N, 1, MASK_K + 6, h, w), fit): the coverage patches' top MASK_K principal components (fitted on these
    stills) and the two colour maps, each channel at unit RMS. The colours multiply the shape only in the fixed
    decoder (`unfactor`), so the transformer draws a colour-free coverage map: where a linear code of pixels
    (PCA-8) makes every edge a different vector for each colour pair, this code does not."""
    from cinegen.models.latent_norm import channel_rms

    masks, colours, _ = factored_stills(specs)
    fit = screen.patch_pca(masks.permute(0, 2, 3, 1).reshape(-1, masks.shape[1]), MASK_K)  # basis (K, 16)
    code = ((masks.permute(0, 2, 3, 1) - fit["mu"]) @ fit["basis"].T).permute(0, 3, 1, 2)  # (N, K, h, w)
    X = torch.cat([code, colours], 1)  # (N, K + 6, h, w)
    fit["scale"] = (1 / channel_rms(X).clamp_min(1e-6)).view(1, -1, 1, 1)  # (1, K + 6, 1, 1)
    return (X * fit["scale"])[:, None], fit


COLOUR_MEDIAN = 7  # `unfactor`: the colour maps' median filter, in patches (they are flat over whole regions)


def unfactor(x: torch.Tensor, fit: dict) -> torch.Tensor:
    """Inverse of `factored_latents` for a sample: (1, 1, K + 6, h, w) -> (1, 3, 1, H, W) in [-1, 1]; coverage
    clamped to [0, 1], the colour maps median-filtered over COLOUR_MEDIAN x COLOUR_MEDIAN patches."""
    x = x[:, 0] / fit["scale"]  # (1, K + 6, h, w)
    k, f, r = fit["basis"].shape[0], screen.PIXEL_FACTOR, COLOUR_MEDIAN
    m = (x[:, :k].permute(0, 2, 3, 1) @ fit["basis"] + fit["mu"]).permute(0, 3, 1, 2).clamp(0, 1)  # (1, 16, h, w)
    m = torch.nn.functional.pixel_shuffle(m, f)  # (1, 1, H, W)
    c = torch.nn.functional.pad(x[:, k:], (r // 2,) * 4, mode="replicate")  # (1, 6, h + r - 1, w + r - 1)
    c = c.unfold(2, r, 1).unfold(3, r, 1).flatten(-2).median(-1).values  # (1, 6, h, w)
    obj, bg = torch.nn.functional.interpolate(c, scale_factor=f).split(3, dim=1)  # (1, 3, H, W) each
    return (m * obj + (1 - m) * bg)[:, :, None].clamp(-1, 1)


def vae_latents(pipe, specs: list[dict]) -> tuple[torch.Tensor, dict]:  # noqa: ANN001
    """`--space vae`: (X (N, 1, C, h, w), fit) the pipeline VAE's scaled latents of the stills, each channel at
    unit RMS (fit["scale"] (1, C, 1, 1), as `cinegen normalize-vae` would)."""
    from cinegen.models.latent_norm import channel_rms

    X = screen.vae_stills(pipe, specs).float()  # (N, 1, C, h, w)
    scale = (1 / channel_rms(X[:, 0]).clamp_min(1e-6)).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return X * scale, {"scale": scale}


def unvae(x: torch.Tensor, pipe, fit: dict) -> torch.Tensor:  # noqa: ANN001
    """Inverse of `vae_latents` for a sample: (1, 1, C, h, w) -> (1, 3, 1, H, W) in [-1, 1], the VAE's decode."""
    return pipe.decode(x / fit["scale"]).float().clamp(-1, 1)


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    from cinegen.pipeline import load_pipeline
    from cinegen.sampling.schedules import alphas_cumprod
    from cinegen.world.captions import dense_caption
    from cinegen.world.render import ClipSpec

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", choices=MODES, default="t5")
    ap.add_argument("--model", default="models/cinegen-shapes", help="folder whose schedule and architecture")
    ap.add_argument("--cache", default="runs/layout/stills.pt", help="layout_screen.py's stills cache (PCA fit)")
    ap.add_argument("--size", choices=("small", "large"), default="large")
    ap.add_argument("--variants", type=int, default=1, help="stills per shape")
    ap.add_argument(
        "--vary",
        nargs="*",
        choices=VARY,
        default=[],
        help="what varies between them",
    )
    ap.add_argument("--patch", type=int, default=2, help="transformer patch size (the default model's is 2)")
    ap.add_argument(
        "--positions",
        choices=("rope", "sincos"),
        help="3D RoPE (the default model's, as CogVideoX 5B) or added 3D sin-cos positions (CogVideoX 2B); "
        "default: the folder's",
    )
    ap.add_argument(
        "--token-cell",
        action="store_true",
        help="captions also name the 8-pixel token of the object's centre (column cC, row rR)",
    )
    ap.add_argument(
        "--token-captions",
        action="store_true",
        help="the product's token captions (`dense_caption(truth(tokens=True))`: '... in the top left at c3 r2 ...')",
    )
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument(
        "--unsaid",
        nargs="*",
        choices=("color", "background"),
        default=[],
        help="drop these words from every caption (the stills still vary in them): do the colour words in the "
        "caption slow shapes, or the colours in the picture?",
    )
    ap.add_argument(
        "--space",
        choices=("pca", "factored", "vae"),
        default="pca",
        help="pca: PCA-8 of 4x4 pixel patches (the screen's); factored: coverage PCA + object and background colour "
        "maps, multiplied only in the decoder (solid backgrounds); vae: the --vae folder's latents at unit RMS",
    )
    ap.add_argument("--vae", help="--space vae: a VAE folder (model folder or its vae/); default: --model's VAE")
    ap.add_argument(
        "--init",
        help="start from these weights (another run's OUT.weights.pt, same --patch / --positions) instead of a fresh "
        "model: a curriculum, e.g. the plain grid rung first, then colour + background",
    )
    ap.add_argument("--samples", type=int, default=2, help="samples per shape at each evaluation")
    ap.add_argument("--out", required=True, help="output prefix: OUT.jsonl, OUT.STEP.png")
    ap.add_argument(
        "--eval-seed",
        type=int,
        help="no training: sample --samples fresh stills per shape drawn with this seed (colours and places the "
        "training stills may not have) with OUT.weights.pt -> OUT.fresh-SEED.png and .json: memorised or general?",
    )
    args = ap.parse_args(argv)
    cache, out = Path(args.cache), Path(args.out)
    if not cache.is_file():
        raise SystemExit(f"{cache} not found: build it with layout_screen.py --prep --cache {cache}")
    out.parent.mkdir(parents=True, exist_ok=True)

    pipe = load_pipeline(args.model)
    if args.vae is not None:
        if args.space != "vae":
            raise SystemExit("--vae needs --space vae")
        from cinegen.train.trainer import load_vae_folder

        pipe.vae = load_vae_folder(args.vae).to(pipe.device)
    data = torch.load(cache, weights_only=False)  # its captions make the T5's vocabulary; its stills the PCA-8 fit
    specs = toy_specs(args.size, args.variants, tuple(args.vary))
    if args.space == "factored":
        X, fit = factored_latents(specs)  # (N, 1, K + 6, h, w)
        decode = functools.partial(unfactor, fit=fit)
    elif args.space == "vae":
        X, fit = vae_latents(pipe, specs)  # (N, 1, C, h, w)
        decode = functools.partial(unvae, pipe=pipe, fit=fit)
    else:
        _, fit = screen.load_stills(data, "train", "pca", cache, 8)
        X, _ = screen.load_stills({"toy": {"specs": specs}}, "toy", "pca", out.with_suffix(".pt"), 8, dict(fit))
        decode = functools.partial(screen.unlatent, fit=fit)
    text, ids, width = None, None, pipe.transformer.config.text_embed_dim
    if args.eval_seed is not None:
        if args.text == "random":
            raise SystemExit("--eval-seed needs captions (--text t5): random embeddings name no still")
        if args.text == "t5-train":
            raise SystemExit("--eval-seed with t5-train: the trained T5 is not saved")
        fresh = toy_specs(args.size, args.samples, tuple(args.vary), seed=args.eval_seed)  # shape-major, k per shape
        fresh = [fresh[i * args.samples + j] for j in range(args.samples) for i in range(6)]  # as the training strips
    if args.text == "random":
        E = torch.randn(len(specs), 8, width, generator=torch.Generator().manual_seed(3))  # (N, 8, D)
        E = E / E.norm(dim=-1, keepdim=True) * width**0.5  # unit RMS per token, as a T5's output
    else:

        def caption(sd: dict) -> str:  # layout captions, or the product's token captions; + the toy's token sentence
            c = dense_caption(ClipSpec.from_dict(sd).truth(layout=True, tokens=args.token_captions))
            c = unsay(c, args.unsaid)
            return c + token_cell_caption(sd) if args.token_cell else c

        captions = [caption(sd) for sd in specs]
        words = screen.cached_captions(data)
        if args.token_cell:  # name the token of each centre; its words join the vocabulary
            words += [token_cell_caption({"width": 96, "height": 96, "objects": [{"x": i / 12, "y": i / 12}]})
                      for i in range(12)]  # fmt: skip
        if args.token_captions:  # every token word of a 96-pixel frame
            words += [f"at c{i} r{i}" for i in range(96 // 8)]
        text = screen.text_encoder(words, width)
        ids = text.tokenize(captions)
        with torch.no_grad():
            E = text.model(ids)[0].float()  # (N, L, D)
        if args.eval_seed is not None:
            caps = [caption(sd) for sd in fresh]
            with torch.no_grad():
                E = text.model(text.tokenize(caps))[0].float()  # (6k, L, D), the training run's T5
    layout = bool({"position", "grid", "count"} & set(args.vary)) or args.token_captions  # score the start cells
    torch.manual_seed(0)
    chans = {"in_channels": X.shape[2], "out_channels": X.shape[2]}
    cfg = dataclasses.replace(pipe.transformer.config, max_text_seq_length=E.shape[1], patch_size=args.patch, **chans)
    if args.positions is not None:
        cfg = dataclasses.replace(cfg, use_rotary_positional_embeddings=args.positions == "rope")
    model = type(pipe.transformer)(cfg).float().train()
    if args.eval_seed is not None:
        weights = out.with_suffix(".weights.pt")
        if not weights.is_file():
            raise SystemExit(f"--eval-seed: no {weights} (train with --out {out} first)")
        model.load_state_dict(torch.load(weights))
        seen = {json.dumps(sd, sort_keys=True) for sd in specs}
        res, images = screen.generate_and_score(pipe, model, E, fresh, layout, decode, tokens=args.token_captions)
        tag = f"fresh-{args.eval_seed}"
        Image.fromarray(np.concatenate(images, axis=1)).save(out.with_suffix(f".{tag}.png"))
        entry = {"eval_seed": args.eval_seed, "n": len(fresh), "unseen": sum(json.dumps(sd, sort_keys=True) not in seen
                 for sd in fresh), **res}  # fmt: skip
        out.with_suffix(f".{tag}.json").write_text(json.dumps(entry) + "\n")
        print(json.dumps(entry), flush=True)
        return
    if args.init is not None:
        if not Path(args.init).is_file():
            raise SystemExit(f"--init: {args.init} not found")
        model.load_state_dict(torch.load(args.init))  # the optimizer starts fresh
    params = list(model.parameters())
    if args.text == "t5-train":
        assert text is not None
        text.model.float().eval().requires_grad_(True)  # eval: no dropout
        params += list(text.model.parameters())
    ac = alphas_cumprod(pipe.scheduler).float()
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    t0 = time.time()
    with out.with_suffix(".jsonl").open("w") as log:
        for step in range(1, args.steps + 1):
            if args.text == "t5-train":
                assert text is not None
                E = text.model(ids)[0].float()  # (N, L, D) with autograd
            train_step(model, opt, X, E, ac, g, 16)
            if step % args.every == 0 or step == args.steps:
                E = E.detach()
                k = args.samples
                pick = [i * args.variants + j for j in range(min(k, args.variants)) for i in range(6)]  # k per shape
                pick = pick if args.variants > 1 else list(range(6)) * k
                res, images = screen.generate_and_score(
                    pipe, model, E[pick], [specs[i] for i in pick], layout, decode, tokens=args.token_captions
                )
                Image.fromarray(np.concatenate(images, axis=1)).save(out.with_suffix(f".{step}.png"))
                arch = {"patch": cfg.patch_size, "rope": cfg.use_rotary_positional_embeddings}
                entry = {"step": step, "seconds": round(time.time() - t0), **arch, **res}
                print(json.dumps(entry), flush=True)
                log.write(json.dumps(entry) + "\n")
                log.flush()
                torch.save(model.state_dict(), out.with_suffix(".weights.pt"))  # the latest scored weights


if __name__ == "__main__":
    main()
