"""Greedy decoding of vl2's own around transformers' `StaticCache`, each step replayed as a CUDA graph.

Why this exists. On an H100 (docs: ../shared/gpu-notes.md) one decode step of Qwen2-7B took 25-39 ms at
every batch size through `llm.generate` with the dynamic cache, where reading the weights once takes
≈5 ms. Two costs hide in a step:

* launches: ≈30 small kernels per layer, each launched from Python through transformers' modules;
  at batch 1 that alone is the whole step;
* grouped-query attention with a padding mask: transformers' sdpa path repeats K and V to all query
  heads (`repeat_kv`, a copy of the whole cache, ×7 for Qwen2-7B's 28/4 heads) whenever a mask is
  given, and a left-padded batch always gives one; the dynamic cache also re-concatenates every
  layer's K/V each step. At batch 32 after ~1400-2900 prompt tokens that is tens of GB of memory
  traffic per step.

So this loop (1) keeps K/V in a `StaticCache` whose tensors never move, (2) computes decode
attention with the query heads of each K/V head folded into the query length (`grouped_decode_attention`:
the same arithmetic, no K/V copy), and (3) on CUDA captures one decode step (embedding → 28 layers →
lm_head) as a `torch.cuda.CUDAGraph` over static input buffers and replays it.

Why a hand-captured graph and not `torch.compile(mode="reduce-overhead")`: capture costs one eager
step plus a recording (well under a second), where compiling a 7B step took ~50 s per shape on the
H100 and dynamo's recompile limit caps the number of shapes; a captured graph needs nothing but the
CUDA runtime (no inductor/triton toolchain on the GPU machine); and the forward is plain eager
transformers code, so what runs in the graph is what the CPU tests run. The price: no kernel fusion,
and the step must not synchronise with the host (it does not: the 4-D mask is passed ready-made, so
transformers' mask builder — which asks `mask.all()` — is skipped; positions come from a buffer).

Buckets. A graph is bound to the addresses of its cache and buffers, so one live `_DecodeState`
(cache + buffers + graph) is kept per decoder and reused while it fits: same batch size, cache at
least as long as needed (cache length is rounded up to `CACHE_LENGTH_MULTIPLE`). The batch size is
not rounded up: padding rows would have to be prefilled too, and prefill of a padding row costs as
much as a real one, far more than the capture of another shape.

Parity. Tokens equal `llm.generate(inputs_embeds=…, attention_mask=…)` for greedy decoding: same
position ids from the mask, logits processors built from the same generation-config fields
(`repetition_penalty`, `no_repeat_ngram_size`) with transformers' own classes, processors applied to
float32 logits and to the generated ids only (as `generate` does when it starts from `inputs_embeds`),
finished rows padded with `pad_token_id` until every row has finished. One deliberate difference:
the repetition penalty is never shifted by a row's left padding (transformers 5.23's `generate` does
that, so a padded row was penalised differently in a batch than alone; 5.17 does not).
Any other generation setting (sampling, beams, other processors) is refused by
`unsupported_generation_fields`, and the caller falls back to `llm.generate`.

What was measured: on the 2-core CPU development machine only (no GPU there), the static loop without
graphs against `llm.generate` on every reference fixture case (tests/test_decode_loop.py). The CUDA
graph path has never run on that machine; tests/test_gpu.py and benchmarks/bench_decode.py check and
time it on a GPU.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import (
    AttentionInterface,
    GenerationConfig,
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    PreTrainedModel,
    RepetitionPenaltyLogitsProcessor,
    StaticCache,
)
from transformers.generation.streamers import BaseStreamer

from .transformers_api import attention_implementation, set_attention_implementation, static_cache_api_problem, with_cache

log = logging.getLogger(__name__)

#: How `VideoLlama2.generate` decodes: "static" = this loop (CUDA graphs on CUDA), "dynamic" =
#: transformers' `generate` with its dynamic cache, "auto" = static on CUDA, dynamic on CPU.
DECODE_LOOPS = ("auto", "static", "dynamic")
#: Cache lengths are rounded up to a multiple of this, so prompts of similar length share one cache
#: and one captured graph (256 keeps the unused tail, attended but masked, under ~10% for 3k prompts).
CACHE_LENGTH_MULTIPLE = 256
#: Eager steps run on a side stream before capture, so lazy initialisations (cuBLAS handles and
#: workspaces, allocator pools) happen outside the graph, as torch's CUDA-graph notes require.
GRAPH_WARMUP_STEPS = 2
#: Name under which the decode attention is registered in transformers' AttentionInterface.
GROUPED_DECODE_ATTENTION = "vl2_grouped_decode"
#: Attention implementations whose prefill this loop has run (the decode step uses its own).
PREFILL_ATTENTION = ("sdpa", "eager")

#: Generation-config fields and the values with which they change nothing in greedy decoding.
NO_OP_VALUES: dict[str, tuple] = {
    "do_sample": (False,),
    "num_beams": (1,),
    "num_beam_groups": (1,),
    "num_return_sequences": (1,),
    "min_length": (0,),
    "min_new_tokens": (0,),
    "repetition_penalty": (1.0,),
    "no_repeat_ngram_size": (0,),
    "encoder_repetition_penalty": (1.0,),
    "encoder_no_repeat_ngram_size": (0,),
    "guidance_scale": (1.0,),
    "renormalize_logits": (False,),
    "remove_invalid_values": (False,),
    "output_attentions": (False,),
    "output_hidden_states": (False,),
    "output_scores": (False,),
    "output_logits": (False,),
    "return_dict_in_generate": (False,),
    "token_healing": (False,),
    "is_assistant": (False,),
    "diversity_penalty": (0.0,),
    "low_memory": (False,),
}
#: Fields the loop reproduces (with transformers' own processor classes).
HANDLED_FIELDS = frozenset({"repetition_penalty", "no_repeat_ngram_size", "max_new_tokens", "eos_token_id", "pad_token_id"})
#: Fields that do not affect greedy decoding from `inputs_embeds`: lengths given otherwise, ids used
#: only by other modes, sampling warpers (applied only when sampling), beam-only scoring, bookkeeping.
INERT_FIELDS = frozenset({
    "max_length", "use_cache", "bos_token_id", "decoder_start_token_id", "cache_implementation", "cache_config",
    "max_cache_len", "compile_config", "disable_compile", "early_stopping", "length_penalty",
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "transformers_version", "_from_model_config", "_commit_hash",
})

_logged_fallbacks: set[str] = set()


def log_fallback_once(reason: str) -> None:
    """Say once per process and reason that `llm.generate` runs instead of the static loop."""
    if reason not in _logged_fallbacks:
        _logged_fallbacks.add(reason)
        log.info("decode loop: %s; using transformers' generate (dynamic cache)", reason)


def unsupported_generation_fields(config: GenerationConfig) -> list[str]:
    """Fields of `config` that would make `llm.generate` decode differently from this loop.

    Read from the config's values rather than from a list of processors, so a field this loop has
    never heard of (a new transformers feature) also leads to the fallback.
    """
    unsupported = []
    for name, value in config.to_dict().items():
        if value is None or name in INERT_FIELDS:
            continue
        if name in NO_OP_VALUES and value in NO_OP_VALUES[name]:
            continue
        if name in HANDLED_FIELDS:
            continue
        unsupported.append(f"{name}={value!r}")
    if not config.max_new_tokens:
        unsupported.append("max_new_tokens unset")
    return unsupported


def greedy_logits_processors(config: GenerationConfig) -> LogitsProcessorList:
    """The processors `generate` builds for greedy decoding from `inputs_embeds`, in its order."""
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        # no prompt_ignore_length: the ids seen are the generated ones only, for every row alike
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=float(config.repetition_penalty)))
    if config.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    return processors


def eos_ids_of(config: GenerationConfig) -> list[int]:
    eos = config.eos_token_id
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(t) for t in eos]


def grouped_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of a few new tokens over a grouped-query K/V cache without repeating K/V.

    Query heads sharing one K/V head (transformers' `repeat_kv` order: query head h reads K/V head
    h // groups) become extra query rows of that K/V head, so sdpa reads the cache once instead of
    `groups` times. `attention_mask` is (B, 1, Q, S) boolean (True = attend) or additive float.
    Returns (B, Q, heads, D), as transformers' attention functions do.
    """
    batch, heads, query_length, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    folded = query.reshape(batch, kv_heads, groups * query_length, head_dim)
    mask = attention_mask
    if mask is not None:
        mask = mask[:, :, :, : key.shape[-2]]
        if query_length > 1:  # each folded row keeps its own token's mask row
            mask = mask.unsqueeze(2).expand(batch, mask.shape[1], groups, query_length, mask.shape[-1])
            mask = mask.reshape(batch, -1, groups * query_length, mask.shape[-1])
    output = torch.nn.functional.scaled_dot_product_attention(
        folded, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
    )
    output = output.reshape(batch, heads, query_length, head_dim)
    return output.transpose(1, 2).contiguous(), None


