"""The clip manifest: one row per clip (or image), shared by the data pipeline and the training engine.

A manifest is a table of `ClipRecord`s stored as JSON Lines (streaming, human-readable), CSV (Open-Sora style)
or Parquet (column store for training; needs pyarrow). Every write is atomic (temp file + `os.replace`), so a
crash never leaves a half-written manifest behind.

Schema (data-pipelines.md §6.1): `path`, `type` ("video" | "image"), `text`, `width`, `height`,
`num_frames`, `fps`, optional `start`/`end` seconds inside `source_path`, a `scores` dict (nullable numbers
or short strings), an optional precomputed `bucket` ("FxHxW", see `parse_bucket`), optional `crop`
[x, y, w, h], an optional `mask` (a file of the same frames marking the region the training loss weighs
more, `objective.mask_weight`: .npz / .npy (F, H, W) or a video / image whose brightness is the mask) and the
pipeline bookkeeping `status` ("ok" | "dropped" | "error") with the `stage`, `reason`
key and human `detail` of a drop.

Flat formats (CSV, Parquet) store `scores.<name>` and `meta.<name>` as their own columns so that pandas /
Arrow readers see ordinary columns; JSONL keeps them nested. `read_manifest` also imports the two formats
users already have: EasyAnimate JSON (`file_path`, `text`, `type`, `width`, `height`) and Open-Sora CSV
(`path, text, num_frames, height, width, aspect_ratio, fps, ...`, extra numeric columns become scores).

Dependency-light on purpose (stdlib only; pyarrow imported lazily for Parquet): the trainer imports this file.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cinegen.fsutil import atomic_write

# Still-image files (one shared list: the data pipeline scans for them, training reads them as 1-frame clips).
# GIF is not here: animated GIFs decode as video.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

STATUS_OK = "ok"
STATUS_DROPPED = "dropped"
STATUS_ERROR = "error"

# Score values are numbers, short strings (camera class, perceptual hash) or None (scorer skipped).
ScoreValue = float | int | str | bool | None


@dataclass
class ClipRecord:
    """One clip (a time range of a source video, usually cut to its own file) or one image."""

    path: str
    type: str = "video"
    text: str = ""
    width: int = 0
    height: int = 0
    num_frames: int = 0
    fps: float = 0.0
    start: float | None = None
    end: float | None = None
    scores: dict[str, ScoreValue] = field(default_factory=dict)
    bucket: str | None = None
    id: str = ""
    source_path: str | None = None
    crop: list[int] | None = None
    mask: str | None = None  # region mask of the same frames (path, relative like `path`)
    meta: dict[str, Any] = field(default_factory=dict)
    status: str = STATUS_OK
    stage: str | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def duration(self) -> float:
        """Seconds: end - start when known, else frames / fps (0 for images)."""
        if self.start is not None and self.end is not None:
            return max(0.0, self.end - self.start)
        if self.fps > 0:
            return self.num_frames / self.fps
        return 0.0

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def dropped(self, stage: str, reason: str, detail: str = "", status: str = STATUS_DROPPED) -> ClipRecord:
        """A copy marked as dropped (or errored) with its reason; the original is left untouched."""
        return dataclasses.replace(self, status=status, stage=stage, reason=reason, detail=detail or None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown manifest fields {sorted(unknown)} (known: {sorted(names)})")
        kw = dict(d)
        kw["scores"] = dict(kw.get("scores") or {})
        kw["meta"] = dict(kw.get("meta") or {})
        if kw.get("crop") is not None:
            kw["crop"] = [int(v) for v in kw["crop"]]
        for k in ("width", "height", "num_frames"):
            if kw.get(k) is not None:
                kw[k] = int(kw[k])
        if kw.get("fps") is not None:
            kw["fps"] = float(kw["fps"])
        return cls(**kw)


def parse_bucket(bucket: str) -> tuple[int, int, int]:
    """Bucket key "FxHxW" (frames x height x width) -> (F, H, W)."""
    parts = bucket.split("x")
    if len(parts) != 3:
        raise ValueError(f"bucket {bucket!r} is not of the form 'FxHxW'")
    f, h, w = (int(p) for p in parts)
    return f, h, w


def format_bucket(frames: int, height: int, width: int) -> str:
    return f"{frames}x{height}x{width}"


def resolve_path(path: str | os.PathLike[str], base: Path) -> Path:
    """A path from a manifest or list: absolute as is, else relative to `base` (work dir, the list's folder)."""
    p = Path(path)
    return p if p.is_absolute() else base / p


# ----------------------------------------------------------------------------------------------- atomic IO


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} in a manifest")


def dumps_record(rec: ClipRecord) -> str:
    """One JSONL line (no newline), with a stable key order."""
    return json.dumps(rec.to_dict(), ensure_ascii=False, default=_json_default, allow_nan=False)


def _fmt(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".csv", ".parquet"):
        return suffix[1:]
    raise ValueError(f"{path}: unsupported manifest format {suffix!r} (use .jsonl, .json, .csv or .parquet)")


# ---------------------------------------------------------------------------------------------- flattening

_FLAT_SCALARS = [f.name for f in dataclasses.fields(ClipRecord) if f.name not in ("scores", "meta", "crop")]


