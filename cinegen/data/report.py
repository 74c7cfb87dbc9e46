"""`cinegen data report`: a Markdown + HTML summary of a work dir.

Contents: the per-stage funnel (rows in / out / kept, throughput), counts of dropped clips per stage and
reason with an example detail, score histograms (PNG, kept vs dropped stacked), the bucket histogram, plugin
notes, and contact sheets (PNG) of sample kept and dropped clips labelled with their reasons.

Images are drawn with PIL only (no matplotlib, and no torch: `cinegen.video` imports torch, which the data
pipeline does not need).
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cinegen.data.config import DataConfig
from cinegen.data.manifest import ClipRecord, read_manifest, resolve_path
from cinegen.data.pipeline import STAGES, stage_table
from cinegen.fsutil import atomic_write

KEPT_COLOR = (46, 139, 87)
DROP_COLOR = (205, 92, 92)


def histogram_png(name: str, kept: list[float], dropped: list[float], bins: int, path: Path) -> Path:
    """Stacked bar histogram (kept green below, dropped red above) with min / max labels."""
    values = np.asarray(kept + dropped, dtype=np.float64)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-9
    edges = np.linspace(lo, hi, bins + 1)
    hk, _ = np.histogram(np.asarray(kept, dtype=np.float64), edges)
    hd, _ = np.histogram(np.asarray(dropped, dtype=np.float64), edges)
    w, h, pad = 420, 220, 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top = max(1, int((hk + hd).max()))
    bw = (w - 2 * pad) / bins
    base = h - pad
    for i in range(bins):
        x0, x1 = pad + i * bw + 1, pad + (i + 1) * bw - 1
        yk = base - (h - 2 * pad) * hk[i] / top
        yd = yk - (h - 2 * pad) * hd[i] / top
        if hk[i]:
            d.rectangle([x0, yk, x1, base], fill=KEPT_COLOR)
        if hd[i]:
            d.rectangle([x0, yd, x1, yk], fill=DROP_COLOR)
    d.line([pad, base, w - pad, base], fill="black")
    d.text((pad, 6), f"{name}  (n={len(values)}, max bin {top})", fill="black")
    d.text((pad, base + 6), f"{lo:.4g}", fill="black")
    d.text((w - pad - 60, base + 6), f"{hi:.4g}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return path


def _clip_strip(rec: ClipRecord, workdir: Path, n: int, height: int = 72) -> Image.Image:
    from cinegen.data.media import sample_frames

    path = resolve_path(rec.path, workdir)
    if rec.type == "image":
        with Image.open(path) as im:
            frames = [np.asarray(im.convert("RGB"))]
    else:
        dec = sample_frames(path, long_side=160)
        picks = sorted({int(round(k * (len(dec.frames) - 1) / max(1, n - 1))) for k in range(n)})
        frames = [dec.frames[i] for i in picks]
    thumbs = []
    for f in frames:
        im = Image.fromarray(f)
        thumbs.append(im.resize((max(1, int(im.width * height / im.height)), height)))
    strip = Image.new("RGB", (sum(t.width for t in thumbs) + 2 * len(thumbs), height + 16), "white")
    x = 0
    for t in thumbs:
        strip.paste(t, (x, 16))
        x += t.width + 2
    label = rec.id if rec.ok else f"{rec.id}: {rec.reason} ({rec.detail or ''})"
    ImageDraw.Draw(strip).text((2, 2), label[:120], fill="black")
    return strip


def contact_sheet_png(records: list[ClipRecord], workdir: Path, n: int, path: Path) -> Path | None:
    strips = []
    for r in records:
        try:
            strips.append(_clip_strip(r, workdir, n))
        except Exception:  # noqa: BLE001 - a clip that cannot be shown must not break the report
            continue
    if not strips:
        return None
    w = max(s.width for s in strips)
    sheet = Image.new("RGB", (w, sum(s.height + 4 for s in strips)), "white")
    y = 0
    for s in strips:
        sheet.paste(s, (0, y))
        y += s.height + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        sheet.save(f, format="PNG")
    return path


def _samples_dropped(records: list[ClipRecord], k: int) -> list[ClipRecord]:
    """Round-robin over reasons so every kind of drop gets shown."""
    by_reason: dict[str, list[ClipRecord]] = defaultdict(list)
    for r in records:
        # Clips dropped by a content check (broken sources and uncut scenes have nothing to show).
        if r.status == "dropped" and r.path and r.stage not in ("scan", "split"):
            by_reason[r.reason or "?"].append(r)
    out: list[ClipRecord] = []
    while len(out) < k and any(by_reason.values()):
        for reason in sorted(by_reason):
            if by_reason[reason] and len(out) < k:
                out.append(by_reason[reason].pop(0))
    return out


def collect(workdir: Path) -> tuple[dict[str, list[ClipRecord]], dict[str, Any]]:
    tables = {s: read_manifest(stage_table(workdir, s)) for s in STAGES if stage_table(workdir, s).exists()}
    stats_path = workdir / "stats.json"
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else {}
    return tables, stats


def write_report(workdir: str | Path, cfg: DataConfig | None = None) -> list[Path]:
    """Write report.md, report.html and PNGs into <workdir>/<report.out_dir>; returns the written paths."""
    cfg = cfg or DataConfig()
    workdir = Path(workdir)
    out_dir = workdir / cfg.report.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, stats = collect(workdir)
    if not tables:
        raise FileNotFoundError(f"{workdir}: no stage tables found; run `cinegen data run` first")
    final_stage = [s for s in STAGES if s in tables][-1]
    final = tables[final_stage]
    md: list[str] = ["# cinegen data report", "", f"Work dir: `{workdir}`", ""]
    images: list[Path] = []

    md += [
        "## Funnel",
        "",
        "| stage | rows in | rows out | kept | dropped here | processed | resumed | s | clips/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in STAGES:
        st = stats.get(s)
        if not st:
            continue
        cps = f"{st['clips_per_s']:.2f}" if st.get("clips_per_s") else "-"
        md.append(
            f"| {s} | {st['items']} | {st['outputs']} | {st['kept']} | {sum(st['dropped'].values())} | "
            f"{st['processed']} | {st['resumed']} | {st['seconds']:.2f} | {cps} |"
        )
    md.append("")

    md += [
        "## Dropped, by stage and reason",
        "",
        "| stage | reason | count | example |",
        "|---|---|---:|---|",
    ]
    counts = Counter((r.stage or "?", r.reason or "?") for r in final if not r.ok)
    examples: dict[tuple[str, str], str] = {}
    for r in final:
        if not r.ok:
            examples.setdefault((r.stage or "?", r.reason or "?"), f"{r.id}: {r.detail or ''}")
    order = {s: i for i, s in enumerate(STAGES)}
    for (stage, reason), n in sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 99), -kv[1])):
        md.append(f"| {stage} | {reason} | {n} | {examples[(stage, reason)][:140].replace('|', '/')} |")
    kept_n = sum(r.ok for r in final)
    md += ["", f"Kept after `{final_stage}`: **{kept_n}** of {len(final)} rows.", ""]

    scored = tables.get("filter") or tables.get("score")
    if scored:
        md += ["## Score histograms", "", "Green: kept after filtering; red: dropped (any reason).", ""]
        numeric = sorted(
            {k for r in scored for k, v in r.scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        )
        for key in numeric:
            kept = [float(r.scores[key]) for r in scored if r.ok and isinstance(r.scores.get(key), (int, float))]
            drop = [float(r.scores[key]) for r in scored if not r.ok and isinstance(r.scores.get(key), (int, float))]
            p = histogram_png(key, kept, drop, cfg.report.bins, out_dir / f"hist_{key}.png")
            images.append(p)
            md.append(f"![{key}]({p.name})")
        cams = Counter(str(r.scores.get("camera")) for r in scored if r.scores.get("camera") is not None)
        if cams:
            md += ["", "Camera motion: " + ", ".join(f"{k} {v}" for k, v in sorted(cams.items())), ""]

    buckets = Counter(r.bucket for r in final if r.ok and r.bucket)
    if buckets:
        md += ["## Buckets (frames x height x width)", "", "| bucket | clips |", "|---|---:|"]
        md += [f"| {b} | {n} |" for b, n in sorted(buckets.items())]
        md.append("")

    notes = [n for s in STAGES for n in (stats.get(s, {}).get("notes") or []) if not n.startswith("bucket ")]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]

    md += ["## Samples", ""]
    kept_recs = [r for r in final if r.ok and r.path][: cfg.report.samples]
    source = tables.get("filter") or final
    drop_recs = _samples_dropped(source, cfg.report.samples)
    for name, recs in (("kept", kept_recs), ("dropped", drop_recs)):
        p = contact_sheet_png(recs, workdir, cfg.report.frames_per_clip, out_dir / f"sheet_{name}.png")
        if p is not None:
            images.append(p)
            md += [f"### {name.capitalize()}", "", f"![{name}]({p.name})", ""]

    text = "\n".join(md) + "\n"
    md_path = out_dir / "report.md"
    with atomic_write(md_path, "w", encoding="utf-8") as f:
        f.write(text)
    html_path = out_dir / "report.html"
    with atomic_write(html_path, "w", encoding="utf-8") as f:
        f.write(_to_html(md))
    return [md_path, html_path, *images]


def _to_html(md: list[str]) -> str:
    """The few Markdown constructs the report uses (headings, tables, images, bullets, paragraphs)."""
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cinegen data report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>",
    ]
    in_table = False
    for line in md:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= set("-:") for c in cells):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f"<img alt='{html.escape(alt)}' src='{html.escape(src.rstrip(')'))}'>")
        elif line.startswith("- "):
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            out.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
