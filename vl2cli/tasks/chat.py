"""`vl2 chat`: one loaded model, a few files, questions one after another (typed or piped).

Each file is decoded once and its encoded media (the vision/audio feature tokens) is kept in memory
in a `FeatureCache` keyed by the file's stamp (path, size, mtime), the model, the frame count and
the modality, so the second question about a file costs only the LLM. Nothing of it is ever written
to disk; it lives as long as the session. A file changed on disk between two questions has a new
stamp, so it is decoded and encoded again.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..media.workers import decode_one
from ..media.loader import LoadedMedia, load_media
from ..errors import MediaError
from ..model.feature_cache import FeatureCache
from ..output.record import FileStamp, Sampling
from ..settings import DEFAULT_MAX_NEW_TOKENS
from .pipeline import PipelineRunner, WorkItem
from .plan import FileOutcome, build_request, plan_files
from .spec import RunOptions, TaskSpec


class ChatSession:
    """Answers questions about `files` with `model` (a VideoLlama2 or LazyModel), one record per file."""

    def __init__(self, model: Any, files: Sequence[str | Path], *, options: RunOptions = RunOptions(),
                 max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, sampling: Sampling | None = None) -> None:
        self.model, self.options = model, options
        self.files = [Path(f).absolute() for f in files]
        self.max_new_tokens, self.sampling = max_new_tokens, sampling
        #: one entry per file and modality; files are few, so it is not bounded
        self.feature_cache = FeatureCache()
        self._decoded: dict[Path, tuple[FileStamp, LoadedMedia | MediaError]] = {}

    def ask(self, question: str) -> list[dict[str, Any]]:
        """One record per file for `question` (an error record for a file that cannot be used)."""
        task = TaskSpec("ask", prompt=question, max_new_tokens=self.max_new_tokens, sampling=self.sampling)
        request = build_request(self.model, task, self.options)
        runner = PipelineRunner(self.model, task, self.options, request)
        runner.feature_cache = self.feature_cache
        records = []
        for plan in plan_files(self.files, request):
            if not plan.pending:
                records.append(plan.outcome.record)
                continue
            item = WorkItem(plan.path, plan.stamp)
            runner.prepare(item, self._decode(plan.path, plan.stamp, runner))
            runner.run_batch([item])
            records.append(runner.record(item))
        return records

    def _decode(self, path: Path, stamp: FileStamp, runner: PipelineRunner) -> LoadedMedia | MediaError:
        """The file decoded once per stamp; later questions reuse it (and report no decode time)."""
        kept = self._decoded.get(path)
        if kept is not None and kept[0] == stamp:
            result = kept[1]
            return dataclasses.replace(result, timings_ms={}) if isinstance(result, LoadedMedia) else result
        result = decode_one(load_media, str(path), runner.media_spec())
        self._decoded[path] = (stamp, result)
        return result


__all__ = ["ChatSession", "FileOutcome"]
