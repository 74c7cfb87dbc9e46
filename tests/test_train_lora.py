"""LoRA: a file cinegen saves loads in diffusers (`load_lora_weights`) with identical outputs; merge/unmerge math;
peft unload restores diffusers key names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cinegen.models.presets import get_preset
from cinegen.models.transformer import CogVideoXTransformer
from cinegen.train.config import LoraConfig
from cinegen.train.lora import apply_lora, lora_state_dict, merge_lora, read_lora, save_lora, unload_peft, unmerge_lora

pytest.importorskip("peft")  # the `train` extra

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]


def _inputs(cfg, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, cfg.in_channels, 8, 8, generator=g)  # (B, T, C, H, W)
    text = torch.randn(2, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    return x, text, torch.tensor([10, 700])


def _lora_model(preset: str, lcfg: LoraConfig) -> tuple[CogVideoXTransformer, dict, torch.nn.Module]:
    torch.manual_seed(0)
    cfg = get_preset(preset).transformer
    base = CogVideoXTransformer(cfg).eval()
    plain_state = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(CogVideoXTransformer(cfg).eval(), lcfg)
    model.load_state_dict({**model.state_dict(), **_rename_to_peft(plain_state, model)}, strict=True)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero B so the adapter changes the output
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model, plain_state, base


def _rename_to_peft(plain: dict, peft_model: torch.nn.Module) -> dict:
    keys = set(peft_model.state_dict())
    out = {}
    for k, v in plain.items():
        if k in keys:
            out[k] = v
        else:
            stem, _, leaf = k.rpartition(".")
            out[f"{stem}.base_layer.{leaf}"] = v
    return out


@pytest.mark.parametrize("preset", ["tiny-cogvideox-2b", "tiny-cogvideox-5b"])
def test_lora_saved_by_cinegen_loads_in_diffusers(preset: str, tmp_path: Path) -> None:
    diffusers = pytest.importorskip("diffusers")
    lcfg = LoraConfig(enabled=True, rank=4, alpha=8.0, targets=TARGETS)
    model, plain_state, _ = _lora_model(preset, lcfg)
    path = save_lora(lora_state_dict(model), lcfg, tmp_path / "lora")

    cfg = get_preset(preset).transformer
    ref = diffusers.CogVideoXTransformer3DModel(**{k: v for k, v in cfg.to_dict().items() if not k.startswith("_")})
    ref.load_state_dict(plain_state, strict=True)
    ref.eval()
    pipe = diffusers.CogVideoXPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        transformer=ref,
        scheduler=diffusers.CogVideoXDDIMScheduler(),
    )
    pipe.load_lora_weights(str(path.parent))
    x, text, t = _inputs(cfg)
    kwargs = {}
    if cfg.use_rotary_positional_embeddings:
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        gh, gw = 8 // cfg.patch_size, 8 // cfg.patch_size
        base = (cfg.sample_height // cfg.patch_size, cfg.sample_width // cfg.patch_size)
        crop = get_resize_crop_region_for_grid((gh, gw), base[1], base[0])
        kwargs["image_rotary_emb"] = get_3d_rotary_pos_embed(
            cfg.attention_head_dim, crop, grid_size=(gh, gw), temporal_size=x.shape[1], device=x.device
        )
    with torch.no_grad():
        want = ref(x, text, t, return_dict=False, **kwargs)[0]
        got = model(x, text, t)
        without = CogVideoXTransformer(cfg).eval()
        without.load_state_dict(plain_state)
        base_out = without(x, text, t)
    err = float((got - want).abs().max())
    print(f"{preset}: max |cinegen peft - diffusers load_lora_weights| = {err:.2e}")
    assert err < 1e-5
    assert float((want - base_out).abs().max()) > 1e-2  # the adapter really changes the output

    # cinegen's own (peft-free) merge of the same file gives the same model; unmerge restores the base exactly
    merged = merge_lora(without, path)
    with torch.no_grad():
        err_m = float((without(x, text, t) - want).abs().max())
    print(f"{preset}: max |merged - diffusers| = {err_m:.2e}")
    assert err_m < 1e-5
    unmerge_lora(without, merged)
    assert all(torch.allclose(without.state_dict()[k], v, atol=1e-6) for k, v in plain_state.items())


def test_lora_scale_read_and_unload(tmp_path: Path) -> None:
    lcfg = LoraConfig(enabled=True, rank=2, alpha=6.0, targets=["to_q", "to_v"])
    model, plain_state, base = _lora_model("tiny-cogvideox-2b", lcfg)
    path = save_lora(lora_state_dict(model), lcfg, tmp_path)
    state, meta = read_lora(path)
    assert meta["r"] == 2 and meta["lora_alpha"] == 6.0
    assert all(k.startswith("transformer_blocks.") for k in state)
    cfg = get_preset("tiny-cogvideox-2b").transformer
    x, text, t = _inputs(cfg)
    # scale 0.5: delta halves -> output is the midpoint (in weight space, so compare weights)
    m1 = merge_lora(base, path, scale=0.5)
    w_half = base.transformer_blocks[0].attn1.to_q.weight.clone()
    unmerge_lora(base, m1)
    m2 = merge_lora(base, path, scale=1.0)
    w_full = base.transformer_blocks[0].attn1.to_q.weight.clone()
    w0 = plain_state["transformer_blocks.0.attn1.to_q.weight"]
    assert torch.allclose(w_half - w0, 0.5 * (w_full - w0), atol=1e-6)
    unmerge_lora(base, m2)
    # peft unload (merge) gives a plain model with diffusers key names and the merged weights
    with torch.no_grad():
        want = model(x, text, t)
    unload_peft(model, merge=True)
    assert set(model.state_dict()) == set(plain_state)
    with torch.no_grad():
        assert float((model(x, text, t) - want).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="not found in the base model|matched no layer"):
        apply_lora(CogVideoXTransformer(cfg), LoraConfig(enabled=True, targets=["nope"]))


def test_lora_applies_to_cinegen_pipeline(tiny_2b_folder: Path, tmp_path: Path) -> None:
    """What `cinegen generate --lora PATH --lora-scale S` does: merge into the loaded pipeline's transformer,
    generate, unmerge back to the base weights."""
    from cinegen.pipeline import load_pipeline

    lcfg = LoraConfig(enabled=True, rank=4, alpha=4.0, targets=TARGETS)
    model, _, _ = _lora_model("tiny-cogvideox-2b", lcfg)
    path = save_lora(lora_state_dict(model), lcfg, tmp_path / "lora")
    pipe = load_pipeline(tiny_2b_folder, device="cpu", dtype=torch.float32)
    base = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    kw = dict(prompt="red right", num_frames=9, height=32, width=32, steps=2, seed=0)
    v0 = pipe.generate(**kw).frames
    merged = merge_lora(pipe.transformer, path, scale=0.8)
    v1 = pipe.generate(**kw).frames
    assert np.abs(v0.astype(int) - v1.astype(int)).max() > 0  # the adapter changes the video
    unmerge_lora(pipe.transformer, merged)
    assert all(torch.allclose(pipe.transformer.state_dict()[k], v, atol=1e-6) for k, v in base.items())
