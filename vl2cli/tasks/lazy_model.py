"""A model whose weights (and torch) load only when a file actually needs them.

A nightly cron run over an archive where nothing is new should neither load 7B weights nor spend
seconds importing torch and transformers to learn that. The resume key needs only the checkpoint's
identity (id, resolved revision, frame count) and its towers, all from `config.json`
(`CheckpointIdentity`, torch-free); everything else (generate, image_processor_config, device...)
loads the real model on first access.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from ..model.identity import CheckpointIdentity


class LazyModel:
    """Stands in for a VideoLlama2: identity attributes now, the rest from `load()` on first use.

    `config` is the identity (it answers `has_vision` / `has_audio` like `Vl2Config`); the loaded
    model's full config is `loaded_model.config`.
    """

    def __init__(self, model: str, *, revision: str | None, frames: int | None, load: Callable[[], Any],
                 locations: Mapping[str, str | None] | None = None) -> None:
        """`locations`: where a Video-LLaMA (v1) model's other files are (`CheckpointIdentity.resolve`'s
        lavis_dir, llm and home), as the settings say."""
        self._name, self._revision, self._frames = model, revision, frames
        self._locations = dict(locations or {})
        self._load = load
        self._model: Any = None

    @functools.cached_property
    def config(self) -> CheckpointIdentity:
        """Resolved on first use, so a run checks its inputs before it looks for the checkpoint."""
        return CheckpointIdentity.resolve(self._name, revision=self._revision, **self._locations)

    @property
    def model_id(self) -> str:
        return self.config.model_id

    @property
    def revision(self) -> str | None:
        return self.config.revision

    @property
    def num_frames(self) -> int:
        return int(self._frames) if self._frames is not None else self.config.num_frames

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def loaded_model(self) -> Any:
        """The real model, loading it now if needed."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not set in __init__: those need the real model
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.loaded_model, name)
