"""`cinegen bench core`: ours vs diffusers, side by side in one run, on the same config, weights and inputs.

Reports (as ratios and medians, DESIGN.md §6):
- the machine's measured matmul peak (fp32 and bf16),
- transformer forward time, fp32 and bf16, with the analytic FLOPs per step and achieved FLOP/s as a fraction of
  the measured peak of that dtype,
- VAE decode time and peak memory (RSS growth measured in a forked child per run, so runs do not pollute each
  other's high-water mark): diffusers frame-batched vs ours frame-batched, and ours with temporal tiling.

diffusers is a test/bench extra, imported only here.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cinegen.fsutil import atomic_write
from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig, count_flops
from cinegen.models.vae import CogVideoXVAE, TemporalTiling, VAEConfig
from cinegen.train.metrics import measure_matmul_peak

__all__ = ["BenchConfig", "run_core_bench", "matmul_peak", "format_report"]


@dataclass(frozen=True)
class BenchConfig:
    # transformer: a 5B-like block (RoPE, 64-dim heads) at reduced width/depth so a CPU can time it
    heads: int = 12
    layers: int = 4
    latent_frames: int = 5
    latent_height: int = 32  # 256 px
    latent_width: int = 48  # 384 px
    text_len: int = 226
    repeats: int = 5
    # VAE: the published architecture at half width; 3 latents (9 frames) at 128x192 px
    vae_channels: tuple[int, ...] = (64, 128, 128, 256)
    vae_latent_shape: tuple[int, int, int] = (3, 16, 24)
    vae_repeats: int = 2
    seed: int = 0


@dataclass
class Timing:
    name: str
    median_s: float
    runs: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _time_once(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Measured dense GEMM FLOP/s for `dtype` on the CPU (the 'peak' that MFU-style fractions are relative to);
    the trainer's MFU uses the same measurement."""
    return measure_matmul_peak(torch.device("cpu"), dtype, n=n, reps=repeats)


