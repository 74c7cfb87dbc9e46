"""The generation history: every finished video with the settings that made it, kept on disk across restarts.

Layout of a history folder::

    history.jsonl          one JSON object per finished generation, oldest first
    media/<id>/video.mp4   H.264, plays in browsers
    media/<id>/video.gif   for chats and docs
    media/<id>/thumb.png   the middle frame (gallery thumbnail)
    media/<id>/sheet.png   contact sheet of evenly spaced frames

Crash safety (DESIGN §3, "a crash mid-run leaves the last good output"): an entry's media are written into
`media/<id>.part/` and renamed into place only when complete, and the index is rewritten whole into a temporary
file that replaces `history.jsonl` atomically, so a crash leaves either the old or the new index, never half a
line. Lines that still fail to parse (hand edits) are skipped and counted in `skipped`, never fatal; an entry
whose media folder is gone is skipped the same way. One server process owns a history folder at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cinegen.fsutil import atomic_write
from cinegen.video import Video, contact_sheet

__all__ = ["HistoryEntry", "HistoryStore", "MEDIA_FILES"]

# kind -> file name inside the entry's media folder
MEDIA_FILES = {"mp4": "video.mp4", "gif": "video.gif", "thumb": "thumb.png", "sheet": "sheet.png"}


@dataclass
class HistoryEntry:
    """One finished generation: its id (= the job id), when, the resolved settings, stats and media files."""

    id: str
    created: float
    settings: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # kind -> file name in media/<id>/

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> HistoryEntry:
        return cls(
            id=str(d["id"]),
            created=float(d["created"]),
            settings=dict(d["settings"]),
            stats=dict(d.get("stats") or {}),
            files={str(k): str(v) for k, v in (d.get("files") or {}).items()},
        )

    @property
    def title(self) -> str:
        return str(self.settings.get("prompt", ""))


def _safe_id(entry_id: str) -> str:
    """Ids become folder names: allow only [A-Za-z0-9_-] so no id can escape the history folder."""
    if not entry_id or not all(c.isalnum() or c in "-_" for c in entry_id) or len(entry_id) > 64:
        raise ValueError(f"invalid history id {entry_id!r}")
    return entry_id


def _thumbnail(frames: np.ndarray, min_side: int = 160) -> Image.Image:
    """Middle frame, upscaled (nearest) so that tiny test videos still make a visible gallery tile."""
    img = Image.fromarray(frames[len(frames) // 2])
    s = max(1, -(-min_side // min(img.size)))
    return img.resize((img.width * s, img.height * s), Image.Resampling.NEAREST) if s > 1 else img


class HistoryStore:
    """Thread-safe store of `HistoryEntry`s under `root` (see the module docstring for the layout)."""

    INDEX = "history.jsonl"

    def __init__(self, root: str | Path, max_entries: int | None = None) -> None:
        self.root = Path(root)
        self.media = self.root / "media"
        self.media.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self.skipped = 0
        self._lock = threading.RLock()
        self._entries: list[HistoryEntry] = self._load()

    # ------------------------------------------------------------------ reading
    def _load(self) -> list[HistoryEntry]:
        index = self.root / self.INDEX
        if not index.is_file():
            return []
        out: list[HistoryEntry] = []
        for line in index.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                entry = HistoryEntry.from_json(json.loads(line))
                _safe_id(entry.id)
            except (ValueError, KeyError, TypeError):
                self.skipped += 1
                continue
            if not (self.media / entry.id).is_dir():
                self.skipped += 1
                continue
            out.append(entry)
        return out

    def entries(self, limit: int | None = None) -> list[HistoryEntry]:
        """Newest first."""
        with self._lock:
            items = list(reversed(self._entries))
        return items[:limit] if limit is not None else items

    def get(self, entry_id: str) -> HistoryEntry | None:
        with self._lock:
            return next((e for e in self._entries if e.id == entry_id), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def path(self, entry_id: str, kind: str) -> Path | None:
        """Absolute path of one media file of an entry, or None if the entry or the file does not exist."""
        entry = self.get(entry_id)
        if entry is None or kind not in entry.files:
            return None
        p = self.media / _safe_id(entry.id) / entry.files[kind]
        return p if p.is_file() else None

    # ------------------------------------------------------------------ writing
    def add(
        self,
        entry_id: str,
        video: Video,
        settings: dict[str, Any],
        stats: dict[str, Any] | None = None,
        label: str | None = None,
    ) -> HistoryEntry:
        """Write the media (mp4, gif, thumbnail, contact sheet), then append the entry to the index."""
        _safe_id(entry_id)
        final = self.media / entry_id
        if final.exists():
            raise ValueError(f"history entry {entry_id} already exists")
        part = self.media / f"{entry_id}.part"
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        try:
            video.save(part / MEDIA_FILES["mp4"])
            video.save(part / MEDIA_FILES["gif"])
            _thumbnail(video.frames).save(part / MEDIA_FILES["thumb"])
            contact_sheet(video.frames, label=label).save(part / MEDIA_FILES["sheet"])
            os.replace(part, final)
        except BaseException:
            shutil.rmtree(part, ignore_errors=True)
            raise
        entry = HistoryEntry(
            id=entry_id, created=time.time(), settings=dict(settings), stats=dict(stats or {}), files=MEDIA_FILES.copy()
        )
        with self._lock:
            self._entries.append(entry)
            dropped: list[HistoryEntry] = []
            if self.max_entries is not None and len(self._entries) > self.max_entries:
                dropped = self._entries[: len(self._entries) - self.max_entries]
                self._entries = self._entries[len(dropped) :]
            self._write_index()
        for old in dropped:  # media go after the index no longer names them
            shutil.rmtree(self.media / old.id, ignore_errors=True)
        return entry

    def delete(self, entry_id: str) -> bool:
        with self._lock:
            entry = self.get(entry_id)
            if entry is None:
                return False
            self._entries = [e for e in self._entries if e.id != entry_id]
            self._write_index()
        shutil.rmtree(self.media / _safe_id(entry_id), ignore_errors=True)
        return True

    def _write_index(self) -> None:
        """Rewrite the whole index into a temporary file, fsync it, and atomically replace the old one."""
        with atomic_write(self.root / self.INDEX, encoding="utf-8") as f:
            for e in self._entries:
                f.write(json.dumps(e.to_json(), sort_keys=True) + "\n")
