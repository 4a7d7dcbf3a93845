"""ONNX export on the tiny reference fixtures: per-component parity with PyTorch at batch sizes 1-3,
the manifest, the onnxruntime backend (same greedy tokens as torch), and refusal of edited or
foreign graphs. One export per fixture for the whole module (a module-scoped folder)."""
from __future__ import annotations

import shutil

import onnxruntime as ort
import pytest
import torch

from export_helpers import exported
from reference_fixtures import case_input, case_instructions, fixture_names, load_reference, use_fixture_hub

from vl2cli.errors import EngineMismatchError
from vl2cli.exporting.components import AUDIO_ENCODER, CONNECTOR, VISION_TOWER, component_specs, validation_inputs
from vl2cli.exporting.locations import model_slug
from vl2cli.exporting.manifest import Manifest, weights_sha256
from vl2cli.runtime.onnxruntime_backend import OnnxRuntimeEncoders
from vl2cli.runtime.selection import choose_encoder_backend

ATOL = 1e-4
FIXTURES = fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")


@pytest.fixture(scope="module")
def export_root(tmp_path_factory):
    return tmp_path_factory.mktemp("vl2-export")


def _torch_call(model, component):
    encoders = model.torch_encoders
    return {VISION_TOWER: encoders.encode_frames, CONNECTOR: encoders.connect, AUDIO_ENCODER: encoders.encode_audio}[component]


