"""Parse pre-training of a small T5 text encoder: read a caption, write what it means.

A randomly initialised, frozen T5 (what the default model used up to release 4) hands the transformer an
almost context-free bag of word vectors: each output token is its own word plus a near-uniform average of the
others, so "a red circle moving up and a blue square moving down" and the same words with the motions swapped
look nearly alike, and nothing says which motion belongs to which object. CogVideoX gets contextual token
features from a T5 pre-trained on web text; with no downloads, this module gets them from the captions
themselves: the encoder is trained, as the encoder of a T5 encoder-decoder (`T5ForConditionalGeneration`,
teacher forcing, cross-entropy), to produce a fixed-order record of the caption's facts
(`cinegen.world.captions.scene_target`). T5's cross-attention has no positions, so the decoder can only find
"the motion of the red object" if the encoder has put it into that object's tokens. Only the encoder is kept
(a `T5EncoderModel` folder, the diffusers layout's `text_encoder`); the decoder is thrown away.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["TextPretrainConfig", "build_seq2seq", "encoder_of", "exact_match", "pretrain_text_encoder"]


@dataclass(frozen=True)
class TextPretrainConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    decoder_layers: int = 2
    seed: int = 0


def build_seq2seq(encoder: Any, decoder_layers: int) -> Any:
    """A `T5ForConditionalGeneration` whose encoder (and shared embedding) are a copy of `encoder`'s
    (a `T5EncoderModel`) and whose `decoder_layers`-layer decoder is freshly initialised."""
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(**{**encoder.config.to_dict(), "num_decoder_layers": decoder_layers, "is_encoder_decoder": True})
    model = T5ForConditionalGeneration(cfg)
    missing, unexpected = model.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected or any(k.startswith("encoder.") or k == "shared.weight" for k in missing):
        raise ValueError(f"encoder weights do not fit the seq2seq model: {unexpected or missing}")
    return model


def encoder_of(model: Any) -> Any:
    """The `T5EncoderModel` of a `T5ForConditionalGeneration` (the same weights, decoder dropped)."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(**{k: v for k, v in model.config.to_dict().items() if k != "num_decoder_layers"})
    enc = T5EncoderModel(cfg)
    state = {k: v for k, v in model.state_dict().items() if k.startswith("encoder.") or k == "shared.weight"}
    enc.load_state_dict(state, strict=False)  # encoder.embed_tokens is tied to shared
    return enc.eval()


def _lr_factor(step: int, cfg: TextPretrainConfig) -> float:
    """Linear warm-up, then cosine down to `min_lr_ratio` (step counts from 0)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def _batch(tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
    src = tokenizer([p[0] for p in pairs], padding=True, return_tensors="pt")
    tgt = tokenizer([p[1] for p in pairs], padding=True, return_tensors="pt")
    labels = tgt.input_ids.masked_fill(tgt.attention_mask == 0, -100)  # (B, L_tgt); pads ignored
    return {"input_ids": src.input_ids, "attention_mask": src.attention_mask, "labels": labels}


def pretrain_text_encoder(
    encoder: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    cfg: TextPretrainConfig,
    log: Callable[[int, float], None] | None = None,
) -> tuple[Any, list[float]]:
    """Train `encoder` (a `T5EncoderModel`, left untouched) on (caption, target) `pairs` as the encoder of a
    seq2seq parse model; returns (the trained `T5ForConditionalGeneration`, per-step losses); `encoder_of`
    takes its encoder out. Batches are drawn with
    replacement from `pairs` by a generator seeded with `cfg.seed`; deterministic on one thread."""
    if not pairs:
        raise ValueError("pretrain_text_encoder needs at least one (caption, target) pair")
    torch.manual_seed(cfg.seed)
    model = build_seq2seq(encoder, cfg.decoder_layers).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    losses: list[float] = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg)
        idx = torch.randint(len(pairs), (cfg.batch_size,), generator=g).tolist()
        loss = model(**_batch(tokenizer, [pairs[i] for i in idx])).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None:
            log(step + 1, losses[-1])
    return model.eval(), losses


@torch.no_grad()
def exact_match(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 128) -> float:
    """Share of `pairs` whose greedy decode by the seq2seq `model` equals the target exactly."""
    model.eval()
    hits = 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        src = tokenizer([p[0] for p in chunk], padding=True, return_tensors="pt")
        max_len = max(len(tokenizer(p[1]).input_ids) for p in chunk) + 2
        out = model.generate(**src, max_new_tokens=max_len, do_sample=False, num_beams=1)
        texts = tokenizer.batch_decode(out, skip_special_tokens=True)
        hits += sum(_norm(t) == _norm(p[1]) for t, p in zip(texts, chunk, strict=True))
    return hits / len(pairs)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())
