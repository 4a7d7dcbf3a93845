"""TensorRT engines on the tiny fixtures: build, parity gate, manifest, and the `auto` choice.
Runs only where `tensorrt` imports and a CUDA GPU is present; skips cleanly elsewhere."""
from __future__ import annotations

import pytest
import torch

tensorrt = pytest.importorskip("tensorrt")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT engines need a CUDA GPU"),
]

from reference_fixtures import fixture_names, load_reference, use_fixture_hub  # noqa: E402

from vl2cli.exporting.components import component_specs, validation_inputs  # noqa: E402
from vl2cli.exporting.manifest import Manifest  # noqa: E402
from vl2cli.exporting.pipeline import engine_profile, export_model  # noqa: E402
from vl2cli.runtime.selection import choose_encoder_backend  # noqa: E402
from vl2cli.runtime.tensorrt_backend import TensorRTEncoders  # noqa: E402

FIXTURES = fixture_names()


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", FIXTURES)
def test_engines_are_built_validated_and_chosen_by_auto(name, precision, tmp_path, monkeypatch):
    from vl2cli.model.videollama2 import VideoLlama2

    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda", dtype="fp32")
    report = export_model(model, tmp_path / "export", engine_dir=tmp_path / "engines", precision=precision, max_batch=2)
    assert report.ok, report.lines()
    manifest = Manifest.load(report.engine_folder)
    assert manifest.tensorrt_version == tensorrt.__version__ and manifest.precision == precision
    assert set(manifest.components) == set(component_specs(model))
    backend = choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=tmp_path / "export",
                                     engine_dir=tmp_path / "engines")
    assert isinstance(backend, TensorRTEncoders)
    spec = component_specs(model)["vision_tower"]
    above_profile = engine_profile(spec, 2, model.num_frames).max + 1  # exercises chunking
    (pixels,) = validation_inputs(model, spec, (above_profile,), seed=7, device="cuda")
    expected = model.torch_encoders.encode_frames(pixels)
    got = backend.encode_frames(pixels)
    tolerance = 1e-4 if precision == "fp32" else 2e-2 * max(1.0, expected.abs().max().item())
    assert (got.float() - expected.float()).abs().max().item() <= tolerance