@pytest.mark.parametrize("name", FIXTURES)
def test_every_component_is_exported_validated_and_manifested(name, export_root):
    model, report = exported(name, export_root)
    specs = component_specs(model)
    assert report.ok, report.lines()
    assert [c.name for c in report.components] == list(specs)
    manifest = Manifest.load(report.export_folder)
    assert manifest.kind == "onnx" and manifest.opset >= 17 and manifest.model_id == model.model_id
    for name_, spec in specs.items():
        entry = manifest.components[name_]
        assert (report.export_folder / entry.file).is_file()
        assert entry.weights_sha256 == weights_sha256(model.folder, spec.weight_prefixes)
        assert entry.parity["passed"] and entry.parity["batch_sizes"] == [1, 2, 3]
        assert entry.input_shape[0] == "batch"
    assert not list(report.export_folder.glob("*.partial*")), "no half-written files are left behind"


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("component", [VISION_TOWER, CONNECTOR, AUDIO_ENCODER])
def test_onnx_graph_matches_pytorch_at_batch_sizes_1_2_3(name, component, export_root):
    model, report = exported(name, export_root)
    specs = component_specs(model)
    if component not in specs:
        pytest.skip(f"{name} has no {component}")
    session = ort.InferenceSession(str(report.export_folder / f"{component}.onnx"), providers=["CPUExecutionProvider"])
    # another seed than the export's own gate, so this is not the gate re-run on its own inputs
    for batch in validation_inputs(model, specs[component], (1, 2, 3), seed=1234):
        expected = _torch_call(model, component)(batch)
        (got,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
        assert got.shape == tuple(expected.shape)
        assert (torch.from_numpy(got) - expected).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", FIXTURES)
def test_onnxruntime_backend_reproduces_upstream_goldens_and_torch_tokens(name, export_root):
    model, report = exported(name, export_root)
    fixture = load_reference(name)
    backend = choose_encoder_backend(model.torch_encoders, "onnxruntime", model=model, export_dir=export_root / "export",
                                     engine_dir=export_root / "engines")
    assert isinstance(backend, OnnxRuntimeEncoders)
    assert set(backend.runners) == set(component_specs(model))
    cases = [c for c in fixture.cases() if c != "text"][:3]
    try:
        for case_name in cases:
            case = fixture.cases()[case_name]
            count = len(case.get("images_arg") or [None])
            items = [case_input(fixture, case, i) for i in range(count)]
            instructions = case_instructions(case)
            max_new = case["generate_kwargs"]["max_new_tokens"]
            model.encoders = model.torch_encoders
            with_torch = model.generate(items, instructions, max_new_tokens=max_new)
            model.encoders = backend
            with_onnx = model.generate(items, instructions, max_new_tokens=max_new)
            assert [g.token_ids for g in with_onnx] == [g.token_ids for g in with_torch], case_name
            for row, generation in enumerate(with_onnx):
                assert generation.token_ids == case["generated_ids"][row][: len(generation.token_ids)], case_name
    finally:
        model.encoders = model.torch_encoders


@pytest.mark.parametrize("name", FIXTURES[:1])
def test_load_model_attaches_the_matching_export(name, export_root, monkeypatch):
    """The library path: the model core loads with torch encoders, `load_model` swaps in the export."""
    import vl2cli

    model, _ = exported(name, export_root)
    use_fixture_hub(monkeypatch, load_reference(name))
    loaded = vl2cli.load_model(str(load_reference(name).checkpoint), device="cpu", dtype="fp32",
                               encoder_backend="onnxruntime", export_dir=str(export_root / "export"),
                               engine_dir=str(export_root / "engines"))
    assert loaded.model_id == model.model_id
    assert isinstance(loaded.encoders, OnnxRuntimeEncoders)
    assert set(loaded.encoders.runners) == set(component_specs(loaded))
    assert loaded.encoders.torch_encoders is loaded.torch_encoders


@pytest.mark.parametrize("name", FIXTURES)
def test_audio_graph_keeps_upstreams_attention_arithmetic(name):
    """The torch backend runs BEATs through sdpa; the exported copy is switched to the eager path (whose
    max-subtraction guards fp16 engines), and the loaded model is left as it was."""
    from export_helpers import fixture_model
    from vl2cli.exporting.components import export_module

    model = fixture_model(name)
    if AUDIO_ENCODER not in component_specs(model):
        pytest.skip(f"{name} has no {AUDIO_ENCODER}")
    assert export_module(model, AUDIO_ENCODER).audio_tower.attn_implementation == "eager"
    assert model.torch_encoders.audio_tower.attn_implementation == "sdpa"


def _copy_export(report, root, slug):
    target = root / "export" / slug
    shutil.copytree(report.export_folder, target)
    return target


@pytest.mark.parametrize("name", FIXTURES[:1])
def test_edited_onnx_graph_is_refused_and_its_component_stays_on_torch(name, export_root, tmp_path, caplog):
    model, report = exported(name, export_root)
    folder = _copy_export(report, tmp_path, model_slug(model.model_id))
    with open(folder / "vision_tower.onnx", "ab") as graph:
        graph.write(b"\0")
    backend = choose_encoder_backend(model.torch_encoders, "onnxruntime", model=model, export_dir=tmp_path / "export")
    assert VISION_TOWER not in backend.runners and CONNECTOR in backend.runners
    assert "modified after export" in backend.details[VISION_TOWER]
    assert "modified after export" in caplog.text
    for entry in Manifest.load(folder).components.values():
        with open(folder / entry.file, "ab") as graph:
            graph.write(b"\0")
    with pytest.raises(EngineMismatchError, match="modified after export"):
        choose_encoder_backend(model.torch_encoders, "onnxruntime", model=model, export_dir=tmp_path / "export")
    assert choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=tmp_path / "export",
                                  engine_dir=tmp_path / "engines") is model.torch_encoders


@pytest.mark.skipif(len(FIXTURES) < 2, reason="needs two fixture models")
def test_export_of_another_model_is_refused(export_root, tmp_path):
    _, report_a = exported(FIXTURES[0], export_root)
    model_b, _ = exported(FIXTURES[1], export_root)
    _copy_export(report_a, tmp_path, model_slug(model_b.model_id))
    with pytest.raises(EngineMismatchError, match="other weights"):
        choose_encoder_backend(model_b.torch_encoders, "onnxruntime", model=model_b, export_dir=tmp_path / "export")


@pytest.mark.parametrize("name", FIXTURES[:1])
def test_auto_prefers_a_matching_export_on_cpu_and_says_why(name, export_root, tmp_path, caplog):
    model, _ = exported(name, export_root)
    caplog.set_level("INFO", logger="vl2cli.runtime.selection")
    chosen = choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=export_root / "export",
                                    engine_dir=tmp_path / "engines")
    assert isinstance(chosen, OnnxRuntimeEncoders)
    assert "encoder backend: onnxruntime" in caplog.text and "CPUExecutionProvider" in caplog.text
    caplog.clear()
    assert choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=tmp_path / "none",
                                  engine_dir=tmp_path / "engines") is model.torch_encoders
    assert "encoder backend: torch" in caplog.text and "no export in" in caplog.text
