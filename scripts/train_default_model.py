"""Reproduce the shipped default model `models/cinegen-shapes/` end to end on a CPU.

    .venv/bin/python scripts/train_default_model.py                 # every stage, skipping finished ones
    .venv/bin/python scripts/train_default_model.py --only dit      # one stage (its inputs must exist)
    .venv/bin/python scripts/train_default_model.py --from export   # re-run export, eval and the card
    .venv/bin/python scripts/train_default_model.py --base models/cinegen-shapes   # reuse the shipped VAE + T5
    .venv/bin/python scripts/train_default_model.py --base models/cinegen-shapes \
        --round configs/shapes-dit-tokens.yaml --init-from models/cinegen-shapes   # round 6 (token captions)

Stages (each is resumable: it is skipped when its output exists, and the two training stages resume from their
last checkpoint when interrupted); every stage logs to `runs/shapes/<stage>.log`:

1. data     `cinegen world render` -> data/shapes (MP4 clips + manifest.jsonl; held-out compositions excluded)
2. text     the text encoder folder runs/shapes/text: a word-level tokenizer over the Shapes-world vocabulary
            (built here from the world's own caption generators, so it needs no downloaded vocabulary) and a
            randomly initialised, frozen T5 encoder (`transformers.T5EncoderModel`); and runs/shapes/text-parse, the
            same T5 parse pre-trained for 2,000 steps (~7 min, one thread), which round 5 reads
3. vae      64 px clips (data/shapes-vae64) and 3 frames of each as images (data/shapes-vae64-img);
            `cinegen train-vae configs/shapes-vae-img.yaml` (image pre-training) -> runs/shapes-vae-img/model, then
            `cinegen train-vae configs/shapes-vae.yaml` (clips, from it) -> runs/shapes-vae/model, then
            runs/shapes-vae/final (the same weights with the measured scaling factor)
3b. vae-decoder  decoder-only fine-tuning (encoder frozen, so cached latents stay valid), run with --only next to
            stage dit (release 3: 5,000 steps on the other core)
4. dit      latents + text embeddings cached by two processes, then side by side (one core each):
            `cinegen train configs/shapes-dit.yaml` -> runs/shapes-dit/model (v-prediction, SNR shift 1) and the
            equal-compute flow-matching partner `configs/shapes-dit-flow.yaml` -> runs/shapes-dit-flow/model
4b. dit-shift  `cinegen train configs/shapes-dit-shift.yaml` (two DDP processes, one core each): the stage-4
            transformer continued at SNR shift 10 -> runs/shapes-dit-shift/model, then twice more with the
            learning rate re-warmed, `configs/shapes-dit-long.yaml` -> runs/shapes-dit-long/model and
            `configs/shapes-dit-long2.yaml` (stopped at step 4,200 -> runs/shapes-dit-long2/export-step_00004200),
            then image-video joint training, `configs/shapes-dit-joint.yaml` (the 4,000 clips + 2 stills of each,
            data/shapes/manifest-joint.jsonl, made here) -> runs/shapes-dit-joint/model (the shipped transformer)
5. export   assemble models/cinegen-shapes (diffusers layout + `_cinegen_defaults`), check it loads
6. eval     VAE reconstruction on held-out clips, caption use, ShapesBench (seen + held-out), generation benchmark
7. card     plots + numbers into models/cinegen-shapes/README.md (the prose parts are maintained by hand)
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DATA = ROOT / "data" / "shapes"
RUNS = ROOT / "runs" / "shapes"
TEXT = RUNS / "text"  # random-init frozen T5 (releases 1-4)
TEXT_PARSE = RUNS / "text-parse"  # the same T5 parse pre-trained (round 5, configs/shapes-dit-parse.yaml)
PARSE_STEPS = 2000
VAE_RUN = ROOT / "runs" / "shapes-vae"
DIT_RUN = ROOT / "runs" / "shapes-dit"  # v-prediction at SNR shift 1 (release 3's transformer)
# Stage dit-shift: DIT_RUN continued at SNR shift 10, then twice more with the learning rate re-warmed; each
# config names its run_dir and warm start (model.transformer_init). The last round is the shipped transformer.
SHIFT_ROUNDS = (
    "configs/shapes-dit-shift.yaml",
    "configs/shapes-dit-long.yaml",
    "configs/shapes-dit-long2.yaml",  # stops at 4,200 (train.stop_at)
    "configs/shapes-dit-joint.yaml",  # image-video joint training from round 3's step-4,200 EMA (session 7 A/B)
    "configs/shapes-dit-tokens.yaml",  # round 6 (release 5): token captions, the T5 with the token words appended
)
FLOW_RUN = ROOT / "runs" / "shapes-dit-flow"  # its flow-matching ablation partner (equal compute)
MODEL = ROOT / "models" / "cinegen-shapes"


@functools.cache
def _round_cfg(config: str) -> Any:
    """The TrainConfig of a dit-shift round (read once per config)."""
    from cinegen.train.config import TrainConfig, load_config

    return load_config(TrainConfig, ROOT / config)


def _round_dirs(config: str) -> tuple[Path, Path | None]:
    """(run_dir, warm-start folder or None: from scratch) of a dit-shift round, as its config states them."""
    cfg = _round_cfg(config)
    init = cfg.model.transformer_init
    return ROOT / cfg.train.run_dir, None if init is None else ROOT / str(init)


def _config_manifest(config: str) -> Path:
    return ROOT / str(_round_cfg(config).data.manifest)


def _export_checkpoint(run_dir: Path, step: int | None = None, out: Path | None = None) -> Path:
    """`cinegen export-checkpoint` of a run (EMA weights), inside the repo root: the run's config names its VAE
    and text encoder relative to it."""
    import contextlib

    from cinegen.train.trainer import export_checkpoint

    with contextlib.chdir(ROOT):
        return export_checkpoint(run_dir, step, out)


def _round_output(config: str) -> Path | None:
    """The finished model folder of a dit-shift round, or None while it has not reached its end: the trainer's
    export, or for a round with `train.stop_at` the EMA export of that checkpoint (made here when missing)."""
    cfg = _round_cfg(config)
    run_dir = ROOT / cfg.train.run_dir
    if (run_dir / "model" / "model_index.json").is_file():
        return run_dir / "model"
    if cfg.train.stop_at is None or not (run_dir / "checkpoints" / f"step_{cfg.train.stop_at:08d}").is_dir():
        return None
    out = run_dir / f"export-step_{cfg.train.stop_at:08d}"
    if not (out / "model_index.json").is_file():
        _export_checkpoint(run_dir, cfg.train.stop_at, out)
    return out


EXPORT_RUN = _round_dirs(SHIFT_ROUNDS[-1])[0]  # the run stage export takes its transformer from (--dit-run)
STAGES = ("data", "text", "vae", "dit", "dit-shift", "export", "eval", "card")
EXTRA_STAGES = ("vae-decoder",)  # run only with --only

# Clip formats of the training set: the three ShapesBench aspects at 9 and 17 frames.
NUM_CLIPS = 5000
DATA_SEED = 0
TEXT_LENGTH = 64  # tokens; the longest dense caption is ~50 words+punctuation (checked in `build_text_encoder`)
TEXT_WIDTH = 128  # T5 d_model = the transformer's text_embed_dim
DIT_CLIPS = 4000  # clips whose latents the DiT trains on (the rest: spare)
DECODER_STEPS = 5000  # VAE decoder fine-tuning (encoder frozen), in parallel with the DiT (release 3: 5,000)

# Defaults the pipeline uses for this folder, chosen by the measurements in the model card (ABLATIONS below):
# v-prediction (the shipped objective) samples with DDIM; a flow model would use Euler + linear-quadratic.
DEFAULTS = {
    "num_frames": 17,
    "height": 96,
    "width": 96,
    "sampler": "ddim",
    "steps": 20,
    "guidance": 4.0,
    "fps": 8.0,
    "prompt_enhancer": "shapes-tokens",  # round 6 trained on token captions
}
FLOW_DEFAULTS = {**DEFAULTS, "sampler": "euler", "flow_schedule": "linear_quadratic"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], logfile: Path) -> None:
    """Run a stage command with its output appended to `logfile`; a failure stops the script."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log(f"$ {' '.join(cmd)}  (log: {logfile.relative_to(ROOT)})")
    with open(logfile, "a") as f:
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc != 0:
        raise SystemExit(f"command failed with exit code {rc}; see {logfile}")


