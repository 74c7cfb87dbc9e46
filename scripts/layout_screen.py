"""Do layout captions help a from-scratch Shapes transformer? A paired screen on stills.

    .venv/bin/python scripts/layout_screen.py --prep --cache runs/layout/stills.pt
    .venv/bin/python scripts/layout_screen.py --arm plain --out runs/layout/plain.json &    # one core each
    .venv/bin/python scripts/layout_screen.py --arm layout --out runs/layout/layout.json

`--prep` renders `--n-train` square 96x96 stills (Shapes-world clips of one frame, seed 0, held-out compositions
excluded) and `--n-eval` (seed 777, allowed), encodes them with the model folder's VAE, and builds a fresh random T5
(the default model's size, seed 0) over the words of these captions and of the world's vocabulary, which encodes
each still's plain dense caption and its layout caption (each object's start cell, `ClipSpec.truth(layout=True)`).
Both arms then train the folder's transformer architecture from the same initial weights on the same stills,
batches, timesteps and noise (`learning_speed.train_step`); only the captions differ (`--patch` changes the patch
size). Every `--every` steps the log gets the held-out x̂0 MSE at fixed noise levels, and every `--gen-every` steps
each eval caption is sampled (20 DDIM steps, CFG 4, a fixed seed per still) and scored by the ShapesBench analyzer
(colour, shape, size, count, background; position for the layout arm), with a PNG sheet of the samples.

`--space` changes what the transformer denoises, with everything else paired: `latent` (the cached VAE latents),
`latent-white` (each VAE channel at unit RMS), `pixel` (the stills' pixels unshuffled 4x4: lossless, 48 channels,
no VAE) or `pca` (the top `--pca-k` principal components of the train stills' 4x4x3 pixel patches, each at unit
RMS: a linear, decoder-free latent). Samples are decoded by the space's exact inverse; the pixel stills are cached
beside `--cache`. The x̂0 errors are in each space's own units, so compare spaces by their generation scores.
`--vae FOLDER` (with `latent` or `latent-white`) puts the same stills in another VAE's latents (re-encoded once and
cached beside `--cache`) and decodes the samples with it, e.g. a coverage VAE of `cinegen train-vae` against the
folder's own.

Shape-learning aids (training only; the transformer stays the folder's architecture; every arm keeps the same
batches, timesteps and noise): `--aux-shape W` adds a REPA-style loss, an MLP head on the video tokens after block
`--aux-layer` predicting each token's clean shape labels (`cinegen.world.render.shape_label_map`); `--swap-shapes P`
noises, with probability P where ᾱ <= `--swap-max-abar` and the caption is kept, the still with every shape swapped
for another instead of the true one, with the true still as the target, so the caption has to name the shape.
`--ema D` also keeps an EMA of the weights, scored and saved beside the raw ones (`gen_ema`, `OUT_ema.pt`).
`--train-text` trains a fresh random T5 (the prep's recipe) with the transformer instead of reading the cached
frozen embeddings, so its token features can learn to carry the shape word.

`--arm cell` adds to each layout caption every object's colour, shape and the 8-pixel transformer token of its
centre (" Centres: red square c8 r7; blue star c3 r3.", `cell_caption`; a fresh T5 over the cache's words and these).
`--arm tokens` trains on the product's token captions ("A large red circle in the top left at c3 r2 ...",
`dense_caption(ClipSpec.truth(tokens=True))`, what `world render --token-captions` writes); both arms that name a
token are also scored on it. `--text-over tokens` encodes another arm (e.g. `layout`) by the same fresh T5 the
tokens arm gets, so a pair differs only in its captions. `--prep --snap 8` draws stills whose objects start on
token corners (`clip_spec(snap=...)`), so the token says exactly where each object is.

`--score-model FOLDER` scores a model folder's still mode (e.g. a training round's export) on the cache's eval
stills with their token captions, as the arms are scored, so a product transformer can be read on this screen's scale.

Every logged step also saves the training state (`OUT.ckpt.pt`: weights, optimiser, batch generator, log);
`--resume` continues a cut run from it, bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_speed import LEVELS, train_step, x0_errors  # noqa: E402

ARMS = ("plain", "layout")
TEXT_LEN = 80  # tokens: the longest layout caption has ~60


def text_encoder(captions: list[str], width: int):  # noqa: ANN201
    """A fresh random T5 of the default model's size (seed 0) over the words of `captions` and of the world's
    vocabulary, encoding TEXT_LEN tokens (`cinegen.models.text.TextEncoder`)."""
    from train_default_model import make_tokenizer, word_vocabulary

    from cinegen.models.presets import small_t5
    from cinegen.models.text import TextEncoder

    words = word_vocabulary(captions)  # + the world's words
    enc = small_t5(64 * ((len(words) + 3 + 63) // 64), width, d_kv=32, num_buckets=16, max_distance=64, seed=0)
    return TextEncoder(enc, make_tokenizer(words), TEXT_LEN)


def save_atomic(obj: object, path: Path) -> None:
    """torch.save through a temp file renamed into place: arms started together never read half a side cache."""
    from cinegen.fsutil import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def cached_captions(data: dict) -> list[str]:
    """Every caption of a stills cache (both splits, every arm it holds): the words `text_encoder` is built over."""
    return [c for split in ("train", "eval") for caps in data[split]["captions"].values() for c in caps]


def cell_caption(spec: dict, token_px: int) -> str:
    """The `cell` arm's addition to a layout caption: each object's colour, shape and the token of its centre at
    frame 0 (" Centres: red square c8 r7; blue star c3 r3."), the exact place a 3x3 layout cell leaves open."""
    from cinegen.world.render import ClipSpec, object_tracks
    from cinegen.world.vocab import token_of

    clip = ClipSpec.from_dict(spec)
    cells = [token_of(t.cx[0], t.cy[0], token_px) for t in object_tracks(clip)]
    parts = [f"{o.color} {o.shape} c{c} r{r}" for o, (c, r) in zip(clip.objects, cells, strict=True)]
    return " Centres: " + "; ".join(parts) + "."


def token_caption(spec: dict) -> str:
    """The `tokens` arm: the product's token caption, exactly what `world render --token-captions` trains on
    ("A large red circle in the top left at c3 r2 ...", `dense_caption(ClipSpec.truth(tokens=True))`)."""
    from cinegen.world.captions import dense_caption
    from cinegen.world.render import ClipSpec

    return dense_caption(ClipSpec.from_dict(spec).truth(tokens=True))


EXTRA_ARMS = ("cell", "tokens")  # built in memory from a stills cache (`add_arm`), each with its own T5


def add_arm(data: dict, arm: str, token_px: int) -> None:
    """Add an `EXTRA_ARMS` arm's captions to a loaded stills cache (in memory): `cell` = layout captions +
    `cell_caption`, `tokens` = `token_caption`."""
    for split in ("train", "eval"):
        part = data[split]
        if arm == "cell":
            caps = [
                c + cell_caption(sd, token_px) for c, sd in zip(part["captions"]["layout"], part["specs"], strict=True)
            ]
        else:
            caps = [token_caption(sd) for sd in part["specs"]]
        part["captions"][arm] = caps


def encode_chunked(text, caps: list[str]) -> torch.Tensor:  # noqa: ANN001
    """Captions -> (N, TEXT_LEN, D) float embeddings, 64 at a time (`TextEncoder.encode`)."""
    with torch.no_grad():
        return torch.cat([text.encode(caps[i : i + 64]).float() for i in range(0, len(caps), 64)])


def encode_arm(data: dict, arm: str, width: int) -> None:
    """Encode one arm's captions (`E_<arm>`, both splits) by a fresh random T5 (the prep's recipe) over every
    caption the cache holds now (`cached_captions`): arms encoded after the same `add_arm` calls share one T5."""
    text = text_encoder(cached_captions(data), width)
    for split in ("train", "eval"):
        data[split][f"E_{arm}"] = encode_chunked(text, data[split]["captions"][arm])


def vae_stills(pipe, specs: list) -> torch.Tensor:  # noqa: ANN001
    """The folder VAE's scaled latents of still specs (`ClipSpec` or dict) -> (N, 1, C, h, w) bf16."""
    from cinegen.world.probe import _clip_latents
    from cinegen.world.render import ClipSpec, render_clip

    with torch.no_grad():
        lat = [_clip_latents(pipe, render_clip(s if isinstance(s, ClipSpec) else ClipSpec.from_dict(s))) for s in specs]
    return torch.cat(lat).to(torch.bfloat16)


