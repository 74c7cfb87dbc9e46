"""Named model configs: the published CogVideoX variants and tiny random twins for tests.

Values are the published `config.json` / `scheduler_config.json` values (reference §6); the tiny twins keep every
structural switch of their big sibling (positions, temporal patch, I2V channels, ofs) at toy widths.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from cinegen.models.transformer import TransformerConfig
from cinegen.models.vae import VAEConfig
from cinegen.sampling.schedules import NoiseScheduleConfig

__all__ = ["Preset", "PRESETS", "get_preset", "cogvideox_scheduler", "flow_scheduler"]


@dataclass(frozen=True)
class Preset:
    name: str
    transformer: TransformerConfig
    vae: VAEConfig
    scheduler: NoiseScheduleConfig
    description: str = ""

    @property
    def text_length(self) -> int:
        """Tokens the text encoder pads to (the transformer's `max_text_seq_length`)."""
        return self.transformer.max_text_seq_length


def cogvideox_scheduler(snr_shift_scale: float, kind: str = "CogVideoXDDIMScheduler") -> NoiseScheduleConfig:
    """The published CogVideoX scheduler config (v-prediction, zero terminal SNR, trailing spacing)."""
    return NoiseScheduleConfig.from_dict(
        {
            "_class_name": kind,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "clip_sample_range": 1.0,
            "num_train_timesteps": 1000,
            "prediction_type": "v_prediction",
            "rescale_betas_zero_snr": True,
            "sample_max_value": 1.0,
            "set_alpha_to_one": True,
            "snr_shift_scale": snr_shift_scale,
            "steps_offset": 0,
            "timestep_spacing": "trailing",
        }
    )


def flow_scheduler(shift: float = 1.0) -> NoiseScheduleConfig:
    """A flow-matching model (velocity target); diffusers runs it with FlowMatchEulerDiscreteScheduler."""
    return NoiseScheduleConfig.from_dict(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": shift}
    )


_T_1_0: dict[str, Any] = dict(
    attention_head_dim=64,
    text_embed_dim=4096,
    time_embed_dim=512,
    sample_height=60,
    sample_width=90,
    sample_frames=49,
    patch_size=2,
    max_text_seq_length=226,
)
_T_1_5: dict[str, Any] = dict(
    _T_1_0, sample_height=300, sample_width=300, sample_frames=81, patch_size_t=2, patch_bias=False
)
_VAE_5B = VAEConfig(scaling_factor=0.7)

_FULL: dict[str, Preset] = {
    "cogvideox-2b": Preset(
        "cogvideox-2b",
        TransformerConfig(num_layers=30, num_attention_heads=30, **_T_1_0),
        VAEConfig(scaling_factor=1.15258426),
        cogvideox_scheduler(3.0),
        description="CogVideoX-2b: 3D sin-cos positions, fp16-trained",
    ),
    "cogvideox-5b": Preset(
        "cogvideox-5b",
        TransformerConfig(num_layers=42, num_attention_heads=48, use_rotary_positional_embeddings=True, **_T_1_0),
        _VAE_5B,
        cogvideox_scheduler(1.0),
        description="CogVideoX-5b: 3D RoPE, bf16-trained",
    ),
    "cogvideox-5b-i2v": Preset(
        "cogvideox-5b-i2v",
        TransformerConfig(
            num_layers=42,
            num_attention_heads=48,
            in_channels=32,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=True,
            **_T_1_0,
        ),
        _VAE_5B,
        cogvideox_scheduler(1.0),
        description="CogVideoX-5b-I2V: RoPE + learned positions (480x720 only)",
    ),
    "cogvideox1.5-5b": Preset(
        "cogvideox1.5-5b",
        TransformerConfig(num_layers=42, num_attention_heads=48, use_rotary_positional_embeddings=True, **_T_1_5),
        replace(_VAE_5B, invert_scale_latents=True),
        cogvideox_scheduler(1.0),
        description="CogVideoX1.5-5B: temporal patch 2, 16N+1 frames",
    ),
    "cogvideox1.5-5b-i2v": Preset(
        "cogvideox1.5-5b-i2v",
        TransformerConfig(
            num_layers=42,
            num_attention_heads=48,
            in_channels=32,
            ofs_embed_dim=512,
            use_rotary_positional_embeddings=True,
            **_T_1_5,
        ),
        replace(_VAE_5B, invert_scale_latents=True),
        cogvideox_scheduler(1.0),
        description="CogVideoX1.5-5B-I2V: temporal patch 2 + ofs embedding",
    ),
}

# Tiny twins: 2 heads x 16 dims (RoPE needs head_dim with even t/h/w splits), 2 layers, a 4-channel latent VAE.
_TINY_T: dict[str, Any] = dict(
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=2,
    text_embed_dim=32,
    time_embed_dim=16,
    max_text_seq_length=16,
    in_channels=4,
    out_channels=4,
    sample_height=8,
    sample_width=8,
    sample_frames=9,
)
_TINY_VAE = VAEConfig(block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2)


def _tiny(p: Preset) -> Preset:
    t = p.transformer
    kw: dict[str, Any] = dict(_TINY_T)
    kw["in_channels"] = 8 if t.is_i2v else 4
    if t.patch_size_t:
        kw.update(sample_height=16, sample_width=16, sample_frames=17)
    if t.ofs_embed_dim:
        kw["ofs_embed_dim"] = 16
    cfg = replace(t, **kw)
    vae = replace(_TINY_VAE, scaling_factor=p.vae.scaling_factor, invert_scale_latents=p.vae.invert_scale_latents)
    return Preset("tiny-" + p.name, cfg, vae, p.scheduler, description="tiny random " + p.name)


PRESETS: dict[str, Preset] = {**_FULL, **{"tiny-" + k: _tiny(v) for k, v in _FULL.items()}}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None


def small_t5(
    vocab_size: int,
    d_model: int,
    d_kv: int = 8,
    num_buckets: int = 8,
    max_distance: int = 128,
    seed: int = 0,
):
    """A small random-init `T5EncoderModel` (2 layers, 4 heads, gated-GELU FF 2 x d_model, no dropout; pad 0,
    eos 1), in eval mode: the tiny test encoders and the default model's text encoder."""
    import torch
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=num_buckets,
        relative_attention_max_distance=max_distance,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(cfg).eval()


def tiny_t5(d_model: int = 32, seed: int = 0):
    """A tiny random T5 encoder (byte-level vocabulary size) and a ByT5 tokenizer, which needs no vocab file."""
    from transformers import ByT5Tokenizer

    return small_t5(384, d_model, seed=seed), ByT5Tokenizer()  # ByT5: 3 special + 256 bytes + 125 extra ids


def build_bundle(preset: Preset | str, seed: int = 0):
    """Random-init model bundle for a preset (tiny ones for tests, or the start of training from scratch)."""
    import torch

    from cinegen.models.io import ModelBundle
    from cinegen.models.transformer import CogVideoXTransformer
    from cinegen.models.vae import CogVideoXVAE

    p = get_preset(preset) if isinstance(preset, str) else preset
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer(p.transformer).eval()
    vae = CogVideoXVAE(p.vae).eval()
    text_encoder, tokenizer = tiny_t5(p.transformer.text_embed_dim, seed)
    return ModelBundle(transformer, vae, text_encoder, tokenizer, p.scheduler)
