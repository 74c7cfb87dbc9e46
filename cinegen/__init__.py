"""cinegen: an open text-to-video toolkit (CogVideoX family, flow matching, training, data pipeline).

Public API: `load_pipeline(path, device=None, dtype=None) -> Pipeline`, `Pipeline.generate(...) -> Video`.
Imports are lazy so `import cinegen` is cheap and has no side effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_pipeline", "Pipeline", "GenerateRequest", "Video", "__version__"]

if TYPE_CHECKING:
    from cinegen.pipeline import GenerateRequest, Pipeline, load_pipeline
    from cinegen.video import Video


def __getattr__(name: str) -> Any:
    if name in ("load_pipeline", "Pipeline", "GenerateRequest"):
        from cinegen import pipeline

        return getattr(pipeline, name)
    if name == "Video":
        from cinegen.video import Video

        return Video
    raise AttributeError(f"module 'cinegen' has no attribute {name!r}")
