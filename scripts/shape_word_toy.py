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

`--variants N --vary color|position|grid|jitter` makes the ladder between this toy and the world: N stills per
shape with a random colour and/or place (`toy_specs`).

Every `--every` steps each caption is sampled twice (with variants: the first two stills of each shape; 20 DDIM
steps, CFG 4) and scored by the ShapesBench analyzer (JSON lines in OUT.jsonl, a PNG strip OUT.STEP.png: circle,
square, triangle, star, ring, cross, twice).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import layout_screen as screen  # noqa: E402
from learning_speed import train_step  # noqa: E402

MODES = ("random", "t5", "t5-train")


def toy_specs(size: str = "large", variants: int = 1, vary: tuple[str, ...] = ()) -> list[dict]:
    """`variants` stills per shape (shape-major order), one object on plain white, 96x96, one frame: red and centred,
    or, per `vary`, a random colour (of `vocab.COLORS`) and / or a random place: `position` anywhere with its centre in
    [0.25, 0.75]^2, `grid` there on whole 8-pixel steps from the centre (a patch-2 token of a 4x latent), `jitter`
    the centre moved by under 4 pixels."""
    from cinegen.world.render import ClipSpec, ObjectSpec
    from cinegen.world.vocab import COLORS, SHAPES

    rng = np.random.default_rng(11)
    out = []
    for s in SHAPES:
        for _ in range(variants):
            color = str(rng.choice(list(COLORS))) if "color" in vary else "red"
            x, y = 0.5, 0.5
            if "position" in vary:  # anywhere in the middle half
                x, y = rng.uniform(0.25, 0.75, 2)
            elif "grid" in vary:  # the middle half, on whole 8-pixel steps from the centre (one token of patch 2)
                x, y = 0.5 + rng.integers(-3, 4, 2) * 8 / 96
            elif "jitter" in vary:  # the centre, shifted by less than a token
                x, y = 0.5 + rng.uniform(-4, 4, 2) / 96
            obj = ObjectSpec(s, color, size, "still", None, float(x), float(y))
            out.append(ClipSpec((obj,), width=96, height=96, num_frames=1, background="white").to_dict())
    return out


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
        choices=("color", "position", "grid", "jitter"),
        default=[],
        help="what varies between them",
    )
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--out", required=True, help="output prefix: OUT.jsonl, OUT.STEP.png")
    args = ap.parse_args(argv)
    cache, out = Path(args.cache), Path(args.out)
    if not cache.is_file():
        raise SystemExit(f"{cache} not found: build it with layout_screen.py --prep --cache {cache}")
    out.parent.mkdir(parents=True, exist_ok=True)

    pipe = load_pipeline(args.model)
    data = torch.load(cache, weights_only=False)
    _, fit = screen.load_stills(data, "train", "pca", cache, 8)
    specs = toy_specs(args.size, args.variants, tuple(args.vary))
    X, _ = screen.load_stills({"toy": {"specs": specs}}, "toy", "pca", out.with_suffix(".pt"), 8, dict(fit))
    text, ids, width = None, None, pipe.transformer.config.text_embed_dim
    if args.text == "random":
        E = torch.randn(len(specs), 8, width, generator=torch.Generator().manual_seed(3))  # (N, 8, D)
        E = E / E.norm(dim=-1, keepdim=True) * width**0.5  # unit RMS per token, as a T5's output
    else:
        text = screen.text_encoder(screen.cached_captions(data), width)
        ids = text.tokenize([dense_caption(ClipSpec.from_dict(sd).truth(layout=True)) for sd in specs])
        with torch.no_grad():
            E = text.model(ids)[0].float()  # (N, L, D)
    torch.manual_seed(0)
    chans = {"in_channels": X.shape[2], "out_channels": X.shape[2]}
    cfg = dataclasses.replace(pipe.transformer.config, max_text_seq_length=E.shape[1], **chans)
    model = type(pipe.transformer)(cfg).float().train()
    params = list(model.parameters())
    if args.text == "t5-train":
        assert text is not None
        text.model.float().eval().requires_grad_(True)  # eval: no dropout
        params += list(text.model.parameters())
    ac = alphas_cumprod(pipe.scheduler).float()
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    decode = functools.partial(screen.unlatent, fit=fit)
    t0 = time.time()
    with out.with_suffix(".jsonl").open("w") as log:
        for step in range(1, args.steps + 1):
            if args.text == "t5-train":
                assert text is not None
                E = text.model(ids)[0].float()  # (N, L, D) with autograd
            train_step(model, opt, X, E, ac, g, 16)
            if step % args.every == 0 or step == args.steps:
                E = E.detach()
                pick = [i * args.variants + j for j in range(min(2, args.variants)) for i in range(6)]  # 2 per shape
                pick = pick if args.variants > 1 else list(range(6)) * 2
                layout = bool({"position", "grid"} & set(args.vary))
                res, images = screen.generate_and_score(pipe, model, E[pick], [specs[i] for i in pick], layout, decode)
                Image.fromarray(np.concatenate(images, axis=1)).save(out.with_suffix(f".{step}.png"))
                entry = {"step": step, "seconds": round(time.time() - t0), **res}
                print(json.dumps(entry), flush=True)
                log.write(json.dumps(entry) + "\n")
                log.flush()


if __name__ == "__main__":
    main()
