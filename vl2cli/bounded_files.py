"""Reading the small files a user hands vl2 (a settings YAML, a labels file, a model's config.json):
only regular files, only up to a bound, never blocking.

`/dev/zero`, a FIFO or a 40 GB file named as a config would otherwise be read forever (or, for a
FIFO, wait forever for a writer); here each is refused at once with a reason the caller puts into
its own error message.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

#: Bound for a settings file, a labels file or a model's JSON config (far above any real one).
SMALL_FILE_MAX_BYTES = 16 * 1024 * 1024
#: Bound for a list of input paths (--files-from): some million paths.
LIST_FILE_MAX_BYTES = 2 * 1024 * 1024 * 1024


class NotARegularFile(OSError):
    """The path names something that is not a regular file, or one over the bound."""


def open_regular(path: str | Path, max_bytes: int) -> int:
    """A read-only descriptor on a regular file of at most `max_bytes` (NotARegularFile / OSError else).

    Opened with O_NONBLOCK, so a FIFO is not waited on (and then refused)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise NotARegularFile(f"larger than {max_bytes // (1024 * 1024)} MiB ({info.st_size} bytes)")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_small_file(path: str | Path, max_bytes: int = SMALL_FILE_MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (NotARegularFile / OSError otherwise)."""
    fd = open_regular(path, max_bytes)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise NotARegularFile(f"larger than {max_bytes // (1024 * 1024)} MiB")
    return data


def reason(exc: OSError) -> str:
    """The words for an error of this module or the OS, for a message."""
    return str(exc) if isinstance(exc, NotARegularFile) else (exc.strerror or str(exc))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
