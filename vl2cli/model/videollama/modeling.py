"""Video-LLaMA (v1) for inference: the released files loaded exactly, encoders, prompt, splice.

Data flow (upstream `VideoLLAMA.encode_videoQformer_visual` / `encode_audioQformer`, `Chat`):
video (B, 3, T, S, S) → frames → EVA ViT-g → `ln_vision` (fp32) → image Q-Former (its 32 queries) →
`+ video_frame_position_embedding[t]` → (B, T·Nq, H) → video Q-Former (its own queries) → `llama_proj`;
audio (B, 8, 1, 128, 204) → ImageBind audio → `+ audio_position_embedding` → audio Q-Former →
`audio_llama_proj`. Text is upstream's template, cut at `<ImageHere>`; each feature block takes one
placeholder's place. Batching, generation and label scoring are the shared `SplicedFamilyModel`'s.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ...errors import CheckpointError, Vl2Error
from ...constants import V1_NUM_FRAMES, V1_PIXEL_MEAN, V1_PIXEL_STD
from ..family import SplicedFamilyModel, check_decode_loop, resolve_device, resolve_dtype
from ..inputs import Conversation, Instruction, MultimodalInput
from ..strict_load import load_exact
from .checkpoint import load_state_dict, with_prefix
from .eva_vit import Fp32LayerNorm, build_eva_vit
from ..requirements import check_offline_requirements
from .files import V1Paths, resolve_v1_paths
from .imagebind_audio import ImageBindAudioEncoder, build_imagebind_audio
from .language_model import load_llama
from .prompt import TEMPLATES, SegmentTokenizer, conversation, render
from .qformer import TEMPORAL_QFORMER_LAYERS, build_qformer

log = logging.getLogger(__name__)

FAMILY = "videollama"
#: Image Q-Former cross-attention frequency (BLIP-2), image size upstream's demo uses.
IMAGE_QFORMER_CROSS_ATTENTION_FREQ = 2
LN_VISION_EPS = 1e-5


@dataclass
class V1Intermediates:
    """Every stage's output for one encode call (parity tests compare them with upstream's)."""

    tensors: dict[str, torch.Tensor]


class VisualBranch(nn.Module):
    """EVA → ln_vision → image Q-Former → frame positions → video Q-Former → llama_proj."""

    def __init__(self, eva: nn.Module, ln_vision: nn.LayerNorm, query_tokens: torch.Tensor, image_qformer: nn.Module,
                 frame_positions: nn.Embedding, video_query_tokens: torch.Tensor, video_qformer: nn.Module,
                 projection: nn.Linear) -> None:
        super().__init__()
        self.eva, self.ln_vision, self.image_qformer = eva, ln_vision, image_qformer
        self.query_tokens = nn.Parameter(query_tokens, requires_grad=False)
        self.frame_positions = frame_positions
        self.video_query_tokens = nn.Parameter(video_query_tokens, requires_grad=False)
        self.video_qformer, self.projection = video_qformer, projection

    def forward(self, video: torch.Tensor, keep: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, 3, T, S, S) → (B, Nv, C)."""
        batch, _, frames, height, width = video.shape
        pixels = video.permute(0, 2, 1, 3, 4).reshape(batch * frames, 3, height, width)
        eva_dtype = self.eva.embeddings.patch_embedding.weight.dtype
        eva_out = self.eva(pixel_values=pixels.to(eva_dtype)).last_hidden_state
        image_embeds = self.ln_vision(eva_out).float()
        queries = self.query_tokens.float().expand(image_embeds.shape[0], -1, -1)
        qformer_out = self.image_qformer(query_embeds=queries, encoder_hidden_states=image_embeds).last_hidden_state
        positions = self.frame_positions(torch.arange(frames, device=video.device)).float()
        per_frame = qformer_out.reshape(batch, frames, *qformer_out.shape[1:]) + positions[None, :, None, :]
        video_in = per_frame.reshape(batch, frames * qformer_out.shape[1], qformer_out.shape[2])
        video_queries = self.video_query_tokens.float().expand(batch, -1, -1)
        video_out = self.video_qformer(query_embeds=video_queries, encoder_hidden_states=video_in).last_hidden_state
        tokens = self.projection(video_out.to(self.projection.weight.dtype))
        if keep is not None:
            keep.update(eva_out=eva_out, image_embeds=image_embeds, qformer_out=qformer_out,
                        video_qformer_in=video_in, video_qformer_out=video_out, video_tokens=tokens)
        return tokens


