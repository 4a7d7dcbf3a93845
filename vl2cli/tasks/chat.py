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
from ..errors import InputError, MediaError
from ..input_lists import STDIN_NAME, each_once
from ..model.feature_cache import FeatureCache
from ..output.record import FileStamp, Sampling
from ..settings import DEFAULT_MAX_NEW_TOKENS
from .pipeline import _Item, _Runner
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
        runner = _Runner(self.model, task, self.options, request)
        runner.feature_cache = self.feature_cache
        records = []
        for plan in plan_files(self.files, request):
            if not plan.pending:
                records.append(plan.outcome.record)
                continue
            item = _Item(plan.path, plan.stamp)
            runner.prepare(item, self._decode(plan.path, plan.stamp, runner))
            runner.run_batch([item])
            records.append(runner.record(item).as_dict())
        return records

    def _decode(self, path: Path, stamp: FileStamp, runner: _Runner) -> LoadedMedia | MediaError:
        """The file decoded once per stamp; later questions reuse it (and report no decode time)."""
        kept = self._decoded.get(path)
        if kept is not None and kept[0] == stamp:
            result = kept[1]
            return dataclasses.replace(result, timings_ms={}) if isinstance(result, LoadedMedia) else result
        result = decode_one(load_media, str(path), runner.media_spec())
        self._decoded[path] = (stamp, result)
        return result


__all__ = ["ChatSession", "FileOutcome"]


#: Shown on a terminal before each question (on stderr, so stdout holds only answers).
PROMPT = "? "


def _answer_line(record: dict[str, Any], several_files: bool) -> str:
    """One answer per line: the text's own line breaks become spaces (--json keeps the exact text)."""
    text = " ".join(str(record["output"]).split())
    return f"{record['path']}: {text}" if several_files else text


def chat_command(inputs: list[Path], settings: Any, *, stdin: Any, stdout: Any, stderr: Any) -> int:
    """The body of `vl2 chat`: load once, answer each line of stdin; exit 1 if any answer failed."""
    import json

    from ..discover import iter_media
    from ..input_lists import iter_listed
    from .command import listed_inputs, lazy_model, run_options, sampling_of

    if settings.files_from == STDIN_NAME or any(str(raw) == STDIN_NAME for raw in inputs):
        raise InputError("chat reads its questions from stdin; name the files, or list them with --files-from LIST")
    named, listed = listed_inputs(inputs, settings, stdin)
    filters = dict(recursive=settings.recursive, kinds=settings.kinds, include=settings.include, exclude=settings.exclude)
    warn = lambda warning: print(f"vl2: warning: {warning.message}", file=stderr, flush=True)  # noqa: E731
    files = list(iter_media(named, on_warning=warn, **filters))
    if listed is not None:  # a list names the files; questions then come from a terminal only
        files = list(each_once(iter([*files, *iter_listed(listed, on_warning=warn, **filters)])))
    if not files:
        print("vl2: warning: no media files found in the inputs", file=stderr, flush=True)
        return 1
    model = lazy_model(settings)
    session = ChatSession(model, files, options=run_options(settings), max_new_tokens=settings.max_new_tokens,
                          sampling=sampling_of(settings))
    model.loaded_model  # load now: the first question should not wait for it, and errors show at once
    interactive = stdin.isatty()
    questions = answers = failed = 0
    while True:
        if interactive:
            print(PROMPT, end="", file=stderr, flush=True)
        line = stdin.readline()
        if not line:
            break
        question = line.strip()
        if not question:
            continue
        questions += 1
        for record in session.ask(question):
            if record["error"] is not None:
                failed += 1
                print(f"vl2: failed: {record['error']['message']} [{record['error']['code']}]", file=stderr, flush=True)
                if settings.json:
                    print(json.dumps(record, ensure_ascii=False), file=stdout, flush=True)
                continue
            answers += 1
            line_out = json.dumps(record, ensure_ascii=False) if settings.json else _answer_line(record, len(files) > 1)
            print(line_out, file=stdout, flush=True)
    cache = session.feature_cache
    print(f"vl2: {questions} question(s) about {len(files)} file(s): {answers} answered, {failed} failed; "
          f"media encoded {cache.stored} time(s), reused {cache.hits} time(s)", file=stderr, flush=True)
    return 1 if failed else 0