def _register_decode_attention() -> None:
    # registering again under the same name replaces the entry with the same function: idempotent
    AttentionInterface.register(GROUPED_DECODE_ATTENTION, grouped_decode_attention)


@contextmanager
def decode_attention(llm: PreTrainedModel) -> Iterator[None]:
    """Route the LLM's attention layers to `grouped_decode_attention` for the duration (they read
    `config._attn_implementation` at every call; a captured graph keeps what ran at capture)."""
    previous = attention_implementation(llm.config)
    set_attention_implementation(llm.config, GROUPED_DECODE_ATTENTION)
    try:
        yield
    finally:
        set_attention_implementation(llm.config, previous)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _text_config(llm: PreTrainedModel):
    return llm.config.get_text_config(decoder=True)


def static_cache_unsupported(llm: PreTrainedModel) -> str | None:
    """Why this LLM cannot decode through the static loop at all, or None."""
    api_problem = static_cache_api_problem()
    if api_problem:
        return api_problem
    attention = attention_implementation(llm.config)
    if attention not in PREFILL_ATTENTION:
        return f"attention implementation {attention!r} (the loop runs {', '.join(PREFILL_ATTENTION)})"
    probe = StaticCache(config=llm.config, max_cache_len=CACHE_LENGTH_MULTIPLE)
    if any(probe.is_sliding):
        return "sliding-window attention layers"
    return None


