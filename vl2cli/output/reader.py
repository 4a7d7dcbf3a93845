"""The one reader of vl2 outputs: every line checked against the record schema before anyone uses it.

Resume, dry runs, `vl2 report`, `vl2 merge`, `vl2 shards` and subtitles all read an output through
`read_records`. A line that is not a record — not JSON, too long, nested too deep, a JSON value that
breaks the schema (an `error` that is a string, a list where an object belongs, another schema
version, times that are not numbers) — is skipped, and the caller hears which line and why, so one
hostile or damaged line never stops a run, a report or a merge.
"""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import record_problem

#: A record line longer than this is not one vl2 wrote (a record holds one answer, at most a few
#: thousand labels); it is skipped without being held in memory whole.
MAX_LINE_BYTES = 16 * 1024 * 1024
# Nesting: the schema fixes the depth of every field (record -> label_scores -> score -> field is 3)
# but `media`, whose extra fields may nest schema.OPEN_VALUE_DEPTH deep; a deeper line is skipped, and
# one past json's own recursion limit too.
#: Line numbers named in a summary of skipped lines (the count is always whole).
NAMED_LINES = 5
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SkippedLine:
    """A line of an output that is not a record: its 1-based number and why."""

    number: int
    reason: str


@dataclass
class SkippedLines:
    """The lines a read skipped (a callable: pass it as `on_skipped`)."""

    lines: list[SkippedLine] = field(default_factory=list)
    #: skipped lines counted but not kept (a resume index remembers only the first NAMED_LINES)
    uncounted: int = 0

    def __call__(self, line: SkippedLine) -> None:
        self.lines.append(line)

    def __len__(self) -> int:
        return len(self.lines) + self.uncounted

    def describe(self, path: str | Path) -> str | None:
        """One warning naming the skipped lines (None when none was): count, first line numbers, first reason."""
        if not self.lines:
            return None
        numbers = ", ".join(str(line.number) for line in self.lines[:NAMED_LINES])
        more = f" and {len(self) - NAMED_LINES} more" if len(self) > NAMED_LINES else ""
        return (f"{path}: skipped {len(self)} line(s) that are not vl2 records (line {numbers}{more}; "
                f"line {self.lines[0].number}: {self.lines[0].reason})")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Integers vl2 writes (sizes, nanosecond times, counts) fit 64 bits; a longer one is not vl2's and
#: would overflow where it is made a float (a segment bound).
_MAX_INT_DIGITS = 20


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


#: The decoder, made once (json.loads with hooks builds one a call: a third of the time of a short line).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_int=_bounded_int)


def decode_line(raw: bytes) -> Any:
    """The JSON value of one line, as json.loads reads bytes (its encoding detected), without NaN or
    Infinity and without integers past _MAX_INT_DIGITS digits; raises ValueError or RecursionError."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def parse_record_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(the record, None) or (None, why this line is not one)."""
    try:
        value = decode_line(raw)
    except RecursionError:
        return None, "nested too deep"
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None, f"not JSON ({str(exc)[:80]})"
    problem = record_problem(value)
    if problem is not None:
        return None, problem
    return value, None


@dataclass
class ReadPosition:
    """Where a read starts and, as it goes, how far it has come: the byte offset just past the last
    complete (newline-terminated) line and that line's number. A resume index reads on from here."""

    offset: int = 0
    line: int = 0
    #: where the last line read (complete or not) starts: a record's own place in the file
    start: int = 0


def _lines(handle: Any, position: ReadPosition) -> Iterator[tuple[int, bytes | None]]:
    """(number, line) for every line; line None for one over MAX_LINE_BYTES (read past in chunks).
    `position` moves past each complete line before it is yielded."""
    number = position.line
    offset = position.offset
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        position.start = offset
        offset += len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (chunk := handle.readline(_CHUNK)) and not chunk.endswith(b"\n"):
                offset += len(chunk)
            offset += len(chunk)
            if chunk.endswith(b"\n"):
                position.offset, position.line = offset, number
            yield number, None
            continue
        if raw.endswith(b"\n"):
            position.offset, position.line = offset, number
        yield number, raw


def read_records(path: str | Path, *, on_skipped: Callable[[SkippedLine], None] | None = None,
                 position: ReadPosition | None = None) -> Iterator[dict[str, Any]]:
    """Every record of a vl2 JSONL output in order; `on_skipped` hears of each non-blank line that is
    not a valid record (SkippedLines collects and describes them). An output that is not a regular
    file (`--out /dev/stdout`, a FIFO) holds no records to read back: it is not read (nor waited on).
    `position`: start there instead of at the top, and track how far the read got."""
    for record, _raw in read_record_lines(path, on_skipped=on_skipped, position=position):
        yield record


def read_record_lines(path: str | Path, *, on_skipped: Callable[[SkippedLine], None] | None = None,
                      position: ReadPosition | None = None) -> Iterator[tuple[dict[str, Any], bytes]]:
    """`read_records`, each record with the very bytes of its line: a reader that comes back to a
    record later can tell whether the line is still the one checked here."""
    position = position if position is not None else ReadPosition()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return
    with os.fdopen(fd, "rb") as handle:
        if position.offset:
            handle.seek(position.offset)
        for number, raw in _lines(handle, position):
            if raw is None:
                if on_skipped is not None:
                    on_skipped(SkippedLine(number, f"longer than {MAX_LINE_BYTES} bytes"))
                continue
            if not raw.strip():
                continue
            record, reason = parse_record_line(raw)
            if record is not None:
                yield record, raw
            elif on_skipped is not None:
                on_skipped(SkippedLine(number, reason or "not a record"))
