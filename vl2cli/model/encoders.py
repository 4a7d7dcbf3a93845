"""The encoders of a loaded model: one interface, and the PyTorch modules behind it.

The LLM always runs through transformers; only the vision tower, the video connector and the audio
encoder+projector are swappable, because those are what `vl2 export` turns into ONNX/TensorRT. The
interface and its torch implementation live in the model core, so a model always has working
encoders; choosing a faster backend (`vl2cli.runtime.selection`) is a step above it.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class EncoderBackend(Protocol):
    """Encoders of one loaded model. All methods take and return tensors on the model's device."""

    name: str

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels -> (N, P, D) vision features (selected layer, CLS handled)."""

    def connect(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, P, D) vision features -> (B, M, C) LLM tokens (the video connector)."""

    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, 2998, 128) raw kaldi fbank -> (B, 1496, C) LLM tokens (BEATs, then the audio projector)."""


class TorchEncoders:
    """The reference backend: the PyTorch modules themselves."""

    name = "torch"

    def __init__(
        self,
        vision_tower: nn.Module | None,
        connector: nn.Module | None,
        audio_tower: nn.Module | None,
        audio_projector: nn.Module | None,
        *,
        pool_frames: bool,
    ) -> None:
        self.vision_tower = vision_tower
        self.connector = connector
        self.audio_tower = audio_tower
        self.audio_projector = audio_projector
        self.pool_frames = pool_frames

    @torch.inference_mode()
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_tower(pixel_values)

    @torch.inference_mode()
    def connect(self, features: torch.Tensor) -> torch.Tensor:
        if self.pool_frames:
            features = features.mean(dim=1)
        return self.connector(features)

    @torch.inference_mode()
    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.audio_projector(self.audio_tower(fbank))
