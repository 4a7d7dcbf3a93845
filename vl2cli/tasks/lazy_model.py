"""A model whose weights load only when a file actually needs them.

A nightly cron run over an archive where nothing is new should not spend a minute loading 7B
weights to learn that. The resume key needs only the checkpoint's identity (id, resolved revision,
frame count) and its towers, all of which come from `config.json`; everything else (generate,
image_processor_config, device...) loads the real model on first access.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..model.checkpoint import CHECKPOINT_PATTERNS, resolve_repo
from ..model.config import Vl2Config


class LazyModel:
    """Stands in for a VideoLlama2: identity attributes now, the rest from `load()` on first use."""

    def __init__(self, model: str, *, revision: str | None, frames: int | None, load: Callable[[], Any]) -> None:
        repo = resolve_repo(model, revision=revision, allow_patterns=CHECKPOINT_PATTERNS)
        self.config = Vl2Config.from_file(repo.folder / "config.json")
        # a local folder is identified by its absolute path, so reruns from another directory still match
        self.model_id = model if repo.revision is not None else str(repo.folder)
        self.revision = repo.revision
        self.num_frames = int(frames) if frames is not None else self.config.num_frames
        self._load = load
        self._model: Any = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def __getattr__(self, name: str) -> Any:
        # only called for attributes not set in __init__: those need the real model
        if name.startswith("_"):
            raise AttributeError(name)
        if self._model is None:
            self._model = self._load()
        return getattr(self._model, name)
