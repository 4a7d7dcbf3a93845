"""Decode ms/step of a Qwen2-7B-sized LLM: transformers' generate vs vl2's graph-replayed static loop.

Issue 9's target: ≤ 10 ms per step at batch 32 after ~1400-2900-token prompts (bf16, one H100),
where generate took 25-39 ms (../shared/gpu-notes.md). No checkpoint can be downloaded on the GPU
machine, so the LLM is built with random weights at Qwen2-7B's sizes: speed does not depend on the
values, and with end-of-sequence disabled every row runs to the step count. The prompts are random
embeddings, left-padded to spread the rows over the lower fifth of the prompt length as real mixed
batches are. The generation config is Qwen2-7B-Instruct's greedy one (repetition penalty 1.05).

Needs CUDA; on a machine without one it reports that and measures nothing.
"""
from __future__ import annotations

import time

import torch

from benchmarks.run import BenchResult

#: Qwen2-7B(-Instruct)'s LLM sizes, as in VideoLLaMA2.1-7B(-AV)'s config.json.
QWEN2_7B = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
QWEN2_INSTRUCT_REPETITION_PENALTY = 1.05
#: (batch, longest prompt): one video file; 32 videos (16 frames, 1384 tokens); 32 AV files (2880).
CASES = [(1, 1400), (32, 1400), (32, 2900)]
#: Decode steps timed (after one untimed call that allocates, captures and warms up).
TIMED_STEPS = 64
#: The shortest row of a batch is this fraction of the longest (the rest is left padding).
SHORTEST_ROW = 0.8
MS_PER_S = 1000
#: Where the model is built (a module constant so a smoke run on CPU can point it elsewhere).
DEVICE = "cuda"


def _build_llm():
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**QWEN2_7B, attn_implementation="sdpa")
    with torch.device(DEVICE):
        llm = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return llm.eval()


def _prompts(llm, batch: int, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device=DEVICE).manual_seed(batch * longest)
    ids = torch.randint(0, llm.config.vocab_size, (batch, longest), device=DEVICE, generator=generator)
    lengths = torch.linspace(longest * SHORTEST_ROW, longest, batch, device=DEVICE).round().long()
    mask = (torch.arange(longest, device=DEVICE)[None, :] >= longest - lengths[:, None]).long()
    with torch.inference_mode():
        embeds = llm.get_input_embeddings()(ids) * mask[..., None]
    return embeds, mask


def _timed(run, new_tokens: int, config) -> tuple[float, torch.Tensor]:
    config.max_new_tokens = new_tokens
    torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = run(config)
    torch.cuda.synchronize()
    assert tokens.shape[1] == new_tokens, "end-of-sequence is disabled: every row runs to max_new_tokens"
    return time.perf_counter() - start, tokens


def _ms_per_step(run, config) -> tuple[float, float, torch.Tensor]:
    """(first call s, decode ms/step, tokens): steps = (time for 1 + N tokens − time for 1) / N."""
    first, _ = _timed(run, 1 + TIMED_STEPS, config)
    full, tokens = _timed(run, 1 + TIMED_STEPS, config)
    prefill_only, _ = _timed(run, 1, config)
    return first, (full - prefill_only) / TIMED_STEPS * MS_PER_S, tokens


def run() -> BenchResult:
    title = "Decode ms/step, Qwen2-7B sizes (random weights), bf16: generate vs static loop + CUDA graphs"
    header = ["batch", "longest prompt", "generate ms/step", "static+graphs ms/step", "first static call s", "tokens equal"]
    if not torch.cuda.is_available():
        return BenchResult(title, header, [], ["needs a CUDA GPU: nothing measured on this machine"])
    from transformers import GenerationConfig

    from vl2cli.model.decode_loop import StaticCacheDecoder

    llm = _build_llm()
    decoder = StaticCacheDecoder(llm, cuda_graphs=True)
    rows = []
    for batch, longest in CASES:
        embeds, mask = _prompts(llm, batch, longest)
        config = GenerationConfig(do_sample=False, repetition_penalty=QWEN2_INSTRUCT_REPETITION_PENALTY,
                                  eos_token_id=[], pad_token_id=0, max_new_tokens=1)
        with torch.inference_mode():
            _, generate_ms, expected = _ms_per_step(
                lambda c: llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=c), config
            )
            first_s, static_ms, tokens = _ms_per_step(lambda c: decoder.generate(embeds, mask, c), config)
        equal = (tokens == expected).float().mean().item()
        rows.append([str(batch), str(longest), f"{generate_ms:.1f}", f"{static_ms:.1f}", f"{first_s:.2f}", f"{equal:.0%}"])
        del embeds, mask
    return BenchResult(title, header, rows, [
        f"decode ms/step = (time for 1 + {TIMED_STEPS} tokens − time for 1 token) / {TIMED_STEPS}; prefill excluded",
        "first static call s: the call that allocates the bucket's cache and captures the graph (plus its own decode)",
        "tokens equal: share of generated ids equal to generate's (bf16: kernels differ, random weights give small margins)",
        f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}",
    ])
