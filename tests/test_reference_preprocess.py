"""The reference fixtures' image-processor check: the checkpoint's own tower processor config, resolved
through the hub cache by the model loader, drives vl2's preprocessing to upstream's pixels."""
from __future__ import annotations

import pytest

from reference_fixtures import fixture_names, load_fixture_model, load_reference
from vl2cli.media.image import ImageProcessorSpec, preprocess_frames

FIXTURES = fixture_names()


@pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
@pytest.mark.parametrize("name", FIXTURES)
def test_tower_processor_reproduces_upstream_pixels(monkeypatch, name):
    fixture = load_reference(name)
    model = load_fixture_model(monkeypatch, name)
    spec = ImageProcessorSpec.from_config(model.image_processor_config)
    raw = fixture.tensors["preprocess.raw_image_uint8"].numpy()
    pixels = preprocess_frames(raw[None], spec)
    expected = fixture.tensors["preprocess.pixel_values"]
    assert pixels.shape == expected.shape
    assert (pixels - expected).abs().max().item() <= 1e-5
