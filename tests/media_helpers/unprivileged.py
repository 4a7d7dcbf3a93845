"""Run a check as a user without root's right to read everything (tests run as root in CI here)."""
from __future__ import annotations

import os
from typing import Callable

#: The conventional uid/gid of `nobody`.
NOBODY = 65534
CAN_DROP_PRIVILEGES = hasattr(os, "fork")


def run_unprivileged(check: Callable[[], str]) -> str:
    """`check()`'s answer, computed by a process that may read only what any user may.

    As root, a forked child gives up root first (the interpreter is already loaded, so only the paths
    the check touches matter); as another user the check simply runs. An exception in the child comes
    back as "raised <type>: <message>".
    """
    if os.geteuid() != 0:
        return check()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = check()
        except BaseException as exc:  # never return into pytest in the child
            answer = f"raised {type(exc).__name__}: {exc}"
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        answer = reader.read().decode()
    os.waitpid(child, 0)
    return answer