class AudioBranch(nn.Module):
    """ImageBind audio → audio positions → audio Q-Former → audio_llama_proj."""

    def __init__(self, encoder: ImageBindAudioEncoder, positions: nn.Embedding, query_tokens: torch.Tensor,
                 qformer: nn.Module, projection: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.positions, self.qformer, self.projection = encoder, positions, qformer, projection
        self.query_tokens = nn.Parameter(query_tokens, requires_grad=False)

    def forward(self, clips: torch.Tensor, keep: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, K, 1, 128, 204) → (B, Na, C)."""
        batch, count = clips.shape[:2]
        flat = clips.reshape(batch * count, *clips.shape[2:]).to(self.encoder.patch.weight.dtype)
        feature, embedding = self.encoder(flat)
        feature = feature.reshape(batch, count, -1)
        embedding = embedding.reshape(batch, count, -1).float()
        qformer_in = embedding + self.positions(torch.arange(count, device=clips.device)).float()[None]
        queries = self.query_tokens.float().expand(batch, -1, -1)
        qformer_out = self.qformer(query_embeds=queries, encoder_hidden_states=qformer_in).last_hidden_state
        tokens = self.projection(qformer_out.to(self.projection.weight.dtype))
        if keep is not None:
            keep.update(audio_feature=feature, audio_imagebind_out=embedding, audio_qformer_in=qformer_in,
                        audio_qformer_out=qformer_out, audio_tokens=tokens)
        return tokens


class VideoLlamaV1(SplicedFamilyModel):
    """A loaded Video-LLaMA (v1) model. Build with `VideoLlamaV1.from_pretrained`."""

    family = FAMILY
    sampling_defaults = (1.0, 0.9)  # upstream Chat.answer: temperature 1.0, top_p 0.9 (it always samples)

    def __init__(self, *, paths: V1Paths, llm, tokenizer: SegmentTokenizer, visual: VisualBranch,
                 audio: AudioBranch | None, model_id: str, revision: str | None, device: torch.device,
                 dtype: torch.dtype, image_size: int) -> None:
        super().__init__(llm=llm, model_id=model_id, revision=revision, device=device, dtype=dtype,
                         eos_token_ids=[tokenizer.eos_token_id])
        self.paths, self.tokenizer, self.visual, self.audio = paths, tokenizer, visual, audio
        self.template = TEMPLATES[paths.template]
        self.image_size = image_size
        self.num_frames = V1_NUM_FRAMES
        self.folder = paths.vision_checkpoint.parent
        self.config = V1Config(has_vision=True, has_audio=audio is not None, template=paths.template,
                               image_size=image_size, num_frames=V1_NUM_FRAMES)
        #: The image processor as a SigLIP-style config: BLIP-2's eval processor is the same squash
        #: (bicubic to S×S, no crop) and CLIP normalisation; the media layer reads the size from it.
        self.image_processor_config = {
            "image_processor_type": "SiglipImageProcessor", "size": {"height": image_size, "width": image_size},
            "resample": 3, "image_mean": list(V1_PIXEL_MEAN), "image_std": list(V1_PIXEL_STD),
        }

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model: str, *, revision: str | None = None, device: str | None = None,
                        dtype: str | None = None, num_frames: int | None = None, lavis_dir: str | None = None,
                        llm: str | None = None, home: str | None = None, eva_heads: int | None = None,
                        imagebind_heads: int | None = None, decode_loop: str = "auto", **_: object) -> "VideoLlamaV1":
        """Load from a released folder / hub id / upstream eval YAML (see `files.py` for where files are found).
        `eva_heads` / `imagebind_heads`: head counts for encoder widths other than the released ones (they
        are not stored in the files; the `v1_eva_heads` / `v1_imagebind_heads` settings)."""
        # offline: every missing repo and file named at once (the files module itself stays below the
        # requirements check, which reads it)
        check_offline_requirements(model, revision=revision, lavis_dir=lavis_dir, llm=llm, home=home)
        paths, resolved_revision = resolve_v1_paths(model, revision=revision, lavis_dir=lavis_dir, llm=llm, home=home)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        log.info("loading Video-LLaMA (v1) %s on %s in %s", model, torch_device, str(torch_dtype).removeprefix("torch."))
        bert = _read_json(paths.bert_config, "bert-base-uncased config.json")
        tokenizer = SegmentTokenizer(paths.llm_folder / "tokenizer.model")
        llm_model = load_llama(paths.llm_folder, dtype=torch_dtype, device=torch_device)
        hidden = llm_model.config.hidden_size

        eva_sd = load_state_dict(paths.eva, "EVA ViT (eva_vit_g.pth)", model_key=None)
        blip2 = load_state_dict(paths.blip2, "BLIP-2 Q-Former (blip2_pretrained_flant5xxl.pth)", model_key=True)
        vision_sd = load_state_dict(paths.vision_checkpoint, "vision-branch checkpoint", model_key=True)
        merged = {**blip2, **vision_sd}  # upstream loads the LAVIS file, then `ckpt` over it
        audio_sd = None
        if paths.audio_checkpoint is not None:
            audio_sd = load_state_dict(paths.audio_checkpoint, "audio-branch checkpoint", model_key=True)
            merged.update(audio_sd)
        image_size = int(paths.extra.get("image_size") or round((eva_sd["pos_embed"].shape[1] - 1) ** 0.5) * 14)
        try:
            visual = _build_visual(eva_sd, merged, bert, hidden, image_size=image_size, eva_heads=eva_heads)
            audio = None
            if audio_sd is not None:
                imagebind_sd = load_state_dict(paths.imagebind, "ImageBind (imagebind_huge.pth)", model_key=False)
                scale = merged.get("audio_encoder.modality_postprocessors.audio.1.log_logit_scale")
                if scale is not None:  # the AL checkpoint's copy of the buffer is loaded last upstream
                    imagebind_sd = {**imagebind_sd, "modality_postprocessors.audio.1.log_logit_scale": scale}
                audio = _build_audio(imagebind_sd, merged, bert, hidden, imagebind_heads=imagebind_heads)
        except KeyError as exc:
            raise CheckpointError(f"{paths.vision_checkpoint.parent}: a tensor upstream needs is missing: {exc.args[0]}") from exc
        del eva_sd, blip2, vision_sd, merged, audio_sd
        visual.to(torch_device)
        visual.eva.to(torch_dtype)
        visual.projection.to(torch_dtype)
        if audio is not None:
            audio.to(torch_device)
            audio.encoder.to(torch_dtype)
            audio.projection.to(torch_dtype)
        instance = cls(paths=paths, llm=llm_model, tokenizer=tokenizer, visual=visual.eval(),
                       audio=audio.eval() if audio is not None else None,
                       model_id=model if resolved_revision is not None else str(Path(model).expanduser().resolve()),
                       revision=resolved_revision, device=torch_device, dtype=torch_dtype, image_size=image_size)
        if num_frames is not None:
            limit = visual.frame_positions.num_embeddings
            if not 1 <= int(num_frames) <= limit:
                raise Vl2Error(f"frames={num_frames}: Video-LLaMA's video Q-Former has frame positions for 1 to {limit} frames.")
            instance.num_frames = instance.config.num_frames = int(num_frames)
        check_decode_loop(decode_loop)
        instance.decode_loop = decode_loop
        return instance

    # ------------------------------------------------------------------ prompts
    def _upload_kind(self, item: MultimodalInput) -> str:
        if item.modality == "audio":
            raise Vl2Error("Video-LLaMA (v1) takes audio only together with a video's frames (upstream has no "
                           "audio-only input); use a video file or modality video/av.")
        if item.modality == "av" and self.audio is None:
            raise Vl2Error(f"{self.model_id} has no audio branch (no AL_*.pth); it cannot take audio.")
        return item.modality

    def conversation(self, item: MultimodalInput, instruction: Instruction) -> tuple[str, list[tuple[str, str | None]]]:
        if isinstance(instruction, Conversation):
            question, earlier = instruction.question, instruction.earlier
        else:
            question, earlier = instruction, ()
        return conversation(self.template, self._upload_kind(item), question, earlier=earlier,
                            video_message=item.frame_times_message or "", has_audio_branch=self.audio is not None)

    def prompt(self, item: MultimodalInput, instruction: Instruction) -> str:
        """The exact prompt string upstream's `Conversation.get_prompt()` gives."""
        system, messages = self.conversation(item, instruction)
        return render(self.template, system, messages)

    def segment_ids(self, item: MultimodalInput, instruction: Instruction) -> list[list[int]]:
        return self.tokenizer.segment_ids(self.prompt(item, instruction))

    # ------------------------------------------------------------------ encoding
    @torch.inference_mode()
    def encode(self, items: Sequence[MultimodalInput], keep: list[dict] | None = None) -> list[list[torch.Tensor]]:
        """Feature blocks per item in placeholder order ([audio, video] for av), encoders batched."""
        blocks: list[list[torch.Tensor]] = [[] for _ in items]
        for item in items:
            self._upload_kind(item)
        visual = [i for i, x in enumerate(items) if x.modality in ("video", "image", "av")]
        by_frames: dict[int, list[int]] = {}
        for i in visual:
            by_frames.setdefault(items[i].pixel_values.shape[0], []).append(i)
        video_tokens: dict[int, torch.Tensor] = {}
        for _, indices in by_frames.items():
            video = torch.stack([items[i].pixel_values for i in indices]).permute(0, 2, 1, 3, 4)  # (B, 3, T, S, S)
            stage: dict[str, torch.Tensor] | None = {} if keep is not None else None
            tokens = self.visual(video.to(self.device, torch.float32), stage)
            for row, i in enumerate(indices):
                video_tokens[i] = tokens[row]
                if keep is not None:
                    keep[i].update(_rows(stage, row, frames=video.shape[2]))
        audible = [i for i, x in enumerate(items) if x.modality == "av"]
        audio_tokens: dict[int, torch.Tensor] = {}
        if audible:
            clips = torch.stack([items[i].fbank for i in audible]).to(self.device, torch.float32)
            stage = {} if keep is not None else None
            tokens = self.audio(clips, stage)
            for row, i in enumerate(audible):
                audio_tokens[i] = tokens[row]
                if keep is not None:
                    keep[i].update({k: v[row : row + 1] for k, v in stage.items()})
        for i, item in enumerate(items):
            if item.modality == "av":
                blocks[i] = [audio_tokens[i], video_tokens[i]]
            elif i in video_tokens:
                blocks[i] = [video_tokens[i]]
        return blocks

    def embed_prompt(self, item: MultimodalInput, instruction: Instruction, blocks: list[torch.Tensor]) -> torch.Tensor:
        """`get_context_emb`: segment embeddings interleaved with the feature blocks, (L, C)."""
        segments = self.segment_ids(item, instruction)
        if len(segments) != len(blocks) + 1:
            raise Vl2Error(f"prompt has {len(segments) - 1} <ImageHere> placeholders for {len(blocks)} feature blocks")
        embed = self.llm.get_input_embeddings()
        pieces = []
        for k, ids in enumerate(segments):
            pieces.append(embed(torch.tensor(ids, dtype=torch.long, device=self.device)))
            if k < len(blocks):
                pieces.append(blocks[k].to(pieces[-1].dtype))
        return torch.cat(pieces)

    def decode_answer(self, token_ids: list[int]) -> str:
        """`Chat.answer`'s text: decoded, cut at the template's stop string, stripped."""
        text = self.tokenizer.decode(token_ids)
        return text.split("###")[0].strip() if self.template.name == "vicuna" else text.strip()

    def label_token_ids(self, label: str) -> list[int]:
        return self.tokenizer.encode(label, add_bos=False)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def media_tokens(self) -> int:
        """Feature tokens of the largest input (audio + video): sizes the GPU batch."""
        tokens = self.visual.video_query_tokens.shape[1]
        return tokens + (self.audio.query_tokens.shape[1] if self.audio is not None else 0)


@dataclass
class V1Config:
    """What the shared layers ask of a model's config (towers, frames), for v1."""

    has_vision: bool
    has_audio: bool
    template: str
    image_size: int
    num_frames: int
    family: str = FAMILY


def _rows(stage: dict[str, torch.Tensor], row: int, *, frames: int) -> dict[str, torch.Tensor]:
    """One item's slice of a batched stage dict (per-frame tensors are B·T long)."""
    out = {}
    for name, tensor in stage.items():
        per_frame = name in ("eva_out", "image_embeds", "qformer_out")
        out[name] = tensor[row * frames : (row + 1) * frames] if per_frame else tensor[row : row + 1]
    return out


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable {what}: {exc}") from exc


def _linear(state: dict[str, torch.Tensor], prefix: str, out_width: int, what: str) -> nn.Linear:
    weight, bias = state[prefix + ".weight"], state[prefix + ".bias"]
    if weight.shape[0] != out_width:
        raise CheckpointError(f"{what} ({prefix}) projects to {weight.shape[0]} but the LLaMA's hidden size is "
                              f"{out_width}: the checkpoint belongs to another LLM size.")
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.data.copy_(weight)
    layer.bias.data.copy_(bias)
    return layer


def _embedding(weight: torch.Tensor) -> nn.Embedding:
    table = nn.Embedding(*weight.shape)
    table.weight.data.copy_(weight)
    return table


def _build_visual(eva_sd, merged, bert, hidden, *, image_size: int, eva_heads: int | None) -> VisualBranch:
    eva = build_eva_vit(eva_sd, image_size=image_size, heads=eva_heads)
    width = eva.config.hidden_size
    ln_vision = Fp32LayerNorm(width, eps=LN_VISION_EPS)
    load_exact(ln_vision, with_prefix(merged, "ln_vision."), "ln_vision (vision-branch checkpoint)")
    image_qformer = build_qformer(with_prefix(merged, "Qformer."), bert, num_layers=bert["num_hidden_layers"],
                                  cross_attention_freq=IMAGE_QFORMER_CROSS_ATTENTION_FREQ, encoder_width=width,
                                  what="image Q-Former (blip2_pretrained_flant5xxl.pth)")
    video_qformer = build_qformer(with_prefix(merged, "video_Qformer."), bert, num_layers=TEMPORAL_QFORMER_LAYERS,
                                  cross_attention_freq=1, encoder_width=bert["hidden_size"],
                                  what="video Q-Former (vision-branch checkpoint)")
    return VisualBranch(eva, ln_vision, merged["query_tokens"].float(), image_qformer,
                        _embedding(merged["video_frame_position_embedding.weight"].float()),
                        merged["video_query_tokens"].float(), video_qformer,
                        _linear(merged, "llama_proj", hidden, "vision-branch projection"))


def _build_audio(imagebind_sd, merged, bert, hidden, *, imagebind_heads: int | None) -> AudioBranch:
    encoder = build_imagebind_audio(imagebind_sd, heads=imagebind_heads)
    qformer = build_qformer(with_prefix(merged, "audio_Qformer."), bert, num_layers=TEMPORAL_QFORMER_LAYERS,
                            cross_attention_freq=1, encoder_width=encoder.head.out_features,
                            what="audio Q-Former (audio-branch checkpoint)")
    return AudioBranch(encoder, _embedding(merged["audio_position_embedding.weight"].float()),
                       merged["audio_query_tokens"].float(), qformer,
                       _linear(merged, "audio_llama_proj", hidden, "audio-branch projection"))
