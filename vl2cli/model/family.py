"""What every model family shares: batching, splicing into one left-padded batch, generation, label scoring.

A family (VideoLLaMA 2 in `videollama2.py`, Video-LLaMA v1 in `videollama/`) is its components plus
a small interface, the abstract methods of `SplicedFamilyModel`:

* `encode(items)`            → one feature object per item (what its prompt's placeholders take),
* `embed_prompt(item, instruction, encoded)` → that item's spliced embeddings (L, C),
* `decode_answer(ids)`, `label_token_ids(label)`, `pad_token_id`, `generation_pad_token_id`.

Everything else here (left padding, positions from the mask, greedy / sampled generation through the
static-cache loop or transformers' `generate`, label scoring over a shared prefill) is written once:
batched greedy results equal one-at-a-time results for every family.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    RepetitionPenaltyLogitsProcessor,
)

from ..errors import Vl2Error
from .decode_loop import DECODE_LOOPS, StaticCacheDecoder, log_fallback_once
from .feature_cache import FeatureCache
from .inputs import Generation, Instruction, LabelScores, MultimodalInput
from .streaming import AnswerStreamer
from .transformers_api import returned_cache, with_cache

log = logging.getLogger(__name__)

DTYPE_NAMES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}
#: Cache positions (file-label pairs × padded prompt length) per label-scoring forward: each pair holds
#: its own copy of the prompt's K/V; 2^16 positions are 3.5 GiB of Qwen2-7B K/V in bf16.
MAX_LABEL_SCORING_CACHE_TOKENS = 2**16


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise Vl2Error(f"device {device!r}: no CUDA GPU is available here; set device to 'cpu'.")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU, bf16 on CUDA (the released weights' dtype) unless asked otherwise."""
    if dtype in (None, "auto"):
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise Vl2Error(f"dtype {dtype!r}: choose one of fp32, bf16, fp16.") from None


