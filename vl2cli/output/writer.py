"""Append-only JSONL: one record per line, on disk before the next file starts.

Each record is written with a single `write` of the whole line followed by fsync, so a run killed
at any moment leaves at most one unterminated line at the end. The file is never rewritten: when the
previous run left such a partial line, a newline is appended so the next record starts on its own
line (the reader, output/reader.py, skips the one line that does not parse).

Before each record the writer checks that its path still names the file it opened (same device and
inode): an editor or sync tool that replaced the file (copy, then rename over it) or removed it would
otherwise receive nothing while the run reports success. The run stops with OutputReplacedError
instead, and no record is written into a file no name reaches.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import OutputReplacedError
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
        self._identity: tuple[int, int] | None = None
        #: records appended by this writer
        self.written = 0
        if self.to_stdout:
            return
        Path(self.out).parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        opened = os.fstat(self._fd)
        self._identity = (opened.st_dev, opened.st_ino)
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
        self.check_still_named()
        _write_all(self._fd, line)
        os.fsync(self._fd)
        self.written += 1

    def check_still_named(self) -> None:
        """Raise OutputReplacedError when the output path no longer names the file being appended to."""
        if self._fd is None:
            return
        try:
            now = os.stat(self.out)
            named = (now.st_dev, now.st_ino) == self._identity
        except OSError:
            named = False
        if not named:
            raise OutputReplacedError(
                f"{self.out} was replaced or removed while this run was writing it (an editor or a sync tool "
                f"that copies and renames?); stopped without writing further records ({self.written} were appended "
                "to the file that had that name); run again to carry on from what the file now holds")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
