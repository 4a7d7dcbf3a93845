"""Top-level load functions that misbehave on purpose, for DecodePool's fault-isolation tests.

The file name decides the behaviour, so one run can mix good and bad files.
"""
from __future__ import annotations

import os
import time

from vl2cli.media.loader import LoadedMedia, MediaSpec, load_media

HANG_SECONDS = 3600
CRASH_EXIT_CODE = 3


def misbehaving_load(path: str, spec: MediaSpec) -> LoadedMedia:
    """hang* sleeps for an hour, exit* calls os._exit, abort* calls os.abort, bug* raises; else decodes."""
    name = os.path.basename(path)
    if name.startswith("hang"):
        time.sleep(HANG_SECONDS)
    if name.startswith("exit"):
        os._exit(CRASH_EXIT_CODE)
    if name.startswith("abort"):
        os.abort()
    if name.startswith("bug"):
        raise ZeroDivisionError("injected bug")
    return load_media(path, spec)


DECODED_MARK = ".decoded"


def marking_load(path: str, spec: MediaSpec) -> LoadedMedia:
    """Decodes, then leaves `<path>.decoded` behind: a test can count decodes done in the background."""
    loaded = load_media(path, spec)
    with open(path + DECODED_MARK, "w"):
        pass
    return loaded


FREEZE_AFTER_S = 0.5


def freezing_load(path: str, spec: MediaSpec) -> LoadedMedia:
    """freeze*: decodes, and the worker stops itself (SIGSTOP) just after its result is sent."""
    import signal
    import threading

    loaded = load_media(path, spec)
    if os.path.basename(path).startswith("freeze"):
        threading.Timer(FREEZE_AFTER_S, os.kill, (os.getpid(), signal.SIGSTOP)).start()
    return loaded
