"""The stack the suite runs on is the one it was asked to run on (`make test-oldest` stages an older one).

Without this, a staging folder that silently failed to shadow the venv's transformers would make
`make test-oldest` a second run of the same tests on the same versions.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPECTED = os.environ.get("VL2_TEST_EXPECT_TRANSFORMERS")


@pytest.mark.skipif(not EXPECTED, reason="VL2_TEST_EXPECT_TRANSFORMERS not set (only make test-oldest sets it)")
def test_the_staged_transformers_is_the_one_imported() -> None:
    import transformers

    assert transformers.__version__ == EXPECTED, transformers.__file__


def test_the_oldest_stack_is_inside_the_declared_ranges() -> None:
    """requirements/oldest.txt names versions pyproject.toml admits (the GPU machine's stack)."""
    from packaging.requirements import Requirement

    declared = {Requirement(r).name.lower().replace("_", "-"): Requirement(r)
                for r in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    pins = [line.split("==") for line in (REPO_ROOT / "requirements" / "oldest.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    checked = 0
    for name, version in pins:
        if name in declared:
            assert declared[name].specifier.contains(version), f"{name}=={version} outside {declared[name]}"
            checked += 1
    assert checked >= 2  # transformers and huggingface-hub at least


def test_every_lock_pin_is_inside_the_declared_ranges() -> None:
    """What `make install` installs is what pyproject.toml says vl2 is tested on."""
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    declared = {}
    for r in [*project["dependencies"], *(x for extra in project["optional-dependencies"].values() for x in extra)]:
        requirement = Requirement(r)
        declared.setdefault(requirement.name.lower().replace("_", "-"), []).append(requirement)
    for lock in sorted((REPO_ROOT / "requirements").glob("lock-*.txt")):
        pins = dict(line.split("==") for line in lock.read_text().splitlines() if line and not line.startswith("#"))
        assert pins, lock
        for name, requirements in declared.items():
            if name not in pins:
                continue
            for requirement in requirements:
                assert requirement.specifier.contains(pins[name], prereleases=True), f"{lock.name}: {name}=={pins[name]} outside {requirement}"
