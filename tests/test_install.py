"""What `make install` installs: only what the code needs, one onnxruntime build, the user's Python."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_no_dependency_the_code_never_needs() -> None:
    base = _names(PYPROJECT["project"]["dependencies"])
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert not {"onnxscript", "polygraphy"} & (base | set().union(*(_names(e) for e in extras.values())))


def test_each_onnxruntime_extra_installs_exactly_one_build() -> None:
    extras = {name: _names(reqs) for name, reqs in PYPROJECT["project"]["optional-dependencies"].items()}
    builds = {"onnxruntime", "onnxruntime-gpu"}
    assert not builds & _names(PYPROJECT["project"]["dependencies"])
    assert extras["cpu"] & builds == {"onnxruntime"} and extras["gpu"] & builds == {"onnxruntime-gpu"}
    assert not extras["dev"] & builds


def test_the_license_is_an_spdx_string_setuptools_takes_without_warning() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in PYPROJECT["build-system"]["requires"])


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_takes_the_first_python_that_satisfies_requires_python(tmp_path: Path) -> None:
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
    old = tmp_path / "python3"  # answers like a Python 3.9 would to the version check
    old.write_text("#!/bin/sh\nexit 1\n")
    old.chmod(old.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "python3.12").symlink_to(sys.executable)  # this interpreter: >= 3.10
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    env.pop("PYTHON", None)

    def chosen(candidates: str) -> str:
        run = subprocess.run(["make", "-s", "which-python", f"PYTHON_CANDIDATES={candidates}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, env=env, timeout=60)
        return run.stdout.strip()

    assert chosen("python3 python3.12") == "python3.12"
    assert chosen("python3.12 python3") == "python3.12"
    assert chosen("python3 python3.99") == ""  # none qualifies: install stops with a message


def test_the_tensorrt_rtx_extra_is_the_two_wheels_with_an_upper_bound() -> None:
    """NVIDIA's `tensorrt-rtx` / `tensorrt-rtx-cu13` are source meta-packages; the libraries and the
    bindings are real wheels, of one version (engines are tied to it), bounded so a lock moves on purpose."""
    requirements = PYPROJECT["project"]["optional-dependencies"]["tensorrt-rtx"]
    assert _names(requirements) == {"tensorrt-rtx-cu13-libs", "tensorrt-rtx-cu13-bindings"}
    bounds = {re.sub(r"^[a-z0-9-]+", "", r.lower()) for r in requirements}
    assert len(bounds) == 1 and "<" in next(iter(bounds))


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_install_installs_the_lock_where_it_was_resolved(tmp_path: Path) -> None:
    """On the Python and platform a lock names, `make install` installs that lock (exact versions), then
    vl2 itself without dependencies; the lock's every pin is inside pyproject's ranges (test_stack_version)."""
    lock = (REPO_ROOT / "requirements" / "lock-cpu.txt").read_text()
    resolved_for = re.search(r"^# resolved-for: (\S+)$", lock, re.M).group(1)
    here = f"python{sys.version_info.major}.{sys.version_info.minor}-{sys.platform}-{__import__('platform').machine()}"
    venv = tmp_path / "venv"
    dry = subprocess.run(["make", "-n", "-C", str(REPO_ROOT), f"VENV={venv}", f"PYTHON={sys.executable}", "ORT=cpu",
                          f"GPU_WHEELS={tmp_path / 'wheels'}", "install"], capture_output=True, text=True, check=True).stdout
    # the recipe compares the lock's platform with the one the Makefile computes for this Python
    assert f'[ "{resolved_for}" = "{here}" ]' in dry
    assert f"-r {venv}/lock.txt" in dry and "install -q --no-deps -e ." in dry
