"""Which of a file's streams the model sees: `--modality auto|video|audio|av` against the model's towers.

auto: an image is an image; an audio file is audio (needs an audio tower); a video on an AV model is
"av" (a video without sound gets upstream's 30 s of silence and says so); a video on a vision-only
model is "video". An explicit modality forces the choice, and a file that cannot give it is an error
for that file only (e.g. `--modality audio` on a silent video).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ModalityError, NoAudioStreamError, NoVideoStreamError, Vl2Error

if TYPE_CHECKING:  # torch-heavy; only the pipeline, which has them loaded, calls to_model_input
    import torch

    from ..media.loader import LoadedMedia
    from ..model.inputs import MultimodalInput

#: The streams of a file that each modality puts in front of the model.
STREAMS_SEEN = {"video": ("video",), "image": ("video",), "audio": ("audio",), "av": ("video", "audio")}
AUDIO_MISSING_NOTE = "the video has no audio track: 30 s of silence was used for the audio (as upstream does)"
VISION_ONLY_NOTE = "the video has no audio track: its frames alone were used (as Video-LLaMA's upstream demo does)"


@dataclass(frozen=True)
class ModelTowers:
    """What a checkpoint can look at and listen to."""

    has_vision: bool
    has_audio: bool
    #: What `auto` makes of a video without sound on an audio-visual model: "av" (VideoLLaMA 2: silence
    #: stands in) or "video" (Video-LLaMA v1: upstream falls back to the frames alone).
    silent_video: str = "av"


def check_requested_modality(requested: str, towers: ModelTowers, model_id: str) -> None:
    """Fail the whole run early when the model can never give the requested modality."""
    if requested in ("audio", "av") and not towers.has_audio:
        raise Vl2Error(f"modality {requested!r}: {model_id} has no audio tower; use an -AV checkpoint "
                       "(e.g. DAMO-NLP-SG/VideoLLaMA2.1-7B-AV) or modality 'video'")
    if requested in ("video", "av") and not towers.has_vision:
        raise Vl2Error(f"modality {requested!r}: {model_id} has no vision tower")


def decode_wants_audio(requested: str, towers: ModelTowers) -> bool:
    """Whether decode workers should compute the fbank (skipped when the model will never use it)."""
    return towers.has_audio and requested != "video"


def choose_modality(kind: str, *, has_audio_stream: bool, requested: str, towers: ModelTowers, path: str) -> str:
    """The modality for one probed file, or a MediaError saying why this file cannot be used."""
    if kind == "image":
        if requested in ("audio", "av"):
            raise NoAudioStreamError(f"{path}: an image has no sound; modality {requested!r} cannot use it", path=path)
        if not towers.has_vision:
            raise ModalityError(f"{path}: this model has no vision tower; it cannot look at images", path=path)
        return "image"
    if kind == "audio":
        if requested in ("video", "av"):
            raise NoVideoStreamError(f"{path}: an audio file has no pictures; modality {requested!r} cannot use it",
                                     path=path)
        if not towers.has_audio:
            raise ModalityError(
                f"{path}: an audio file needs a model with an audio tower (e.g. DAMO-NLP-SG/VideoLLaMA2.1-7B-AV)",
                path=path)
        return "audio"
    if requested == "audio" or (requested == "auto" and not towers.has_vision):
        if not has_audio_stream:
            raise NoAudioStreamError(f"{path}: the video has no audio track; modality {requested!r} cannot use it",
                                     path=path)
        return "audio"
    if requested == "video" or not towers.has_audio or (
            requested == "auto" and not has_audio_stream and towers.silent_video == "video"):
        if not towers.has_vision:
            raise ModalityError(f"{path}: this model has no vision tower; it cannot look at videos", path=path)
        return "video"
    if not has_audio_stream and towers.silent_video == "video":
        raise NoAudioStreamError(f"{path}: the video has no audio track; modality {requested!r} cannot use it",
                                 path=path)
    return "av"


def to_model_input(loaded: "LoadedMedia", modality: str, *, pixel_values: "torch.Tensor | None" = None,
                   fbank: "torch.Tensor | None" = None) -> "MultimodalInput":
    """Keep only the tensors the chosen modality uses, and say when the sound was made up.

    `pixel_values` / `fbank` replace the decoded tensors (e.g. already moved to the model's device
    and normalised there); by default the decoded ones are used as they are.
    """
    from ..model.inputs import MultimodalInput

    notes = [AUDIO_MISSING_NOTE] if modality == "av" and loaded.audio_missing else []
    if modality == "video" and loaded.audio_missing:  # only a family whose silent videos fall back to frames
        notes = [VISION_ONLY_NOTE]
    notes += [note.text for note in loaded.notes if note.stream in STREAMS_SEEN[modality]]
    pixels = pixel_values if pixel_values is not None else loaded.pixel_values
    audio = fbank if fbank is not None else loaded.fbank
    return MultimodalInput(
        modality=modality,  # type: ignore[arg-type]
        pixel_values=pixels if modality != "audio" else None,
        fbank=audio if modality in ("audio", "av") else None,
        notes=notes,
        frame_times_message=getattr(loaded, "frame_times_message", None),
    )
