"""Inputs named in a list (`--files-from LIST`, or `-` for paths on stdin), one path per line.

Archive jobs hand over lists rather than folders. A listed path is taken like a path typed on the
command line (a file is always taken, a folder is walked with the run's filters), except that a
listed file that does not exist is not fatal: the list may be older than the archive, so the file
gets an `unreadable_file` error record and the run goes on. Lists are read lazily, line by line.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from .discover import MEDIA_KINDS, WalkWarning, iter_media
from .errors import InputError

#: The name that means "read the list from standard input" (as an input or as `--files-from -`).
STDIN_NAME = "-"


def read_path_list(source: str | Path, *, stdin: TextIO | None = None) -> Iterator[str]:
    """The paths of a list file (or stdin for `-`), one per line; blank lines are skipped.

    Only the line ending is removed: names may begin or end with spaces. Raises InputError when the
    list file cannot be opened (checked at the call, before any path is yielded).
    """
    if str(source) == STDIN_NAME:
        return _lines(stdin or sys.stdin)
    try:
        handle = open(source, encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as exc:
        raise InputError(f"{source}: cannot read the list of files ({exc.strerror})") from None
    return _closing_lines(handle)


def _lines(handle: TextIO) -> Iterator[str]:
    for line in handle:
        path = line.rstrip("\r\n")
        if path:
            yield path


def _closing_lines(handle: TextIO) -> Iterator[str]:
    with handle:
        yield from _lines(handle)


def each_once(files: Iterable[Path]) -> Iterator[Path]:
    """Each path once, when named inputs and a list may name the same file."""
    seen: set[Path] = set()
    for file in files:
        if file not in seen:
            seen.add(file)
            yield file


def split_stdin_marker(inputs: Sequence[str | Path]) -> tuple[list[str | Path], bool]:
    """The inputs without `-`, and whether `-` (paths on stdin) was among them."""
    rest = [raw for raw in inputs if str(raw) != STDIN_NAME]
    return rest, len(rest) != len(inputs)


def iter_listed(
    entries: Iterable[str | Path],
    *,
    recursive: bool = True,
    kinds: Iterable[str] = MEDIA_KINDS,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    on_warning: Callable[[WalkWarning], None] | None = None,
) -> Iterator[Path]:
    """Absolute media paths for listed entries, streamed; each path once (first listing wins)."""
    kinds = tuple(kinds)
    seen: set[Path] = set()
    for entry in entries:
        path = Path(os.path.abspath(entry))
        found: Iterable[Path] = [path]
        if path.is_dir():
            found = iter_media([path], recursive=recursive, kinds=kinds, include=include, exclude=exclude,
                               on_warning=on_warning)
        for file in found:
            if file not in seen:
                seen.add(file)
                yield file