def cuda_graphs_unsupported(llm: PreTrainedModel) -> str | None:
    """Why one decode step of this LLM cannot be captured as a CUDA graph, or None."""
    devices = {p.device for p in llm.parameters()}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        return "the LLM is not on exactly one CUDA device"
    if getattr(_text_config(llm), "num_local_experts", None):
        return "mixture-of-experts routing (data-dependent, not capturable)"
    return None


@dataclass
class _DecodeState:
    """One bucket: a static cache and the step's input buffers, plus the graph that reads them."""

    cache: StaticCache
    dtype: torch.dtype  # of the cache's keys and values (kept here: transformers' layers need not say)
    tokens: torch.Tensor  # (B, 1) the token fed to the next step
    positions: torch.Tensor  # (B, 1) its position id
    mask: torch.Tensor  # (B, 1, 1, S) bool: cache columns the next token attends to
    graph: torch.cuda.CUDAGraph | None = None
    graph_logits: torch.Tensor | None = None  # (B, V), written by each replay

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def cache_length(self) -> int:
        return self.mask.shape[-1]


class StaticCacheDecoder:
    """Greedy decoding with a static cache; one step per CUDA-graph replay on CUDA.

    Holds one live bucket (cache, buffers, graph) and reuses it across calls while it fits.
    """

    def __init__(self, llm: PreTrainedModel, *, cuda_graphs: bool | None = None) -> None:
        """`cuda_graphs`: None = capture when the LLM can be captured (one CUDA device, dense)."""
        _register_decode_attention()
        self.llm = llm
        graph_problem = cuda_graphs_unsupported(llm)
        if cuda_graphs and graph_problem:
            raise ValueError(f"cannot capture decode steps as CUDA graphs: {graph_problem}")
        self.cuda_graphs = graph_problem is None if cuda_graphs is None else cuda_graphs
        #: Why steps are not captured as CUDA graphs here (None when they can be).
        self.graph_problem = graph_problem
        self._model_problem = static_cache_unsupported(llm)
        self._state: _DecodeState | None = None
        #: How many buckets were built (cache allocated, graph captured) in this process.
        self.buckets_built = 0

    def unsupported_reason(self, config: GenerationConfig) -> str | None:
        """Why this loop would not give `llm.generate`'s tokens for `config`, or None."""
        if self._model_problem:
            return self._model_problem
        fields = unsupported_generation_fields(config)
        if fields:
            return "generation settings the static loop does not reproduce: " + ", ".join(fields)
        return None

    # ------------------------------------------------------------------ buckets
    def _state_for(self, batch_size: int, needed_length: int, dtype: torch.dtype, device: torch.device) -> _DecodeState:
        state = self._state
        if (
            state is not None
            and state.batch_size == batch_size
            and state.cache_length >= needed_length
            and state.mask.device == device
            and state.dtype == dtype
        ):
            return state
        self._state = None  # release the old bucket's cache and graph before allocating the new one
        del state
        length = round_up(needed_length, CACHE_LENGTH_MULTIPLE)
        text_config = _text_config(self.llm)
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        cache = StaticCache(config=self.llm.config, max_cache_len=length)
        cache.early_initialization(batch_size, text_config.num_key_value_heads, head_dim, dtype, device)
        state = _DecodeState(
            cache=cache,
            dtype=dtype,
            tokens=torch.zeros(batch_size, 1, dtype=torch.long, device=device),
            positions=torch.zeros(batch_size, 1, dtype=torch.long, device=device),
            mask=torch.zeros(batch_size, 1, 1, length, dtype=torch.bool, device=device),
        )
        if self.cuda_graphs:
            self._capture(state)
        self._state = state
        self.buckets_built += 1
        log.debug("decode loop: bucket batch %d x cache %d (graphs: %s)", batch_size, length, self.cuda_graphs)
        return state

    def _forward_step(self, state: _DecodeState) -> torch.Tensor:
        """One token per row through the LLM, reading only the state's buffers: (B, V) logits."""
        with decode_attention(self.llm):
            output = self.llm(
                input_ids=state.tokens,
                attention_mask=state.mask,
                position_ids=state.positions,
                use_cache=True,
                **with_cache(self.llm, state.cache),
            )
        return output.logits[:, -1, :]

    def _capture(self, state: _DecodeState) -> None:
        """Record one decode step into a CUDA graph; leaves the cache empty."""
        state.mask[..., 0] = True  # warm-up steps write and attend column 0 only
        side_stream = torch.cuda.Stream(device=state.mask.device)
        side_stream.wait_stream(torch.cuda.current_stream(state.mask.device))
        with torch.cuda.stream(side_stream):
            for _ in range(GRAPH_WARMUP_STEPS):
                state.cache.reset()
                self._forward_step(state)
        torch.cuda.current_stream(state.mask.device).wait_stream(side_stream)
        state.cache.reset()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits = self._forward_step(state)
        state.graph, state.graph_logits = graph, logits
        state.cache.reset()  # capture records kernels without running them; reset for clarity
        state.mask.zero_()

    def _step(self, state: _DecodeState) -> torch.Tensor:
        if state.graph is None:
            return self._forward_step(state)
        state.graph.replay()
        return state.graph_logits

    # --------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, generation_config: GenerationConfig,
        streamer: BaseStreamer | None = None,
    ) -> torch.Tensor:
        """New token ids (B, n), n ≤ max_new_tokens, as `llm.generate` returns them for these inputs.

        `streamer` (transformers' protocol: `put(ids)`, `end()`) is fed as `generate` feeds it: the
        prompt's ids first (none: the prompt is embeddings), then each step's tokens, then `end()`.
        """
        reason = self.unsupported_reason(generation_config)
        if reason:
            raise ValueError(f"the static decode loop cannot run this generation: {reason}")
        batch_size, prompt_length = attention_mask.shape
        max_new_tokens = generation_config.max_new_tokens
        device = inputs_embeds.device
        # the last generated token is never fed back, so the cache holds prompt + max_new_tokens - 1
        state = self._state_for(batch_size, prompt_length + max_new_tokens - 1, inputs_embeds.dtype, device)
        processors = greedy_logits_processors(generation_config)
        eos = torch.tensor(eos_ids_of(generation_config), dtype=torch.long, device=device)
        pad = generation_config.pad_token_id
        pad = int(pad) if pad is not None else (int(eos[0]) if len(eos) else 0)

        state.cache.reset()
        attention_mask = attention_mask.to(device=device, dtype=torch.long)
        positions = attention_mask.cumsum(-1) - 1
        positions.masked_fill_(attention_mask == 0, 1)  # as generate does; padded keys are masked anyway
        prefill = self.llm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **with_cache(self.llm, state.cache),
        )
        logits = prefill.logits[:, -1, :]
        del prefill
        state.mask.zero_()
        state.mask[:, 0, 0, :prompt_length] = attention_mask.bool()
        state.positions.copy_(positions[:, -1:])

        generated = torch.full((batch_size, max_new_tokens), pad, dtype=torch.long, device=device)
        unfinished = torch.ones(batch_size, dtype=torch.bool, device=device)
        if streamer is not None:
            streamer.put(torch.empty(batch_size, 0, dtype=torch.long))
        for step in range(max_new_tokens):
            # processors see the generated ids only and float32 logits, as in generate
            scores = processors(generated[:, :step], logits.to(dtype=torch.float32, copy=True))
            next_tokens = torch.where(unfinished, scores.argmax(dim=-1), pad)
            generated[:, step] = next_tokens
            if streamer is not None:
                streamer.put(next_tokens.cpu())
            if len(eos):
                unfinished &= ~torch.isin(next_tokens, eos)
            if step + 1 == max_new_tokens or not bool(unfinished.any()):  # one host sync per step
                break
            state.tokens.copy_(next_tokens[:, None])
            state.positions.add_(1)
            state.mask[:, 0, 0, prompt_length + step] = True  # the cache column this step writes
            logits = self._step(state)
        if streamer is not None:
            streamer.end()
        return generated[:, : step + 1]
