"""The checkpoint's `config.json`, parsed once into what vl2 needs.

Released VideoLLaMA 2 checkpoints keep everything in one `config.json`: the plain LLM config (Mistral,
Mixtral or Qwen2) plus `mm_*` keys for the vision tower, the connector and (AV) the audio branch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import MistralConfig, MixtralConfig, PretrainedConfig, Qwen2Config

from ..errors import CheckpointError, UnsupportedModelError
from .identity import check_config_sizes, config_num_frames, read_config_json

#: model_type in config.json -> the transformers config class of the LLM inside.
LLM_CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "videollama2": MistralConfig,  # the earliest releases used this name for Mistral checkpoints
    "videollama2_mistral": MistralConfig,
    "videollama2_mixtral": MixtralConfig,
    "videollama2_qwen2": Qwen2Config,
}

VIDEO_CONNECTOR_TYPES = (
    "linear",
    "identity",
    "stc_connector",
    "stc_connector_v35",
    "stp_connector",
    "spatial_conv",
    "spatial_pool",
)
AUDIO_PROJECTOR_TYPES = ("linear", "identity")
MLP_GELU_PATTERN = re.compile(r"^mlp(\d+)x_gelu$")

#: Keys that belong to VideoLLaMA 2 rather than to the LLM; they are removed before the LLM config
#: is built so transformers does not carry them around.
MULTIMODAL_KEYS = (
    "mm_vision_tower",
    "mm_vision_select_layer",
    "mm_vision_select_feature",
    "mm_projector_type",
    "mm_hidden_size",
    "num_frames",
    "image_aspect_ratio",
    "mm_use_im_start_end",
    "mm_use_im_patch_token",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "mm_projector_lr",
    "use_mm_proj",
    "tokenizer_model_max_length",
    "tokenizer_padding_side",
    "mm_audio_tower",
    "mm_projector_a_type",
    "mm_hidden_size_a",
    "hidden_size_a",
    "tune_mm_mlp_adapter_a",
    "audio_tower_config",
)


def is_known_projector(name: str, extra: tuple[str, ...]) -> bool:
    return name in extra or MLP_GELU_PATTERN.match(name) is not None


@dataclass
class Vl2Config:
    """Everything vl2 reads from a checkpoint's config.json.

    `llm_config` is a real transformers config object for the LLM; the other fields are the
    multimodal keys with upstream's defaults applied.
    """

    model_type: str
    llm_config: PretrainedConfig
    hidden_size: int
    vision_tower: str | None
    vision_select_layer: int
    vision_select_feature: str
    projector_type: str
    mm_hidden_size: int | None
    num_frames: int
    num_frames_in_config: bool
    audio_tower: str | None
    audio_projector_type: str | None
    mm_hidden_size_a: int | None
    hidden_size_a: int | None
    audio_tower_config: dict[str, Any] | None
    tune_mm_mlp_adapter: bool
    name_or_path: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def has_vision(self) -> bool:
        return self.vision_tower is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_tower is not None

    @property
    def is_base_checkpoint(self) -> bool:
        """Base (pre-training) checkpoints carry only the connector; the LLM comes from elsewhere."""
        return self.tune_mm_mlp_adapter

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config.json") -> "Vl2Config":
        model_type = raw.get("model_type")
        if model_type not in LLM_CONFIG_CLASSES:
            known = ", ".join(sorted(LLM_CONFIG_CLASSES))
            raise UnsupportedModelError(
                f"{source}: model_type {model_type!r} is not a VideoLLaMA 2 model type vl2 knows ({known})."
            )
        check_config_sizes(raw, source)
        if "hidden_size" not in raw:
            raise CheckpointError(f"{source}: no hidden_size; not a VideoLLaMA 2 model config")
        num_frames = config_num_frames(raw, source)
        llm_keys = {k: v for k, v in raw.items() if k not in MULTIMODAL_KEYS and k != "model_type"}
        try:
            llm_config = LLM_CONFIG_CLASSES[model_type](**llm_keys)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: the LLM part of the config is invalid: {exc}") from exc

        projector_type = raw.get("mm_projector_type", "linear")
        vision_tower = raw.get("mm_vision_tower")
        if vision_tower is not None and not is_known_projector(projector_type, VIDEO_CONNECTOR_TYPES):
            raise UnsupportedModelError(
                f"{source}: mm_projector_type {projector_type!r} is not supported "
                f"(known: {', '.join(VIDEO_CONNECTOR_TYPES)}, mlpNx_gelu)."
            )
        audio_tower = raw.get("mm_audio_tower")
        audio_projector_type = raw.get("mm_projector_a_type", "linear") if audio_tower else None
        if audio_projector_type is not None and not is_known_projector(audio_projector_type, AUDIO_PROJECTOR_TYPES):
            raise UnsupportedModelError(
                f"{source}: mm_projector_a_type {audio_projector_type!r} is not supported "
                f"(known: {', '.join(AUDIO_PROJECTOR_TYPES)}, mlpNx_gelu)."
            )
        select_feature = raw.get("mm_vision_select_feature", "patch")
        if select_feature not in ("patch", "cls_patch"):
            raise UnsupportedModelError(f"{source}: mm_vision_select_feature {select_feature!r} is not supported.")
        return cls(
            model_type=model_type,
            llm_config=llm_config,
            hidden_size=int(raw["hidden_size"]),
            vision_tower=vision_tower,
            vision_select_layer=int(raw.get("mm_vision_select_layer", -1)),
            vision_select_feature=select_feature,
            projector_type=projector_type,
            mm_hidden_size=raw.get("mm_hidden_size"),
            num_frames=num_frames,
            num_frames_in_config="num_frames" in raw,
            audio_tower=audio_tower,
            audio_projector_type=audio_projector_type,
            mm_hidden_size_a=raw.get("mm_hidden_size_a"),
            hidden_size_a=raw.get("hidden_size_a"),
            audio_tower_config=raw.get("audio_tower_config"),
            tune_mm_mlp_adapter=bool(raw.get("tune_mm_mlp_adapter", False)),
            name_or_path=raw.get("_name_or_path"),
            raw=raw,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "Vl2Config":
        path = Path(path)
        return cls.from_dict(read_config_json(path), source=str(path))