class SplicedFamilyModel:
    """Shared inference over a family's spliced prompts; subclasses provide the family interface."""

    #: the family's name in records (`model.family`)
    family = "unknown"
    #: (temperature, top_p) used when sampling without explicit values: the family's upstream defaults
    sampling_defaults: tuple[float, float] = (0.2, 0.9)

    def __init__(self, *, llm: PreTrainedModel, model_id: str, revision: str | None, device: torch.device,
                 dtype: torch.dtype, eos_token_ids: list[int]) -> None:
        self.llm = llm
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self.eos_token_ids = eos_token_ids
        #: "auto" | "static" | "dynamic": how `generate` decodes (see `vl2cli.model.decode_loop`).
        self.decode_loop = "auto"
        self._static_decoder: StaticCacheDecoder | None = None

    # ------------------------------------------------------------ family interface
    def encode(self, items: Sequence[MultimodalInput]) -> list[Any]:
        raise NotImplementedError

    def embed_prompt(self, item: MultimodalInput, instruction: Instruction, encoded: Any) -> torch.Tensor:
        raise NotImplementedError

    def decode_answer(self, token_ids: list[int]) -> str:
        raise NotImplementedError

    def label_token_ids(self, label: str) -> list[int]:
        raise NotImplementedError

    @property
    def pad_token_id(self) -> int | None:
        raise NotImplementedError

    @property
    def generation_pad_token_id(self) -> int | None:
        """Padding for finished rows during batched generation."""
        return self.eos_token_ids[0] if self.eos_token_ids else None

    # ------------------------------------------------------------ shared machinery
    def encode_cached(self, items: Sequence[MultimodalInput], feature_cache: FeatureCache | None) -> list[Any]:
        """`encode`, except that items whose `feature_key` the cache holds are not encoded again, and
        items of one call that share a key are encoded once (None: plain `encode`)."""
        if feature_cache is None:
            return self.encode(items)
        blocks: list[Any] = [None] * len(items)
        first_with_key: dict[Any, int] = {}
        to_encode: list[int] = []
        copies: list[tuple[int, int]] = []
        for i, item in enumerate(items):
            key = item.feature_key
            if key is not None and key in first_with_key:
                copies.append((i, first_with_key[key]))
            elif key is not None and key in feature_cache:
                blocks[i] = feature_cache.get(key)
            else:
                if key is not None:
                    first_with_key[key] = i
                to_encode.append(i)
        encoded = self.encode([items[i] for i in to_encode]) if to_encode else []
        for i, block in zip(to_encode, encoded):
            blocks[i] = block
            if items[i].feature_key is not None:
                feature_cache.put(items[i].feature_key, block)
        for i, source in copies:
            blocks[i] = blocks[source]
        return blocks

    def prepare_inputs(
        self, items: Sequence[MultimodalInput], instructions: Sequence[str], feature_cache: FeatureCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded `inputs_embeds` (B, L, C) and `attention_mask` (B, L) for a batch."""
        if len(items) != len(instructions):
            raise ValueError("one instruction per input")
        blocks = self.encode_cached(items, feature_cache)
        sequences = [self.embed_prompt(item, text, block) for item, text, block in zip(items, instructions, blocks)]
        longest = max(s.shape[0] for s in sequences)
        width = sequences[0].shape[1]
        embeds = sequences[0].new_zeros(len(sequences), longest, width)
        mask = torch.zeros(len(sequences), longest, dtype=torch.long, device=self.device)
        for row, seq in enumerate(sequences):
            embeds[row, longest - seq.shape[0] :] = seq
            mask[row, longest - seq.shape[0] :] = 1
        return embeds, mask

    def generation_config(self, *, max_new_tokens: int, do_sample: bool, temperature: float | None, top_p: float | None) -> GenerationConfig:
        """The LLM's generation_config with the family's upstream arguments on top."""
        config = GenerationConfig.from_dict(self.llm.generation_config.to_dict())
        config.max_new_tokens = max_new_tokens
        config.do_sample = do_sample
        config.use_cache = True
        config.eos_token_id = self.eos_token_ids
        config.pad_token_id = self.generation_pad_token_id
        if do_sample:
            default_temperature, default_top_p = self.sampling_defaults
            config.temperature = default_temperature if temperature is None else temperature
            config.top_p = default_top_p if top_p is None else top_p
        else:  # sampling knobs are meaningless for greedy search; drop them so transformers does not warn
            config.temperature = config.top_p = config.top_k = None
        return config

    @torch.inference_mode()
    def generate(
        self,
        inputs: Sequence[MultimodalInput],
        instructions: Sequence[str],
        *,
        max_new_tokens: int = 2048,
        do_sample: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        decode_loop: str | None = None,
        seed: int | None = None,
        feature_cache: FeatureCache | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> list[Generation]:
        """Answers for a batch; greedy results equal one-at-a-time results.

        `decode_loop` (default: the `decode_loop` attribute) picks the decoder: "static" = vl2's greedy
        loop over a static cache, each step a CUDA-graph replay on CUDA (`decode_loop.py`); "dynamic" =
        transformers' `generate`; "auto" = static on CUDA, dynamic on CPU. Settings the static loop
        cannot reproduce (sampling, beams, other logits processors) use `generate`, said once in the log.
        `seed` reseeds torch's random generators before sampling, so the same seed, inputs and batch
        give the same answers. `feature_cache`: see `encode_cached`. `on_text` (one input only) is
        called with each new piece of the answer while it is generated; the pieces joined are the
        answer's text. An instruction may be a `Conversation` (a question after earlier turns).
        """
        if on_text is not None and len(inputs) != 1:
            raise ValueError("on_text streams the answer of one input; generate a batch without it")
        streamer = AnswerStreamer(self.decode_answer, on_text) if on_text is not None else None
        embeds, mask = self.prepare_inputs(inputs, instructions, feature_cache)
        config = self.generation_config(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p)
        if do_sample and seed is not None:
            torch.manual_seed(seed)  # CPU and every CUDA device
        decoder = self._static_decoder_for(decode_loop or self.decode_loop)
        reason = decoder.unsupported_reason(config) if decoder is not None else None
        streaming = {"streamer": streamer} if streamer is not None else {}
        if decoder is not None and reason is None:
            output = decoder.generate(embeds, mask, config, **streaming)
        else:
            if reason is not None:
                log_fallback_once(reason)
            output = self._dynamic_generate(embeds, mask, config, **streaming)
        results = []
        for row, prompt_tokens in zip(output.tolist(), mask.sum(-1).tolist()):
            stop = next((k for k, t in enumerate(row) if t in self.eos_token_ids), None)
            token_ids = row if stop is None else row[: stop + 1]
            text = self.decode_answer(token_ids)
            results.append(Generation(text=text, token_ids=token_ids, stopped_on_eos=stop is not None,
                                      prompt_tokens=prompt_tokens))
        return results

    def _static_decoder_for(self, mode: str) -> StaticCacheDecoder | None:
        """The static-cache decoder `mode` asks for on this device, or None for transformers' generate."""
        check_decode_loop(mode)
        if mode == "dynamic" or (mode == "auto" and self.device.type != "cuda"):
            return None
        if self._static_decoder is None:
            self._static_decoder = StaticCacheDecoder(self.llm)
        if mode == "auto" and not self._static_decoder.cuda_graphs:
            log_fallback_once(f"no CUDA graphs for the decode steps ({self._static_decoder.graph_problem})")
            return None
        return self._static_decoder

    def _dynamic_generate(self, embeds: torch.Tensor, mask: torch.Tensor, config: GenerationConfig,
                          streamer: AnswerStreamer | None = None) -> torch.Tensor:
        """transformers' `generate` (dynamic cache), with the repetition penalty kept padding-free.

        From `inputs_embeds`, `generate` sees only generated ids; transformers 5.23 still shifts the
        penalty window by each row's left padding, so a padded row skipped the penalty on its first
        tokens and decoded differently in a batch than alone. The same processor without the shift,
        passed in, takes the built-in one's place in the list (transformers 5.17 never shifted).
        """
        processors = LogitsProcessorList()
        if config.repetition_penalty not in (None, 1.0) and not bool(mask.all()):
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=float(config.repetition_penalty)))
        streaming = {"streamer": streamer} if streamer is not None else {}
        return self.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config,
                                 logits_processor=processors, **streaming)

    @torch.inference_mode()
    def forward_logits(self, inputs: Sequence[MultimodalInput], instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, L, V) of one forward pass over the spliced, left-padded batch, and its mask."""
        embeds, mask = self.prepare_inputs(inputs, instructions)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids).logits, mask

    @torch.inference_mode()
    def score_labels(self, input: MultimodalInput, instruction: str, labels: Sequence[str]) -> LabelScores:
        """Log-likelihood of each label (its tokens, then end-of-turn) as the answer to the prompt.

        One file's case of `score_labels_batch`: one prefill shared by all labels.
        """
        return self.score_labels_batch([input], [instruction], labels)[0]

    @torch.inference_mode()
    def score_labels_batch(
        self,
        inputs: Sequence[MultimodalInput],
        instructions: Sequence[str],
        labels: Sequence[str],
        *,
        max_cached_tokens: int = MAX_LABEL_SCORING_CACHE_TOKENS,
    ) -> list[LabelScores]:
        """`score_labels` for a batch of files: one left-padded prefill for all of them, then every
        (file, label) pair scored in batched forwards over the prefill's KV cache.

        Each pair's row holds its file's cached prompt (padding masked) followed by the label's tokens
        at positions that continue that file's own length, so a file scores as it does alone. Pairs are
        taken in chunks of at most `max_cached_tokens` cache positions (pairs × padded prompt length):
        every pair holds its own copy of the prompt's K/V.
        """
        if not labels:
            raise Vl2Error("classify needs at least one label")
        embeds, mask = self.prepare_inputs(inputs, instructions)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        prefill = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        first_logprobs = torch.log_softmax(prefill.logits[:, -1].float(), dim=-1)  # (files, V)
        prompt_cache = returned_cache(prefill)
        del prefill

        end_of_turn = self.eos_token_ids[0]
        label_ids = [self.label_token_ids(label) + [end_of_turn] for label in labels]
        longest = max(len(ids) for ids in label_ids)
        pad = self.pad_token_id if self.pad_token_id is not None else end_of_turn
        label_tokens = torch.full((len(labels), longest), pad, dtype=torch.long, device=self.device)
        label_mask = torch.zeros(len(labels), longest, dtype=torch.long, device=self.device)
        for k, ids in enumerate(label_ids):
            label_tokens[k, : len(ids)] = torch.tensor(ids)
            label_mask[k, : len(ids)] = 1
        lengths = mask.sum(-1)  # each file's own prompt length: its labels continue from there
        offsets = torch.arange(longest, device=self.device)

        totals = torch.zeros(len(inputs), len(labels), dtype=torch.float64, device=self.device)
        pairs = torch.cartesian_prod(torch.arange(len(inputs), device=self.device), torch.arange(len(labels), device=self.device))
        pairs_per_chunk = max(1, max_cached_tokens // embeds.shape[1])
        for chunk in pairs.split(pairs_per_chunk):
            files, ks = chunk[:, 0], chunk[:, 1]
            tokens = label_tokens[ks]
            logits = self.llm(
                input_ids=tokens,
                attention_mask=torch.cat([mask[files], label_mask[ks]], dim=1),
                position_ids=lengths[files, None] + offsets,
                use_cache=True,
                **with_cache(self.llm, self._repeated_cache(prompt_cache, files)),
            ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            # token t of a label is predicted at t - 1 (t = 0: by the prompt's last position)
            later = logprobs[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1).double() * label_mask[ks, 1:]
            first = first_logprobs[files, tokens[:, 0]].double()
            totals[files, ks] = first + later.sum(-1)
        return [
            LabelScores(labels=list(labels), log_likelihoods=row, num_tokens=[len(ids) for ids in label_ids],
                        prompt_tokens=length)
            for row, length in zip(totals.tolist(), lengths.tolist())
        ]

    def _repeated_cache(self, cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
        """A new cache whose row i holds row `rows[i]` of `cache` (every layer's keys and values)."""
        repeated = DynamicCache(config=self.llm.config)
        for layer_idx, layer in enumerate(cache.layers):
            repeated.update(layer.keys.index_select(0, rows), layer.values.index_select(0, rows), layer_idx)
        return repeated


def check_decode_loop(mode: str) -> None:
    if mode not in DECODE_LOOPS:
        raise Vl2Error(f"decode loop {mode!r}: choose one of {', '.join(DECODE_LOOPS)}.")
