"""Every test session runs in an isolated environment: exports, engines and vl2's home in a temporary
folder, and none of the user's own VL2_* settings.

Without this, an export lying in the checkout (`vl2 export` writes to `export/` by default) would turn
tests that load with `--encoder-backend auto` into onnxruntime tests, and a test's export would land in
the checkout. Set at configure time (not in a function fixture) so module-scoped model fixtures and
the CLI subprocesses see it too; tests that need a particular folder set these variables themselves.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

ISOLATED_FOLDERS = {"VL2_HOME": "home", "VL2_EXPORT_DIR": "export", "VL2_ENGINE_DIR": "engines"}
#: A user's own settings that would change what the tests run.
USER_SETTINGS = ("VL2_CONFIG", "VL2_ENCODER_BACKEND", "VL2_DEVICE", "VL2_DTYPE", "VL2_MODEL", "VL2_BATCH_SIZE",
                 "VL2_WORKERS", "VL2_MODALITY", "VL2_OUT", "VL2_QUIET")
_scratch: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    root = tempfile.mkdtemp(prefix="vl2-tests-")
    _scratch.append(root)
    for variable, folder in ISOLATED_FOLDERS.items():
        os.environ[variable] = os.path.join(root, folder)
    for name in USER_SETTINGS:
        os.environ.pop(name, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    for root in _scratch:
        shutil.rmtree(root, ignore_errors=True)