def _flatten(rec: ClipRecord, typed: bool) -> dict[str, Any]:
    """One flat row. `typed` (Parquet) keeps scalar values; untyped CSV stores score / meta values as JSON
    so that "00ff" stays a string and false stays a bool when read back."""
    d = rec.to_dict()
    row = {k: d[k] for k in _FLAT_SCALARS}
    row["crop"] = None if rec.crop is None else json.dumps(rec.crop)
    for prefix, values in (("scores", rec.scores), ("meta", rec.meta)):
        for k, v in values.items():
            if v is None:
                row[f"{prefix}.{k}"] = None
            elif typed and isinstance(v, (int, float, str, bool)):
                row[f"{prefix}.{k}"] = v
            else:
                row[f"{prefix}.{k}"] = json.dumps(v, default=_json_default)
    return row


def _csv_value(v: Any) -> Any:
    """Our CSV stores JSON; foreign CSVs (Open-Sora) store raw text and numbers."""
    if not isinstance(v, str) or v == "":
        return v
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return _maybe_number(v)


_OPENSORA_ALIASES = {"file_path": "path", "video_path": "path", "caption": "text", "num_frame": "num_frames"}
_INT_FIELDS = ("width", "height", "num_frames")
_FLOAT_FIELDS = ("fps", "start", "end")


def _coerce(value: Any, name: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if name in _INT_FIELDS:
        return int(float(value))
    if name in _FLOAT_FIELDS:
        return float(value)
    return value


def _maybe_number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
        try:
            return float(v)
        except ValueError:
            return v
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def _unflatten(row: dict[str, Any], from_csv: bool) -> ClipRecord:
    """Flat row (ours, Open-Sora CSV or EasyAnimate JSON) -> ClipRecord; extra columns become scores."""
    known = {f.name for f in dataclasses.fields(ClipRecord)}
    kw: dict[str, Any] = {}
    scores: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in row.items():
        key = _OPENSORA_ALIASES.get(key, key)
        if key.startswith("scores."):
            v = _csv_value(value) if from_csv else value
            scores[key[len("scores.") :]] = None if v == "" else v
        elif key.startswith("meta."):
            v = _csv_value(value) if from_csv else value
            if not from_csv and isinstance(v, str) and v[:1] in "[{":
                with contextlib.suppress(json.JSONDecodeError):
                    v = json.loads(v)
            meta[key[len("meta.") :]] = None if v == "" else v
        elif key == "crop":
            kw["crop"] = json.loads(value) if isinstance(value, str) and value else None
        elif key in known:
            v = _coerce(value, key)
            if v is not None:
                kw[key] = v
        elif key in ("aspect_ratio", "resolution", "text_len", "duration"):
            continue  # derived columns of Open-Sora CSVs
        else:  # Open-Sora score columns (aes, flow, ocr, match, cmotion, ...)
            v = _maybe_number(value) if from_csv else value
            scores[key] = None if v == "" else v
    if "path" not in kw:
        raise ValueError(f"manifest row has no path column: {sorted(row)}")
    for k in ("text", "type"):
        if k in kw and kw[k] is None:
            del kw[k]
    if meta:
        kw["meta"] = {k: v for k, v in meta.items() if v is not None}
    kw["scores"] = scores
    kw.setdefault("id", "")
    if not kw["id"]:
        kw["id"] = Path(str(kw["path"])).stem
    return ClipRecord(**kw)


# ------------------------------------------------------------------------------------------------- public


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[ClipRecord]:
    """Stream records from a JSONL manifest (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from e
            yield ClipRecord.from_dict(d) if "scores" in d or "status" in d else _unflatten(d, False)


def read_manifest(path: str | os.PathLike[str]) -> list[ClipRecord]:
    """Read .jsonl / .json (list, EasyAnimate style) / .csv (ours or Open-Sora) / .parquet into records."""
    fmt = _fmt(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    if fmt == "jsonl":
        return list(iter_jsonl(path))
    if fmt == "json":
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise ValueError(f"{path}: a JSON manifest must be a list of objects")
        return [ClipRecord.from_dict(d) if "scores" in d else _unflatten(d, False) for d in data]
    if fmt == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            return [_unflatten(row, True) for row in csv.DictReader(f)]
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading Parquet manifests needs pyarrow (pip install 'cinegen[data]')") from e
    table = pq.read_table(path)
    return [_unflatten(row, False) for row in table.to_pylist()]


def write_manifest(records: Iterable[ClipRecord], path: str | os.PathLike[str]) -> Path:
    """Atomically write records as .jsonl, .json, .csv or .parquet (chosen by the suffix)."""
    path = Path(path)
    fmt = _fmt(path)
    records = list(records)
    if fmt == "jsonl":
        with atomic_write(path, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(dumps_record(rec) + "\n")
        return path
    if fmt == "json":
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump([r.to_dict() for r in records], f, ensure_ascii=False, indent=1, default=_json_default)
        return path
    rows = [_flatten(r, typed=fmt == "parquet") for r in records]
    columns: list[str] = list(_FLAT_SCALARS) + ["crop"]
    extra = sorted({k for row in rows for k in row} - set(columns))
    columns += extra
    if fmt == "csv":
        with atomic_write(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="raise")
            w.writeheader()
            for row in rows:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
        return path
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover
        raise ImportError("writing Parquet manifests needs pyarrow (pip install 'cinegen[data]')") from e
    data = {k: [row.get(k) for row in rows] for k in columns}
    table = pa.table({k: _arrow_column(v) for k, v in data.items()})
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)
    return path


def _arrow_column(values: list[Any]) -> Any:
    """Arrow column with a single type: bools, ints, floats, then strings (mixed types become strings)."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.int64())
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array([None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values])
