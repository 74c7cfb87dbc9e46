"""Parse pre-training of the T5 text encoder (cinegen.train.text_encoder) on a tiny T5 and a toy language."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from cinegen.models.presets import small_t5  # noqa: E402
from cinegen.train.text_encoder import (  # noqa: E402
    TextPretrainConfig,
    build_seq2seq,
    encoder_of,
    exact_match,
    pretrain_text_encoder,
)

WORDS = ["a", "red", "blue", "circle", "square", "moves", "up", "down", "and", ";", "-", "|"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _encoder(seed: int = 0):
    return small_t5(len(WORDS) + 3, 32, seed=seed)


def _pairs() -> list[tuple[str, str]]:
    """Two objects whose motions swap between captions with the same words: only word order tells them apart."""
    out = []
    for c1, c2 in (("red", "blue"), ("blue", "red")):
        for s1, s2 in (("circle", "square"), ("square", "circle")):
            for m1, m2 in (("up", "down"), ("down", "up")):
                text = f"a {c1} {s1} moves {m1} and a {c2} {s2} moves {m2}"
                out.append((text, f"{c1} {s1} {m1} ; {c2} {s2} {m2}"))
    return out


def test_seq2seq_keeps_the_encoder_and_encoder_of_gives_it_back() -> None:
    enc, tok = _encoder(), _tokenizer()
    ids = tok(["a red circle moves up"], return_tensors="pt")
    with torch.no_grad():
        ref = enc(**ids).last_hidden_state
        model = build_seq2seq(enc, decoder_layers=1)
        assert model.config.num_decoder_layers == 1
        assert torch.equal(model.get_encoder()(**ids).last_hidden_state, ref)
        assert torch.equal(encoder_of(model)(**ids).last_hidden_state, ref)


def test_parse_pretraining_learns_word_order_and_leaves_its_input_alone() -> None:
    torch.set_num_threads(1)
    enc, tok, pairs = _encoder(), _tokenizer(), _pairs()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = TextPretrainConfig(steps=400, batch_size=8, lr=3e-3, warmup_steps=10, decoder_layers=1)
    seen: list[int] = []
    model, losses = pretrain_text_encoder(enc, tok, pairs, cfg, log=lambda step, loss: seen.append(step))
    assert seen == list(range(1, 401)) and len(losses) == 400
    assert sum(losses[-10:]) / 10 < 0.1 * sum(losses[:10]) / 10
    assert exact_match(model, tok, pairs) == 1.0
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # the input encoder is untouched
    # The trained encoder tells "red ... up, blue ... down" from the same words with the motions swapped far
    # better than the random one it started from (relative difference of the pooled features).
    texts = ["a red circle moves up and a blue square moves down", "a red circle moves down and a blue square moves up"]
    ids = tok(texts, return_tensors="pt").input_ids  # (2, L)
    a, b = ids[:1], ids[1:]

    def gap(e) -> float:
        with torch.no_grad():
            fa, fb = e(input_ids=a).last_hidden_state, e(input_ids=b).last_hidden_state
        return float((fa.sort(dim=1).values - fb.sort(dim=1).values).norm() / fa.norm())

    assert gap(encoder_of(model)) > 2 * gap(enc)
    # Deterministic: the same config gives the same losses.
    _, again = pretrain_text_encoder(enc, tok, pairs, TextPretrainConfig(**{**cfg.__dict__, "steps": 5}))
    assert again == losses[:5]


def test_parse_pretraining_refuses_no_data() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pretrain_text_encoder(_encoder(), _tokenizer(), [], TextPretrainConfig(steps=1))


def test_extend_word_vocabulary_keeps_old_encodings(tmp_path) -> None:  # noqa: ANN001
    """New words go at the end of a word-level vocabulary with new T5 rows: captions without them encode exactly as
    before, the new words stop being <unk>, and the folders save and load back (the default model's encoder)."""
    from cinegen.models.text import TextEncoder, extend_word_vocabulary, load_t5, load_tokenizer
    from tests.conftest import release4_text_encoder

    folder = release4_text_encoder(tmp_path / "release4")  # the default model's encoder before the token words
    tok, model = load_tokenizer(folder / "tokenizer"), load_t5(folder / "text_encoder")
    old_caption = "One shape: A large red circle slowly moves to the right. Plain white background, static camera."
    new_caption = "One shape: A large red circle in the top left at c3 r9 stays still."
    before = TextEncoder(model, tok, 64).encode([old_caption])
    n = len(tok)
    rows = model.get_input_embeddings().weight[:n].clone()
    tok2, added = extend_word_vocabulary(tok, model, ["top", "C3", "r9", "red", "top"], seed=0)
    assert added == ["top", "c3", "r9"] and len(tok2) == model.config.vocab_size == n + 3
    assert torch.equal(model.get_input_embeddings().weight[:n], rows)  # old rows untouched
    assert torch.equal(TextEncoder(model, tok2, 64).encode([old_caption]), before)
    ids = tok2(new_caption).input_ids
    assert tok2.unk_token_id not in ids and {n, n + 1, n + 2} <= set(ids)  # "top", "c3", "r9"
    assert tok.unk_token_id in tok(new_caption).input_ids
    assert extend_word_vocabulary(tok2, model, ["top"])[1] == []  # nothing new: unchanged
    tok2.save_pretrained(tmp_path / "tokenizer")
    model.save_pretrained(tmp_path / "text_encoder")
    tok3, model3 = load_tokenizer(tmp_path / "tokenizer"), load_t5(tmp_path / "text_encoder")
    assert tok3(new_caption).input_ids == ids
    enc = TextEncoder(model3, tok3, 64)
    assert torch.equal(enc.encode([old_caption]), before)
    with pytest.raises(ValueError, match="word-level"):
        from cinegen.models.presets import tiny_t5

        extend_word_vocabulary(tiny_t5()[1], tiny_t5()[0], ["x"])
