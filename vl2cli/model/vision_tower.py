"""The vision tower: CLIP ViT-L/14-336 or SigLIP so400m-384 from transformers, cut at the selected layer.

Upstream takes `hidden_states[mm_vision_select_layer]` (-2 in every release), so the tower's last
layer, post-layernorm and SigLIP's pooling head never influence the output. We load the full
released weights (strictly, so a wrong checkpoint is caught) and then drop those unused parts: same
numbers, less compute.

Attention runs through `torch.nn.functional.scaled_dot_product_attention` ("sdpa": fused kernels on
a GPU, 2.5x faster than eager for SigLIP so400m on an H100) unless `attn_implementation="eager"` is
asked for. Both match upstream's goldens (written with eager attention) within the parity tolerance.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel
from transformers.initialization import no_init_weights

from ..errors import CheckpointError, UnsupportedModelError
from .checkpoint import resolve_repo
from .transformers_api import attention_implementation, set_attention_implementation
from .strict_load import load_exact

#: Files vl2 needs from a tower's hub repo: its architecture and its image processor (no weights:
#: the released VideoLLaMA 2 checkpoints carry the tower weights themselves).
TOWER_FILES = ["config.json", "preprocessor_config.json"]
#: Prefix of the tower weights inside a VideoLLaMA 2 checkpoint.
TOWER_WEIGHT_PREFIX = "model.vision_tower.vision_tower.vision_model."
#: Activations alive at once inside one encoder layer, in units of tokens x width: the residual,
#: the normalised input and q, k, v (hidden width), and the MLP's input and output of its activation
#: (intermediate width). Used to size tower calls to the memory there is.
LIVE_HIDDEN_WIDTHS = 5
LIVE_INTERMEDIATE_WIDTHS = 2
#: Eager attention keeps the softmax in fp32 next to its cast copy: bytes per score beyond the dtype.
EAGER_SCORE_FP32_BYTES = 4
#: transformers attention implementations the tower may be built with.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
DEFAULT_ATTN_IMPLEMENTATION = "sdpa"


@dataclass(frozen=True)
class TowerSpec:
    """What the tower repo says: its family, vision config and image processor settings."""

    family: str  # "clip" or "siglip"
    vision_config: CLIPVisionConfig | SiglipVisionConfig
    image_processor_config: dict
    source: str


def tower_family(name: str, model_type: str | None) -> str:
    """Upstream picks the class by substring of the tower name; the repo's model_type is surer."""
    if model_type:
        if model_type.startswith("siglip"):
            return "siglip"
        if model_type.startswith("clip"):
            return "clip"
    lowered = name.lower()
    if "clip" in lowered:
        return "clip"
    if "siglip" in lowered:
        return "siglip"
    raise UnsupportedModelError(f"vision tower {name!r}: neither a CLIP nor a SigLIP tower.")


def load_tower_spec(name_or_path: str) -> TowerSpec:
    """Resolve `mm_vision_tower` (hub id or folder) to its vision config and processor config."""
    repo = resolve_repo(name_or_path, allow_patterns=TOWER_FILES)
    config_path = repo.folder / "config.json"
    processor_path = repo.folder / "preprocessor_config.json"
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
        processor = json.loads(processor_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"vision tower {name_or_path}: cannot read {config_path.name}/{processor_path.name}: {exc}") from exc
    family = tower_family(name_or_path, raw.get("model_type"))
    vision_dict = dict(raw.get("vision_config", raw))
    vision_dict.pop("model_type", None)
    config_class = CLIPVisionConfig if family == "clip" else SiglipVisionConfig
    return TowerSpec(family, config_class(**vision_dict), processor, str(repo.folder))


def kept_layer_count(num_layers: int, select_layer: int) -> int:
    """How many encoder layers produce `hidden_states[select_layer]` (index 0 is the embeddings)."""
    index = select_layer if select_layer >= 0 else num_layers + 1 + select_layer
    if not 0 <= index <= num_layers:
        raise UnsupportedModelError(f"mm_vision_select_layer {select_layer} is out of range for {num_layers} layers.")
    return index


class VisionTower(nn.Module):
    """Pixels (N, 3, S, S) -> patch features (N, P, D) exactly as upstream's tower wrapper returns them."""

    def __init__(
        self,
        spec: TowerSpec,
        select_layer: int,
        select_feature: str,
        *,
        attn_implementation: str = DEFAULT_ATTN_IMPLEMENTATION,
    ) -> None:
        super().__init__()
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise UnsupportedModelError(
                f"vision tower attention {attn_implementation!r}: choose one of {', '.join(ATTN_IMPLEMENTATIONS)}."
            )
        self.family = spec.family
        self.select_feature = select_feature
        model_class = CLIPVisionModel if spec.family == "clip" else SiglipVisionModel
        # Named explicitly rather than left to transformers' default, which has changed between releases;
        # a copy, so the spec (shared, e.g. by the export code) keeps its own setting.
        vision_config = copy.deepcopy(spec.vision_config)
        set_attention_implementation(vision_config, attn_implementation)
        with no_init_weights():
            self.model = model_class(vision_config)
        self.num_layers = spec.vision_config.num_hidden_layers
        self.keep_layers = kept_layer_count(self.num_layers, select_layer)
        self.hidden_size = spec.vision_config.hidden_size
        self.image_size = spec.vision_config.image_size
        self.patch_size = spec.vision_config.patch_size

    @property
    def attn_implementation(self) -> str:
        """The attention implementation the tower's layers run ("sdpa" or "eager")."""
        return attention_implementation(self.model.config)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def tokens_per_frame(self) -> int:
        """Tokens inside the tower: the patches, plus CLIP's class token."""
        return self.num_patches + int(self.family == "clip")

    def activation_bytes_per_frame(self, dtype: torch.dtype) -> int:
        """Peak activation memory one frame adds to a tower call (an estimate; see the constants)."""
        config = self.model.config
        itemsize = torch.empty((), dtype=dtype).element_size()
        tokens = self.tokens_per_frame
        widths = LIVE_HIDDEN_WIDTHS * config.hidden_size + LIVE_INTERMEDIATE_WIDTHS * config.intermediate_size
        total = tokens * widths * itemsize
        if self.attn_implementation == "eager":
            total += config.num_attention_heads * tokens * tokens * (EAGER_SCORE_FP32_BYTES + itemsize)
        return total

    def load_released_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the checkpoint's tower tensors (prefix already stripped) strictly, then drop unused parts."""
        load_exact(self.model, state_dict, "vision tower")
        self._drop_unused_parts()

    def _drop_unused_parts(self) -> None:
        self.model.encoder.layers = self.model.encoder.layers[: self.keep_layers]
        self.model.post_layernorm = nn.Identity()
        if getattr(self.model, "head", None) is not None:
            del self.model.head
            self.model.use_head = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.model.embeddings(pixel_values.to(self.model.embeddings.patch_embedding.weight.dtype))
        if self.family == "clip":
            hidden = self.model.pre_layrnorm(hidden)
        hidden = self.model.encoder(inputs_embeds=hidden).last_hidden_state
        if self.family == "clip" and self.select_feature == "patch":
            hidden = hidden[:, 1:]
        return hidden.to(pixel_values.dtype)
