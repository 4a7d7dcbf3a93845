"""VideoLLaMA 2 model core: one file per component, in the spirit of transformers' modeling files.

- `config.py`          config.json -> Vl2Config (LLM config object + mm_* keys)
- `checkpoint.py`      hub id / folder resolution, safetensors shard checks and reads
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
from .config import Vl2Config
from .inputs import Generation, LabelScores, Modality, MultimodalInput
from .videollama2 import VideoLlama2

__all__ = ["Generation", "LabelScores", "Modality", "MultimodalInput", "VideoLlama2", "Vl2Config"]
