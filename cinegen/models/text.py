"""T5 text encoding as CogVideoX does it: pad to the model's text length, no attention mask anywhere.

Dimension legend: B batch, L tokens (the transformer's ``max_text_seq_length``), D text width (4096 for T5-XXL).

The reference pads every prompt to 226 tokens with the pad token and runs T5 *without* an attention mask, so the
pad positions get real (non-zero) embeddings that the transformer was trained on. Reproducing that is part of the
numerics; a mask would change the output.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

__all__ = ["TextEncoder", "extend_word_vocabulary", "load_tokenizer", "load_t5"]

log = logging.getLogger(__name__)


def load_tokenizer(folder: str | Path):
    """A local tokenizer folder (T5 sentencepiece or byte-level ByT5); never touches a hub."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise ValueError(f"{folder}: cannot load tokenizer ({type(e).__name__}: {e})") from e


def load_t5(folder: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """A local `T5EncoderModel` folder (config.json + safetensors, sharded allowed)."""
    from transformers import T5EncoderModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"text encoder config not found: {folder / 'config.json'}")
    try:
        model = T5EncoderModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except Exception as e:
        raise ValueError(f"{folder}: cannot load the T5 text encoder ({type(e).__name__}: {e})") from e
    return model.eval().requires_grad_(False)


def extend_word_vocabulary(tokenizer, model: nn.Module, words: list[str], seed: int = 0):  # noqa: ANN001, ANN201
    """Append the `words` a word-level tokenizer (a `tokenizers` WordLevel model, as the default model's) lacks at
    the end of its vocabulary, and give the T5 a new embedding row for each, drawn from N(0, std of the old rows)
    with `seed`. Old ids and rows stay, so a caption without the new words encodes exactly as before and a
    transformer trained on the old encoder can be continued. -> (the new tokenizer, words added); `model` is
    resized in place (`config.vocab_size` too)."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)  # None: a slow (e.g. byte-level ByT5) tokenizer
    state = json.loads(backend.to_str()) if backend is not None else {"model": {"type": type(tokenizer).__name__}}
    if state["model"]["type"] != "WordLevel":
        raise ValueError(f"extend_word_vocabulary needs a word-level tokenizer, got {state['model']['type']}")
    vocab: dict[str, int] = state["model"]["vocab"]
    new = [w for w in dict.fromkeys(x.lower() for x in words) if w not in vocab]  # the normaliser lower-cases
    emb = model.get_input_embeddings().weight  # (V, D)
    if len(vocab) != emb.shape[0]:
        raise ValueError(f"tokenizer has {len(vocab)} words but the T5 {emb.shape[0]} embedding rows")
    if not new:
        return tokenizer, []
    for w in new:
        vocab[w] = len(vocab)
    std = float(emb.detach().float().std())
    model.resize_token_embeddings(len(vocab), mean_resizing=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = torch.randn(len(new), emb.shape[1], generator=g) * std  # (new, D)
        model.get_input_embeddings().weight[-len(new) :] = rows.to(emb.dtype)
    special = {k: getattr(tokenizer, k) for k in ("pad_token", "eos_token", "unk_token")}
    out = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)), **special)
    return out, new


class TextEncoder:
    """Tokenizer + T5 encoder; `encode(prompts)` -> (B, L, D) padded embeddings, as the reference pipeline."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """-> input ids (B, L), padded/truncated to `max_length`; warns about truncated text."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        # Only a row that fills all max_length slots (no pad at the end) can have been truncated: tokenize those
        # again unpadded (padding them to the batch's longest would make every row look too long).
        pad = self.tokenizer.pad_token_id
        maybe = [p for p, row in zip(prompts, ids, strict=True) if pad is None or int(row[-1]) != pad]
        full = self.tokenizer(maybe, add_special_tokens=True).input_ids if maybe else []
        for prompt, toks in zip(maybe, full, strict=True):
            if len(toks) > self.max_length:
                kept = self.tokenizer.decode(toks[: self.max_length - 1], skip_special_tokens=True)
                log.warning(
                    "prompt truncated to %d tokens (the model's text length); dropped: %r",
                    self.max_length,
                    prompt[len(kept) :].strip() or "(tail)",
                )
        return ids

    @torch.no_grad()
    def encode(self, prompts: list[str] | str) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        ids = self.tokenize(prompts).to(self.device)  # (B, L)
        # no attention_mask: the reference encodes the pad tokens too (see module docstring)
        return self.model(ids)[0]  # (B, L, D)
