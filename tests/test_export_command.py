"""`vl2 export` as a command: it resolves the model as the run commands do, and it refuses before writing.

In-process (typer's runner): what is tested is the command's decisions, not a fresh interpreter.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reference_fixtures import reference_root
from test_cli import AV_FIXTURE, vl2_in_process as vl2
from vl2cli.errors import ExportError
from vl2cli.commands.exit_codes import EXIT_FATAL, EXIT_OK

pytestmark = pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir(), reason=f"reference fixture {AV_FIXTURE} not found")
#: The quickest component of the AV fixture to export (a small MLP), for tests about the command itself.
QUICK_COMPONENT = "connector"


def _checkpoint() -> str:
    return str(reference_root() / AV_FIXTURE / "checkpoint")


def _manifests(root: Path) -> list[Path]:
    return sorted(root.rglob("manifest.json"))


def test_the_model_comes_from_vl2_model_or_the_config_file(tmp_path: Path) -> None:
    by_env = vl2("export", "--engines", "no", "--component", QUICK_COMPONENT, "--export-dir", str(tmp_path / "a"),
                 VL2_MODEL=_checkpoint())
    assert by_env.returncode == EXIT_OK, by_env.stderr
    config = tmp_path / "vl2.yaml"
    config.write_text(f"model: {json.dumps(_checkpoint())}\n")
    by_config = vl2("export", "--engines", "no", "--component", QUICK_COMPONENT, "--config", str(config),
                    "--export-dir", str(tmp_path / "b"))
    assert by_config.returncode == EXIT_OK, by_config.stderr
    for root in (tmp_path / "a", tmp_path / "b"):
        (manifest,) = _manifests(root)
        assert list(json.loads(manifest.read_text())["components"]) == [QUICK_COMPONENT]


def test_engines_yes_without_tensorrt_refuses_before_writing_anything(tmp_path: Path) -> None:
    import torch

    from vl2cli.exporting.tensorrt_build import choose_builder, gpu_compute_capability

    choice, _ = choose_builder(gpu_compute_capability() if torch.cuda.is_available() else None, "fp16")
    if choice is not None:
        pytest.skip(f"{choice.product.describe()} is here: engines can be built")
    export_dir = tmp_path / "export"
    run = vl2("export", "--model", _checkpoint(), "--engines", "yes", "--export-dir", str(export_dir))
    assert run.returncode == EXIT_FATAL
    assert "cannot build TensorRT engines" in run.stderr and "nothing was exported" in run.stderr
    assert not export_dir.exists() or not any(export_dir.rglob("*")), "nothing may be written or rewritten"


def test_engines_yes_that_cannot_be_built_refuses_before_writing_anything(tmp_path: Path) -> None:
    """Where TensorRT-RTX is the builder: a precision it cannot build is refused before any file is written."""
    from vl2cli.exporting.tensorrt_build import TENSORRT, TENSORRT_RTX, installed_product

    if installed_product(TENSORRT_RTX) is None or installed_product(TENSORRT) is not None:
        pytest.skip("needs TensorRT-RTX as the only TensorRT product")
    export_dir = tmp_path / "export"
    run = vl2("export", "--model", _checkpoint(), "--engines", "yes", "--precision", "bf16", "--export-dir", str(export_dir))
    assert run.returncode == EXIT_FATAL
    assert "cannot build TensorRT engines" in run.stderr and "bf16" in run.stderr and "nothing was exported" in run.stderr
    assert not export_dir.exists() or not any(export_dir.rglob("*"))
    hopper = vl2("export", "--model", _checkpoint(), "--engines", "yes", "--gpu-target", "9.0", "--export-dir", str(export_dir))
    assert hopper.returncode == EXIT_FATAL and "full TensorRT" in hopper.stderr


def test_an_export_where_every_component_fails_is_fatal_and_writes_no_manifest(tmp_path: Path, monkeypatch) -> None:
    """Every component failing its parity gate (simulated: the gate's verdict is what is under test here,
    not how it is reached) must not leave an empty manifest behind and exit 1 as if some had worked."""
    from vl2cli.exporting import pipeline

    def gate_fails(model, spec, folder, weights):
        raise ExportError(f"{spec.name}: the ONNX graph differs from PyTorch beyond the tolerance")

    monkeypatch.setattr(pipeline, "_export_one", gate_fails)
    export_dir = tmp_path / "export"
    run = vl2("export", "--model", _checkpoint(), "--engines", "no", "--export-dir", str(export_dir))
    assert run.returncode == EXIT_FATAL
    assert "no component could be exported" in run.stderr
    assert _manifests(export_dir) == []
