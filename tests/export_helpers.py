"""Shared by the export tests: one export per reference fixture per test session (it takes seconds)."""
from __future__ import annotations

from pathlib import Path

import pytest

from reference_fixtures import load_fixture_model

_exports: dict[tuple[str, Path], object] = {}


def fixture_model(name: str):
    """The fixture model through the shared loader (cached), outside a function-scoped monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        return load_fixture_model(patch, name)


def exported(name: str, root: Path):
    """(model, report) of `export_model` for a fixture into `root/export` (ONNX only), done once."""
    from vl2cli.exporting.pipeline import export_model

    key = (name, root)
    if key not in _exports:
        model = fixture_model(name)
        _exports[key] = (model, export_model(model, root / "export", engine_dir=root / "engines", build_engines=False))
    return _exports[key]