def prep(model: str, cache: Path, n_train: int, n_eval: int, snap: int | None = None) -> None:
    from cinegen.pipeline import load_pipeline
    from cinegen.world.captions import dense_caption
    from cinegen.world.dataset import clip_spec

    pipe = load_pipeline(model)
    specs = {
        "train": [clip_spec(0, i, aspects=["square"], frame_counts=[1], snap=snap)[0] for i in range(n_train)],
        "eval": [
            clip_spec(777, i, aspects=["square"], frame_counts=[1], include_held_out=True, snap=snap)[0]
            for i in range(n_eval)
        ],
    }
    caps = {
        split: {arm: [dense_caption(s.truth(layout=arm == "layout")) for s in ss] for arm in ARMS}
        for split, ss in specs.items()
    }
    captions = [c for split in caps.values() for arm in ARMS for c in split[arm]]
    text = text_encoder(captions, pipe.transformer.config.text_embed_dim)  # the default model's T5 width (128)
    data: dict = {"meta": {"model": str(Path(model).resolve()), "n_train": n_train, "n_eval": n_eval, "snap": snap}}
    with torch.no_grad():
        for split, ss in specs.items():
            part = {
                "X": vae_stills(pipe, ss),
                "specs": [s.to_dict() for s in ss],
                "captions": caps[split],
            }
            for arm in ARMS:
                part[f"E_{arm}"] = encode_chunked(text, caps[split][arm])  # (N, TEXT_LEN, D)
            data[split] = part
            print(f"{split}: {tuple(part['X'].shape)} latents", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(data, cache)


def restill(pipe, data: dict, cache: Path, vae: str) -> None:  # noqa: ANN001
    """`--vae FOLDER`: swap `pipe.vae` for the VAE of FOLDER and replace the cache's train and eval latents by its
    scaled latents of the same stills (cached beside `cache`, keyed by the folder and its weights' size and time)."""
    import hashlib

    from cinegen.train.trainer import load_vae_folder, vae_component_dir

    pipe.vae = load_vae_folder(vae).to(pipe.device)
    root = vae_component_dir(vae)
    stamp = [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(root.glob("*.safetensors"))]
    tag = hashlib.sha1(f"{root.resolve()}|{stamp}".encode()).hexdigest()[:10]
    for split in ("train", "eval"):
        path = cache.with_suffix(f".vae-{tag}-{split}.pt")
        if not path.exists():
            save_atomic(vae_stills(pipe, data[split]["specs"]), path)
        data[split]["X"] = torch.load(path)  # (N, 1, C, h, w) bf16


PIXEL_FACTOR = 4  # --space pixel: 4x4 pixel-unshuffle, the VAE's spatial compression, 48 channels


def pixel_stills(specs: list[dict]) -> torch.Tensor:
    """Stills as a lossless 'latent': (N, 1, 48, H/4, W/4), [-1, 1] pixels unshuffled 4x4 (no VAE)."""
    from cinegen.video import frames_to_tensor
    from cinegen.world.render import ClipSpec, render_clip

    out = []
    for sd in specs:
        img = frames_to_tensor(render_clip(ClipSpec.from_dict(sd))[:1]).transpose(0, 1)  # (1, 3, H, W)
        out.append(torch.nn.functional.pixel_unshuffle(img, PIXEL_FACTOR)[None])
    return torch.cat(out)  # (N, 1, 48, h, w)


def patch_pca(v: torch.Tensor, k: int, every: int = 1) -> dict:
    """{"mu": (P,), "basis": (k, P)}: the mean and top-`k` principal directions of patch vectors `v` (M, P), the
    directions fitted on every `every`-th centred row."""
    mu = v.mean(0)
    return {"mu": mu, "basis": torch.linalg.svd((v - mu)[::every], full_matrices=False)[2][:k]}


def load_stills(data: dict, split: str, space: str, cache: Path, k: int = 8, fit: dict | None = None) -> tuple:
    """(X (N, 1, C, h, w), fit) in the given `space` (see the module docstring): the cached VAE latents as they are
    or per channel at unit RMS, pixel stills at unit RMS (cached beside `cache`), or their top `k` principal
    components per 4x4 patch, each at unit RMS. `fit` (scale, PCA mean and basis) comes from the train split and is
    passed back in for the eval split."""
    from cinegen.models.latent_norm import channel_rms

    if space.startswith("latent"):
        X = data[split]["X"].float()  # (N, 1, C, h, w)
    else:
        path = cache.with_suffix(f".pixel-{split}.pt")
        if not path.exists():
            save_atomic(pixel_stills(data[split]["specs"]).to(torch.bfloat16), path)
        X = torch.load(path).float()  # (N, 1, 48, h, w)
        if space == "pca":
            if fit is None:
                v = X[:, 0].permute(0, 2, 3, 1).reshape(-1, X.shape[2])  # (N*h*w, 48) patch vectors
                fit = patch_pca(v, k, every=7)  # every 7th patch: ~330k of 2.3M, plenty for a 48-dim basis
            X = ((X.permute(0, 1, 3, 4, 2) - fit["mu"]) @ fit["basis"].T).permute(0, 1, 4, 2, 3)  # (N, 1, k, h, w)
    fit = {} if fit is None else fit
    if "scale" not in fit and space != "latent":
        # per channel (as `cinegen normalize-vae`; PCA: shape detail is in the quiet components); pixels: global
        rms = X.square().mean().sqrt().view(1) if space == "pixel" else channel_rms(X[:, 0])  # (1,) or (C,)
        fit["scale"] = (1 / rms).view(1, -1, 1, 1)  # (1, C or 1, 1, 1)
    return (X * fit["scale"], fit) if "scale" in fit else (X, fit)


def unlatent(x: torch.Tensor, fit: dict) -> torch.Tensor:
    """Inverse of `load_stills` for pixel / PCA samples: (1, 1, C, h, w) -> (1, 3, 1, H, W) video in [-1, 1]."""
    x = x[:, 0] / fit["scale"]  # (1, C, h, w)
    if "basis" in fit:
        x = (x.permute(0, 2, 3, 1) @ fit["basis"] + fit["mu"]).permute(0, 3, 1, 2)  # (1, 48, h, w)
    return torch.nn.functional.pixel_shuffle(x, PIXEL_FACTOR)[:, :, None].clamp(-1, 1)


def generate_and_score(  # noqa: ANN201
    pipe,  # noqa: ANN001
    model,  # noqa: ANN001
    E: torch.Tensor,
    specs: list[dict],
    layout: bool,
    decode=None,  # noqa: ANN001
    tokens: bool = False,
):
    """Sample each eval still from its caption embedding (20 DDIM steps, CFG 4, seed 1000 + i) and score it
    (-> ({attribute: %}, sample images)); `layout` adds the start cell (position), `tokens` the start token.
    `decode`: (1, 1, C, h, w) samples -> (1, 3, 1, H, W) video in [-1, 1] (default: the folder's VAE)."""
    from cinegen.sampling.guidance import cfg_batched
    from cinegen.sampling.loop import SamplerSpec, make_plan, sample
    from cinegen.video import Video
    from cinegen.world.analyze import analyze_video, score_video
    from cinegen.world.bench import still_truth
    from cinegen.world.render import ClipSpec

    attrs = ("color", "shape", "size", "count", "background") + (("position",) if layout else ())
    attrs += ("token",) if tokens else ()
    plan = make_plan(SamplerSpec(kind="ddim", num_steps=20), pipe.scheduler)
    decode = decode or pipe.decode
    h, w = specs[0]["height"] // pipe.vae_spatial, specs[0]["width"] // pipe.vae_spatial
    scores: dict[str, list[float]] = {}
    images = []
    model.eval()
    for i, sd in enumerate(specs):
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.randn((1, 1, model.config.in_channels, h, w), generator=g)
        emb = torch.cat([torch.zeros_like(E[:1]), E[i : i + 1]])  # (2, L, D): [unconditional; caption]

        def denoise(z: torch.Tensor, t: torch.Tensor, _i: int, emb: torch.Tensor = emb) -> torch.Tensor:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return cfg_batched(model(torch.cat([z, z]), emb, t.expand(2)).float(), 4.0)

        with torch.no_grad():
            video = decode(sample(denoise, x, plan, generator=g))  # (1, 3, 1, H, W) in [-1, 1]
        img = Video.from_tensor(video).frames  # (1, H, W, 3) uint8
        images.append(img[0])
        res = score_video(analyze_video(img), still_truth(ClipSpec.from_dict(sd).truth(layout=layout, tokens=tokens)))
        for a in attrs:
            if res.get(a) is not None:
                scores.setdefault(a, []).append(res[a])
    model.train()
    return {a: round(100 * float(np.mean(v)), 1) for a, v in scores.items()}, images


def score_pipeline(folder: str, cache: Path, n: int, out: Path) -> dict:
    """A model folder's still mode on the cache's first `n` eval stills, as the arms are scored: each still's token
    caption (no prompt enhancer), one frame at its size, DDIM 20, CFG 4, seed 1000 + i; the scores go to OUT (JSON)
    and the samples to OUT.png. Puts a product transformer (e.g. a round's export) on the screen's scale."""
    from cinegen.pipeline import load_pipeline
    from cinegen.world.analyze import analyze_video, score_video
    from cinegen.world.bench import still_truth
    from cinegen.world.render import ClipSpec

    specs = torch.load(cache, weights_only=False)["eval"]["specs"][:n]
    pipe = load_pipeline(folder)
    pipe.defaults = dataclasses.replace(pipe.defaults, prompt_enhancer=None)
    scores: dict[str, list[float]] = {}
    images = []
    for i, sd in enumerate(specs):
        video = pipe.generate(
            prompt=token_caption(sd), num_frames=1, height=sd["height"], width=sd["width"], seed=1000 + i, steps=20,
            guidance=4.0,
        )  # fmt: skip
        images.append(video.frames[0])
        truth = ClipSpec.from_dict(sd).truth(layout=True, tokens=True)  # token captions name cell and token
        res = score_video(analyze_video(video.frames), still_truth(truth))
        for a in ("color", "shape", "size", "count", "background", "position", "token"):
            if res.get(a) is not None:
                scores.setdefault(a, []).append(res[a])
    gen = {a: round(100 * float(np.mean(v)), 1) for a, v in scores.items()}
    out.write_text(json.dumps({"model": folder, "stills": len(specs), "gen": gen}, indent=1) + "\n")
    save_sheet(images, out.with_suffix(".png"))
    return gen


def save_sheet(images: list[np.ndarray], path: Path) -> None:
    """Samples as a PNG sheet of rows of 8 (nothing for fewer than 8)."""
    from PIL import Image

    rows = [np.concatenate(images[r : r + 8], axis=1) for r in range(0, len(images) - 7, 8)]
    if rows:
        Image.fromarray(np.concatenate(rows)).save(path)


SUB = 4  # --aux-shape: each token's shape target is a SUB x SUB grid of cells


def shape_targets(specs: list[dict], token_px: int, cache: Path) -> torch.Tensor:
    """Per-token shape labels of the stills -> (N, tokens, SUB * SUB) int64 (0 background, 1 + shape index), each
    token of `token_px` pixels split into SUB x SUB cells, row-major as the transformer's patch tokens; cached."""
    from cinegen.world.render import ClipSpec, shape_label_map

    path = cache.with_suffix(f".shapes{token_px}.pt")
    if path.exists():
        return torch.load(path)
    maps = np.stack([shape_label_map(ClipSpec.from_dict(sd), 0, token_px // SUB) for sd in specs])  # (N, H', W')
    n, hh, ww = maps.shape
    t = torch.from_numpy(maps).long().view(n, hh // SUB, SUB, ww // SUB, SUB).permute(0, 1, 3, 2, 4)
    out = t.reshape(n, (hh // SUB) * (ww // SUB), SUB * SUB)  # (N, tokens, SUB*SUB)
    save_atomic(out, path)
    return out


def shape_aux(model, labels: torch.Tensor, layer: int, n_text: int, weight: float) -> tuple:  # noqa: ANN001
    """A REPA-style auxiliary loss: an MLP head reads the video tokens after block `layer` (1-based) and predicts
    each token's SUB x SUB shape labels of the *clean* still (cross-entropy x `weight`), so the hidden states must
    carry which shape is where at every noise level. Training only: the head is not part of the transformer.
    Returns (aux(idx) -> loss, head)."""
    from cinegen.world.vocab import SHAPES

    D, K = model.config.inner_dim, len(SHAPES) + 1
    head = torch.nn.Sequential(
        torch.nn.Linear(D, 2 * D), torch.nn.SiLU(), torch.nn.Linear(2 * D, 2 * D), torch.nn.SiLU(),
        torch.nn.Linear(2 * D, SUB * SUB * K),
    )  # fmt: skip
    feats: list[torch.Tensor] = []

    def keep(_m: torch.nn.Module, _i: tuple, out: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # training forwards only
            feats.append(out)

    model.transformer_blocks[layer - 1].register_forward_hook(keep)

    def aux(idx: torch.Tensor) -> torch.Tensor:
        h = feats[-1][:, n_text:].float()  # (B, tokens, D) video tokens of the last forward
        feats.clear()
        logits = head(h).view(*h.shape[:2], SUB * SUB, K)  # (B, tokens, SUB*SUB, K)
        return weight * torch.nn.functional.cross_entropy(logits.flatten(0, 2), labels[idx].flatten())

    return aux, head


def swapped_specs(specs: list[dict], seed: int = 0) -> list[dict]:
    """The same stills with every object's shape replaced by another shape (seeded per still): --swap-shapes."""
    from cinegen.world.render import ObjectSpec
    from cinegen.world.vocab import SHAPES

    def other(o: dict, rng: np.random.Generator) -> dict:
        for s in rng.permutation([s for s in SHAPES if s != o["shape"]]):
            try:  # e.g. a rotating object cannot become a circle
                obj = ObjectSpec(**{**o, "shape": str(s)})
                obj.truth()  # validates
                return dataclasses.asdict(obj)
            except ValueError:
                continue
        raise ValueError(f"no other shape fits {o}")

    out = []
    for i, sd in enumerate(specs):
        rng = np.random.default_rng([seed, i])
        out.append({**sd, "objects": [other(o, rng) for o in sd["objects"]]})
    return out


def shape_swap(pipe, data: dict, space: str, cache: Path, k: int, fit: dict, prob: float, max_abar: float):  # noqa: ANN001
    """--swap-shapes: with probability `prob` (where ᾱ <= `max_abar` and the caption is kept) the model's input is
    noised from the still with every shape swapped for another (same colours, sizes, places) while the target stays
    the true still, so the caption, not the visible outline, has to say which shape to draw: the situation of a
    sample whose intermediate has a blob or a wrong outline. Returns perturb(idx, x0, ᾱ, kept) for `train_step`."""
    alt = {"swap": {"specs": swapped_specs(data["train"]["specs"])}}
    if space.startswith("latent"):
        path = cache.with_suffix(".swap-latent.pt")
        if not path.exists():
            save_atomic(vae_stills(pipe, alt["swap"]["specs"]), path)
        alt["swap"]["X"] = torch.load(path)
    XS, _ = load_stills(alt, "swap", space, cache, k, dict(fit))  # (N, 1, C, h, w), the train split's scaling
    g = torch.Generator().manual_seed(7)  # its own draws: the batches stay paired with arms without the swap

    def perturb(idx: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        use = (torch.rand(len(idx), generator=g) < prob) & kept & (a.flatten() <= max_abar)  # (B,)
        return torch.where(use.view(-1, 1, 1, 1, 1), XS[idx], x0)

    return perturb


class LiveText:
    """Caption embeddings computed by a trainable text encoder when indexed: `E[idx]` -> (B, L, D) with autograd
    (--train-text: the T5 learns with the transformer, as GLIDE trains its text transformer from scratch)."""

    def __init__(self, model: torch.nn.Module, ids: torch.Tensor) -> None:
        self.model, self.ids = model, ids  # ids (N, L)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(self.ids[idx])[0].float()


def score_checkpoint(args: argparse.Namespace, model, data: dict, E: dict, gen) -> None:  # noqa: ANN001
    """--score SPLIT: sample and score (`gen`: `generate_and_score` with the arm's settings) the first --gen-n
    stills of SPLIT with the weights of OUT.ckpt.pt (train captions: does the model draw what it was trained on?
    eval: does it generalise?) -> OUT.score-SPLIT-STEP.json and a PNG sheet beside it."""
    out = Path(args.out)
    ckpt = out.with_suffix(".ckpt.pt")
    if not ckpt.exists():
        raise SystemExit(f"--score: no checkpoint {ckpt} (train with --out {out} first)")
    if args.train_text:
        raise SystemExit("--score with --train-text: the checkpoint's T5 would have to re-encode the captions")
    state = torch.load(ckpt, weights_only=False)
    model.load_state_dict(state["model"])
    specs = data[args.score]["specs"][: args.gen_n]
    scores, images = gen(model, E[args.score], specs)
    stem = f"{out.stem}.score-{args.score}-{state['step']}"
    save_sheet(images, out.with_name(f"{stem}.png"))
    entry = {"split": args.score, "step": state["step"], "n": len(specs), "gen": scores}
    out.with_name(f"{stem}.json").write_text(json.dumps(entry) + "\n")
    print(json.dumps(entry), flush=True)


def train(args: argparse.Namespace) -> None:
    from cinegen.pipeline import load_pipeline
    from cinegen.sampling.schedules import alphas_cumprod
    from cinegen.train.optim import EMA

    pipe = load_pipeline(args.model)
    if args.vae is not None and not args.space.startswith("latent"):
        raise SystemExit(f"--vae re-encodes the stills for --space latent or latent-white, not {args.space}")
    if args.space in ("pixel", "pca") and pipe.vae_spatial != PIXEL_FACTOR:
        raise SystemExit(
            f"--space {args.space} unshuffles {PIXEL_FACTOR}x{PIXEL_FACTOR} patches; this VAE is {pipe.vae_spatial}x"
        )
    data = torch.load(args.cache, weights_only=False)
    if args.vae is not None:
        restill(pipe, data, Path(args.cache), args.vae)
    X, fit = load_stills(data, "train", args.space, Path(args.cache), args.pca_k)  # (N, 1, C, h, w)
    XV, _ = load_stills(data, "eval", args.space, Path(args.cache), args.pca_k, fit)
    over = args.text_over or (args.arm if args.arm in EXTRA_ARMS else None)
    if over is not None:  # a fresh T5 over the cache's captions and this arm's: `--arm` re-encoded by it
        for arm in {over, args.arm} & set(EXTRA_ARMS):
            add_arm(data, arm, pipe.vae_spatial * args.patch)
        encode_arm(data, args.arm, pipe.transformer.config.text_embed_dim)
    E, EV = data["train"][f"E_{args.arm}"], data["eval"][f"E_{args.arm}"]  # (N, L, D)
    decode = functools.partial(unlatent, fit=fit) if args.space in ("pixel", "pca") else None
    if args.space == "latent-white":

        def decode(x: torch.Tensor) -> torch.Tensor:  # (1, 1, C, h, w) whitened -> (1, 3, 1, H, W)
            return pipe.decode(x / fit["scale"])

    torch.manual_seed(0)
    chans = {"in_channels": X.shape[2], "out_channels": X.shape[2]}
    cfg = dataclasses.replace(pipe.transformer.config, max_text_seq_length=E.shape[1], patch_size=args.patch, **chans)
    model = type(pipe.transformer)(cfg).float().train()
    gen = functools.partial(
        generate_and_score, pipe, layout=args.arm != "plain", decode=decode, tokens=args.arm in EXTRA_ARMS
    )  # (net, E, specs) -> (scores, images)
    if args.score:
        score_checkpoint(args, model, data, {"train": E, "eval": EV}, gen)
        return
    ac = alphas_cumprod(pipe.scheduler).float()  # (1000,)
    levels = {a: int((ac - a).abs().argmin()) for a in LEVELS}
    eval_noise = torch.randn(XV.shape, generator=torch.Generator().manual_seed(123))
    ema = EMA(model, args.ema) if args.ema > 0 else None  # fp32 shadow weights, as `cinegen train` keeps
    ema_net = copy.deepcopy(model).eval().requires_grad_(False) if ema is not None else None  # they are scored in
    perturb = None
    if args.swap_shapes > 0:
        perturb = shape_swap(
            pipe, data, args.space, Path(args.cache), args.pca_k, fit, args.swap_shapes, args.swap_max_abar
        )
    params = list(model.parameters())
    text = None
    if args.train_text:
        if args.ema > 0:
            raise SystemExit("--train-text with --ema: the EMA would pair with the live text encoder")
        caps = data["train"]["captions"][args.arm]
        text = text_encoder(cached_captions(data), E.shape[2])
        text.model.float().eval().requires_grad_(True)
        params += list(text.model.parameters())
        E = LiveText(text.model, text.tokenize(caps))
        ids_eval = text.tokenize(data["eval"]["captions"][args.arm])
    aux, head = None, None
    if args.aux_shape > 0:
        if not 1 <= args.aux_layer <= cfg.num_layers:
            raise SystemExit(f"--aux-layer {args.aux_layer}: the transformer has blocks 1..{cfg.num_layers}")
        labels = shape_targets(data["train"]["specs"], pipe.vae_spatial * args.patch, Path(args.cache))
        aux, head = shape_aux(model, labels, args.aux_layer, cfg.max_text_seq_length, args.aux_shape)
        params += list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    g = torch.Generator().manual_seed(1)  # batches, timesteps, noise: the same draws for every arm
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    aux_losses: list[float] = []
    # the training state after each logged step: --resume continues a cut run exactly where it was saved
    ckpt = out.with_suffix(".ckpt.pt")
    nets = {"model": model, "opt": opt, "ema": ema, "text": text.model if text else None, "head": head}
    start, t_before = 0, 0.0
    if args.resume and ckpt.exists():
        if perturb is not None:
            raise SystemExit("--resume with --swap-shapes: the swap's own draws are not saved")
        state = torch.load(ckpt, weights_only=False)
        for name, obj in nets.items():
            if obj is not None:
                obj.load_state_dict(state[name])
        g.set_state(state["g"])
        start, log, t_before = state["step"], state["log"], state["log"][-1]["seconds"]
        print(f"resumed from {ckpt} at step {start}", flush=True)
    t0 = time.time() - t_before
    for step in range(start, args.steps + 1):
        if (step % args.every == 0 or step == args.steps) and not (step == start and start > 0):
            entry: dict = {"step": step}
            if text is not None:
                with torch.no_grad():
                    EV = text.model(ids_eval)[0].float()  # (N, L, D) from the encoder as trained so far
            if ema is not None:
                ema.copy_to(ema_net)
            for tag, net in (("", model), ("_ema", ema_net)):
                if net is None:
                    continue
                entry[f"x0_mse{tag}"] = x0_errors(net, XV, EV, eval_noise, ac, levels, 1.0, chunk=16)
                if step > 0 and (step % args.gen_every == 0 or step == args.steps):
                    specs = data["eval"]["specs"][: args.gen_n]
                    entry[f"gen{tag}"], images = gen(net, EV, specs)
                    save_sheet(images, out.with_suffix(f".{step}{tag}.png"))
                    torch.save(net.state_dict(), out.with_name(f"{out.stem}{tag}.pt"))  # the latest scored weights
                    if text is not None:  # the T5 the transformer was trained with
                        torch.save(text.model.state_dict(), out.with_name(f"{out.stem}_text.pt"))
            if aux_losses:
                entry["aux_loss"] = round(float(np.mean(aux_losses)), 4)  # mean since the last entry
                aux_losses.clear()
            entry["seconds"] = round(time.time() - t0)
            log.append(entry)
            print(json.dumps(entry), flush=True)
            meta = {
                "arm": args.arm,
                "space": args.space,
                "pca_k": args.pca_k,
                "vae": args.vae,
                "patch": args.patch,
                "batch": args.batch,
                "lr": args.lr,
                "aux_shape": args.aux_shape,
                "aux_layer": args.aux_layer,
                "ema": args.ema,
                "train_text": args.train_text,
                "swap_shapes": args.swap_shapes,
                "swap_max_abar": args.swap_max_abar,
            }
            out.write_text(json.dumps({**meta, "log": log}, indent=1) + "\n")
            state = {name: obj.state_dict() for name, obj in nets.items() if obj is not None}
            save_atomic({**state, "g": g.get_state(), "step": step, "log": log}, ckpt)
        if step == args.steps:
            break
        extra = train_step(model, opt, X, E, ac, g, args.batch, aux=aux, perturb=perturb)
        if aux is not None:
            aux_losses.append(extra)
        if ema is not None:
            ema.update(model)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prep", action="store_true", help="render, encode and cache the stills, then exit")
    ap.add_argument("--model", default="models/cinegen-shapes", help="folder whose VAE, schedule and architecture")
    ap.add_argument("--cache", default="runs/layout/stills.pt")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument(
        "--snap",
        type=int,
        default=None,
        help="--prep: start every object on screen on whole multiples of this many pixels (8: token corners)",
    )
    ap.add_argument("--arm", choices=(*ARMS, *EXTRA_ARMS), default="plain")
    ap.add_argument(
        "--text-over",
        choices=EXTRA_ARMS,
        help="encode --arm by the fresh T5 that this extra arm gets (its vocabulary), so the two arms share one T5",
    )
    ap.add_argument(
        "--space",
        choices=("latent", "latent-white", "pixel", "pca"),
        default="latent",
        help="VAE latents (as cached, or each channel at unit RMS), 4x4-unshuffled pixels, or their top --pca-k "
        "principal components (no VAE)",
    )
    ap.add_argument(
        "--vae",
        help="--space latent / latent-white in this VAE's latents (a model folder or its vae/): the cache's stills "
        "re-encoded (cached beside --cache) and samples decoded by it",
    )
    ap.add_argument("--pca-k", type=int, default=8, help="channels of --space pca")
    ap.add_argument("--patch", type=int, default=2, help="transformer patch size (the default model's is 2)")
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--gen-every", type=int, default=1000)
    ap.add_argument("--gen-n", type=int, default=64, help="eval stills sampled and scored")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--aux-shape", type=float, default=0.0, help="weight of the auxiliary shape-map loss (0: off)")
    ap.add_argument("--aux-layer", type=int, default=3, help="block (1-based) whose video tokens the aux head reads")
    ap.add_argument("--ema", type=float, default=0.0, help="also keep, score and save an EMA of this decay (0: off)")
    ap.add_argument("--swap-shapes", type=float, default=0.0, help="probability of a shape-swapped input (0: off)")
    ap.add_argument("--swap-max-abar", type=float, default=0.5, help="swap only at ᾱ up to this (the noisier part)")
    ap.add_argument("--train-text", action="store_true", help="train a fresh random T5 with the transformer")
    ap.add_argument("--out", help="JSON log (required unless --prep)")
    ap.add_argument(
        "--score",
        choices=("train", "eval"),
        help="only sample and score the first --gen-n stills of this split with OUT.ckpt.pt's weights",
    )
    ap.add_argument("--resume", action="store_true", help="continue from OUT.ckpt.pt (saved at every logged step)")
    ap.add_argument(
        "--score-model",
        metavar="FOLDER",
        help="score this model folder's still mode on the first --gen-n eval stills (token captions) into --out",
    )
    args = ap.parse_args(argv)
    if args.prep:
        prep(args.model, Path(args.cache), args.n_train, args.n_eval, args.snap)
    elif not args.out:
        ap.error("--out is required")
    elif args.score_model:
        print(json.dumps(score_pipeline(args.score_model, Path(args.cache), args.gen_n, Path(args.out))))
    else:
        train(args)


if __name__ == "__main__":
    main()
