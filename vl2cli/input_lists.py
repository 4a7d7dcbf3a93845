"""Inputs named in a list (`--files-from LIST`, or `-` for paths on stdin), one path per line.

Archive jobs hand over lists rather than folders. A listed path is taken like a path typed on the
command line (a file is always taken, a folder is walked with the run's filters), except that a
listed file that does not exist is not fatal: the list may be older than the archive, so the file
gets an `unreadable_file` error record and the run goes on (once: later runs skip it until it exists).
Lists are read lazily, line by line.

A list file must be a regular file of at most 2 GiB (a FIFO, `/dev/zero` or a folder is refused at
once: pipe such a list into `-` instead); a line longer than MAX_LINE_CHARS ends the run with an
InputError (that is not a list of paths), and a line holding a NUL byte (no path can) is skipped
with a warning, unless no path came before it: a list that starts with a NUL byte, or that is not
text at all, is binary data (`cat clip.mp4 | vl2 ask - ...`), an InputError that says so.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from .bounded_files import LIST_FILE_MAX_BYTES, open_regular, reason
from .discover import MEDIA_KINDS, WalkWarning, iter_media, kind_from_extension
from .errors import InputError

_PathT = TypeVar("_PathT", str, Path)

#: The name that means "read the list from standard input" (as an input or as `--files-from -`).
STDIN_NAME = "-"
#: The longest line a list may hold (PATH_MAX is 4096 bytes; a longer line is not a path).
MAX_LINE_CHARS = 16384


def read_path_list(source: str | Path, *, stdin: TextIO | None = None) -> Iterator[str]:
    """The paths of a list file (or stdin for `-`), one per line; blank lines are skipped.

    Only the line ending is removed: names may begin or end with spaces. Raises InputError when the
    list file cannot be opened (checked at the call, before any path is yielded).
    """
    if str(source) == STDIN_NAME:
        return _lines(stdin or sys.stdin, "stdin")
    try:
        fd = open_regular(source, LIST_FILE_MAX_BYTES)
    except OSError as exc:
        hint = "; pipe it into - instead" if not isinstance(exc, FileNotFoundError) else ""
        raise InputError(f"{source}: cannot read the list of files ({reason(exc)}){hint}") from None
    handle = open(fd, encoding="utf-8", errors="surrogateescape", newline="")
    return _closing_lines(handle, str(source))


def _not_a_list(name: str) -> InputError:
    return InputError(f"{name}: holds binary data, not a list of paths (one per line); a media file is named "
                      "as an input (vl2 ask clip.mp4 \"QUESTION\"), not piped in")


def _lines(handle: TextIO, name: str) -> Iterator[str]:
    number = 0
    taken = 0
    while True:
        try:
            line = handle.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError:  # a strictly decoded stream (stdin in a UTF-8 locale) given binary data
            raise _not_a_list(name) from None
        if not line:
            return
        number += 1
        if not taken and "\0" in line:  # no path holds a NUL: before any path, the list is binary data
            raise _not_a_list(name)
        if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            raise InputError(f"{name}: line {number} of the list of files is longer than {MAX_LINE_CHARS} "
                             "characters; not a list of paths (one per line)")
        path = line.rstrip("\r\n")
        if path:
            taken += 1
            yield path


def _closing_lines(handle: TextIO, name: str) -> Iterator[str]:
    with handle:
        yield from _lines(handle, name)


def looks_like_input(text: str) -> bool:
    """Whether a word meant as a question names an input instead: `-`, an existing path, or a media file
    name (no spaces, a media extension). `vl2 ask a.mp4 b.mp4` must not ask "b.mp4" about a.mp4."""
    if text == STDIN_NAME or os.path.lexists(text):
        return True
    return not any(char.isspace() for char in text) and kind_from_extension(text) is not None


def each_once(files: Iterable[_PathT]) -> Iterator[_PathT]:
    """Each path (a Path, or a path string) once, when named inputs and a list may name the same file."""
    seen: set[_PathT] = set()
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
        if "\0" in str(entry):
            shown = str(entry).replace("\0", "\\0")
            if on_warning is not None:
                on_warning(WalkWarning(shown, "bad_list_entry",
                                       f"listed path {shown!r} holds a NUL byte, which no file name can; skipped"))
            continue
        path = Path(os.path.abspath(entry))
        found: Iterable[Path] = [path]
        if path.is_dir():
            found = iter_media([path], recursive=recursive, kinds=kinds, include=include, exclude=exclude,
                               on_warning=on_warning)
        for file in found:
            if file not in seen:
                seen.add(file)
                yield file
