"""`vl2 chat`: one loaded model, a few files, questions one after another (typed or piped).

Each file is decoded once and its encoded media (the vision/audio feature tokens) is kept in memory
in a `FeatureCache` keyed by the file's stamp (path, size, mtime), the model, the frame count and
the modality, so the second question about a file costs only the LLM. Nothing of it is ever written
to disk; it lives as long as the session. A file changed on disk between two questions has a new
stamp, so it is decoded and encoded again.

Each file has its own conversation, as upstream's demo keeps one: a question is asked after the
earlier questions and answers about that file (`Conversation`; the media once, in the first turn).
`reset()` forgets them (not the encoded media); a file changed on disk starts a new conversation.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from ..media.workers import decode_one
from ..media.loader import LoadedMedia, load_media
from ..errors import MediaError
from ..model.feature_cache import FeatureCache
from ..model.inputs import Conversation, Instruction
from ..output.record import FileStamp, Sampling, generation_facts
from ..settings import DEFAULT_MAX_NEW_TOKENS
from .model_call import MS_PER_S
from .pipeline_parts import PipelineParts, pipeline_parts
from .plan import FileOutcome, build_request, plan_files
from .spec import RunOptions, TaskSpec
from .work_item import WorkItem


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
        #: each file's conversation so far: the stamp it was about, its (question, answer) turns
        self._turns: dict[Path, tuple[FileStamp | None, list[tuple[str, str]]]] = {}

    def add_file(self, path: str | Path) -> Path:
        """Take one more file into the session (its questions start from the next one); returns it."""
        absolute = Path(path).absolute()
        if absolute not in self.files:
            self.files.append(absolute)
        return absolute

    def reset(self) -> None:
        """Forget every file's earlier turns; the next question stands alone (the media stays encoded)."""
        self._turns.clear()

    def turns(self, path: str | Path) -> list[tuple[str, str]]:
        """The (question, answer) turns the next question about `path` comes after."""
        return list(self._turns.get(Path(path).absolute(), (None, []))[1])

    def ask(self, question: str, *, on_text: Callable[[Path, str], None] | None = None) -> list[dict[str, Any]]:
        """One record per file for `question` (an error record for a file that cannot be used).

        `on_text(path, piece)` is called with each new piece of a file's answer while it is generated.
        """
        task = TaskSpec("ask", prompt=question, max_new_tokens=self.max_new_tokens, sampling=self.sampling)
        request = build_request(self.model, task, self.options)
        parts = pipeline_parts(self.model, task, self.options, request, feature_cache=self.feature_cache)
        records = []
        for plan in plan_files(self.files, request):
            if not plan.pending:
                records.append(plan.outcome.record)
                continue
            item = WorkItem(plan.path, plan.stamp)
            parts.preparer.prepare(item, self._decode(plan.path, plan.stamp, parts))
            if item.ready:
                parts.model_call.run_guarded([item], lambda ready: self._answer(parts, ready[0], on_text))
            record = parts.records.record(item).as_dict()
            if record["error"] is None:
                self._remember(item.path, item.stamp, question, str(record["output"]))
            records.append(record)
        return records

    def _answer(self, parts: PipelineParts, item: WorkItem, on_text: Callable[[Path, str], None] | None) -> None:
        """One file's answer, after its earlier turns (the batch path's generate for a batch of one)."""
        start = perf_counter()
        streaming = {"on_text": lambda piece: on_text(item.path, piece)} if on_text is not None else {}
        instruction = self._instruction(item)
        [generation] = self.model.generate([parts.inputs.model_input(item)], [instruction], max_new_tokens=self.max_new_tokens,
                                           **parts.model_call.generate_options(), **streaming)
        item.output, item.model_ms, item.batch_size = generation.text, (perf_counter() - start) * MS_PER_S, 1
        item.generation = generation_facts(generation.finish_reason, generation.prompt_tokens, generation.output_tokens)
        if isinstance(instruction, Conversation):  # the record says its answer depends on what came before
            item.notes.append(f"asked after {len(instruction.earlier)} earlier turn(s) of the chat")

    def _instruction(self, item: WorkItem) -> Instruction:
        stamp, turns = self._turns.get(item.path, (None, []))
        if not turns or stamp != item.stamp:  # a file changed on disk starts a new conversation
            return item.instruction or ""
        return Conversation(tuple(turns), item.instruction or "")

    def _remember(self, path: Path, stamp: FileStamp | None, question: str, answer: str) -> None:
        kept_stamp, turns = self._turns.get(path, (stamp, []))
        if kept_stamp != stamp:
            turns = []
        self._turns[path] = (stamp, [*turns, (question, answer)])

    def _decode(self, path: Path, stamp: FileStamp, parts: PipelineParts) -> LoadedMedia | MediaError:
        """The file decoded once per stamp; later questions reuse it (and report no decode time)."""
        kept = self._decoded.get(path)
        if kept is not None and kept[0] == stamp:
            result = kept[1]
            return dataclasses.replace(result, timings_ms={}) if isinstance(result, LoadedMedia) else result
        result = decode_one(load_media, str(path), parts.media_spec.get())
        self._decoded[path] = (stamp, result)
        return result


__all__ = ["ChatSession", "FileOutcome"]
