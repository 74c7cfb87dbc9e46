"""`cinegen plot RUN_DIR`: loss curves (raw and smoothed), learning rate and throughput from metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from cinegen.train.progress import read_metrics


def ema_smooth(values: list[float], alpha: float = 0.9) -> list[float]:
    """Debiased exponential moving average (TensorBoard-style smoothing)."""
    out, acc = [], 0.0
    for i, v in enumerate(values, 1):
        acc = alpha * acc + (1 - alpha) * v
        out.append(acc / (1 - alpha**i))
    return out


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir}: metrics.jsonl is empty")
    panels = [k for k in ("loss", "lr", "tokens_per_s", "grad_norm") if any(k in r for r in rows)]
    val_keys = sorted({k for r in rows for k in r if k.startswith("val/")})
    panels += val_keys
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], panels, strict=True):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        steps, vals = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(steps, vals, lw=0.8, alpha=0.5 if key == "loss" else 1.0, label=key)
        if key == "loss" and len(vals) > 5:
            ax.plot(steps, ema_smooth(vals), lw=1.6, label="loss (smoothed)")
            ax.set_yscale("log")
        if key == "loss":  # image-video joint training: each kind's loss (smoothed)
            for kind in ("loss_image", "loss_video"):
                kp = [(r["step"], r[kind]) for r in rows if r.get(kind) is not None]
                if len(kp) > 5:
                    ax.plot([p[0] for p in kp], ema_smooth([p[1] for p in kp]), lw=1.2, label=f"{kind} (smoothed)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(str(Path(run_dir).name))
    fig.tight_layout()
    out = Path(output) if output else Path(run_dir) / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
