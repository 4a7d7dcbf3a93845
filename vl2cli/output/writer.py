"""Append-only JSONL: one record per line, on disk before the next file starts.

Each record is written with a single `write` of the whole line followed by fsync, so a run killed
at any moment leaves at most one unterminated line at the end. The file is never rewritten: when the
previous run left such a partial line, a newline is appended so the next record starts on its own
line (the reader, output/reader.py, skips the one line that does not parse).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from .reader import read_records  # noqa: F401  (the one reader of outputs; kept importable from here)

STDOUT_NAME = "-"
NEWLINE = b"\n"


def encode_record(record: dict[str, Any]) -> bytes:
    """One line of JSON, UTF-8, newline-terminated (no newline can appear inside: json escapes it)."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # a file name that is not valid UTF-8 (os.fsdecode's surrogate escapes): JSON's \udcXX escapes
        # keep the line valid UTF-8, and json.loads gives back the very same str (resume keys match)
        return (json.dumps(record, ensure_ascii=True, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


def ends_with_partial_line(path: str | Path) -> bool:
    """True when the file is non-empty and its last byte is not a newline (a crash mid-write)."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != NEWLINE


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class JsonlWriter:
    """Appends records to a file (flush + fsync each) or to stdout (`-`, flushed each)."""

    def __init__(self, out: str | Path, *, stdout: TextIO | None = None) -> None:
        self.out = str(out)
        self.repaired_partial_line = False
        self._fd: int | None = None
        self._stdout = stdout
        if self.to_stdout:
            return
        Path(self.out).parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if ends_with_partial_line(self.out):
            _write_all(self._fd, NEWLINE)
            os.fsync(self._fd)
            self.repaired_partial_line = True

    @property
    def to_stdout(self) -> bool:
        return self.out == STDOUT_NAME

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and make it durable before returning."""
        line = encode_record(record)
        if self._fd is None:
            stream = self._stdout or sys.stdout
            stream.write(line.decode("utf-8"))
            stream.flush()
            return
        _write_all(self._fd, line)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
