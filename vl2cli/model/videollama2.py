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
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..errors import CheckpointError, UnsupportedModelError, Vl2Error
from .checkpoint import CHECKPOINT_PATTERNS, ShardedSafetensors, resolve_repo
from .config import Vl2Config
from .connector import build_projector, build_video_connector, takes_frames
from .encoders import EncoderBackend, TorchEncoders
from .family import (  # noqa: F401 - re-exported: callers import these from here
    DTYPE_NAMES,
    MAX_LABEL_SCORING_CACHE_TOKENS,
    SplicedFamilyModel,
    check_decode_loop,
    resolve_device,
    resolve_dtype,
)
from .inputs import Instruction, MultimodalInput
from .language_model import load_language_model, quiet_transformers
from .prompt import build_prompt, tokenize_with_placeholders
from .requirements import check_offline_requirements
from .vision_tower import TOWER_WEIGHT_PREFIX, VisionTower, load_tower_spec
from .strict_load import load_exact

log = logging.getLogger(__name__)

CONNECTOR_PREFIX = "model.mm_projector."
AUDIO_TOWER_PREFIX = "model.audio_tower."
AUDIO_PROJECTOR_PREFIX = "model.mm_projector_a."


class VideoLlama2(SplicedFamilyModel):
    """A loaded checkpoint: tokenizer, LLM, encoders. Build with `VideoLlama2.from_pretrained`.

    Batching, generation and label scoring are the shared `SplicedFamilyModel`'s; this class is the
    family's interface to them (encode, prompt, splice).
    """

    family = "videollama2"
    sampling_defaults = (0.2, 0.9)  # upstream mm_infer

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
        self.tokenizer = tokenizer
        super().__init__(llm=llm, model_id=model_id, revision=revision, device=device, dtype=dtype,
                         eos_token_ids=_eos_token_ids(llm, tokenizer))
        self.torch_encoders = torch_encoders
        self.encoders: EncoderBackend = torch_encoders
        self.folder = folder
        self.image_processor_config = image_processor_config
        self.num_frames = config.num_frames

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
        check_decode_loop(decode_loop)
        check_offline_requirements(model, revision=revision)  # offline: every missing repo named before loading
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
        tokenizer = load_tokenizer(repo.folder)
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
            load_exact(connector, _required(shards, CONNECTOR_PREFIX, "video connector"), "video connector")
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
            load_exact(audio_projector, _required(shards, AUDIO_PROJECTOR_PREFIX, "audio projector"), "audio projector")
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

    # ----------------------------------------------------------------- prompts
    def prompt(self, item: MultimodalInput, instruction: Instruction) -> str:
        """The exact prompt string the model sees (the chat template applied; earlier turns included)."""
        return build_prompt(self.tokenizer, self.config.model_type, item.modality, instruction)

    def input_ids(self, item: MultimodalInput, instruction: Instruction) -> list[int]:
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
    def encode(self, items: Sequence[MultimodalInput]) -> list[torch.Tensor | None]:
        """Feature blocks (M_i, C) to splice for each item, all encoders run batched across items."""
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

    # ------------------------------------------------------- family interface
    def embed_prompt(self, item: MultimodalInput, instruction: Instruction, encoded: torch.Tensor | None) -> torch.Tensor:
        return self._splice(self.input_ids(item, instruction), encoded)

    def decode_answer(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    def label_token_ids(self, label: str) -> list[int]:
        return self.tokenizer(label, add_special_tokens=False).input_ids

    @property
    def pad_token_id(self) -> int | None:
        return self.tokenizer.pad_token_id

    @property
    def generation_pad_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id  # upstream: pad_token_id=tokenizer.eos_token_id


def _eos_token_ids(llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    eos = llm.generation_config.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises bare Exception for a junk tokenizer.json
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
