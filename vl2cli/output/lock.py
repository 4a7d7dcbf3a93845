"""Keep two runs from appending to the same output: an flock on `<output>.lock` and on the output file.

The lock file (beside the real path, holding the holder's pid) stops a second run through a symlink or
another spelling of the path; the flock on the output file itself is keyed by the file (device and
inode), so a second run through a hard link — another name of the same file — is stopped too.

flock is released by the kernel when the holder dies (even by SIGKILL), so a stale lock file never
blocks the next cron run; only a live run does.
"""
from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from ..errors import OutputLockedError

LOCK_SUFFIX = ".lock"


def lock_path_for(out: str | Path) -> Path:
    """The lock file beside an output file."""
    out = Path(out)
    return out.with_name(out.name + LOCK_SUFFIX)


def _lock_the_file(out: Path) -> int | None:
    """An flock on the output file itself (created empty when absent), whatever name reached it; None
    for an output that is not a regular file (a device such as /dev/null has nothing to protect)."""
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputLockedError(
            f"{out} is being written by another vl2 run under another name of the same file (a hard link); "
            "wait for it to finish or set another out path") from None
    return fd


class OutputLock:
    """Exclusive, non-blocking lock on an output file for the life of a run (a context manager)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        # keyed on the real file: a second run through a symlink (or ../ spelling) meets the same lock
        self.path = lock_path_for(os.path.realpath(out))
        self._fd: int | None = None
        self._file_fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise OutputLockedError naming the holder's pid when known."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise OutputLockedError(
                f"{self.out} is being written by another vl2 run{who}; wait for it to finish or set another out path"
            ) from None
        try:
            self._file_fd = _lock_the_file(self.out)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        if self._file_fd is not None:
            os.close(self._file_fd)  # closing the last descriptor of an flock frees it
            self._file_fd = None
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
