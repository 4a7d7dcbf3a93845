"""An encoder backend that runs some components through exported runners and the rest through torch.

Both the onnxruntime and the TensorRT backends are this with different runners; a component with no
usable export (an absent audio engine, say) stays on torch, and `describe()` says which is which.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ..exporting.names import ALL_COMPONENTS, AUDIO_ENCODER, CONNECTOR, VISION_TOWER
from .backend import TorchEncoders

#: A runner takes the component's input and returns its output (any device, any float dtype).
Runner = Callable[[torch.Tensor], torch.Tensor]


class RoutedEncoders:
    """`EncoderBackend` whose components each run through a runner, or torch where there is none."""

    def __init__(self, name: str, torch_encoders: TorchEncoders, runners: Mapping[str, Runner], details: Mapping[str, str]) -> None:
        self.name = name
        self.torch_encoders = torch_encoders
        self.runners = dict(runners)
        self.details = dict(details)

    def _run(self, component: str, x: torch.Tensor, fallback: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        runner = self.runners.get(component)
        if runner is None:
            return fallback(x)
        return runner(x).to(device=x.device, dtype=x.dtype)

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Frames in calls of at most the torch tower's size, so a runner never sees more at once."""
        chunks = pixel_values.split(self.torch_encoders.frames_per_tower_call)
        return torch.cat([self._run(VISION_TOWER, chunk, self.torch_encoders.encode_frames) for chunk in chunks])

    def connect(self, features: torch.Tensor) -> torch.Tensor:
        return self._run(CONNECTOR, features, self.torch_encoders.connect)

    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        return self._run(AUDIO_ENCODER, fbank, self.torch_encoders.encode_audio)

    def describe(self) -> str:
        """One line for the log: which component runs where."""
        parts = []
        for component in ALL_COMPONENTS:
            if component in self.runners:
                parts.append(f"{component}: {self.name} ({self.details.get(component, '')})".replace(" ()", ""))
            elif component in self.details:
                parts.append(f"{component}: torch ({self.details[component]})")
        return "; ".join(parts)
