"""`vl2 chat`'s body: load once, read questions from stdin, print each answer (the session is `vl2cli.tasks.chat`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..discover import iter_media
from ..errors import InputError
from ..input_lists import STDIN_NAME, each_once, iter_listed
from ..tasks.chat import ChatSession
from ..run import lazy_model, listed_inputs, run_options, sampling_of


#: Shown on a terminal before each question (on stderr, so stdout holds only answers).
PROMPT = "? "


def _answer_line(record: dict[str, Any], several_files: bool) -> str:
    """One answer per line: the text's own line breaks become spaces (--json keeps the exact text)."""
    text = " ".join(str(record["output"]).split())
    return f"{record['path']}: {text}" if several_files else text


def chat_command(inputs: list[Path], settings: Any, *, stdin: Any, stdout: Any, stderr: Any) -> int:
    """The body of `vl2 chat`: load once, answer each line of stdin; exit 1 if any answer failed."""
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
