"""Shared fixtures: tiny random model folders built once per session (offline, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # Every model in the suite is tiny: one intra-op thread is as fast, and it avoids oversubscribing the two
    # CI cores when tests start worker processes (data-pipeline pools, Ray, 2-process gloo training).
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def make_tiny_folder(root: Path, preset: str, seed: int = 0, defaults: dict | None = None) -> Path:
    """Build a tiny random cinegen model folder for `preset` (e.g. "tiny-cogvideox-2b") under `root`."""
    from cinegen.models.io import save_model_folder
    from cinegen.models.presets import build_bundle

    folder = root / preset
    if not (folder / "model_index.json").is_file():
        save_model_folder(build_bundle(preset, seed=seed), folder, defaults=defaults)
    return folder


TINY_DEFAULTS = {"num_frames": 9, "height": 32, "width": 48, "steps": 2, "guidance": 3.0, "fps": 8}


@pytest.fixture(scope="session")
def tiny_2b_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_folder(tmp_path_factory.mktemp("models"), "tiny-cogvideox-2b", defaults=TINY_DEFAULTS)


# The words release 5 appended to release 4's word-level vocabulary (`extend_word_vocabulary`), in no particular order.
TOKEN_WORDS = ("top", "bottom", "center", *(f"c{i}" for i in range(16)), *(f"r{i}" for i in range(16)))


def release4_text_encoder(out: Path) -> Path:
    """Release 4's tokenizer and T5 (out/tokenizer, out/text_encoder), rebuilt from the default model: release 5
    appended TOKEN_WORDS at the end of the vocabulary with new embedding rows, so cutting them gives back release
    4's encoder id for id and row for row (tests of the token round start from it, as the round did)."""
    import json

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from cinegen.models.text import load_t5

    folder = Path(__file__).resolve().parents[1] / "models" / "cinegen-shapes"
    state = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())
    vocab: dict[str, int] = state["model"]["vocab"]
    n = min(vocab[w] for w in TOKEN_WORDS)
    assert sorted(vocab[w] for w in TOKEN_WORDS) == list(range(n, len(vocab))), "token words are not the last ids"
    state["model"]["vocab"] = {w: i for w, i in vocab.items() if i < n}
    special = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)), **special).save_pretrained(
        out / "tokenizer"
    )
    model = load_t5(folder / "text_encoder")
    model.resize_token_embeddings(n)  # keeps the first n rows
    model.save_pretrained(out / "text_encoder")
    return out
