"""Media ingestion: files to model inputs, as upstream VideoLLaMA 2 preprocesses them (docs/media.md).

The names below load on first use (PEP 562), so the torch-free parts of the package (`segments`,
`sampling`) can be imported by the run's planning without pulling in torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageProcessorSpec": "image", "normalize_levels": "image", "preprocess_frames": "image",
    "value_lookup_table": "image", "LoadedMedia": "loader", "MediaSpec": "loader", "load_media": "loader",
    "MediaInfo": "probe", "probe_media": "probe", "DecodePool": "workers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
