"""Does a coverage VAE's decoder take object shapes from its coverage channels? A swap probe on Shapes stills.

    .venv/bin/python scripts/coverage_probe.py runs/shapes-vae-cover-img/model --out runs/cover/probe

A VAE trained with `loss.mask_channels K` (e.g. `configs/shapes-vae-cover-img.yaml`) should keep each object's
coverage in its first K latent channels and leave its edges out of the others. For `--n` pairs of one-object
96x96 stills that differ only in the shape (same place, size, colour and background; random otherwise, seed
`--seed`), the probe encodes both, decodes A's latent with its first K channels replaced by B's, and scores the
result with the ShapesBench analyzer: `shape_follows` is how often the decoded still shows B's shape (the decoder
reads the shape from the coverage), `color_kept` / `background_kept` how often A's colour and background survive
(they live in the other channels). It also reports the reconstruction PSNR and how well the first K channels
match the DCT code of the stills' true masks (`losses_vae.mask_code`; relative MSE), and writes a PNG of
A | B | swap triplets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch


def pair_specs(n: int, seed: int) -> list[tuple[dict, dict]]:
    """`n` pairs of one-object still specs (96x96, solid background) differing only in the object's shape."""
    from cinegen.world.render import ClipSpec, ObjectSpec
    from cinegen.world.vocab import BACKGROUND_COLORS, COLORS, SHAPES

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = rng.choice(len(SHAPES), 2, replace=False)
        x, y = rng.uniform(0.3, 0.7, 2)
        obj = ObjectSpec(
            shape=SHAPES[a],
            color=list(COLORS)[rng.integers(len(COLORS))],
            size="large",
            motion="still",
            speed=None,
            x=float(x),
            y=float(y),
        )
        spec = ClipSpec(
            objects=(obj,),
            background=list(BACKGROUND_COLORS)[rng.integers(len(BACKGROUND_COLORS))],
            background_style="solid",
            width=96,
            height=96,
            num_frames=1,
        )
        other = dataclasses.replace(spec, objects=(dataclasses.replace(obj, shape=SHAPES[b]),))
        out.append((spec.to_dict(), other.to_dict()))
    return out


def probe(vae, pairs: list[tuple[dict, dict]], k: int) -> tuple[dict, list[np.ndarray]]:  # noqa: ANN001
    """({metric: value}, A | B | swap images) for `pairs` through `vae` with `k` coverage channels."""
    from cinegen.train.losses_vae import mask_code
    from cinegen.video import Video, frames_to_tensor
    from cinegen.world.analyze import analyze_video, score_video
    from cinegen.world.bench import still_truth
    from cinegen.world.render import ClipSpec, render_clip_and_mask

    s, t = vae.config.spatial_compression, int(vae.config.temporal_compression_ratio)
    counts = {"shape_follows": 0, "color_kept": 0, "background_kept": 0}
    psnr, code_err, images = [], [], []
    for sa, sb in pairs:
        xs, codes = [], []
        for sd in (sa, sb):
            frames, mask = render_clip_and_mask(ClipSpec.from_dict(sd))  # (1, H, W, 3), (1, H, W) uint8
            xs.append(frames_to_tensor(frames)[None])  # (1, 3, 1, H, W)
            codes.append(mask_code(torch.from_numpy(mask.astype(np.float32) / 255)[None], k, t, s))  # (1, k, 1, h, w)
        with torch.no_grad():
            za, zb = (vae.encode(x) for x in xs)  # (1, C, 1, h, w) posterior means
            rec = vae.decode(za).clamp(-1, 1)
            swap = za.clone()
            swap[:, :k] = zb[:, :k]
            out = vae.decode(swap).clamp(-1, 1)  # (1, 3, 1, H, W)
        psnr.append(10 * math.log10(4 / float((rec - xs[0]).square().mean())))
        code_err.append(float((za[:, :k] - codes[0]).square().mean() / codes[0].square().mean()))
        img = Video.from_tensor(out).frames  # (1, H, W, 3) uint8
        found = analyze_video(img)
        on_a, on_b = (score_video(found, still_truth(ClipSpec.from_dict(sd).truth())) for sd in (sa, sb))
        counts["shape_follows"] += int(on_b.get("shape") == 1.0)
        counts["color_kept"] += int(on_a.get("color") == 1.0)
        counts["background_kept"] += int(on_a.get("background") == 1.0)
        images.append(
            np.concatenate([Video.from_tensor(xs[0]).frames[0], Video.from_tensor(xs[1]).frames[0], img[0]], 1)
        )
    n = len(pairs)
    res = {key: round(100 * v / n, 1) for key, v in counts.items()}
    res.update(n=n, k=k, psnr=round(float(np.mean(psnr)), 2), code_rel_mse=round(float(np.mean(code_err)), 4))
    return res, images


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    from cinegen.train.trainer import load_vae_folder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vae", help="a VAE folder (model folder or its vae/)")
    ap.add_argument("--k", type=int, default=8, help="coverage channels (the VAE's loss.mask_channels)")
    ap.add_argument("--n", type=int, default=48, help="pairs of stills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output prefix: OUT.json, OUT.png")
    args = ap.parse_args(argv)
    vae = load_vae_folder(args.vae).float()
    if not 1 <= args.k <= vae.config.latent_channels:
        raise SystemExit(f"--k must be in 1..{vae.config.latent_channels} (the VAE's latent channels)")
    res, images = probe(vae, pair_specs(args.n, args.seed), args.k)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"vae": str(args.vae), **res}) + "\n")
    Image.fromarray(np.concatenate(images[:12], 0)).save(out.with_suffix(".png"))
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
