"""vl2: batch VideoLLaMA 2 inference: captions, answers and labels for videos, images and audio.

The main names are imported lazily so that `import vl2cli` (and `vl2 --help`) stays cheap: torch and
transformers load only when a model is.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "vl2cli.api", "caption": "vl2cli.api", "ask": "vl2cli.api", "classify": "vl2cli.api",
    "iter_records": "vl2cli.api", "chat": "vl2cli.api", "discover_media": "vl2cli.discover",
    "VideoLlama2": "vl2cli.model.videollama2", "load_schema": "vl2cli.output.schema", "Vl2Error": "vl2cli.errors",
    "convert_model": "vl2cli.api",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vl2cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
