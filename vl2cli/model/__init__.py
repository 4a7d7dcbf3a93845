"""VideoLLaMA 2 model core: one file per component, in the spirit of transformers' modeling files.

- `config.py`          config.json -> Vl2Config (LLM config object + mm_* keys)
- `checkpoint.py`      hub id / folder resolution, safetensors shard checks and reads
- `vision_tower.py`    CLIP / SigLIP tower (transformers), cut at the selected layer
- `connector.py`       STC connectors (timm RegStage + Conv3d) and token-wise projectors
- `beats.py`           BEATs audio encoder
- `language_model.py`  Mistral / Mixtral / Qwen2 through transformers
- `prompt.py`          chat template + placeholder tokenisation
- `videollama2.py`     the assembled model: encode, splice, generate, score labels
"""
from .config import Vl2Config
from .inputs import Generation, LabelScores, Modality, MultimodalInput
from .videollama2 import VideoLlama2

__all__ = ["Generation", "LabelScores", "Modality", "MultimodalInput", "VideoLlama2", "Vl2Config"]
