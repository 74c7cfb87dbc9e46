"""Function-preserving growth of the transformer (cinegen.models.grow, `cinegen grow-transformer`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cinegen.cli import main as cli_main
from cinegen.models.grow import add_blocks, block_positions, widen_state
from cinegen.models.io import read_json, read_weights
from cinegen.models.presets import get_preset
from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig


def _tiny_rope(num_layers: int = 2) -> tuple[CogVideoXTransformer, TransformerConfig]:
    cfg = TransformerConfig.from_dict(
        {**get_preset("tiny-cogvideox-5b").transformer.to_dict(), "num_layers": num_layers}
    )
    torch.manual_seed(1)
    model = CogVideoXTransformer(cfg).eval()
    with torch.no_grad():  # adaLN-style zero inits would hide errors in the gate/modulation mapping
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, cfg


def _inputs(cfg: TransformerConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, cfg.in_channels, 8, 12, generator=g)  # (B, T, C, H, W) latent
    text = torch.randn(2, 7, cfg.text_embed_dim, generator=g)
    return x, text, torch.tensor([3, 811])


def _run(state: dict[str, torch.Tensor], cfg: TransformerConfig) -> torch.Tensor:
    model = CogVideoXTransformer(cfg).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model(*_inputs(cfg))


def test_widening_doubles_heads_and_keeps_the_function() -> None:
    model, cfg = _tiny_rope()
    ref = _run(model.state_dict(), cfg)
    state, wide = widen_state(model.state_dict(), cfg)
    assert (wide.num_attention_heads, wide.attention_head_dim) == (2 * cfg.num_attention_heads, cfg.attention_head_dim)
    assert wide.inner_dim == 2 * cfg.inner_dim and wide.num_layers == cfg.num_layers
    out = _run(state, wide)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


def test_widening_noise_breaks_the_symmetry_of_the_copies_but_stays_close() -> None:
    model, cfg = _tiny_rope()
    ref = _run(model.state_dict(), cfg)
    state, wide = widen_state(model.state_dict(), cfg, noise=0.01, generator=torch.Generator().manual_seed(0))
    q = state["transformer_blocks.0.attn1.to_q.weight"]  # (2D, 2D): rows of head h and h + N were copies
    d = cfg.inner_dim
    assert not torch.equal(q[:d], q[d:])
    err = (_run(state, wide) - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05


def test_added_blocks_are_identities_spread_between_the_old_ones() -> None:
    assert block_positions(6, 2) == [1, 3]
    assert block_positions(4, 0) == []
    assert block_positions(2, 1) == [0]
    model, cfg = _tiny_rope(num_layers=3)
    ref = _run(model.state_dict(), cfg)
    state, deep = add_blocks(model.state_dict(), cfg, 2)
    assert deep.num_layers == 5
    torch.testing.assert_close(_run(state, deep), ref, atol=1e-6, rtol=1e-6)
    # old block 0 stays first; the copy of old block 0 (zero gates) follows it
    old = model.state_dict()
    assert torch.equal(state["transformer_blocks.0.attn1.to_q.weight"], old["transformer_blocks.0.attn1.to_q.weight"])
    assert torch.equal(state["transformer_blocks.1.attn1.to_q.weight"], old["transformer_blocks.0.attn1.to_q.weight"])
    assert torch.equal(state["transformer_blocks.2.ff.net.2.weight"], old["transformer_blocks.1.ff.net.2.weight"])
    gates = state["transformer_blocks.1.norm1.linear.weight"].chunk(6)
    assert gates[2].abs().sum() == 0 and gates[5].abs().sum() == 0 and gates[0].abs().sum() > 0


def test_widening_refuses_sincos_models_deepening_does_not() -> None:
    cfg = get_preset("tiny-cogvideox-2b").transformer
    torch.manual_seed(3)
    model = CogVideoXTransformer(cfg).eval()
    with pytest.raises(ValueError, match="RoPE"):
        widen_state(model.state_dict(), cfg)
    state, deep = add_blocks(model.state_dict(), cfg, 1)  # sin-cos positions enter once, before the blocks
    torch.testing.assert_close(_run(state, deep), _run(model.state_dict(), cfg), atol=1e-6, rtol=1e-6)


def test_cli_grows_a_folder_that_warm_starts_the_grown_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cinegen.models.io import save_component_folder

    model, cfg = _tiny_rope()
    save_component_folder(model, cfg, tmp_path / "small" / "transformer")
    assert cli_main(["grow-transformer", str(tmp_path / "small"), str(tmp_path / "big"), "--add-blocks", "1"]) == 0
    assert "model.transformer_init=" in capsys.readouterr().out
    folder = tmp_path / "big" / "transformer"
    big = TransformerConfig.from_dict(read_json(folder / "config.json"))
    assert (big.num_attention_heads, big.num_layers) == (2 * cfg.num_attention_heads, 3)
    out = _run(read_weights(folder), big)
    ref = _run(model.state_dict(), cfg)
    assert (out - ref).abs().max() / ref.abs().max() < 0.05  # default noise 0.01

    from cinegen.train.trainer import init_transformer

    init_transformer(CogVideoXTransformer(big), tmp_path / "big")  # strict: keys and shapes match the config
    assert cli_main(["grow-transformer", str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert cli_main(["grow-transformer", str(tmp_path / "small"), str(tmp_path / "x"), "--no-widen"]) == 2
    assert "nothing to grow" in capsys.readouterr().err
    for bad, needle in ((["--noise", "-0.1"], "noise must be >= 0"), (["--add-blocks", "-1"], "must be >= 0")):
        assert cli_main(["grow-transformer", str(tmp_path / "small"), str(tmp_path / "y"), *bad]) == 2
        assert needle in capsys.readouterr().err and not (tmp_path / "y").exists()
