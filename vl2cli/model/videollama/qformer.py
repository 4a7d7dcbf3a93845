"""The three Q-Formers (image, video, audio) as transformers' `Blip2QFormerModel`.

Upstream's `Qformer.py` is BERT with learned queries; with queries only (no text) it is exactly
transformers' BLIP-2 Q-Former: LayerNorm of the queries, post-norm self-attention, cross-attention
every `cross_attention_freq` layers, the query FFN. Only key names differ (`bert.embeddings.LayerNorm`
→ `layernorm`, `attention.self` → `attention.attention`); the text-side tensors LAVIS deletes are not
needed. Sizes (hidden, heads, FFN, eps) come from `bert-base-uncased`'s config as upstream takes them.
The Q-Formers run in float32 (transformers keeps this model in fp32; upstream autocasts around it).
"""
from __future__ import annotations

import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from ...errors import CheckpointError
from ..transformers_api import set_attention_implementation
from ..strict_load import load_exact

#: Upstream hard-codes two layers and cross-attention in every layer for the video/audio Q-Formers.
TEMPORAL_QFORMER_LAYERS = 2


def qformer_config(bert: dict, *, num_layers: int, cross_attention_freq: int, encoder_width: int) -> Blip2QFormerConfig:
    config = Blip2QFormerConfig(
        hidden_size=bert["hidden_size"], num_hidden_layers=num_layers, num_attention_heads=bert["num_attention_heads"],
        intermediate_size=bert["intermediate_size"], hidden_act=bert.get("hidden_act", "gelu"),
        layer_norm_eps=bert.get("layer_norm_eps", 1e-12), cross_attention_frequency=cross_attention_freq,
        encoder_hidden_size=encoder_width, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
        max_position_embeddings=bert.get("max_position_embeddings", 512), vocab_size=bert.get("vocab_size", 30522),
        use_qformer_text_input=False,
    )
    set_attention_implementation(config, "eager")
    return config


def rename_qformer_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream `<x>_Qformer.` entries (prefix already removed) to transformers' names."""
    out = {}
    for key, tensor in state_dict.items():
        if key == "bert.embeddings.position_ids":
            continue  # a buffer of the text embeddings, unused with queries only
        if key.startswith("bert.embeddings.LayerNorm."):
            out["layernorm." + key.rsplit(".", 1)[1]] = tensor
            continue
        if not key.startswith("bert.encoder."):
            raise CheckpointError(f"unexpected Q-Former tensor {key}")
        name = key[len("bert."):]
        name = name.replace(".attention.self.", ".attention.attention.").replace(".crossattention.self.", ".crossattention.attention.")
        out[name] = tensor
    return out


def build_qformer(state_dict: dict[str, torch.Tensor], bert: dict, *, num_layers: int, cross_attention_freq: int,
                  encoder_width: int, what: str) -> Blip2QFormerModel:
    model = Blip2QFormerModel(qformer_config(bert, num_layers=num_layers, cross_attention_freq=cross_attention_freq,
                                             encoder_width=encoder_width))
    load_exact(model, rename_qformer_keys(state_dict), what)
    return model.float().eval()


def image_qformer_layers(state_dict: dict[str, torch.Tensor]) -> int:
    layers = {int(k.split(".")[3]) for k in state_dict if k.startswith("bert.encoder.layer.")}
    return max(layers) + 1 if layers else 0
