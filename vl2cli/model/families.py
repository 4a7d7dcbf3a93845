"""The model families vl2 runs, and which one a `--model` value names (no torch: used by identity checks).

| family        | released as                                    | class                                         |
|---------------|------------------------------------------------|-----------------------------------------------|
| `videollama2` | DAMO-NLP-SG/VideoLLaMA2*, one safetensors repo | `vl2cli.model.videollama2.VideoLlama2`         |
| `videollama`  | DAMO-NLP-SG/Video-LLaMA-*, `.pth` files + LAVIS | `vl2cli.model.videollama.modeling.VideoLlamaV1` |

Each family class implements the `vl2cli.model.family.SplicedFamilyModel` interface; everything
above the model package (pipeline, tasks, CLI) works with either.
"""
from __future__ import annotations

import importlib
from typing import Any

from .videollama.files import looks_like_v1

FAMILIES: dict[str, str] = {
    "videollama2": "vl2cli.model.videollama2:VideoLlama2",
    "videollama": "vl2cli.model.videollama.modeling:VideoLlamaV1",
}
DEFAULT_FAMILY = "videollama2"


def family_of(model: str) -> str:
    """`videollama` for a Video-LLaMA (v1) hub id, folder or eval YAML; `videollama2` otherwise."""
    return "videollama" if looks_like_v1(model) else DEFAULT_FAMILY


def model_class(family: str) -> Any:
    module, _, name = FAMILIES[family].partition(":")
    return getattr(importlib.import_module(module), name)
