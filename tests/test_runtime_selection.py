"""`--encoder-backend` choice on the fixture models: explicit choices that cannot be honoured are
clear errors, engines for another GPU are refused with their reason, and a failing parity gate
keeps a component out of the export."""
from __future__ import annotations

import importlib.util

import pytest

from export_helpers import fixture_model
from reference_fixtures import fixture_names, load_reference, use_fixture_hub

from vl2cli.errors import EngineMismatchError, ExportError, Vl2Error
from vl2cli.exporting import validate
from vl2cli.exporting.components import CONNECTOR, VISION_TOWER, component_specs
from vl2cli.exporting.discovery import ExportLocator
from vl2cli.exporting.locations import engine_folder_name, model_slug
from vl2cli.exporting.manifest import KIND_TENSORRT, BatchProfile, ComponentEntry, Manifest, sha256_file, weights_sha256
from vl2cli.exporting.pipeline import export_model
from vl2cli.exporting.tensorrt_build import TENSORRT_RTX, build_engine, installed_product, installed_products, tensorrt_version
from vl2cli.model.encoders import TorchEncoders
from vl2cli.model.videollama2 import VideoLlama2
from vl2cli.runtime.selection import attach_encoder_backend, choose_encoder_backend

FIXTURES = fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
#: Any TensorRT product: full TensorRT, or TensorRT-RTX (which builds engines without a GPU).
HAS_ANY_TENSORRT = bool(installed_products())


def test_unknown_backend_name_is_a_user_error():
    model = fixture_model(FIXTURES[0])
    with pytest.raises(Vl2Error, match="choose one of auto, torch, onnxruntime, tensorrt"):
        choose_encoder_backend(model.torch_encoders, "openvino", model=model)


def test_torch_when_asked_for_and_auto_without_any_export(tmp_path, caplog):
    model = fixture_model(FIXTURES[0])
    caplog.set_level("INFO", logger="vl2cli.runtime.selection")
    assert choose_encoder_backend(model.torch_encoders, "torch", model=model) is model.torch_encoders
    chosen = choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=tmp_path / "x", engine_dir=tmp_path / "e")
    assert chosen is model.torch_encoders
    assert "not tensorrt:" in caplog.text and "not onnxruntime: no export in" in caplog.text


def test_attach_sets_the_models_encoders_and_keeps_the_torch_ones(tmp_path):
    model = fixture_model(FIXTURES[0])
    assert model.encoders is model.torch_encoders, "the model core always loads with torch encoders"
    with pytest.raises(EngineMismatchError):
        attach_encoder_backend(model, "onnxruntime", export_dir=tmp_path / "none")
    assert model.encoders is model.torch_encoders, "a refused backend leaves the encoders as they were"
    chosen = attach_encoder_backend(model, "auto", export_dir=tmp_path / "x", engine_dir=tmp_path / "e")
    assert chosen is model.encoders is model.torch_encoders


def test_load_model_composes_the_backend_above_the_model_core(monkeypatch, tmp_path):
    import vl2cli

    fixture = load_reference(FIXTURES[0])
    use_fixture_hub(monkeypatch, fixture)
    model = vl2cli.load_model(str(fixture.checkpoint), device="cpu", dtype="fp32", encoder_backend="torch",
                              export_dir=str(tmp_path / "x"), engine_dir=str(tmp_path / "e"))
    assert isinstance(model.torch_encoders, TorchEncoders) and model.encoders is model.torch_encoders


def test_load_model_refuses_an_unknown_backend_before_loading_weights(monkeypatch):
    import vl2cli

    def must_not_load(*args, **kwargs):
        raise AssertionError("weights were loaded before the backend name was checked")

    monkeypatch.setattr(VideoLlama2, "from_pretrained", must_not_load)
    with pytest.raises(Vl2Error, match="choose one of"):
        vl2cli.load_model("any/model", encoder_backend="openvino")


def test_explicit_onnxruntime_without_export_says_how_to_make_one(tmp_path):
    model = fixture_model(FIXTURES[0])
    with pytest.raises(EngineMismatchError, match="vl2 export --model"):
        choose_encoder_backend(model.torch_encoders, "onnxruntime", model=model, export_dir=tmp_path)


@pytest.mark.skipif(HAS_ANY_TENSORRT, reason="checks the messages where no TensorRT product is installed")
def test_explicit_tensorrt_without_tensorrt_is_refused_clearly(tmp_path):
    model = fixture_model(FIXTURES[0])
    assert tensorrt_version() is None
    with pytest.raises(EngineMismatchError, match="neither TensorRT nor TensorRT-RTX is installed"):
        choose_encoder_backend(model.torch_encoders, "tensorrt", model=model, engine_dir=tmp_path)
    with pytest.raises(ExportError, match="TensorRT is not installed"):
        build_engine(tmp_path / "g.onnx", tmp_path / "g.plan", input_name="x", item_shape=(1,),
                     profile=BatchProfile.up_to(2), precision="fp16", timing_cache=tmp_path / "cache")
    with pytest.raises(ExportError, match="cannot build TensorRT engines"):
        export_model(model, tmp_path / "export", engine_dir=tmp_path / "engines", components=[VISION_TOWER], build_engines=True)


def test_engine_folder_for_another_gpu_is_refused_with_its_reason(tmp_path):
    model = fixture_model(FIXTURES[0])
    spec = component_specs(model)[VISION_TOWER]
    rtx = installed_product(TENSORRT_RTX)
    version = rtx.version if rtx else "0.0.0"
    folder = tmp_path / model_slug(model.model_id) / engine_folder_name("0.1", version, "fp16", TENSORRT_RTX)
    folder.mkdir(parents=True)
    plan = folder / "vision_tower.plan"
    plan.write_bytes(b"not a real engine: it must never be deserialized")
    entry = ComponentEntry(plan.name, sha256_file(plan), weights_sha256(model.folder, spec.weight_prefixes), spec.input_name,
                           spec.output_name, spec.symbolic_input_shape(), ["batch"], profile=BatchProfile.up_to(4))
    Manifest(KIND_TENSORRT, model.model_id, None, {VISION_TOWER: entry}, precision="fp16", tensorrt_product=TENSORRT_RTX,
             tensorrt_version=version, compute_capabilities=["0.1"]).save(folder)
    (usable,) = ExportLocator(model, tmp_path / "export", tmp_path).engine_exports()
    assert not usable.files
    if rtx is None:
        assert "TensorRT-RTX 0.0.0, which is not installed here" in usable.refused[VISION_TOWER]
    else:  # the product matches: the GPU (none here, or one of another capability) is the reason
        assert "compute capability 0.1" in usable.refused[VISION_TOWER]


def test_component_failing_its_parity_gate_is_not_kept(tmp_path, monkeypatch):
    model = fixture_model(FIXTURES[0])
    kept = export_model(model, tmp_path, components=[CONNECTOR], build_engines=False)  # an earlier, good export
    assert kept.ok
    impossible = validate.ParityThreshold(min_cosine=1.5, max_abs_relative=0.0)
    monkeypatch.setitem(validate.THRESHOLDS, "fp32", impossible)
    report = export_model(model, tmp_path, components=[VISION_TOWER], build_engines=False)
    assert not report.ok
    (outcome,) = report.failed
    assert outcome.name == VISION_TOWER and "does not reproduce PyTorch" in outcome.error
    assert [p.name for p in report.export_folder.glob("*.onnx")] == ["connector.onnx"]  # no tower graph left
    assert list(Manifest.load(report.export_folder).components) == [CONNECTOR]  # the earlier export stays
    assert any("NOT EXPORTED" in line for line in report.lines())
