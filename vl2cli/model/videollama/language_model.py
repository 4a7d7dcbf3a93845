"""The LLaMA of a v1 model (LLaMA-2-Chat or Vicuna) as transformers' `LlamaForCausalLM`.

Upstream uses its own copy of transformers 4.28's LLaMA: RoPE base 10000 always (`rope_theta` is not
read), no grouped-query attention, untied `lm_head`. vl2 builds transformers' class with exactly those
settings and loads the folder's weights itself (`.bin` shards through `torch.load(weights_only=True,
mmap=True)`, or safetensors): the shards also carry 4.28's `rotary_emb.inv_freq` buffers, which
upstream never computes with (its cos/sin tables are built at construction), so they are dropped.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from ...errors import CheckpointError
from ..transformers_api import set_attention_implementation
from ..strict_load import load_exact
from .checkpoint import load_state_dict

ROPE_BASE = 10000.0
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


def llama_config(folder: Path) -> LlamaConfig:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: unreadable config.json of the LLaMA folder: {exc}") from exc
    raw.pop("rope_scaling", None)
    raw["rope_theta"] = ROPE_BASE
    raw["num_key_value_heads"] = raw["num_attention_heads"]
    raw["tie_word_embeddings"] = False
    raw.pop("torch_dtype", None)
    config = LlamaConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    set_attention_implementation(config, "sdpa")
    return config


def weight_files(folder: Path) -> list[Path]:
    for index_name in _INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            try:
                names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(f"{index}: unreadable shard index: {exc}") from exc
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise CheckpointError(f"{folder}: missing LLaMA shard file(s) {', '.join(missing)} listed in {index_name}.")
            return [folder / n for n in names]
    for name in _SINGLE_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise CheckpointError(f"{folder}: no LLaMA weights (pytorch_model*.bin or model*.safetensors).")


def load_llama(folder: Path, *, dtype: torch.dtype, device: torch.device) -> LlamaForCausalLM:
    config = llama_config(folder)
    state: dict[str, torch.Tensor] = {}
    for shard in weight_files(folder):
        state.update(load_state_dict(shard, "LLaMA weight", model_key=False))
    state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    load_exact(model, {k: v.to(dtype) for k, v in state.items()}, f"{folder}: LLaMA (its config.json)", assign=True)
    with torch.device(device):
        model.model.rotary_emb = LlamaRotaryEmbedding(config=config)  # built in fp32 as upstream, not loaded
    model.to(device)
    model.generation_config.bos_token_id = config.bos_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    return model.eval()
