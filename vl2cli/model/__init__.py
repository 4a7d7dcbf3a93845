"""The model core: two families (VideoLLaMA 2, Video-LLaMA v1) over one shared inference core.

- `family.py`          SplicedFamilyModel: batching, splicing, generation, label scoring (shared)
- `families.py`        which family a --model names, and its class (no torch)
- `videollama/`        Video-LLaMA (v1): its components, one file each (see its __init__)

VideoLLaMA 2, one file per component, in the spirit of transformers' modeling files:

- `config.py`          config.json -> Vl2Config (LLM config object + mm_* keys)
- `hub.py`             hub id / folder resolution (no torch: identity checks stay fast)
- `identity.py`        what a checkpoint is, from config.json alone (no torch)
- `checkpoint.py`      safetensors shard checks and reads
- `vision_tower.py`    CLIP / SigLIP tower (transformers), cut at the selected layer
- `connector.py`       STC connectors (timm RegStage + Conv3d) and token-wise projectors
- `beats.py`           BEATs audio encoder
- `encoders.py`        the encoder interface (`EncoderBackend`) and its PyTorch implementation
- `language_model.py`  Mistral / Mixtral / Qwen2 through transformers
- `prompt.py`          chat template + placeholder tokenisation
- `videollama2.py`     the assembled model: encode, splice, generate, score labels

Nothing here imports the runtime, exporting, media, tasks or CLI layers: choosing an exported
encoder backend is composed on top (`vl2cli.api.load_model`); see tests/test_layering.py.
"""
from __future__ import annotations

import importlib
from typing import Any

#: Imported on first use, so `vl2cli.model.hub` / `.identity` load without torch.
_LAZY = {
    "Vl2Config": "vl2cli.model.config", "Generation": "vl2cli.model.inputs", "LabelScores": "vl2cli.model.inputs",
    "Modality": "vl2cli.model.inputs", "MultimodalInput": "vl2cli.model.inputs",
    "VideoLlama2": "vl2cli.model.videollama2",
    "VideoLlamaV1": "vl2cli.model.videollama.modeling", "SplicedFamilyModel": "vl2cli.model.family",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vl2cli.model' has no attribute {name!r}")
