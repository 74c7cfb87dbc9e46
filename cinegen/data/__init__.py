"""Video data pipeline: raw videos -> clean, captioned, bucketed training manifest.

Stages (each a pure function per item over a table, resumable, see `cinegen.data.pipeline`):
scan (probe) -> split (scenes, clips) -> score -> filter -> caption -> bucket -> export, plus `report`.
Engines: in-process, local process pool, Ray Data (`cinegen.data.engines`). The manifest schema that the
training engine reads is `cinegen.data.manifest.ClipRecord`. CLI: `cinegen data ...` (`cinegen.data.cli`).
"""
