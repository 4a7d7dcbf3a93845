"""Writing a file whole or not at all: a temporary file beside it, fsync, rename over it, fsync the folder.

A reader (or a run killed half-way) then sees the old file or the new one, never half of one; a crash
before the rename leaves the old file as it was. Used for every file vl2 replaces in one go: merged
outputs, shard layouts and `.done` markers, subtitles and their sidecars, export manifests, reports.
(The JSONL output is appended to instead, line by line: output/writer.py.)

The temporary file is created exclusively and never through a symlink, so a name planted beside the
target cannot redirect the write; the rename replaces the target's name itself, never what a symlink
there points to. Nothing here imports the rest of vl2.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Permissions of a new file before the umask, as `open(path, "w")` gives them.
NEW_FILE_MODE = 0o666
#: Errors of fsync on a folder from file systems that cannot sync one (the rename still happened).
_UNSYNCABLE_FOLDER = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EISDIR})


def temporary_name(target: Path) -> Path:
    """The hidden name beside `target` its new content is written under (one per process)."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _create_exclusively(path: Path, mode: int) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort where the file system cannot sync folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSYNCABLE_FOLDER:
            raise
    finally:
        os.close(fd)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(target: str | Path, *, exclusive: bool = False, mode: int = NEW_FILE_MODE) -> Iterator[Path]:
    """Yield a new, empty temporary path beside `target` to write the new content to (by any means: a
    library may open it by name). When the block ends without an error, the file is fsynced and takes
    `target`'s name; on an error it is removed and `target` is untouched.

    `exclusive`: only if nothing has `target`'s name yet; FileExistsError otherwise (nothing replaced)."""
    target = Path(target)
    temp = temporary_name(target)
    temp.unlink(missing_ok=True)  # a leftover of a killed process that had this pid
    os.close(_create_exclusively(temp, mode))
    try:
        yield temp
        _fsync_path(temp)
        if exclusive:
            os.link(temp, target)  # fails if the name is taken: nothing is replaced
        else:
            os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    sync_folder(target.parent)


def write_atomically(target: str | Path, data: bytes | str, *, exclusive: bool = False,
                     mode: int = NEW_FILE_MODE, encoding: str = "utf-8", errors: str = "strict") -> None:
    """Write `data` (text is encoded with `encoding`/`errors`) as the whole new content of `target`.
    `exclusive`: FileExistsError if `target` exists (see `replacing`)."""
    payload = data.encode(encoding, errors) if isinstance(data, str) else data
    with replacing(target, exclusive=exclusive, mode=mode) as temp:
        fd = os.open(temp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