def run_parallel(jobs: list[tuple[list[str], Path]], env: dict[str, str] | None = None) -> None:
    """Run (command, logfile) jobs at once, each appending to its log; wait for all, then stop the script if any
    failed (naming their logs)."""
    procs = []
    for cmd, logfile in jobs:
        logfile.parent.mkdir(parents=True, exist_ok=True)
        log(f"$ {' '.join(cmd)}  (log: {logfile.relative_to(ROOT)})")
        f = open(logfile, "a")  # noqa: SIM115 - closed below, after the process ends
        procs.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env), f, logfile))
    failed = []
    for proc, f, logfile in procs:
        if proc.wait() != 0:
            failed.append(str(logfile.relative_to(ROOT)))
        f.close()
    if failed:
        raise SystemExit(f"command(s) failed; see {', '.join(failed)}")


# --------------------------------------------------------------------------------------------------- 1. data
def stage_data() -> None:
    done = (DATA / "manifest.jsonl").is_file() and len((DATA / "manifest.jsonl").read_text().splitlines()) >= NUM_CLIPS
    if done:
        log("data: done")
        return
    cmd = [PY, "-m", "cinegen.cli", "world", "render", "--out", str(DATA), "--num", str(NUM_CLIPS)]
    run(cmd + ["--seed", str(DATA_SEED), "--frames", "9,17"], RUNS / "data.log")


# --------------------------------------------------------------------------------------------------- 2. text
def caption_pairs(n: int = 20000, seed: int = 123) -> list[tuple[str, str]]:
    """(caption, `scene_target` of what it states) for the dense and a short caption of `n` random Shapes-world
    clips (held-out compositions included: the vocabulary must cover every word a ShapesBench prompt uses; no
    clip is rendered)."""
    import numpy as np

    from cinegen.world.captions import dense_caption, scene_target, short_caption_and_stated
    from cinegen.world.render import sample_spec

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        truth = sample_spec(rng, exclude_held_out=False).truth()
        short, stated = short_caption_and_stated(truth, rng)
        out += [(dense_caption(truth), scene_target(truth)), (short, scene_target(stated))]
    return out


def caption_corpus(n: int = 20000, seed: int = 123) -> list[str]:
    """The captions of `caption_pairs` (dense, short, dense, ...)."""
    return [c for c, _ in caption_pairs(n, seed)]


def word_vocabulary(corpus: list[str]) -> list[str]:
    """Every word and punctuation mark of the corpus and of the world's vocabulary, sorted (deterministic)."""
    import re

    from cinegen.world import vocab as V

    words: set[str] = set()
    for text in corpus:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    extra = [*V.COLORS, *V.BACKGROUND_COLORS, *V.COLOR_SYNONYMS, *V.BACKGROUND_SYNONYMS, *V.SHAPES]
    extra += [*V.SHAPE_PLURALS.values(), *V.SHAPE_SYNONYMS, *V.SIZES, *V.SPEEDS, "1", "2", "3"]
    for w in extra:
        words.update(re.findall(r"\w+|[^\w\s]", w.lower()))
    return sorted(words)


