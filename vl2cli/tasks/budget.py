"""Files per model call on a GPU, from its free memory and what one file costs there.

A fixed batch of 8 left an 80 GB H100 half idle; a batch too large runs out of memory (the pipeline
then splits it, but that costs a failed call). What one file costs is dominated by its tokens: the
KV cache for prompt + answer, and the transient MLP activations of the prefill. Pure arithmetic, so
it is tested without a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Share of the free memory a batch may plan to use (the rest: allocator slack, encoder activations).
GPU_MEMORY_FRACTION = 0.8
#: K and V.
KV_TENSORS = 2
#: Prefill MLP holds gate and up projections at once, each (tokens, intermediate).
MLP_LIVE_PROJECTIONS = 2
#: Residual stream, normed input, attention output and MLP output alive at once, each (tokens, hidden).
HIDDEN_STATE_COPIES = 4


@dataclass(frozen=True)
class LlmShape:
    """The LLM sizes that set the memory of one sequence."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    dtype_bytes: int

    @classmethod
    def of(cls, config, dtype_bytes: int) -> "LlmShape":
        """From a transformers LLM config (Mistral / Mixtral / Qwen2)."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(layers=config.num_hidden_layers, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                   head_dim=head_dim, hidden=config.hidden_size, intermediate=config.intermediate_size,
                   dtype_bytes=dtype_bytes)


def bytes_per_item(shape: LlmShape, *, prompt_tokens: int, new_tokens: int) -> int:
    """GPU bytes one file of the batch needs: its KV cache to the end of the answer, plus the prefill's
    largest transient (one layer's MLP projections and a few hidden-state copies over the prompt)."""
    kv_per_token = KV_TENSORS * shape.layers * shape.kv_heads * shape.head_dim * shape.dtype_bytes
    kv = kv_per_token * (prompt_tokens + new_tokens)
    transient = prompt_tokens * (MLP_LIVE_PROJECTIONS * shape.intermediate + HIDDEN_STATE_COPIES * shape.hidden) * shape.dtype_bytes
    return kv + transient


def batch_size_for_memory(*, free_bytes: int, item_bytes: int, cap: int) -> int:
    """The most files whose planned memory fits in GPU_MEMORY_FRACTION of `free_bytes`, in [1, cap]."""
    if item_bytes <= 0:
        return cap
    fits = int(free_bytes * GPU_MEMORY_FRACTION) // item_bytes
    return max(1, min(cap, fits))
