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

__all__ = ["TextEncoder", "load_tokenizer", "load_t5"]

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
