"""A prepared item's decoded media as the model takes it, its tensors on the model's device.

Workers hand over uint8 pixels; the normalisation (a lookup table, bit-identical) happens here, on
the model's device.
"""
from __future__ import annotations

from typing import Any

import torch

from ..media.image import normalize_levels, value_lookup_table
from ..model.inputs import MultimodalInput
from .feature_reuse import FeatureReuse
from .media_specs import RunMediaSpec
from .modality import to_model_input
from .work_item import WorkItem


class ModelInputs:
    """Hands decoded items to the model's device: pixels normalised there, each input named for the feature cache."""

    def __init__(self, model: Any, media_spec: RunMediaSpec, features: FeatureReuse) -> None:
        self.model, self.media_spec, self.features = model, media_spec, features
        self._pixel_table: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.model.device)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":  # pinned staging lets the copy overlap the host's next work
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _normalised(self, levels: torch.Tensor) -> torch.Tensor:
        if levels.dtype != torch.uint8:  # a loader that normalised already
            return self._to_device(levels)
        if self._pixel_table is None:
            self._pixel_table = value_lookup_table(self.media_spec.get().image).to(self.device)
        return normalize_levels(self._to_device(levels), self._pixel_table)

    def model_input(self, item: WorkItem) -> MultimodalInput:
        """The decoded file as the model takes it, its tensors on the model's device."""
        loaded = item.loaded
        pixels = loaded.pixel_values if item.modality != "audio" else None
        fbank = loaded.fbank if item.modality in ("audio", "av") else None
        model_input = to_model_input(loaded, item.modality,
                                     pixel_values=self._normalised(pixels) if pixels is not None else None,
                                     fbank=self._to_device(fbank) if fbank is not None else None)
        model_input.feature_key = self.features.feature_key(item)
        item.notes = list(model_input.notes)
        return model_input


__all__ = ["ModelInputs"]
