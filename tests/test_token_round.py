"""scripts/train_default_model.py, round 6 (token captions): `prepare_round` makes the round's data (token
captions, starts on token corners, first-frame stills) and its text encoder (release 4's T5 with the token words
appended), on a three-clip world in a temporary root."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import release4_text_encoder

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/shapes-dit-tokens.yaml"


def _script():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "scripts"))  # the script imports its siblings
    spec = importlib.util.spec_from_file_location("train_default_model", REPO / "scripts" / "train_default_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_token_round_makes_its_data_and_text_encoder(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from cinegen.data.manifest import read_manifest
    from cinegen.models.text import TextEncoder, load_t5, load_tokenizer
    from cinegen.video import read_video
    from cinegen.world.captions import parse_prompt

    tdm = _script()
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    runs = tmp_path / "runs" / "shapes"
    paths = {
        "ROOT": tmp_path,
        "RUNS": runs,
        "DATA": tmp_path / "data" / "shapes",
        "TEXT": runs / "text",
        "TOKEN_DATA": tmp_path / "data" / "shapes-tokens",
        "TEXT_TOKENS": runs / "text-tokens",
        "NUM_CLIPS": 3,
        "DIT_CLIPS": 2,
        "TOKEN_CORPUS": 200,
    }
    for name, value in paths.items():
        monkeypatch.setattr(tdm, name, value)
    tdm._round_cfg.cache_clear()
    release = release4_text_encoder(tmp_path / "release4")
    for part in ("tokenizer", "text_encoder"):  # release 4's T5, which the round extends
        shutil.copytree(release / part, runs / "text" / part)
    (runs / "text" / "stats.json").write_text("{}\n")

    tdm.prepare_round(CONFIG)
    data = tmp_path / "data" / "shapes-tokens"
    rows = read_manifest(data / "manifest-joint.jsonl")
    clips, stills = rows[:2], rows[2:]
    assert [r.type for r in rows] == ["video"] * 2 + ["image"] * 2
    for clip, still in zip(clips, stills, strict=True):
        assert still.text == clip.text and " at c" in clip.text  # a token caption, kept by its still
        first = read_video(data / clip.path).frames[0]
        assert np.array_equal(np.asarray(Image.open(data / still.path)), first)  # the frame the tokens describe
        truth = parse_prompt(clip.text)
        assert all(o.token is not None for o in truth.objects)

    text = runs / "text-tokens"
    stats = json.loads((text / "stats.json").read_text())
    assert {"top", "bottom", "center", "c0", "c15", "r0", "r15"} <= set(stats["added_words"])
    assert "c16" not in stats["added_words"] and 0 <= stats["captions_over_text_length"] < 0.05
    old_tok, new_tok = load_tokenizer(release / "tokenizer"), load_tokenizer(text / "tokenizer")
    old_enc = TextEncoder(load_t5(release / "text_encoder"), old_tok, 64)
    new_enc = TextEncoder(load_t5(text / "text_encoder"), new_tok, 64)
    old_caption = "One shape: A large red circle slowly moves to the right. Plain white background, static camera."
    assert torch.equal(new_enc.encode([old_caption]), old_enc.encode([old_caption]))  # release 4's features stay
    assert new_tok.unk_token_id not in new_tok(clips[0].text).input_ids
    assert old_tok.unk_token_id in old_tok(clips[0].text).input_ids  # what the round adds

    before = (text / "stats.json").stat().st_mtime_ns  # made once: a second call (a resumed round) keeps them
    tdm.prepare_round(CONFIG)
    assert (text / "stats.json").stat().st_mtime_ns == before


def test_round_flag_fails_clearly_on_bad_input(tmp_path: Path) -> None:
    tdm = _script()
    with pytest.raises(SystemExit, match="not found"):
        tdm.main(["--round", "configs/no-such-round.yaml"])
    with pytest.raises(SystemExit, match="not a model folder"):  # checked before anything runs
        tdm.main(["--round", CONFIG, "--init-from", str(tmp_path)])
    with pytest.raises(SystemExit):  # argparse: --init-from only means something with --round
        tdm.main(["--init-from", str(tmp_path)])
