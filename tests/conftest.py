"""Every test session runs in an isolated environment: exports, engines and vl2's home in a temporary
folder, and none of the user's own VL2_* settings.

Without this, an export lying in the checkout (`vl2 export` writes to `export/` by default) would turn
tests that load with `--encoder-backend auto` into onnxruntime tests, and a test's export would land in
the checkout. Set at configure time (not in a function fixture) so module-scoped model fixtures and
the CLI subprocesses see it too; tests that need a particular folder set these variables themselves.
Every other `VL2_*` variable of the user's is removed (any of them could change what a run does), so a
test's subprocess takes `os.environ` as it is: stripping `VL2_*` there would drop the isolated folders.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

ISOLATED_FOLDERS = {"VL2_HOME": "home", "VL2_EXPORT_DIR": "export", "VL2_ENGINE_DIR": "engines"}
#: Where the test fixtures are (read by the test modules themselves): kept.
FIXTURE_LOCATIONS = ("VL2_MEDIA_FIXTURES", "VL2_REFERENCE_FIXTURES", "VL2_REFERENCE_V1_FIXTURES")
#: Variables that steer the suite itself (e.g. make test-oldest's VL2_TEST_EXPECT_TRANSFORMERS): kept.
TEST_CONTROL_PREFIX = "VL2_TEST_"
_scratch: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    root = tempfile.mkdtemp(prefix="vl2-tests-")
    _scratch.append(root)
    for variable, folder in ISOLATED_FOLDERS.items():
        os.environ[variable] = os.path.join(root, folder)
    for name in [n for n in os.environ if n.startswith("VL2_")]:
        if name not in ISOLATED_FOLDERS and name not in FIXTURE_LOCATIONS and not name.startswith(TEST_CONTROL_PREFIX):
            del os.environ[name]  # a user's setting (VL2_BATCH_SIZE, VL2_CONFIG, VL2_V1_LLM, ...)


def pytest_unconfigure(config: pytest.Config) -> None:
    for root in _scratch:
        shutil.rmtree(root, ignore_errors=True)