def make_tokenizer(words: list[str]):
    """A word-level fast tokenizer: lower-cased words and punctuation, T5's special ids (pad 0, eos 1, unk 2),
    `</s>` appended as T5 does. Unknown words map to `<unk>`; the prompt enhancer rewrites user prompts into
    the dense captions this vocabulary covers."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+ pieces
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_text_encoder(out: Path, seed: int = 0, parse_steps: int = 0) -> None:
    """Tokenizer + T5 encoder (d_model TEXT_WIDTH) -> out/{tokenizer,text_encoder,stats.json}: random-init when
    `parse_steps` is 0 (releases 1-4), else parse pre-trained for that many steps
    (`cinegen.train.text_encoder`; the vocabulary then also covers the parse targets' words), with its exact-match
    rate on fresh captions in stats.json."""
    from cinegen.models.presets import small_t5

    pairs = caption_pairs()
    corpus = [c for c, _ in pairs]
    words = word_vocabulary(corpus + ([t for _, t in pairs] if parse_steps else []))
    tokenizer = make_tokenizer(words)
    longest = max(len(tokenizer(t).input_ids) for t in corpus)
    if longest > TEXT_LENGTH:
        raise SystemExit(f"the longest caption has {longest} tokens > TEXT_LENGTH={TEXT_LENGTH}")
    unk = sum(tokenizer(t).input_ids.count(2) for t in corpus)
    assert unk == 0, f"{unk} unknown tokens in the caption corpus"
    vocab_size = 64 * ((len(words) + 3 + 63) // 64)
    model = small_t5(vocab_size, TEXT_WIDTH, d_kv=32, num_buckets=16, max_distance=64, seed=seed)
    stats: dict[str, Any] = {"words": len(words), "longest_caption_tokens": longest, "vocab_size": vocab_size}
    if parse_steps:
        model, stats["parse"] = parse_pretrain(model, tokenizer, pairs, parse_steps, seed)
    stats["text_binding"] = binding_probe(model, tokenizer)
    save_text_folder(model, tokenizer, stats, out)


def save_text_folder(model: Any, tokenizer: Any, stats: dict, out: Path) -> None:
    """out/{text_encoder,tokenizer,stats.json}, written beside it and moved into place whole (stats.json marks a
    finished folder)."""
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp / "text_encoder"), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp / "tokenizer"))
    (tmp / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    os.replace(tmp, out)


def binding_probe(encoder: Any, tokenizer: Any) -> dict:
    """`cinegen.world.probe.text_binding` of a T5 encoder: do swapped motions / colours of two objects change its
    bag of token features (the random encoder of releases 1-4: ~0.1 / 0.07 of a changed word)?"""
    import torch

    from cinegen.world.probe import text_binding

    def encode(text: str) -> torch.Tensor:
        with torch.no_grad():
            return encoder(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]  # (L, D)

    return text_binding(encode)


def parse_pretrain(encoder: Any, tokenizer: Any, pairs: list[tuple[str, str]], steps: int, seed: int) -> tuple:
    """`cinegen.train.text_encoder.pretrain_text_encoder` on `pairs` -> (trained `T5EncoderModel`, stats: loss
    curve every 50 steps, exact-match on 300 fresh clips' dense and short captions, wall time)."""
    from cinegen.train.text_encoder import TextPretrainConfig, encoder_of, exact_match, pretrain_text_encoder

    t0 = time.time()
    cfg = TextPretrainConfig(steps=steps, seed=seed)

    def show(step: int, loss: float) -> None:
        if step % 100 == 0 or step == steps:
            log(f"text: parse pre-training step {step}/{steps} loss {loss:.4f}")

    seq2seq, losses = pretrain_text_encoder(encoder, tokenizer, pairs, cfg, log=show)
    fresh = caption_pairs(300, seed=999)
    stats = {
        "steps": steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "loss_every_50": [round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4) for i in range(0, steps, 50)],
        "exact_match_dense": round(exact_match(seq2seq, tokenizer, fresh[0::2]), 4),
        "exact_match_short": round(exact_match(seq2seq, tokenizer, fresh[1::2]), 4),
        "seconds": round(time.time() - t0, 1),
    }
    return encoder_of(seq2seq), stats


def adopt_base(folder: Path) -> None:
    """Take the VAE and the text encoder (+ tokenizer) of an earlier release `folder` instead of training them
    (stage vae and that text folder then count as done), so a session's compute goes to the transformer. The text
    encoder goes where the last dit-shift round's config reads it (runs/shapes/text, or runs/shapes/text-parse once
    a round trains on the parse pre-trained T5); stage text still builds the other one. The DiT's latent cache is
    keyed by the VAE's weights, so it is rebuilt only if the VAE differs."""
    import shutil

    for part in ("vae", "text_encoder", "tokenizer"):
        if not (folder / part).is_dir():
            raise SystemExit(f"--base: {folder / part} is missing")
    text = ROOT / str(_round_cfg(SHIFT_ROUNDS[-1]).model.text_encoder_path)
    if not (text / "stats.json").is_file():
        for part in ("text_encoder", "tokenizer"):
            shutil.copytree(folder / part, text / part, dirs_exist_ok=True)
        (text / "stats.json").write_text(json.dumps({"from": str(folder)}) + "\n")
    if not (VAE_FINAL / "vae" / "config.json").is_file():
        shutil.copytree(folder / "vae", VAE_FINAL / "vae", dirs_exist_ok=True)
        (VAE_FINAL / "source.json").write_text(json.dumps({"weights": str(folder / "vae")}) + "\n")
    log(f"base: VAE and text encoder ({text.relative_to(ROOT)}) from {folder}")


def stage_text() -> None:
    """The random-init T5 of rounds 1-4 (runs/shapes/text) and its parse pre-trained twin (runs/shapes/text-parse,
    ~7 min on one thread) that round 5 reads; each is skipped when it exists."""
    for out, steps in ((TEXT, 0), (TEXT_PARSE, PARSE_STEPS)):
        if (out / "stats.json").is_file():
            log(f"text: {out.relative_to(ROOT)} done")
            continue
        build_text_encoder(out, parse_steps=steps)
        log(f"text: {out.relative_to(ROOT)} {(out / 'stats.json').read_text()}")


# ---------------------------------------------------------------------------------------------------- 3. vae
VAE_DATA = ROOT / "data" / "shapes-vae64"
VAE_FRAMES = ROOT / "data" / "shapes-vae64-img"  # 3 frames of each VAE_DATA clip as PNG: image pre-training
VAE_IMG_RUN = ROOT / "runs" / "shapes-vae-img"
VAE_FINAL = VAE_RUN / "final"  # the trained VAE with its measured scaling factor: what the DiT stage uses


def stage_vae() -> None:
    if (VAE_FINAL / "vae" / "config.json").is_file():
        log("vae: done")
        return
    if not (VAE_DATA / "manifest.jsonl").is_file():
        # 64x64 renders: the world draws every scene at any size, so the fully convolutional VAE trains on
        # native 64 px frames (4x cheaper per clip than 128x96) and runs at 96-128 px.
        from cinegen.world.dataset import export_dataset

        export_dataset(VAE_DATA, 1500, seed=1, aspects=[(64, 64)], frame_counts=[9])
    if not (VAE_FRAMES / "manifest.jsonl").is_file():
        export_vae_frames()
    if not (VAE_IMG_RUN / "model" / "vae" / "config.json").is_file():  # image pre-training (spatial)
        run([PY, "-m", "cinegen.train.cli", "train-vae", "configs/shapes-vae-img.yaml"], RUNS / "vae-img.log")
    if not (VAE_RUN / "model" / "vae" / "config.json").is_file():  # 9-frame clips (temporal), from the above
        run([PY, "-m", "cinegen.train.cli", "train-vae", "configs/shapes-vae.yaml"], RUNS / "vae.log")
    finalize_vae()


def export_vae_frames(per_clip: int = 3, seed: int = 0) -> None:
    """`per_clip` random frames of every 64 px VAE clip as PNG images + an image manifest (the image
    pre-training data of configs/shapes-vae-img.yaml; the trainer puts videos only in video buckets)."""
    from cinegen.data.frames import extract_frames
    from cinegen.data.manifest import read_manifest, write_manifest

    stills = extract_frames(read_manifest(VAE_DATA / "manifest.jsonl"), VAE_DATA, VAE_FRAMES, per_clip, seed)
    write_manifest(stills, VAE_FRAMES / "manifest.jsonl")


def _vae_weights() -> tuple[dict, str]:
    """The trained VAE weights: the trainer's export, else (a run stopped early) its latest checkpoint."""
    from safetensors.torch import load_file

    exported = VAE_RUN / "model" / "vae" / "diffusion_pytorch_model.safetensors"
    if exported.is_file():
        return load_file(str(exported)), str(exported.relative_to(ROOT))
    ckpts = sorted((VAE_RUN / "checkpoints").glob("step_*"))
    if not ckpts:
        raise SystemExit("vae: no export and no checkpoint in runs/shapes-vae")
    state = load_file(str(ckpts[-1] / "model.safetensors"))
    return {k[4:]: v for k, v in state.items() if k.startswith("vae.")}, str(ckpts[-1].relative_to(ROOT))


def latent_std(vae, manifest: Path, n: int = 24) -> float:
    """Std of the posterior means over n training clips (first frames of each bucket): the scaling factor is
    its inverse, so the transformer sees unit-variance latents (as CogVideoX's 1.15258426 does)."""
    import torch

    from cinegen.data.manifest import read_manifest
    from cinegen.video import frames_to_tensor, read_video

    vals = []
    for r in read_manifest(manifest)[:n]:
        frames = read_video(manifest.parent / r.path).frames  # (F, H, W, 3) uint8
        x = frames_to_tensor(frames)[None]  # (1, 3, F, H, W) in [-1, 1]
        with torch.no_grad():
            vals.append(vae.encode(x).flatten())
    return float(torch.cat(vals).std())


def finalize_vae() -> None:
    import torch

    from cinegen.models.io import read_json
    from cinegen.models.vae import CogVideoXVAE, VAEConfig
    from cinegen.train.vae_trainer import save_vae_folder

    cfg_dict = read_json(VAE_RUN / "model" / "vae" / "config.json") if (VAE_RUN / "model").is_dir() else None
    weights, source = _vae_weights()
    if cfg_dict is None:  # rebuild the config the trainer used from the run's resolved config
        from cinegen.train.config import VAETrainConfig, load_config
        from cinegen.train.vae_trainer import build_vae

        vae = build_vae(load_config(VAETrainConfig, VAE_RUN / "config.yaml"))
    else:
        vae = CogVideoXVAE(VAEConfig.from_dict(cfg_dict))
    vae.load_state_dict(weights, strict=True)
    vae.eval()
    std = latent_std(vae, DATA / "manifest.jsonl")
    cfg = VAEConfig.from_dict({**vae.config.to_dict(), "scaling_factor": round(1.0 / std, 6)})
    final = CogVideoXVAE(cfg)
    final.load_state_dict(vae.state_dict(), strict=True)
    save_vae_folder(final, VAE_FINAL)
    (VAE_FINAL / "source.json").write_text(json.dumps({"weights": source, "latent_std": std}, indent=1) + "\n")
    torch.set_grad_enabled(True)
    log(f"vae: {source}, latent std {std:.4f} -> scaling_factor {cfg.scaling_factor}")


# ------------------------------------------------------------------------------------------ 4b. vae decoder
VAE_DEC = ROOT / "runs" / "shapes-vae-decoder"


def finetune_decoder(steps: int, lr: float = 5e-4, batch: int = 2, seed: int = 0) -> None:
    """Fine-tune the VAE decoder with the encoder frozen (L1 on the posterior mean's reconstruction).

    The transformer trains on cached latents of the frozen encoder, so improving the decoder alone keeps those
    latents (and the scaling factor) valid: this stage runs in parallel with the transformer and its result
    replaces the decoder at export. Resumable: weights + optimizer every 200 steps in runs/shapes-vae-decoder.
    (The same L1 objective as `cinegen train-vae`; this loop is the release VAE's recipe as it was run. New VAEs
    use `cinegen train-vae ... model.trainable=decoder`, e.g. configs/shapes-vae-cover-decoder.yaml.)
    """
    import random

    import torch

    from cinegen.data.manifest import read_manifest
    from cinegen.train.trainer import load_vae_folder
    from cinegen.train.vae_trainer import freeze_encoder
    from cinegen.video import read_video

    VAE_DEC.mkdir(parents=True, exist_ok=True)
    vae = load_vae_folder(VAE_FINAL).train().requires_grad_(True)
    freeze_encoder(vae)  # the decoder side (`cinegen.train.cache.DECODER_SIDE`) alone keeps gradients
    params = [p for p in vae.parameters() if p.requires_grad]  # decoder, then post_quant_conv: the saved order
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    ck = VAE_DEC / "state.pt"
    if ck.is_file():
        state = torch.load(ck, weights_only=True)
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    recs = read_manifest(VAE_DATA / "manifest.jsonl")
    clips = [torch.from_numpy(read_video(VAE_DATA / r.path).frames) for r in recs]  # (F, H, W, 3) uint8 each
    rng = random.Random(seed + start)
    log_f = open(VAE_DEC / "metrics.jsonl", "a")  # noqa: SIM115 - kept open for the whole loop
    t0 = time.time()
    for step in range(start + 1, steps + 1):
        idx = [rng.randrange(len(clips)) for _ in range(batch)]
        x = torch.stack([clips[i] for i in idx]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (B, 3, F, H, W)
        with torch.no_grad():
            mean, _ = vae.encode_moments(x)
        y = vae.decode(mean)
        loss = (y - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        frac = step / steps  # cosine decay to 5 %
        for g in opt.param_groups:
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        opt.step()
        mse = float(((y.detach().clamp(-1, 1) - x) / 2).pow(2).mean())
        log_f.write(
            json.dumps(
                {
                    "step": step,
                    "loss": loss.item(),
                    "psnr": 10 * math.log10(1 / max(mse, 1e-10)),
                    "lr": opt.param_groups[0]["lr"],
                    "time": round(time.time() - t0, 1),
                }
            )
            + "\n"
        )
        log_f.flush()
        if step % 200 == 0 or step == steps:
            tmp = VAE_DEC / "state.pt.tmp"
            torch.save({"vae": vae.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
            os.replace(tmp, ck)
    log_f.close()


def stage_vae_decoder(steps: int) -> None:
    state = VAE_DEC / "state.pt"
    if state.is_file():
        import torch

        if torch.load(state, weights_only=True)["step"] >= steps:
            log("vae-decoder: done")
            return
    finetune_decoder(steps)


# ---------------------------------------------------------------------------------------------------- 4. dit
def fill_cache(rank: int, world: int, overrides: list[str]) -> None:
    """Cache the latents + text embeddings of this rank's share (j % world == rank) of the DiT clips, on one
    thread: `world` such processes fill the cache the trainers read (same config, so the same cache keys)."""
    import torch

    from cinegen.train.config import TrainConfig, load_config
    from cinegen.train.parallel import DistInfo
    from cinegen.train.trainer import build_stage_data, load_components, resolve_stages

    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, ROOT / "configs" / "shapes-dit.yaml", _dit_paths() + overrides)
    comps = load_components(cfg)
    info = DistInfo(rank=rank, world=world, local_rank=0, device=torch.device("cpu"))
    for stage in resolve_stages(cfg):
        build_stage_data(cfg, stage, comps, info, DIT_RUN)


def _dit_paths() -> list[str]:
    return [f"model.vae_path={VAE_FINAL.relative_to(ROOT)}", f"model.text_encoder_path={TEXT.relative_to(ROOT)}"]


def stage_dit(overrides: list[str], runs: tuple[str, ...] = ("vpred", "flow")) -> None:
    """The shipped v-prediction transformer and its flow-matching ablation (same data, steps and model), trained
    side by side: one process per core (two 1-thread processes train ~2x the samples of one 2-thread process)."""
    dit_manifest()
    todo = [
        (config, run_dir)
        for name, config, run_dir in (
            ("vpred", "configs/shapes-dit.yaml", DIT_RUN),
            ("flow", "configs/shapes-dit-flow.yaml", FLOW_RUN),
        )
        if name in runs and not (run_dir / "model" / "model_index.json").is_file()
    ]
    if not todo:
        log("dit: done")
        return
    log("dit: caching latents and text embeddings (two processes)")
    run_parallel([([PY, __file__, "--fill-cache", f"{r}/2", *overrides], RUNS / f"cache-{r}.log") for r in range(2)])
    train = [PY, "-m", "cinegen.train.cli", "train"]
    jobs = [([*train, config, *_dit_paths(), *overrides], RUNS / f"{run_dir.name}.log") for config, run_dir in todo]
    run_parallel(jobs, env={**os.environ, "OMP_NUM_THREADS": "1"})


def dit_manifest() -> Path:
    """data/shapes/manifest-dit.jsonl: the first DIT_CLIPS clips of the rendered manifest (made once)."""
    manifest = DATA / "manifest-dit.jsonl"
    if not manifest.is_file():
        lines = (DATA / "manifest.jsonl").read_text().splitlines(keepends=True)[:DIT_CLIPS]
        manifest.write_text("".join(lines))
    return manifest


def write_joint_manifest(root: Path, clips: list, per_clip: int, seed: int = 0, first: bool = False) -> Path:
    """root/manifest-joint.jsonl: `clips` (records of root's manifest) plus `per_clip` stills of each
    (root/stills, captions kept; with `first`, each clip's first frame among them): image-video joint training."""
    import dataclasses

    from cinegen.data.frames import extract_frames
    from cinegen.data.manifest import write_manifest

    out = root / "manifest-joint.jsonl"
    stills = extract_frames(clips, root, root / "stills", per_clip, seed, first=first)
    stills = [dataclasses.replace(r, path=f"stills/{r.path}") for r in stills]  # relative to root
    write_manifest([*clips, *stills], out)
    log(f"joint manifest: {len(clips)} clips + {len(stills)} stills -> {out.relative_to(ROOT)}")
    return out


def joint_manifest(per_clip: int = 2, seed: int = 0) -> Path:
    """The DiT clips plus `per_clip` random stills of each (data/shapes/stills, captions kept) in one manifest,
    data/shapes/manifest-joint.jsonl: image-video joint training (configs/shapes-dit-joint.yaml)."""
    from cinegen.data.manifest import read_manifest

    out = DATA / "manifest-joint.jsonl"
    return out if out.is_file() else write_joint_manifest(DATA, read_manifest(dit_manifest()), per_clip, seed)


# ---------------------------------------------------------------------------------- round 6: token captions
# Started in session 22 (3,600 of 12,000 steps; `--round configs/shapes-dit-tokens.yaml`): the product's token captions
# ("a red circle in the top left at c3 r2 ...", `world render --token-captions --snap-starts`: every object starts
# on a token corner) on NUM_CLIPS new clips, release 4's T5 with the token words appended (old captions encode
# bit-identically, so release 4's transformer is continued), and one still per clip, its first frame: the frame
# the caption's tokens describe. Why: model card, "Token captions, longer, and does the toy generalise?".
TOKEN_DATA = ROOT / "data" / "shapes-tokens"
TEXT_TOKENS = RUNS / "text-tokens"
TOKEN_CORPUS = 5000  # token captions checked for unknown words and length (~80 s on one thread)


def token_caption_corpus(n: int, seed: int = 123) -> list[str]:
    """Dense token captions of `n` random clips, starts snapped to token corners as in TOKEN_DATA (held-out
    compositions included: the vocabulary must cover every ShapesBench prompt; no clip is rendered)."""
    import numpy as np

    from cinegen.world import vocab as V
    from cinegen.world.captions import dense_caption
    from cinegen.world.render import sample_spec

    def spec(i: int) -> Any:
        return sample_spec(np.random.default_rng([seed, i]), exclude_held_out=False, snap=V.TOKEN_PX)

    return [dense_caption(spec(i).truth(tokens=True)) for i in range(n)]


def token_words(corpus: list[str]) -> list[str]:
    """The words token captions use: the corpus's ("top", "center", ...) and every column and row token of the
    largest training frame (c0..c15, r0..r15), sorted so the appended ids are deterministic."""
    from cinegen.world import vocab as V

    cols = max(w for w, _ in V.ASPECTS.values()) // V.TOKEN_PX
    rows = max(h for _, h in V.ASPECTS.values()) // V.TOKEN_PX
    return sorted(set(word_vocabulary(corpus)) | {f"c{i}" for i in range(cols)} | {f"r{j}" for j in range(rows)})


def build_token_text_encoder(src: Path, out: Path) -> dict:
    """`src`'s tokenizer + T5 with the token words appended (`extend_word_vocabulary`) -> out/{tokenizer,
    text_encoder,stats.json}. Checks that no token caption has an unknown word and that the old captions encode
    exactly as before; the stats record how many token captions exceed TEXT_LENGTH (their tail is cut)."""
    import torch

    from cinegen.models.text import extend_word_vocabulary, load_t5, load_tokenizer

    old_tok, model = load_tokenizer(src / "tokenizer"), load_t5(src / "text_encoder", dtype=torch.float32)
    corpus = token_caption_corpus(TOKEN_CORPUS)
    probe = caption_corpus(50)[:50]  # old captions: their ids and features must not change
    before = [model(**old_tok(t, return_tensors="pt")).last_hidden_state for t in probe]
    tokenizer, added = extend_word_vocabulary(old_tok, model, token_words(corpus))
    encoded = tokenizer(corpus).input_ids
    lengths = [len(ids) for ids in encoded]
    unk = sum(ids.count(tokenizer.unk_token_id) for ids in encoded)
    if unk:
        raise SystemExit(f"{unk} unknown tokens in the token caption corpus")
    for t, b in zip(probe, before, strict=True):
        if old_tok(t).input_ids != tokenizer(t).input_ids:
            raise SystemExit(f"the extended tokenizer changed an old caption's ids: {t!r}")
        if not torch.equal(model(**tokenizer(t, return_tensors="pt")).last_hidden_state, b):
            raise SystemExit(f"the extended T5 encodes an old caption differently: {t!r}")
    stats = {
        "from": str(src.relative_to(ROOT) if src.is_relative_to(ROOT) else src),
        "added_words": added,
        "vocab_size": int(model.config.vocab_size),
        "longest_caption_tokens": max(lengths),
        "captions_over_text_length": round(sum(n > TEXT_LENGTH for n in lengths) / len(lengths), 4),
        "text_binding": binding_probe(model, tokenizer),
    }
    save_text_folder(model, tokenizer, stats, out)
    return stats


def token_joint_manifest() -> Path:
    """TOKEN_DATA/manifest-joint.jsonl: its first DIT_CLIPS clips plus the first frame of each as a still (the
    data set is rendered here first when missing)."""
    from cinegen.data.manifest import read_manifest

    out = TOKEN_DATA / "manifest-joint.jsonl"
    if out.is_file():
        return out
    if not (TOKEN_DATA / "manifest.jsonl").is_file():
        render = [PY, "-m", "cinegen.cli", "world", "render", "--out", str(TOKEN_DATA), "--num", str(NUM_CLIPS)]
        flags = ["--seed", str(DATA_SEED), "--frames", "9,17", "--token-captions", "--snap-starts"]
        run(render + flags, RUNS / "data-tokens.log")
    return write_joint_manifest(TOKEN_DATA, read_manifest(TOKEN_DATA / "manifest.jsonl")[:DIT_CLIPS], 1, first=True)


def token_stills_manifest() -> Path:
    """TOKEN_DATA/manifest-stills.jsonl: only the stills of the token joint manifest (each clip's first frame, its
    token caption kept), for a text-to-image phase; their latents are the joint round's, so a warm cache is reused."""
    from cinegen.data.manifest import read_manifest, write_manifest

    out = TOKEN_DATA / "manifest-stills.jsonl"
    if not out.is_file():
        stills = [r for r in read_manifest(token_joint_manifest()) if r.type == "image"]
        write_manifest(stills, out)
        log(f"stills manifest: {len(stills)} stills -> {out.relative_to(ROOT)}")
    return out


def prepare_round(config: str) -> None:
    """Make the inputs a transformer round's config reads when they are missing: its joint manifest (clips +
    stills) and, for the token round, its data and text encoder (built from release 4's, TEXT)."""
    manifest = _config_manifest(config)
    if manifest == DATA / "manifest-joint.jsonl":
        joint_manifest()
    elif manifest == TOKEN_DATA / "manifest-joint.jsonl":
        token_joint_manifest()
    elif manifest == TOKEN_DATA / "manifest-stills.jsonl":
        token_stills_manifest()
    text = ROOT / str(_round_cfg(config).model.text_encoder_path)
    if text == TEXT_TOKENS and not (text / "stats.json").is_file():
        if not (TEXT / "stats.json").is_file():
            raise SystemExit(f"{text.relative_to(ROOT)} extends {TEXT.relative_to(ROOT)}: run --only text or --base")
        log(f"text: {text.relative_to(ROOT)} {build_token_text_encoder(TEXT, text)}")


def train_round(config: str, overrides: list[str]) -> None:
    """One transformer round (its config names its run, warm start, data, VAE and T5) as two DDP processes of
    one thread, each with half of the config's `data.batch_size` (the global batch: 8 clips in every round up
    to the coverage round); it resumes from its last checkpoint."""
    run_dir, init = _round_dirs(config)
    batch = _round_cfg(config).data.batch_size
    if batch % 2:
        raise SystemExit(f"{config}: data.batch_size {batch} does not split over the round's 2 processes")
    if init is not None and not (init / "model_index.json").is_file():
        raise SystemExit(f"{config} starts from {init.relative_to(ROOT)}, which is missing")
    prepare_round(config)
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd = [*torchrun, "-m", "cinegen.train.cli", "train", config]
    log(f"$ {' '.join(cmd)}  (log: runs/shapes/{run_dir.name}.log)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(RUNS / f"{run_dir.name}.log", "a") as f:
        args = [*cmd, "parallel.strategy=ddp", f"data.batch_size={batch // 2}", *overrides]
        rc = subprocess.call(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    if rc != 0:
        raise SystemExit(f"{config} failed with exit code {rc}; see runs/shapes/{run_dir.name}.log")


def stage_dit_shift(overrides: list[str]) -> None:
    """Continue the stage-4 transformer at SNR shift 10 (configs/shapes-dit-shift.yaml; the model card measures
    why), then once more with the learning rate re-warmed (configs/shapes-dit-long.yaml): two DDP processes of one
    thread and 4 clips each, the same global batch of 8 as stage 4."""
    for config in SHIFT_ROUNDS:
        run_dir, _ = _round_dirs(config)
        if (done := _round_output(config)) is not None:
            log(f"dit-shift: {run_dir.relative_to(ROOT)} done ({done.relative_to(ROOT)})")
            continue
        train_round(config, overrides)
        if _round_output(config) is None:
            raise SystemExit(f"dit-shift: {config} ended without its model export or stop checkpoint")


# ------------------------------------------------------------------------------------------------- 5. export
def _dit_folder() -> Path:
    """The transformer's model folder: the trainer's export, else (a run stopped early) its latest checkpoint's EMA
    exported the same way (`cinegen export-checkpoint`, into RUN/export-step_N)."""
    if (EXPORT_RUN / "model" / "model_index.json").is_file():
        return EXPORT_RUN / "model"
    try:
        return _export_checkpoint(EXPORT_RUN)
    except FileNotFoundError as e:
        raise SystemExit(f"export: no DiT export and no checkpoint in {EXPORT_RUN.relative_to(ROOT)}") from e


def stage_export() -> None:
    import shutil

    import torch

    from cinegen.models.io import load_model_folder, read_json, save_model_folder

    dit = _dit_folder()
    source = str(dit.relative_to(ROOT))
    bundle = load_model_folder(dit, dtype=torch.float32)
    vae_source = "runs/shapes-vae/final"
    if (VAE_DEC / "state.pt").is_file():  # the decoder fine-tuned on the frozen encoder (stage vae-decoder)
        dec = torch.load(VAE_DEC / "state.pt", weights_only=True)
        bundle.vae.load_state_dict(dec["vae"], strict=True)
        vae_source += f" + decoder {VAE_DEC.relative_to(ROOT)} step {dec['step']}"
    tmp = MODEL.with_name(MODEL.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_folder(bundle, tmp)
    index = read_json(tmp / "model_index.json")
    flow = index["scheduler"][1] == "FlowMatchEulerDiscreteScheduler"
    index["_cinegen_defaults"] = dict(FLOW_DEFAULTS if flow else DEFAULTS)
    # transformers 5 names the fast tokenizer class `TokenizersBackend`; `PreTrainedTokenizerFast` is its name in
    # transformers 4 and an alias in 5, so the folder loads with either.
    index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    tok_cfg = read_json(tmp / "tokenizer" / "tokenizer_config.json")
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (tmp / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (tmp / "source.json").write_text(json.dumps({"transformer": source, "vae": vae_source}, indent=1))
    card = MODEL / "README.md"
    for keep in [card, *MODEL.glob("*.png")] if MODEL.is_dir() else []:
        if keep.is_file():
            shutil.copy2(keep, tmp / keep.name)
    shutil.rmtree(MODEL, ignore_errors=True)
    os.replace(tmp, MODEL)
    size = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())
    log(f"export: {MODEL.relative_to(ROOT)} from {source}, {size / 2**20:.1f} MiB")
    if size > 60 * 2**20:
        raise SystemExit(f"export: {size / 2**20:.1f} MiB > the 60 MB limit")


# --------------------------------------------------------------------------------------------------- 6. eval
EVAL = RUNS / "eval"


def vae_reconstruction(model: Path, n: int = 12, seed: int = 777) -> dict:
    """PSNR / SSIM / flicker of the model's VAE on clips it never saw: a fresh seed, held-out compositions
    allowed, all three aspects, 17 frames (the encode-decode round trip at the model's posterior mean)."""
    import numpy as np
    import torch

    from cinegen.train.metrics import video_metrics
    from cinegen.train.trainer import load_vae_folder
    from cinegen.video import frames_to_tensor
    from cinegen.world.dataset import clip_spec
    from cinegen.world.render import render_clip

    vae = load_vae_folder(model)
    rows = []
    for i in range(n):
        spec, _ = clip_spec(seed, i, frame_counts=[17], include_held_out=True)
        frames = render_clip(spec)  # (F, H, W, 3) uint8
        x = frames_to_tensor(frames)[None]  # (1, 3, F, H, W) in [-1, 1]
        with torch.no_grad():
            y = vae.decode(vae.encode(x)).clamp(-1, 1)
        # the metrics on 8-bit video, as a viewer sees it
        y = ((y + 1) * 127.5).round() / 127.5 - 1
        rows.append({"aspect": f"{spec.width}x{spec.height}", "held_out": spec.held_out, **video_metrics(y, x)})
    keys = [k for k in rows[0] if k not in ("aspect", "held_out")]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    return {"clips": n, "seed": seed, "frames": 17, "mean": mean, "rows": rows}


def _probe(model: Path, which: str) -> dict:
    """`cinegen.world.probe.caption_use` / `attribute_use` on the folder (fp32); flow models are skipped."""
    import torch

    from cinegen.pipeline import load_pipeline
    from cinegen.world import probe

    pipe = load_pipeline(model, device="cpu", dtype=torch.float32)
    try:
        return probe.caption_use(pipe) if which == "caption" else probe.attribute_use(pipe)
    except ValueError as e:  # a flow-matching model: recorded, not fatal to the eval stage
        return {"skipped": str(e)}


def stage_eval(limit: int | None) -> None:
    EVAL.mkdir(parents=True, exist_ok=True)
    if not (EVAL / "vae.json").is_file():
        (EVAL / "vae.json").write_text(json.dumps(vae_reconstruction(MODEL), indent=1) + "\n")
    log(f"eval: VAE {json.loads((EVAL / 'vae.json').read_text())['mean']}")
    for which in ("caption", "attribute"):  # does the transformer read its caption, and its object words?
        out = EVAL / f"{which}_use.json"
        if not out.is_file():
            out.write_text(json.dumps(_probe(MODEL, which), indent=1) + "\n")
        log(f"eval: {which} use {json.loads(out.read_text()).get('gain')}")
    launch = [PY, "-m"]
    if not _bench_complete() or _bench_limit() != limit:
        cmd = launch + ["cinegen.cli", "eval", "shapes", "--model", str(MODEL), "--out", str(EVAL / "bench")]
        run(cmd + (["--limit", str(limit)] if limit else []), RUNS / "eval.log")
        (EVAL / "bench" / "limit.json").write_text(json.dumps({"limit": limit}) + "\n")
    if not (EVAL / "ablations.json").is_file():
        (EVAL / "ablations.json").write_text(json.dumps(ablation_runs(), indent=1) + "\n")
    if not (EVAL / "gen_bench.json").is_file():
        env_cmd = launch + [
            "cinegen.bench.generate_bench",
            "--model",
            str(MODEL),
            "--out",
            str(EVAL / "gen_bench.json"),
        ]
        run(env_cmd, RUNS / "eval.log")


# (name, model folder, generate() overrides): objective ablation at equal training compute, sampler / steps /
# guidance choice for the shipped model, and linear-quadratic vs uniform flow schedules at equal steps.
ABLATIONS: list[tuple[str, Path, dict]] = [
    ("vpred ddim-20 cfg4", MODEL, {"sampler": "ddim", "steps": 20, "guidance": 4.0}),
    ("vpred ddim-10 cfg4", MODEL, {"sampler": "ddim", "steps": 10, "guidance": 4.0}),
    ("vpred ddim-50 cfg4", MODEL, {"sampler": "ddim", "steps": 50, "guidance": 4.0}),
    ("vpred ddim-20 cfg6", MODEL, {"sampler": "ddim", "steps": 20, "guidance": 6.0}),
    ("vpred dpm-20 cfg4", MODEL, {"sampler": "dpm", "steps": 20, "guidance": 4.0}),
    ("flow euler-20 lq cfg4", FLOW_RUN / "model", {"steps": 20, "guidance": 4.0, "flow_schedule": "linear_quadratic"}),
    ("flow euler-20 uniform cfg4", FLOW_RUN / "model", {"steps": 20, "guidance": 4.0, "flow_schedule": "uniform"}),
    ("flow euler-10 lq cfg4", FLOW_RUN / "model", {"steps": 10, "guidance": 4.0, "flow_schedule": "linear_quadratic"}),
    ("flow euler-10 uniform cfg4", FLOW_RUN / "model", {"steps": 10, "guidance": 4.0, "flow_schedule": "uniform"}),
]


def ablation_runs(limit: int = 16) -> dict:
    """ShapesBench on the first `limit` prompts (held-out and seen interleaved, same seeds) per ablation row."""
    import torch

    from cinegen.pipeline import load_pipeline
    from cinegen.world.bench import pipeline_generate, run_shapes_bench

    out: dict = {"limit": limit, "runs": {}}
    pipes: dict = {}
    for name, folder, kw in ABLATIONS:
        if not (folder / "model_index.json").is_file():
            log(f"ablation {name}: {folder} missing, skipped")
            continue
        pipe = pipes.setdefault(folder, load_pipeline(folder, device="cpu", dtype=torch.float32))
        generate = pipeline_generate(pipe, **kw)
        t0 = time.time()
        tag = name.replace(" ", "_")
        res = run_shapes_bench(generate, EVAL / "ablation" / tag, limit=limit, model=str(folder))
        out["runs"][name] = {"summary": res["summary"], "seconds": round(time.time() - t0, 1), "kwargs": kw}
        log(f"ablation {name}: {res['summary']['all']}")
    return out


def _bench_complete() -> bool:
    """results.json is rewritten after every video: a run stopped half-way leaves a partial one."""
    try:
        res = json.loads((EVAL / "bench" / "results.json").read_text())
        return res["videos"] == res["suite_size"]
    except (OSError, KeyError, ValueError):
        return False


def _bench_limit() -> int | None:
    try:
        return json.loads((EVAL / "bench" / "limit.json").read_text())["limit"]
    except (OSError, KeyError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------- 7. card
def stage_card() -> None:
    """Training curves next to the card, and the measured numbers as markdown fragments the card embeds."""
    import shutil

    rounds = [_round_dirs(c)[0] for c in SHIFT_ROUNDS]  # runs/shapes-dit-long -> dit_long_curves.png
    curves = (
        (VAE_RUN, "vae_curves.png"),
        (DIT_RUN, "dit_curves.png"),
        *((r, r.name.removeprefix("shapes-").replace("-", "_") + "_curves.png") for r in rounds),
        (FLOW_RUN, "dit_flow_curves.png"),
    )
    for run_dir, name in curves:
        if (run_dir / "metrics.jsonl").is_file():
            run([PY, "-m", "cinegen.train.cli", "plot", str(run_dir), "-o", str(MODEL / name)], RUNS / "card.log")
    if (EVAL / "bench" / "samples.png").is_file():
        shutil.copy2(EVAL / "bench" / "samples.png", MODEL / "shapesbench_samples.png")
    log("card: plots written; numbers: runs/shapes/eval/{vae.json,bench/results.md,gen_bench.md}")


def round_main(config: str, init_from: str | None, overrides: list[str]) -> int:
    """`--round CONFIG [--init-from FOLDER]`: one round, its warm start copied from FOLDER when missing."""
    import shutil

    if not (ROOT / config).is_file():
        raise SystemExit(f"--round: {config} not found")
    if init_from and not (Path(init_from) / "model_index.json").is_file():
        raise SystemExit(f"--init-from: {init_from} is not a model folder (no model_index.json)")
    _, init = _round_dirs(config)
    if init_from and init is None:
        raise SystemExit(f"--init-from: {config} trains from scratch (no model.transformer_init)")
    if init_from and init is not None and not (init / "model_index.json").is_file():
        shutil.copytree(init_from, init, dirs_exist_ok=True)
        log(f"round: warm start {init.relative_to(ROOT)} copied from {init_from}")
    t0 = time.time()
    train_round(config, overrides)
    log(f"finished round {config} in {(time.time() - t0) / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=STAGES + EXTRA_STAGES, default=None)
    p.add_argument("--from", dest="start", choices=STAGES, default=None, help="run this stage and the ones after")
    p.add_argument("--decoder-steps", type=int, default=DECODER_STEPS, help="VAE decoder fine-tuning steps")
    p.add_argument(
        "--dit-run", default=None, help="export this run's transformer instead of the last dit-shift round's"
    )
    p.add_argument("--bench-limit", type=int, default=None, help="ShapesBench: only the first N prompts")
    p.add_argument(
        "--dit-runs",
        default="vpred,flow",
        help="which DiT runs stage dit trains side by side: vpred, flow or both (release 3: vpred, with the "
        "decoder fine-tuning on the other core)",
    )
    p.add_argument(
        "--base",
        default=None,
        metavar="FOLDER",
        help="take the VAE and text encoder from this model folder (e.g. models/cinegen-shapes) instead of "
        "training them; stages text and vae are then done",
    )
    p.add_argument(
        "--round",
        default=None,
        metavar="CONFIG",
        help="train one transformer round outside the release chain (e.g. configs/shapes-dit-tokens.yaml), making "
        "its data and text encoder first when missing; resumes from its last checkpoint",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="FOLDER",
        help="with --round: copy this model folder (e.g. models/cinegen-shapes) to the round's warm start "
        "(model.transformer_init) when that is missing, as on an empty runs/",
    )
    p.add_argument("--fill-cache", default=None, metavar="RANK/WORLD", help=argparse.SUPPRESS)  # stage dit's helper
    p.add_argument("dit_overrides", nargs="*", help="dot-list overrides for the DiT runs (e.g. train.steps=300)")
    args = p.parse_args(argv)
    if args.init_from and not args.round:
        p.error("--init-from needs --round")
    if args.fill_cache:
        rank, world = (int(v) for v in args.fill_cache.split("/"))
        fill_cache(rank, world, args.dit_overrides)
        return 0
    if args.dit_run:
        global EXPORT_RUN
        EXPORT_RUN = ROOT / args.dit_run
    if args.base:
        adopt_base(Path(args.base).resolve())
    if args.round:
        return round_main(args.round, args.init_from, args.dit_overrides)
    fns = {k: v for k, v in globals().items() if k.startswith("stage_")}
    todo = [args.only] if args.only else list(STAGES[STAGES.index(args.start) :] if args.start else STAGES)
    t0 = time.time()
    for s in todo:
        if s == "dit":
            stage_dit(args.dit_overrides, tuple(args.dit_runs.split(",")))
        elif s == "dit-shift":
            stage_dit_shift(args.dit_overrides)
        elif s == "vae-decoder":
            stage_vae_decoder(args.decoder_steps)
        elif s == "eval":
            stage_eval(args.bench_limit)
        else:
            fns[f"stage_{s.replace('-', '_')}"]()
    log(f"finished {todo} in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
