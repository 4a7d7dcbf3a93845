"""EVA ViT-g (BLIP-2's frozen image encoder) as transformers' `Blip2VisionModel`.

The LAVIS `eva_vit_g.pth` names map one to one onto transformers' BLIP-2 vision model (same
architecture: conv patch embed with bias, CLS + learned positions, pre-norm blocks, q/v biases with
a zero k bias, exact GELU MLP) except for three things handled here: the q/v biases are stored apart
(transformers holds them concatenated as `qkv.bias`), EVA has no final norm (transformers'
`post_layernorm` is replaced by identity) and the LAVIS file holds one block more than the model uses
(40 for a 39-block model: upstream loads non-strictly and ignores the last one; vl2 does the same,
explicitly). LayerNorm eps is EVA's 1e-6, the MLP width `int(width · 4.3637)`.
"""
from __future__ import annotations

import re

import torch
from torch import nn
from transformers import Blip2VisionConfig, Blip2VisionModel

from ...errors import CheckpointError
from ..transformers_api import set_attention_implementation
from ..strict_load import load_exact

EVA_MLP_RATIO = 4.3637
EVA_LAYER_NORM_EPS = 1e-6
EVA_PATCH = 14
#: Head counts of the released widths (not stored in the file): EVA-CLIP-g 1408 → 16 heads.
KNOWN_HEADS = {1408: 16}
#: The real LAVIS file holds one block more than the 39 upstream builds.
EXTRA_BLOCKS_IN_FILE = 1

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.*)$")
_RENAMES = {
    "norm1.": "layer_norm1.", "norm2.": "layer_norm2.", "attn.qkv.weight": "self_attn.qkv.weight",
    "attn.proj.": "self_attn.projection.", "mlp.fc1.": "mlp.fc1.", "mlp.fc2.": "mlp.fc2.",
}


def eva_depth_in_file(state_dict: dict[str, torch.Tensor]) -> int:
    return 1 + max((int(m.group(1)) for k in state_dict if (m := _BLOCK.match(k))), default=-1)


def build_eva_vit(state_dict: dict[str, torch.Tensor], *, image_size: int, heads: int | None = None,
                  depth: int | None = None) -> Blip2VisionModel:
    """EVA ViT-g from a LAVIS state dict; depth defaults to the blocks in the file minus one (as upstream)."""
    try:
        width = state_dict["cls_token"].shape[-1]
        positions = state_dict["pos_embed"].shape[1]
    except KeyError as exc:
        raise CheckpointError(f"the EVA ViT file has no {exc.args[0]} tensor: not LAVIS' eva_vit_g.pth") from exc
    heads = heads or KNOWN_HEADS.get(width)
    if not heads:
        raise CheckpointError(f"EVA ViT width {width}: the head count is not stored in the file; pass it (eva_heads).")
    depth = depth if depth is not None else eva_depth_in_file(state_dict) - EXTRA_BLOCKS_IN_FILE
    if depth < 1:
        raise CheckpointError("the EVA ViT file holds too few blocks.")
    grid = round((positions - 1) ** 0.5)
    config = Blip2VisionConfig(
        hidden_size=width, intermediate_size=int(width * EVA_MLP_RATIO), num_hidden_layers=depth,
        num_attention_heads=heads, image_size=grid * EVA_PATCH, patch_size=EVA_PATCH, hidden_act="gelu",
        layer_norm_eps=EVA_LAYER_NORM_EPS, qkv_bias=True, attention_dropout=0.0,
    )
    set_attention_implementation(config, "sdpa")
    with torch.device("meta"):  # no random init of a billion parameters: every one is loaded next
        model = Blip2VisionModel(config)
    model.post_layernorm = nn.Identity()  # EVA returns the last block's tokens un-normed
    renamed = {k: v.float() for k, v in rename_eva_keys(state_dict, depth).items()}
    load_exact(model, renamed, "EVA ViT (eva_vit_g.pth)", assign=True)
    if image_size != grid * EVA_PATCH:
        raise CheckpointError(
            f"EVA ViT position grid {grid}x{grid} is for {grid * EVA_PATCH} px images, the model uses {image_size}: "
            "position interpolation is not supported."
        )
    return model.eval()


def rename_eva_keys(state_dict: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    out = {
        "embeddings.class_embedding": state_dict["cls_token"],
        "embeddings.position_embedding": state_dict["pos_embed"],
        "embeddings.patch_embedding.weight": state_dict["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": state_dict["patch_embed.proj.bias"],
    }
    for i in range(depth):
        prefix = f"blocks.{i}."
        block = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not block:
            raise CheckpointError(f"the EVA ViT file has no block {i}.")
        target = f"encoder.layers.{i}."
        for name, tensor in block.items():
            if name in ("attn.q_bias", "attn.v_bias"):
                continue
            for old, new in _RENAMES.items():
                if name.startswith(old):
                    out[target + new + name[len(old):]] = tensor
                    break
            else:
                raise CheckpointError(f"unexpected EVA ViT tensor {prefix}{name}")
        q_bias, v_bias = block["attn.q_bias"], block["attn.v_bias"]
        out[target + "self_attn.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
    return out


class Fp32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (upstream's `ln_vision` LayerNorm subclass)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x.float(), self.normalized_shape, self.weight.float(),
                                        self.bias.float(), self.eps).to(x.dtype)
