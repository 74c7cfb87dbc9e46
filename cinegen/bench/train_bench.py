"""Training throughput on this machine: tokens/s and MFU of the transformer train step, fp32 vs bf16 autocast.

    python -m cinegen.bench.train_bench [--layers 4 --heads 4 --head-dim 64 ...] [--out outputs/bench-train.json]

One train step = the trainer's step on synthetic latents: objective noise + forward + v-pred loss + backward +
grad clip + AdamW (the same functions `cinegen.train.trainer` calls); data loading and the frozen VAE/T5 are
excluded (they are precomputed in real runs). FLOPs per step = 3 x the analytic forward FLOPs
(`count_flops`, ≈ 2·params·tokens + 4·layers·D·tokens², fast-inference.md §5.2); MFU = achieved FLOP/s over
the measured matmul peak of the same dtype (best of several 2048³ GEMMs). Optionally the same step with
activation checkpointing (hardware does ~4x forward; MFU still counts model FLOPs only).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cinegen.models.transformer import CogVideoXTransformer, TransformerConfig, count_flops
from cinegen.train.config import OptimConfig
from cinegen.train.metrics import measure_matmul_peak
from cinegen.train.objectives import Objective, noisy_input, objective_loss
from cinegen.train.optim import build_optimizer
from cinegen.train.parallel import apply_activation_checkpointing


@dataclass(frozen=True)
class TrainBenchConfig:
    layers: int = 4
    heads: int = 4
    head_dim: int = 64
    text_dim: int = 64
    text_len: int = 32
    batch: int = 2
    latent_frames: int = 5  # 17 pixel frames
    latent_size: int = 16  # 128 x 128 px
    channels: int = 16
    steps: int = 8
    warmup: int = 2
    seed: int = 0


def _model(c: TrainBenchConfig) -> CogVideoXTransformer:
    torch.manual_seed(c.seed)
    cfg = TransformerConfig(
        num_attention_heads=c.heads,
        attention_head_dim=c.head_dim,
        in_channels=c.channels,
        out_channels=c.channels,
        time_embed_dim=128,
        text_embed_dim=c.text_dim,
        num_layers=c.layers,
        sample_height=c.latent_size,
        sample_width=c.latent_size,
        sample_frames=4 * (c.latent_frames - 1) + 1,
        max_text_seq_length=c.text_len,
        use_rotary_positional_embeddings=True,
    )
    return CogVideoXTransformer(cfg).train()


def make_step(c: TrainBenchConfig, precision: str, checkpointing: bool) -> tuple[Any, CogVideoXTransformer]:
    """A closure running one full train step (noise, forward, loss, backward, clip, AdamW) on fixed inputs."""
    model = _model(c)
    if checkpointing:
        apply_activation_checkpointing(model)
    opt = build_optimizer(model, OptimConfig(lr=1e-4))
    obj = Objective(kind="flow")
    g = torch.Generator().manual_seed(c.seed)
    shape = (c.batch, c.latent_frames, c.channels, c.latent_size, c.latent_size)  # (B, T, C, H, W)
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    text = torch.randn(c.batch, c.text_len, c.text_dim, generator=g)
    frac = torch.rand(c.batch, generator=g, dtype=torch.float64)

    def step() -> float:
        n = noisy_input(obj, x0, noise, frac)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            pred = model(n.x_t, text, n.timestep)
        loss = objective_loss(obj, pred, x0, noise, n).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, model


def run(c: TrainBenchConfig, checkpointing: bool = True) -> dict[str, Any]:
    """All variants are timed interleaved (A, B, C, D, A, B, ...) so that load from other processes on this
    shared machine hits them alike; we report the median and the best step of each."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {k: measure_matmul_peak(torch.device("cpu"), dt, n=2048) for k, dt in dtypes.items()}
    variants = [(p, ck) for p in ("fp32", "bf16") for ck in ((False, True) if checkpointing else (False,))]
    steps = {v: make_step(c, *v) for v in variants}
    for fn, _ in steps.values():
        for _ in range(c.warmup):
            fn()
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for _ in range(c.steps):
        for v in variants:
            t0 = time.perf_counter()
            steps[v][0]()
            times[v].append(time.perf_counter() - t0)
    model = steps[variants[0]][1]
    cfg = model.config
    tokens = c.batch * (c.text_len + c.latent_frames * (c.latent_size // cfg.patch_size) ** 2)
    flops = 3 * c.batch * count_flops(cfg, c.latent_frames, c.latent_size, c.latent_size, c.text_len, cfg=False)
    rows = []
    for (precision, ck), ts in times.items():
        med, best = statistics.median(ts), min(ts)
        rows.append(
            {
                "precision": precision,
                "checkpointing": ck,
                "step_s": med,
                "step_best_s": best,
                "tokens_per_step": tokens,
                "tokens_per_s": tokens / med,
                "tokens_per_s_best": tokens / best,
                "flops_per_step": flops,
                "achieved_flops": flops / med,
                "peak_flops": peaks[precision],
                "mfu": flops / med / peaks[precision],
                "mfu_best": flops / best / peaks[precision],
            }
        )
    return {
        "config": asdict(c),
        "params": sum(p.numel() for p in model.parameters()),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
        },
        "matmul_peak_flops": peaks,
        "rows": rows,
    }


def format_report(res: dict[str, Any]) -> str:
    c = res["config"]
    peaks = res["matmul_peak_flops"]
    lines = [
        f"Transformer train step (flow objective, AdamW), {c['layers']} layers x {c['heads']} heads x {c['head_dim']}"
        f" ({res['params'] / 1e6:.1f} M params), batch {c['batch']}, latents {c['latent_frames']}x{c['latent_size']}"
        f"x{c['latent_size']} + {c['text_len']} text tokens; {res['machine']['threads']} threads,"
        f" {res['machine']['cpu_capability']}, torch {res['machine']['torch']}.",
        f"Measured matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s"
        f" ({peaks['bf16'] / peaks['fp32']:.1f}x).",
        "",
        "| precision | act. ckpt | step s (median / best) | tokens/s (median / best) | GFLOP/step"
        " | MFU vs measured peak (median / best) |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['precision']} | {'yes' if r['checkpointing'] else 'no'} | {r['step_s']:.3f} / {r['step_best_s']:.3f}"
            f" | {r['tokens_per_s']:.0f} / {r['tokens_per_s_best']:.0f} | {r['flops_per_step'] / 1e9:.2f}"
            f" | {100 * r['mfu']:.1f} % / {100 * r['mfu_best']:.1f} % |"
        )
    fp32 = next(r for r in res["rows"] if r["precision"] == "fp32" and not r["checkpointing"])
    bf16 = next(r for r in res["rows"] if r["precision"] == "bf16" and not r["checkpointing"])
    lines += [
        "",
        f"bf16 autocast vs fp32 train step: {fp32['step_s'] / bf16['step_s']:.2f}x faster (median),"
        f" {fp32['step_best_s'] / bf16['step_best_s']:.2f}x (best).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cinegen-train-bench", description=__doc__.split("\n")[0])
    for f, v in asdict(TrainBenchConfig()).items():
        p.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--out", default="outputs/bench-train.json")
    args = p.parse_args(argv)
    c = TrainBenchConfig(**{f: getattr(args, f) for f in asdict(TrainBenchConfig())})
    res = run(c, checkpointing=not args.no_checkpointing)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    report = format_report(res)
    out.with_suffix(".md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
