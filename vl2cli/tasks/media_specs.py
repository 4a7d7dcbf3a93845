"""What the decoders make of each file for a model: one `MediaSpec` per run, from the model and options.

A pure function, so the pipeline, `vl2 chat` and the benchmarks decode exactly alike; `RunMediaSpec`
computes it on first use, as a `LazyModel` must load its weights to answer it.
"""
from __future__ import annotations

from typing import Any

from ..media.image import ImageProcessorSpec
from ..media.loader import MediaSpec
from .modality import ModelTowers, decode_wants_audio
from .spec import RunOptions


def media_spec_for(model: Any, options: RunOptions, towers: ModelTowers) -> MediaSpec:
    """What the decoders make of each file for this model (uint8 pixels: normalised on the model's device)."""
    config = model.image_processor_config
    return MediaSpec(
        num_frames=model.num_frames,
        image=ImageProcessorSpec.from_config(config) if config is not None else None,
        want_audio=decode_wants_audio(options.modality, towers),
        video_backend=options.video_backend,  # type: ignore[arg-type]
        normalize_pixels=False,  # uint8 crosses to this process; normalised on the model's device
        family=getattr(model, "family", "videollama2"),
    )


class RunMediaSpec:
    """A run's `MediaSpec`, computed once, when first asked for (a run whose files are all settled never is)."""

    def __init__(self, model: Any, options: RunOptions, towers: ModelTowers) -> None:
        self.model, self.options, self.towers = model, options, towers
        self._media_spec: MediaSpec | None = None

    def get(self) -> MediaSpec:
        """What the decoders make of each file for this model (computed once per run)."""
        if self._media_spec is None:
            self._media_spec = media_spec_for(self.model, self.options, self.towers)
        return self._media_spec


__all__ = ["RunMediaSpec", "media_spec_for"]
