"""VideoLLaMA 2 for inference: load a released checkpoint, encode media, splice, generate, score.

Mirrors upstream's `Videollama2*ForCausalLM` + `mm_infer` with two deliberate differences: batches of
prompts of different lengths work (left padding; upstream's batched splice is broken), and label
scoring for classification exists (one prefill shared by all labels of a file).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
)

from ..errors import CheckpointError, UnsupportedModelError, Vl2Error
from .checkpoint import CHECKPOINT_PATTERNS, ShardedSafetensors, resolve_repo
from .config import Vl2Config
from .connector import build_projector, build_video_connector, takes_frames
from .decode_loop import DECODE_LOOPS, StaticCacheDecoder, log_fallback_once
from .encoders import EncoderBackend, TorchEncoders
from .feature_cache import FeatureCache
from .inputs import Generation, LabelScores, MultimodalInput
from .language_model import load_language_model, quiet_transformers
from .prompt import build_prompt, tokenize_with_placeholders
from .vision_tower import TOWER_WEIGHT_PREFIX, VisionTower, load_tower_spec

log = logging.getLogger(__name__)

CONNECTOR_PREFIX = "model.mm_projector."
AUDIO_TOWER_PREFIX = "model.audio_tower."
AUDIO_PROJECTOR_PREFIX = "model.mm_projector_a."
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
        raise Vl2Error(f"--device {device}: no CUDA GPU is available here; use --device cpu.")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """fp32 on CPU, bf16 on CUDA (the released weights' dtype) unless asked otherwise."""
    if dtype in (None, "auto"):
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    try:
        return DTYPE_NAMES[dtype]
    except KeyError:
        raise Vl2Error(f"--dtype {dtype!r}: choose one of fp32, bf16, fp16.") from None


class VideoLlama2:
    """A loaded checkpoint: tokenizer, LLM, encoders. Build with `VideoLlama2.from_pretrained`."""

    def __init__(
        self,
        *,
        config: Vl2Config,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        torch_encoders: TorchEncoders,
        model_id: str,
        revision: str | None,
        folder: Path,
        image_processor_config: dict | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        self.torch_encoders = torch_encoders
        self.encoders: EncoderBackend = torch_encoders
        self.model_id = model_id
        self.revision = revision
        self.folder = folder
        self.image_processor_config = image_processor_config
        self.device = device
        self.dtype = dtype
        self.num_frames = config.num_frames
        self.eos_token_ids = self._eos_token_ids()
        #: "auto" | "static" | "dynamic": how `generate` decodes (see `vl2cli.model.decode_loop`).
        self.decode_loop = "auto"
        self._static_decoder: StaticCacheDecoder | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        device_map: str | dict | None = None,
        num_frames: int | None = None,
        compile_encoders: bool | None = None,
        frames_per_tower_call: int | None = None,
        decode_loop: str = "auto",
    ) -> "VideoLlama2":
        """Load a released checkpoint from a hub id (through the HF cache) or a local folder.

        The encoders run in PyTorch (`torch_encoders`); the model core never picks another backend
        itself: `vl2cli.api.load_model` swaps `encoders` for an exported one where a matching export
        exists (`vl2cli.runtime.selection.attach_encoder_backend`). `compile_encoders` (None: on CUDA
        only) and `frames_per_tower_call` (None: derived from the GPU's memory) tune the torch
        encoders; see `vl2cli.model.encoders`. `decode_loop` is `auto`, `static` or `dynamic` (see
        `generate`).
        """
        _check_decode_loop(decode_loop)
        repo = resolve_repo(model, revision=revision, allow_patterns=CHECKPOINT_PATTERNS)
        config = Vl2Config.from_file(repo.folder / "config.json")
        if config.is_base_checkpoint:
            raise UnsupportedModelError(
                f"{model}: a '-Base' (pre-training) checkpoint holds only the connector; vl2 runs the chat "
                "checkpoints (e.g. DAMO-NLP-SG/VideoLLaMA2.1-7B-16F)."
            )
        shards = ShardedSafetensors(repo.folder)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        log.info("loading %s (%s) on %s in %s", model, repo.revision or repo.folder, torch_device, str(torch_dtype).removeprefix("torch."))
        tokenizer = _load_tokenizer(repo.folder)
        llm = load_language_model(repo.folder, config, dtype=torch_dtype, device=torch_device, device_map=device_map)
        encoder_device = llm.get_input_embeddings().weight.device

        vision_tower = connector = audio_tower = audio_projector = None
        image_processor_config = None
        if config.has_vision:
            spec = load_tower_spec(config.vision_tower)
            image_processor_config = spec.image_processor_config
            vision_tower = VisionTower(spec, config.vision_select_layer, config.vision_select_feature)
            vision_tower.load_released_weights(_required(shards, TOWER_WEIGHT_PREFIX, "vision tower"))
            connector = build_video_connector(config.projector_type, config.mm_hidden_size or vision_tower.hidden_size, config.hidden_size)
            _load_strict(connector, _required(shards, CONNECTOR_PREFIX, "video connector"), "video connector")
        if config.has_audio:
            from .beats import BeatsConfig, BeatsModel, load_beats_state_dict

            beats_config = BeatsConfig.from_dict(config.audio_tower_config) if config.audio_tower_config else BeatsConfig()
            audio_tower = BeatsModel(beats_config)
            load_beats_state_dict(audio_tower, _required(shards, AUDIO_TOWER_PREFIX, "audio tower (BEATs)"))
            audio_projector = build_projector(
                config.audio_projector_type,
                config.mm_hidden_size_a or beats_config.encoder_embed_dim,
                config.hidden_size_a or config.hidden_size,
            )
            _load_strict(audio_projector, _required(shards, AUDIO_PROJECTOR_PREFIX, "audio projector"), "audio projector")
        modules = [m for m in (vision_tower, connector, audio_tower, audio_projector) if m is not None]
        for module in modules:
            module.to(device=encoder_device, dtype=torch_dtype).eval()
        torch_encoders = TorchEncoders(
            vision_tower, connector, audio_tower, audio_projector, pool_frames=not takes_frames(config.projector_type),
            compile_encoders=compile_encoders, frames_per_tower_call=frames_per_tower_call,
        )
        log.info("torch encoders: %s", torch_encoders.describe())
        instance = cls(
            config=config, llm=llm, tokenizer=tokenizer, torch_encoders=torch_encoders,
            model_id=model if repo.revision is not None else str(repo.folder),  # folders: absolute path
            revision=repo.revision, folder=repo.folder, image_processor_config=image_processor_config,
            device=encoder_device, dtype=torch_dtype,
        )
        if num_frames is not None:
            instance.num_frames = int(num_frames)
        instance.decode_loop = decode_loop
        return instance

    def _eos_token_ids(self) -> list[int]:
        eos = self.llm.generation_config.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    # ----------------------------------------------------------------- prompts
    def prompt(self, item: MultimodalInput, instruction: str) -> str:
        """The exact prompt string the model sees (the chat template applied)."""
        return build_prompt(self.tokenizer, self.config.model_type, item.modality, instruction)

    def input_ids(self, item: MultimodalInput, instruction: str) -> list[int]:
        return tokenize_with_placeholders(self.tokenizer, self.prompt(item, instruction), item.modality)

    # ----------------------------------------------------------------- encoding
    def _check_supported(self, item: MultimodalInput) -> None:
        if item.modality in ("video", "image", "av") and not self.config.has_vision:
            raise Vl2Error(f"{self.model_id} has no vision tower; it cannot take {item.modality} input.")
        if item.modality in ("audio", "av") and not self.config.has_audio:
            raise Vl2Error(f"{self.model_id} has no audio tower; it cannot take {item.modality} input.")

    def frames_of(self, item: MultimodalInput) -> torch.Tensor:
        """The (T, 3, S, S) frames the tower sees: upstream tiles an image to num_frames identical frames."""
        pixels = item.pixel_values
        if item.modality == "image":
            return pixels[:1].expand(self.num_frames, *pixels.shape[1:])
        return pixels

    @torch.inference_mode()
    def encode(self, items: Sequence[MultimodalInput], feature_cache: FeatureCache | None = None) -> list[torch.Tensor | None]:
        """Feature blocks (M_i, C) to splice for each item, all encoders run batched across items.

        With a `feature_cache`, items whose `feature_key` it holds are not encoded again, and items of
        one call that share a key are encoded once.
        """
        if feature_cache is None:
            return self._encode(items)
        blocks: list[torch.Tensor | None] = [None] * len(items)
        first_with_key: dict = {}
        to_encode: list[int] = []
        copies: list[tuple[int, int]] = []
        for i, item in enumerate(items):
            key = item.feature_key
            if key is not None and key in first_with_key:
                copies.append((i, first_with_key[key]))
                continue
            if key is not None and key in feature_cache:
                self._check_supported(item)
                blocks[i] = feature_cache.get(key)
                continue
            if key is not None:
                first_with_key[key] = i
            to_encode.append(i)
        for i, block in zip(to_encode, self._encode([items[i] for i in to_encode]) if to_encode else []):
            blocks[i] = block
            if items[i].feature_key is not None:
                feature_cache.put(items[i].feature_key, block)
        for i, source in copies:
            blocks[i] = blocks[source]
        return blocks

    def _encode(self, items: Sequence[MultimodalInput]) -> list[torch.Tensor | None]:
        for item in items:
            self._check_supported(item)
        blocks: list[torch.Tensor | None] = [None] * len(items)
        visual = [i for i, x in enumerate(items) if x.modality in ("video", "image", "av")]
        by_length: dict[int, list[int]] = {}
        frames: dict[int, torch.Tensor] = {}
        for i in visual:
            pixels = frames[i] = self.frames_of(items[i])
            by_length.setdefault(pixels.shape[0], []).append(i)
        for length, indices in by_length.items():
            stacked = torch.cat([frames[i] for i in indices]).to(self.device, self.dtype)
            features = self.encoders.encode_frames(stacked)  # each backend bounds its own call size
            tokens = self.encoders.connect(features.reshape(len(indices), length, *features.shape[1:]))
            for row, i in enumerate(indices):
                blocks[i] = tokens[row]
        audible = [i for i, x in enumerate(items) if x.modality in ("audio", "av")]
        if audible:
            fbanks = torch.stack([items[i].fbank.reshape(items[i].fbank.shape[-2:]) for i in audible])
            audio_tokens = self.encoders.encode_audio(fbanks.to(self.device, self.dtype))
            for row, i in enumerate(audible):
                # audio-visual: video tokens first, then audio tokens, both in place of one <video>
                blocks[i] = audio_tokens[row] if blocks[i] is None else torch.cat([blocks[i], audio_tokens[row]])
        return blocks

    def _splice(self, ids: list[int], block: torch.Tensor | None) -> torch.Tensor:
        """Embeddings (L, C) of `ids` with the placeholder replaced by the feature block."""
        embed = self.llm.get_input_embeddings()
        placeholder_positions = [p for p, t in enumerate(ids) if t < 0]
        if len(placeholder_positions) != (0 if block is None else 1):
            raise Vl2Error(f"prompt has {len(placeholder_positions)} media placeholders for {0 if block is None else 1} media input")
        if block is None:
            return embed(torch.tensor(ids, device=self.device))
        p = placeholder_positions[0]
        before = embed(torch.tensor(ids[:p], device=self.device, dtype=torch.long))
        after = embed(torch.tensor(ids[p + 1 :], device=self.device, dtype=torch.long))
        return torch.cat([before, block.to(before.dtype), after])

    def prepare_inputs(
        self, items: Sequence[MultimodalInput], instructions: Sequence[str], feature_cache: FeatureCache | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded `inputs_embeds` (B, L, C) and `attention_mask` (B, L) for a batch."""
        if len(items) != len(instructions):
            raise ValueError("one instruction per input")
        blocks = self.encode(items, feature_cache)
        sequences = [self._splice(self.input_ids(item, text), block) for item, text, block in zip(items, instructions, blocks)]
        longest = max(s.shape[0] for s in sequences)
        width = sequences[0].shape[1]
        embeds = sequences[0].new_zeros(len(sequences), longest, width)
        mask = torch.zeros(len(sequences), longest, dtype=torch.long, device=self.device)
        for row, seq in enumerate(sequences):
            embeds[row, longest - seq.shape[0] :] = seq
            mask[row, longest - seq.shape[0] :] = 1
        return embeds, mask

    # --------------------------------------------------------------- generation
    def generation_config(self, *, max_new_tokens: int, do_sample: bool, temperature: float | None, top_p: float | None) -> GenerationConfig:
        """The checkpoint's generation_config.json with upstream mm_infer's arguments on top."""
        config = GenerationConfig.from_dict(self.llm.generation_config.to_dict())
        config.max_new_tokens = max_new_tokens
        config.do_sample = do_sample
        config.use_cache = True
        config.eos_token_id = self.eos_token_ids
        config.pad_token_id = self.tokenizer.eos_token_id  # upstream: pad_token_id=tokenizer.eos_token_id
        if do_sample:
            config.temperature = 0.2 if temperature is None else temperature  # upstream mm_infer defaults
            config.top_p = 0.9 if top_p is None else top_p
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
    ) -> list[Generation]:
        """Answers for a batch; greedy results equal one-at-a-time results.

        `decode_loop` (default: the `decode_loop` attribute) picks the decoder: "static" = vl2's greedy
        loop over a static cache, each step a CUDA-graph replay on CUDA (`decode_loop.py`); "dynamic" =
        transformers' `generate`; "auto" = static on CUDA, dynamic on CPU. Settings the static loop
        cannot reproduce (sampling, beams, other logits processors) use `generate`, said once in the log.
        `seed` reseeds torch's random generators before sampling, so the same seed, inputs and batch
        give the same answers. `feature_cache`: see `encode`.
        """
        embeds, mask = self.prepare_inputs(inputs, instructions, feature_cache)
        config = self.generation_config(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p)
        if do_sample and seed is not None:
            torch.manual_seed(seed)  # CPU and every CUDA device
        decoder = self._static_decoder_for(decode_loop or self.decode_loop)
        reason = decoder.unsupported_reason(config) if decoder is not None else None
        if decoder is not None and reason is None:
            output = decoder.generate(embeds, mask, config)
        else:
            if reason is not None:
                log_fallback_once(reason)
            output = self._dynamic_generate(embeds, mask, config)
        results = []
        for row in output.tolist():
            stop = next((k for k, t in enumerate(row) if t in self.eos_token_ids), None)
            token_ids = row if stop is None else row[: stop + 1]
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()
            results.append(Generation(text=text, token_ids=token_ids, stopped_on_eos=stop is not None))
        return results

    def _static_decoder_for(self, mode: str) -> StaticCacheDecoder | None:
        """The static-cache decoder `mode` asks for on this device, or None for transformers' generate."""
        _check_decode_loop(mode)
        if mode == "dynamic" or (mode == "auto" and self.device.type != "cuda"):
            return None
        if self._static_decoder is None:
            self._static_decoder = StaticCacheDecoder(self.llm)
        if mode == "auto" and not self._static_decoder.cuda_graphs:
            log_fallback_once(f"no CUDA graphs for the decode steps ({self._static_decoder.graph_problem})")
            return None
        return self._static_decoder

    def _dynamic_generate(self, embeds: torch.Tensor, mask: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
        """transformers' `generate` (dynamic cache), with the repetition penalty kept padding-free.

        From `inputs_embeds`, `generate` sees only generated ids; transformers 5.23 still shifts the
        penalty window by each row's left padding, so a padded row skipped the penalty on its first
        tokens and decoded differently in a batch than alone. The same processor without the shift,
        passed in, takes the built-in one's place in the list (transformers 5.17 never shifted).
        """
        processors = LogitsProcessorList()
        if config.repetition_penalty not in (None, 1.0) and not bool(mask.all()):
            processors.append(RepetitionPenaltyLogitsProcessor(penalty=float(config.repetition_penalty)))
        return self.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config, logits_processor=processors)

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
        prompt_cache = prefill.past_key_values
        del prefill

        end_of_turn = self.eos_token_ids[0]
        label_ids = [self.tokenizer(label, add_special_tokens=False).input_ids + [end_of_turn] for label in labels]
        longest = max(len(ids) for ids in label_ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else end_of_turn
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
                past_key_values=self._repeated_cache(prompt_cache, files),
                use_cache=True,
            ).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            # token t of a label is predicted at t - 1 (t = 0: by the prompt's last position)
            later = logprobs[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1).double() * label_mask[ks, 1:]
            first = first_logprobs[files, tokens[:, 0]].double()
            totals[files, ks] = first + later.sum(-1)
        return [
            LabelScores(labels=list(labels), log_likelihoods=row, num_tokens=[len(ids) for ids in label_ids])
            for row in totals.tolist()
        ]

    def _repeated_cache(self, cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
        """A new cache whose row i holds row `rows[i]` of `cache` (every layer's keys and values)."""
        repeated = DynamicCache(config=self.llm.config)
        for layer_idx, layer in enumerate(cache.layers):
            repeated.update(layer.keys.index_select(0, rows), layer.values.index_select(0, rows), layer_idx)
        return repeated


def _check_decode_loop(mode: str) -> None:
    if mode not in DECODE_LOOPS:
        raise Vl2Error(f"decode loop {mode!r}: choose one of {', '.join(DECODE_LOOPS)}.")


def _load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}: cannot load the tokenizer: {exc}") from exc
    if tokenizer.chat_template is None:
        raise CheckpointError(f"{folder}: the tokenizer has no chat_template; vl2 builds prompts from it.")
    if tokenizer.pad_token is None and tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token  # upstream model_init does the same for Mistral
    return tokenizer


def _required(shards: ShardedSafetensors, prefix: str, what: str) -> dict[str, torch.Tensor]:
    keys = shards.keys_with_prefix(prefix)
    if not keys:
        raise CheckpointError(f"{shards.folder}: the checkpoint has no {what} weights (no keys under {prefix!r}).")
    return shards.load(keys, strip_prefix=prefix)


def _load_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # torch reports mis-shaped tensors this way
        raise CheckpointError(f"{what} weights have the wrong shape for the config: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{what} weights do not match the config: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
