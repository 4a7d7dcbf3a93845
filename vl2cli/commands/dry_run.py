"""`--dry-run`: what a run would do, without loading the model (nor importing torch).

Walks the inputs and reads the resume index exactly as the run would (`vl2cli.tasks.plan`), then
prints one line per file (and question) to stdout:

    process /archive/new.mp4
    skip    /archive/old.mp4
    error   /archive/gone.mp4   (a listed file that cannot be read: the run would write an error record)

and a summary line on stderr. Only the checkpoint's `config.json` is read (for the resume key).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from ..api import plan_run
from ..discover import WalkWarning
from ..output.resume import ResumeIndex
from ..output.writer import STDOUT_NAME
from ..settings import Settings
from ..run import run_options, walk_options
from .exit_codes import EXIT_OK, EXIT_SOME_FAILED
from ..tasks.plan import SkippedFiles
from ..tasks.spec import TaskSpec


def _line(action: str, path: Path, prompt: str | None, several: bool) -> str:
    text = f"{action:<7} {path}"
    if several and prompt is not None:
        text += f"\t{prompt}"
    return text.replace("\n", "\\n").replace("\r", "\\r")


def dry_run(inputs: list[Path], listed: Iterable[str] | None, spec: TaskSpec, settings: Settings, model: Any, *,
            stdout: TextIO, stderr: TextIO, keep: Callable[[Path], bool] | None = None) -> int:
    """Print the plan; exit 0 (or 1 when a folder could not be read, as the run would)."""
    counts = {"process": 0, "skip": 0, "error": 0}
    unreadable_folders = 0

    def on_warning(warning: WalkWarning) -> None:
        nonlocal unreadable_folders
        unreadable_folders += warning.reason in ("unreadable_folder", "bad_list_entry")
        print(f"vl2: warning: {warning.message}", file=stderr, flush=True)

    index = None
    if settings.out != STDOUT_NAME and not settings.overwrite:
        index = ResumeIndex.from_output(settings.out)
        if (skipped := index.skipped.describe(settings.out)) is not None:
            print(f"vl2: warning: {skipped}", file=stderr, flush=True)
    is_done = (lambda key: index.is_done(key, retry_failed=settings.retry_failed,  # noqa: E731
                                         max_new_tokens=settings.max_new_tokens)) if index is not None else None
    several = len(spec.prompts) > 1
    planned, requests = plan_run(model, inputs, spec, run_options(settings), is_done=is_done, on_warning=on_warning,
                                 walk=walk_options(settings), listed=listed, keep=keep, skipped_runs=True)
    for plan in planned:
        if isinstance(plan, SkippedFiles):  # a run of done files: counted, and printed in one write
            counts["skip"] += len(plan.paths)
            stdout.write("".join(_line("skip", path, None, False) + "\n" for path in plan.paths))
            stdout.flush()
            continue
        action = "process" if plan.pending else "skip" if plan.outcome.skipped else "error"
        for request in plan.requests or requests[:1]:
            counts[action] += 1
            print(_line(action, plan.path, request.prompt, several), file=stdout, flush=True)
    print(f"vl2: dry run: {counts['process']} to process, {counts['skip']} already done (would be skipped), "
          f"{counts['error']} unreadable; the model was not loaded", file=stderr, flush=True)
    return EXIT_SOME_FAILED if unreadable_folders else EXIT_OK
