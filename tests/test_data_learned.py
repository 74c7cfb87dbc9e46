"""Optional learned plug-ins on tiny random local models (built here; nothing is downloaded): the LAION-style
aesthetic scorer, CLIP text-frame score, and the local VLM captioner; and their skip-with-a-note paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cinegen.data import learned
from cinegen.data.caption import caption_item
from cinegen.data.config import DataConfig, ScoreConfig, load_config
from cinegen.data.manifest import ClipRecord

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "disc", "video", "the", "moving", "blue"]
# The vision tower of both tiny models (CLIP and BLIP): 32x32 images in 8x8 patches.
TINY_VISION = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
)


def _tokenizer(tmp: Path):  # type: ignore[no-untyped-def]
    (tmp / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return transformers.BertTokenizer(str(tmp / "vocab.txt"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=len(VOCAB),
            max_position_embeddings=16,
            eos_token_id=3,
            bos_token_id=2,
            pad_token_id=0,
        ),
        vision_config=dict(TINY_VISION),
        projection_dim=8,
    )
    transformers.CLIPModel(cfg).save_pretrained(root / "clip")
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "clip"
    )
    _tokenizer(root).save_pretrained(root / "clip")
    # LAION head layout: layers.{0,2,4,...} Linear, Dropout in between, no activations.
    head = {
        "layers.0.weight": torch.randn(4, 8),
        "layers.0.bias": torch.randn(4),
        "layers.2.weight": torch.randn(1, 4),
        "layers.2.bias": torch.randn(1),
    }
    torch.save(head, root / "head.pth")
    return root / "clip", root / "head.pth"


def _frames(n: int = 11) -> np.ndarray:
    return (np.random.default_rng(0).random((n, 48, 64, 3)) * 255).astype(np.uint8)


def test_aesthetic_plugin_matches_the_recipe(tiny_clip: tuple[Path, Path]) -> None:
    clip, head = tiny_clip
    frames = _frames()
    got = learned.aesthetic_score(frames, str(clip), str(head))
    # Recipe by hand: frames at 10/50/90 % -> CLIP image embedding -> L2 normalise -> Linear chain -> mean.
    model = transformers.CLIPModel.from_pretrained(clip).eval()
    proc = transformers.CLIPImageProcessor.from_pretrained(clip)
    sd = torch.load(head, weights_only=True)
    with torch.no_grad():
        px = proc(images=[frames[1], frames[5], frames[9]], return_tensors="pt")["pixel_values"]
        e = model.get_image_features(pixel_values=px)
        e = getattr(e, "pooler_output", e)
        e = e / e.norm(dim=-1, keepdim=True)
        hidden = e @ sd["layers.0.weight"].T + sd["layers.0.bias"]
        want = hidden @ sd["layers.2.weight"].T + sd["layers.2.bias"]
    assert got == pytest.approx(float(want.mean()), abs=1e-5)


def test_learned_scores_skip_with_a_note(tiny_clip: tuple[Path, Path], tmp_path: Path) -> None:
    clip, head = tiny_clip
    assert learned.learned_scores(ClipRecord(path="x"), _frames(), ScoreConfig()) == {}
    notes = learned.plugin_notes(ScoreConfig())
    assert any("aesthetic: skipped" in n for n in notes) and any("clip_score: skipped" in n for n in notes)
    missing = ScoreConfig(
        aesthetic_clip_path=str(tmp_path / "nope"),
        aesthetic_head_path=str(head),
        clip_path=str(tmp_path / "nope"),
    )
    assert learned.learned_scores(ClipRecord(path="x", text="a red disc"), _frames(), missing) == {
        "aesthetic": None,
        "clip_score": None,
    }
    assert all("weights not found" in n for n in learned.plugin_notes(missing))
    ok = ScoreConfig(aesthetic_clip_path=str(clip), aesthetic_head_path=str(head), clip_path=str(clip))
    scores = learned.learned_scores(ClipRecord(path="x", text="a red disc"), _frames(), ok)
    assert isinstance(scores["aesthetic"], float) and isinstance(scores["clip_score"], float)
    # No caption, no CLIP score (it compares a frame with the caption).
    assert learned.learned_scores(ClipRecord(path="x"), _frames(), ok)["clip_score"] is None


def test_vlm_captioner_from_a_local_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    bc = transformers.BlipConfig(
        text_config=dict(
            vocab_size=len(VOCAB),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            bos_token_id=2,
            sep_token_id=3,
            pad_token_id=0,
        ),
        vision_config=dict(TINY_VISION),
        projection_dim=8,
    )
    folder = tmp_path / "blip"
    transformers.BlipForConditionalGeneration(bc).save_pretrained(folder)
    image_proc = transformers.BlipImageProcessor(size={"height": 32, "width": 32})
    transformers.BlipProcessor(image_proc, _tokenizer(tmp_path)).save_pretrained(folder)
    from PIL import Image

    Image.fromarray(_frames(1)[0]).save(tmp_path / "still.png")
    rec = ClipRecord(path=str(tmp_path / "still.png"), type="image", width=64, height=48, num_frames=1, id="s")
    cfg = load_config(
        None,
        [f"caption.vlm_path={folder}", "caption.captioners=[vlm, filename]", "caption.vlm_max_new_tokens=6"],
    )
    (a,) = caption_item(rec, cfg, tmp_path)
    (b,) = caption_item(rec, cfg, tmp_path)
    assert a.ok and a.meta["caption_source"] == "vlm" and a.text and a.text == b.text
    assert set(a.text.lower().replace("##", "").split()) <= set(VOCAB)
    # Without the folder the next captioner takes over.
    (c,) = caption_item(rec, DataConfig(caption=cfg.caption.__class__(captioners=("vlm", "filename"))), tmp_path)
    assert c.meta["caption_source"] == "filename" and c.text == "Still"
