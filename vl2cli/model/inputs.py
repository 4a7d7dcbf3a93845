"""What the model takes and gives back, independent of how media was decoded.

The media package produces these from files; the model consumes them. Keeping the contract in one
small module lets the two sides evolve separately.
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal

import torch

#: How a file's content is put in front of the LLM.
#:  video: frames only (`<video>` placeholder)      image: one image tiled to num_frames (`<image>`)
#:  audio: fbank only (`<audio>`)                   av: frames then audio tokens, both for one `<video>`
#:  text:  no media at all
Modality = Literal["video", "image", "audio", "av", "text"]


@dataclass
class MultimodalInput:
    """One file's preprocessed tensors.

    pixel_values: (T, 3, S, S) float32 for videos, (1, 3, S, S) for images, already normalised by the
        tower's image processor.
    fbank: (2998, 128) float32 kaldi log-mel fbank of 30 s of 16 kHz audio, rounded to bfloat16 values
        as upstream preprocessing does (not yet BEATs-normalised: BEATs normalises inside); for
        Video-LLaMA (v1), its (8, 1, 128, 204) normalised ImageBind clips.
    notes: facts the result should report (e.g. "audio track missing: 30 s of silence used").
    feature_key: names this input's encoded features in a `FeatureCache` (None: never cached); two
        inputs with the same key must encode to the same features.
    """

    modality: Modality
    pixel_values: torch.Tensor | None = None
    fbank: torch.Tensor | None = None
    notes: list[str] = field(default_factory=list)
    #: Video-LLaMA (v1) prompts name the sampled frames' times ("The video contains 8 frames sampled at
    #: 0.0, 0.3, ... seconds. "); the media layer fills it for v1 videos, other families ignore it.
    frame_times_message: str | None = None
    feature_key: Hashable | None = None

    def __post_init__(self) -> None:
        needs_pixels = self.modality in ("video", "image", "av")
        needs_audio = self.modality in ("audio", "av")
        if needs_pixels and self.pixel_values is None:
            raise ValueError(f"modality {self.modality!r} needs pixel_values")
        if needs_audio and self.fbank is None:
            raise ValueError(f"modality {self.modality!r} needs fbank")


#: Why generation ended: on an end-of-sequence (stop) id, or at the `max_new_tokens` budget (cut off).
FinishReason = Literal["eos", "length"]


@dataclass(frozen=True)
class Conversation:
    """A question asked after earlier turns about the same media (a chat's memory).

    Upstream's `mm_infer` takes such a message list: the media token goes once, at the start of the
    first user message, and every earlier answer stands as an assistant message. A model is given a
    Conversation where a one-off question would be a plain instruction string.
    """

    #: (question, answer) pairs, oldest first
    earlier: tuple[tuple[str, str], ...]
    question: str


#: What a prompt is built from: one question alone, or a question after earlier turns.
Instruction = str | Conversation


@dataclass
class Generation:
    """A generated answer: the text (special tokens skipped, stripped), the new token ids (up to and
    including the stop id), and the prompt's length, so that a cut-off answer can be found afterwards."""

    text: str
    token_ids: list[int]
    stopped_on_eos: bool
    #: positions of the prompt the answer continues: its text tokens plus the media features spliced in
    prompt_tokens: int | None = None

    @property
    def finish_reason(self) -> FinishReason:
        """eos when the last token is a stop id, else length (the budget ran out)."""
        return "eos" if self.stopped_on_eos else "length"

    @property
    def output_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class LabelScores:
    """Log-likelihood of each candidate label's tokens after the prompt (higher is more likely)."""

    labels: list[str]
    log_likelihoods: list[float]
    num_tokens: list[int]
    #: positions of the prompt the labels continue (text tokens plus media features)
    prompt_tokens: int | None = None

    def probabilities(self) -> list[float]:
        """Softmax over the labels' total log-likelihoods: a distribution over the given labels only."""
        scores = torch.tensor(self.log_likelihoods, dtype=torch.float64)
        return torch.softmax(scores, dim=0).tolist()
