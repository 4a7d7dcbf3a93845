"""Engines on a GPU that runs them: build, parity gate against torch at export, manifest, the `auto`
choice, the engine inspector's layer listing, and a call above the batch profile (chunking), for each
installed TensorRT product whose engines this GPU runs: full TensorRT (any GPU it supports) and
TensorRT-RTX (compute capability 7.5 to 12.1, not Hopper's 9.0; built for all its targets, as
`vl2 export` does without a GPU, then deserialized and run here).

Marked gpu; skips cleanly without a CUDA GPU and such a product. Never run on the machines of this
project (no RTX-class GPU, no full TensorRT): see docs/export.md, "What has run where".
"""
from __future__ import annotations

import pytest
import torch

from vl2cli.exporting.tensorrt_build import (
    RTX_NO_FP32,
    TENSORRT,
    TENSORRT_RTX,
    gpu_compute_capability,
    installed_product,
    rtx_compute_capabilities,
)


def _runnable_products() -> list[str]:
    if not torch.cuda.is_available():
        return []
    cc = gpu_compute_capability()
    found = [TENSORRT] if installed_product(TENSORRT) else []
    if installed_product(TENSORRT_RTX) and cc in rtx_compute_capabilities():
        found.append(TENSORRT_RTX)
    return found


PRODUCTS = _runnable_products()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not PRODUCTS, reason=(
        "needs a CUDA GPU and a TensorRT product whose engines it runs (full TensorRT; or TensorRT-RTX "
        "on compute capability 7.5-12.1, never 9.0)")),
]

from reference_fixtures import fixture_names, load_reference, use_fixture_hub  # noqa: E402

from vl2cli.exporting import discovery, tensorrt_build  # noqa: E402
from vl2cli.exporting.components import component_specs, validation_inputs  # noqa: E402
from vl2cli.exporting.manifest import Manifest  # noqa: E402
from vl2cli.exporting.pipeline import engine_profile, export_model  # noqa: E402
from vl2cli.exporting.tensorrt_build import EngineRunner, parse_layer_listing  # noqa: E402
from vl2cli.runtime.selection import choose_encoder_backend  # noqa: E402
from vl2cli.runtime.tensorrt_backend import TensorRTEncoders  # noqa: E402

FIXTURES = fixture_names()


def _only(monkeypatch, product: str) -> None:
    """Build and load with this product alone, where both are installed."""
    chosen = {product: installed_product(product)}
    monkeypatch.setattr(tensorrt_build, "installed_products", lambda: dict(chosen))
    monkeypatch.setattr(discovery, "installed_products", lambda: dict(chosen))


@pytest.mark.parametrize("product", PRODUCTS or [TENSORRT])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", FIXTURES)
def test_engines_are_built_validated_and_chosen_by_auto(name, precision, product, tmp_path, monkeypatch):
    from vl2cli.model.videollama2 import VideoLlama2

    cc = gpu_compute_capability()
    if product == TENSORRT_RTX and precision == "fp32" and cc in RTX_NO_FP32:
        pytest.skip(f"TensorRT-RTX builds no fp32 engine for compute capability {cc}")
    _only(monkeypatch, product)
    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cuda", dtype="fp32")
    report = export_model(model, tmp_path / "export", engine_dir=tmp_path / "engines", precision=precision, max_batch=2,
                          build_engines=True)
    assert report.ok, report.lines()
    manifest = Manifest.load(report.engine_folder)
    assert manifest.tensorrt_product == product and manifest.tensorrt_version == installed_product(product).version
    assert manifest.precision == precision and cc in manifest.compute_capabilities and manifest.gpu_name
    assert set(manifest.components) == set(component_specs(model))
    for component, entry in manifest.components.items():
        assert entry.parity["passed"], (component, entry.parity)  # the gate ran on this GPU
        runner = EngineRunner(report.engine_folder / entry.file, max_batch=entry.profile.max, product=product)
        assert parse_layer_listing(runner.layer_listing()), f"{component}: the engine inspector lists no layer"
        del runner
    backend = choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=tmp_path / "export",
                                     engine_dir=tmp_path / "engines")
    assert isinstance(backend, TensorRTEncoders)
    spec = component_specs(model)["vision_tower"]
    above_profile = engine_profile(spec, 2, model.num_frames).max + 1  # exercises chunking
    (pixels,) = validation_inputs(model, spec, (above_profile,), seed=7, device="cuda")
    expected = model.torch_encoders.encode_frames(pixels)
    got = backend.encode_frames(pixels)
    tolerance = 1e-4 if precision == "fp32" else 2e-2
    assert (got.float() - expected.float()).abs().max().item() <= tolerance * max(1.0, expected.abs().max().item())
    features = expected[: model.num_frames].reshape(1, model.num_frames, *expected.shape[1:])
    reference = model.torch_encoders.connect(features)
    tokens = backend.connect(features)
    assert (tokens.float() - reference.float()).abs().max().item() <= tolerance * max(1.0, reference.abs().max().item())
    if product == TENSORRT_RTX:
        # as if built ahead of time on a machine without this GPU: checked against torch before first use
        for entry in manifest.components.values():
            entry.parity = {}
        manifest.save(report.engine_folder)
        rechecked = choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=tmp_path / "export",
                                           engine_dir=tmp_path / "engines")
        assert isinstance(rechecked, TensorRTEncoders)
        assert all("checked on this GPU" in rechecked.details[c] for c in manifest.components)
