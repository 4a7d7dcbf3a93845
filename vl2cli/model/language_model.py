"""The LLM (Mistral, Mixtral or Qwen2) through transformers, loaded from the checkpoint's own shards.

The released checkpoints store the LLM under the plain transformers names (`model.layers.*`,
`lm_head.*`) next to the multimodal tensors, so transformers' own loader reads the LLM part directly
(sharding, dtype, device_map and all) and simply skips the multimodal keys, which vl2 reads itself.
Each tensor is read from disk once.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from transformers import MistralForCausalLM, MixtralForCausalLM, PreTrainedModel, Qwen2ForCausalLM

from ..errors import CheckpointError
from .config import Vl2Config

LLM_CLASSES: dict[str, type[PreTrainedModel]] = {
    "videollama2": MistralForCausalLM,
    "videollama2_mistral": MistralForCausalLM,
    "videollama2_mixtral": MixtralForCausalLM,
    "videollama2_qwen2": Qwen2ForCausalLM,
}
#: Checkpoint key prefixes that are not the LLM's.
MULTIMODAL_PREFIXES = ("model.vision_tower.", "model.mm_projector.", "model.audio_tower.", "model.mm_projector_a.")


@contextmanager
def quiet_transformers():
    """Silence transformers while loading: it calls the multimodal keys 'unexpected' and the
    videollama2_* model_type unknown, both by design here, and draws its own progress bars."""
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(previous)
        transformers.logging.enable_progress_bar()


def load_language_model(
    folder: Path, config: Vl2Config, *, dtype: torch.dtype, device: torch.device, device_map: str | dict | None = None
) -> PreTrainedModel:
    model_class = LLM_CLASSES[config.model_type]
    with quiet_transformers():
        try:
            model, info = model_class.from_pretrained(
                str(folder),
                config=config.llm_config,
                dtype=dtype,
                device_map=device_map if device_map is not None else {"": device},
                output_loading_info=True,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{folder}: cannot load the language model weights: {exc}") from exc
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(MULTIMODAL_PREFIXES)]
    if missing:
        raise CheckpointError(f"{folder}: language model weights missing from the checkpoint: {sorted(missing)[:5]}")
    mismatched = info.get("mismatched_keys", [])
    if mismatched:
        raise CheckpointError(f"{folder}: language model weights with the wrong shape: {list(mismatched)[:5]}")
    model.eval()
    return model