def _transformer_pair(cfg: BenchConfig) -> tuple[CogVideoXTransformer, Any, TransformerConfig]:
    import diffusers

    tcfg = TransformerConfig(
        num_attention_heads=cfg.heads,
        attention_head_dim=64,
        num_layers=cfg.layers,
        use_rotary_positional_embeddings=True,
        sample_height=cfg.latent_height,
        sample_width=cfg.latent_width,
    )
    torch.manual_seed(cfg.seed)
    ref = diffusers.CogVideoXTransformer3DModel.from_config(tcfg.to_dict()).eval()
    ours = CogVideoXTransformer(tcfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref, tcfg


def _rope_for_diffusers(tcfg: TransformerConfig, t: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    p = tcfg.patch_size
    gh, gw = h // p, w // p
    crops = get_resize_crop_region_for_grid((gh, gw), tcfg.sample_width // p, tcfg.sample_height // p)
    return get_3d_rotary_pos_embed(tcfg.attention_head_dim, crops, (gh, gw), t)


def bench_transformer(cfg: BenchConfig, peaks: dict[str, float]) -> list[Timing]:
    ours, ref, tcfg = _transformer_pair(cfg)
    t, h, w = cfg.latent_frames, cfg.latent_height, cfg.latent_width
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(2, t, tcfg.in_channels, h, w, generator=g)  # (B=2: CFG batch, T, C, H, W)
    text = torch.randn(2, cfg.text_len, tcfg.text_embed_dim, generator=g)  # (B, L, D_text)
    step = torch.tensor([500, 500])
    rope = _rope_for_diffusers(tcfg, t, h, w)
    flops = count_flops(tcfg, t, h, w, cfg.text_len, cfg=True)
    out: list[Timing] = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        ours_d, ref_d = ours.to(dtype), ref.to(dtype)
        xd, textd = x.to(dtype), text.to(dtype)
        with torch.inference_mode():
            err = (
                (ours_d(xd, textd, step).float() - ref_d(xd, textd, step, image_rotary_emb=rope)[0].float()).abs().max()
            )
            # interleave ours and the reference so drift in machine load hits both alike
            runs_o: list[float] = []
            runs_r: list[float] = []
            run_ref = partial(ref_d, xd, textd, step, image_rotary_emb=rope)
            run_ours = partial(ours_d, xd, textd, step)
            for _ in range(cfg.repeats):
                runs_r.append(_time_once(run_ref))
                runs_o.append(_time_once(run_ours))
        mo, mr = statistics.median(runs_o), statistics.median(runs_r)
        for who, m, runs in (("cinegen", mo, runs_o), ("diffusers", mr, runs_r)):
            out.append(
                Timing(
                    f"transformer {name} {who}",
                    m,
                    runs,
                    {
                        "flops_per_step": flops,
                        "flops_per_s": flops / m,
                        "fraction_of_peak": flops / m / peaks[name],
                        "max_abs_diff_vs_diffusers": float(err),
                    },
                )
            )
    return out


def _vae_models(cfg: BenchConfig) -> tuple[CogVideoXVAE, Any, torch.Tensor]:
    """The reference VAE with seeded random weights, ours with the same state dict, and a latent input."""
    import diffusers

    vcfg = VAEConfig(block_out_channels=cfg.vae_channels, scaling_factor=0.7)
    torch.manual_seed(cfg.seed)
    ref = diffusers.AutoencoderKLCogVideoX.from_config(vcfg.to_dict()).eval()
    ours = CogVideoXVAE(vcfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    t, h, w = cfg.vae_latent_shape
    z = torch.randn(1, vcfg.latent_channels, t, h, w, generator=torch.Generator().manual_seed(cfg.seed))
    return ours, ref, z


def _vae_decode(which: str, ours: CogVideoXVAE | None, ref: Any, z: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        if which == "diffusers":
            return ref.decode(z).sample
        if which == "cinegen temporal-tiled":
            return ours.decode(z, temporal_tiling=TemporalTiling(window=3, overlap=1))
        return ours.decode(z)


def _proc_status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _vae_child(conn: Any, which: str, cfg: BenchConfig) -> None:
    """Runs in a fresh (spawned) process: build, then time one decode and its peak-RSS growth.

    The peak is measured from a reset high-water mark (Linux: writing 5 to /proc/self/clear_refs resets VmHWM),
    so building the models (which can peak higher than a small decode) does not hide the decode's own peak.
    """
    ours, ref, z = _vae_models(cfg)
    if which == "diffusers":
        ours = None  # only the model under test stays resident
    else:
        ref = None
    gc.collect()
    before = _proc_status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        before = None
    t0 = time.perf_counter()
    _vae_decode(which, ours, ref, z)
    dt = time.perf_counter() - t0
    peak = _proc_status_kib("VmHWM")
    growth = (peak - before) / 1024 if (peak is not None and before is not None) else float("nan")
    conn.send((dt, growth))  # seconds, MiB of resident-memory growth during the decode
    conn.close()


def _in_child(which: str, cfg: BenchConfig) -> tuple[float, float]:
    """A spawned child per run (fork after OpenMP threads have started can hang): (seconds, peak MiB)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_vae_child, args=(child, which, cfg))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def bench_vae(cfg: BenchConfig) -> list[Timing]:
    ours, ref, z = _vae_models(cfg)
    err = (_vae_decode("cinegen", ours, ref, z) - _vae_decode("diffusers", ours, ref, z)).abs().max().item()
    del ours, ref
    names = ("diffusers", "cinegen", "cinegen temporal-tiled")
    results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for _ in range(cfg.vae_repeats):
        for name in names:
            results[name].append(_in_child(name, cfg))
    out = []
    for who, rs in results.items():
        out.append(
            Timing(
                f"vae decode {who}",
                statistics.median(r[0] for r in rs),
                [r[0] for r in rs],
                {"peak_rss_growth_mib": statistics.median(r[1] for r in rs), "max_abs_diff_vs_diffusers": err},
            )
        )
    return out


def run_core_bench(cfg: BenchConfig | None = None) -> dict[str, Any]:
    cfg = cfg or BenchConfig()
    torch.manual_seed(cfg.seed)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    timings = bench_transformer(cfg, peaks) + bench_vae(cfg)
    by = {t.name: t for t in timings}
    ratios = {
        "transformer fp32 time ratio (cinegen / diffusers)": by["transformer fp32 cinegen"].median_s
        / by["transformer fp32 diffusers"].median_s,
        "transformer bf16 time ratio (cinegen / diffusers)": by["transformer bf16 cinegen"].median_s
        / by["transformer bf16 diffusers"].median_s,
        "vae decode time ratio (cinegen / diffusers)": by["vae decode cinegen"].median_s
        / by["vae decode diffusers"].median_s,
        "vae decode peak-memory ratio (cinegen / diffusers)": by["vae decode cinegen"].extra["peak_rss_growth_mib"]
        / max(by["vae decode diffusers"].extra["peak_rss_growth_mib"], 1e-9),
        "vae decode peak-memory ratio (temporal-tiled / diffusers)": by["vae decode cinegen temporal-tiled"].extra[
            "peak_rss_growth_mib"
        ]
        / max(by["vae decode diffusers"].extra["peak_rss_growth_mib"], 1e-9),
    }
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
        },
        "config": asdict(cfg),
        "timings": [asdict(t) for t in timings],
        "ratios": ratios,
    }


def format_report(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']} ({m['cpu_capability']}), {m['threads']} threads, torch {m['torch']}",
        "matmul peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in m["matmul_peak_gflops"].items()),
        "",
        "| run | median s | GFLOP/step | GFLOP/s | % of peak | peak RSS growth MiB | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in result["timings"]:
        e = t["extra"]
        gf = f"{e['flops_per_step'] / 1e9:.1f}" if "flops_per_step" in e else ""
        gfs = f"{e['flops_per_s'] / 1e9:.1f}" if "flops_per_s" in e else ""
        frac = f"{100 * e['fraction_of_peak']:.0f}%" if "fraction_of_peak" in e else ""
        mem = f"{e['peak_rss_growth_mib']:.0f}" if "peak_rss_growth_mib" in e else ""
        diff = f"{e['max_abs_diff_vs_diffusers']:.1e}"
        lines.append(f"| {t['name']} | {t['median_s']:.3f} | {gf} | {gfs} | {frac} | {mem} | {diff} |")
    lines.append("")
    for k, v in result["ratios"].items():
        lines.append(f"- {k}: **{v:.2f}**")
    return "\n".join(lines)


def main_core(out: Path | None, quick: bool) -> int:
    cfg = BenchConfig(layers=2, latent_frames=3, repeats=3, vae_repeats=1) if quick else BenchConfig()
    print(f"cinegen bench core ({'quick' if quick else 'full'}): {cfg}")
    result = run_core_bench(cfg)
    report = format_report(result)
    print(report)
    if out is not None:
        with atomic_write(out) as f:
            f.write(json.dumps(result, indent=2))
        with atomic_write(out.with_suffix(".md")) as f:
            f.write(report + "\n")
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
