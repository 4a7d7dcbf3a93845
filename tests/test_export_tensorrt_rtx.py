"""TensorRT-RTX engines built ahead of time, here, without a GPU: every component of every reference
fixture is parsed and built (fp32 for all, fp16 for the AV fixture, which has all three kinds),
and each engine is checked as far as a machine without a GPU can: the plan exists with the size the
manifest records, the builder's layer listing is kept and agrees with the manifest, the manifest
names product, version, target compute capabilities and shapes, and the runtime refuses to load
the engines here, saying why. Running them (deserialize, execute, parity against torch) needs a GPU
of a target capability: tests/test_export_tensorrt.py, marked gpu.

Skips cleanly where TensorRT-RTX is not importable (pip extra vl2[tensorrt-rtx]).
"""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
import torch

from vl2cli.exporting.tensorrt_build import TENSORRT_RTX, installed_product

RTX = installed_product(TENSORRT_RTX)
pytestmark = pytest.mark.skipif(RTX is None, reason="TensorRT-RTX is not installed (pip extra vl2[tensorrt-rtx])")

from export_helpers import exported  # noqa: E402
from reference_fixtures import fixture_names  # noqa: E402

from vl2cli.errors import EngineMismatchError, ExportError  # noqa: E402
from vl2cli.exporting.components import AUDIO_ENCODER, CONNECTOR, VISION_TOWER, component_specs, validation_inputs  # noqa: E402
from vl2cli.exporting.discovery import ExportLocator  # noqa: E402
from vl2cli.exporting.manifest import KIND_TENSORRT, Manifest, sha256_file  # noqa: E402
from vl2cli.exporting.onnx_precision import FP32_OPS, reduce_precision  # noqa: E402
from vl2cli.exporting.pipeline import engine_profile, engines_from_export, export_model  # noqa: E402
from vl2cli.exporting.tensorrt_build import parse_layer_listing, rtx_compute_capabilities, rtx_default_targets  # noqa: E402
from vl2cli.runtime.selection import choose_encoder_backend  # noqa: E402

FIXTURES = fixture_names()
AV_FIXTURES = [n for n in FIXTURES if n.endswith("-av")][:1]
MAX_BATCH = 2
_built: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vl2-rtx")


def _engines(name: str, precision: str, root: Path):
    """(model, report) of the engines of one fixture in one precision, built once per module."""
    key = (name, precision)
    if key not in _built:
        model, onnx_report = exported(name, root)
        assert onnx_report.ok, onnx_report.lines()
        report = engines_from_export(model, root / "export", engine_dir=root / "engines", precision=precision, max_batch=MAX_BATCH)
        _built[key] = (model, report)
    return _built[key]


def _cases():
    cases = [(name, "fp32") for name in FIXTURES]
    cases += [(name, "fp16") for name in AV_FIXTURES]
    return cases


@pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
@pytest.mark.parametrize(("name", "precision"), _cases())
def test_every_component_parses_and_builds_for_every_target_without_a_gpu(name, precision, root):
    model, report = _engines(name, precision, root)
    specs = component_specs(model)
    assert report.ok, report.lines()
    manifest = Manifest.load(report.engine_folder)
    targets = list(rtx_default_targets(precision))
    assert manifest.kind == KIND_TENSORRT and manifest.tensorrt_product == TENSORRT_RTX
    assert manifest.tensorrt_version == RTX.version and manifest.compute_capabilities == targets
    assert manifest.precision == precision and set(manifest.components) == set(specs)
    assert report.engine_folder.name == f"sm{'_'.join(t.replace('.', '') for t in targets)}-rtx{RTX.version}-{precision}"
    for component, spec in specs.items():
        entry = manifest.components[component]
        plan = report.engine_folder / entry.file
        assert plan.is_file() and plan.stat().st_size == entry.size_bytes > 0
        assert entry.sha256 == sha256_file(plan)
        assert entry.input_shape == ["batch", *spec.item_shape]  # static but for the batch
        assert entry.profile == engine_profile(spec, MAX_BATCH, model.num_frames)
        assert entry.graph_precision == precision
        if torch.cuda.is_available() and manifest.gpu_name:
            assert entry.parity["passed"]  # a GPU of a target capability checked it
        else:
            assert entry.parity == {} and "not run" in entry.checked
        # the builder's own layer listing: kept beside the plan, summarised in the manifest
        listing = (report.engine_folder / f"{component}.layers.txt").read_text()
        layers = parse_layer_listing(listing)
        assert layers and sum(entry.layer_types.values()) == len(layers)
        assert "gemm" in entry.layer_types or "correlation" in entry.layer_types  # matmuls / convolutions
    assert not list(report.engine_folder.glob("*.partial*")), "no half-written files are left behind"


@pytest.mark.skipif(not AV_FIXTURES, reason="no AV reference fixture")
def test_fp16_engines_are_built_from_a_checked_fp16_graph(root):
    name = AV_FIXTURES[0]
    _, fp32 = _engines(name, "fp32", root)
    _, fp16 = _engines(name, "fp16", root)
    manifest32, manifest16 = Manifest.load(fp32.engine_folder), Manifest.load(fp16.engine_folder)
    for component, entry in manifest16.components.items():
        assert entry.graph_parity["passed"] and entry.graph_parity["precision"] == "fp16"
        assert entry.graph_parity["cosine"] >= 0.999
        assert entry.onnx_sha256 == manifest32.components[component].onnx_sha256  # both from the same fp32 export
    # the audio encoder is mostly weights: halved dtypes show in the plan's size
    assert manifest16.components[AUDIO_ENCODER].size_bytes < manifest32.components[AUDIO_ENCODER].size_bytes
    assert "7.5" in manifest16.compute_capabilities and "7.5" not in manifest32.compute_capabilities


@pytest.mark.skipif(not AV_FIXTURES, reason="no AV reference fixture")
def test_the_fp16_graph_keeps_fp32_io_and_fp32_islands(root, tmp_path):
    model, report = exported(AV_FIXTURES[0], root)
    source = report.export_folder / "connector.onnx"
    target = reduce_precision(source, tmp_path / "connector.fp16.onnx", "fp16")
    graph = onnx.load(str(target)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {t.data_type for t in graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)} >= {onnx.TensorProto.FLOAT16}
    island_ops = [n for n in graph.node if n.op_type in FP32_OPS]
    assert island_ops, "the STC connector has LayerNorm and exact GELU"
    producers = {out: n for n in graph.node for out in n.output}
    for node in island_ops:
        cast = producers[node.input[0]]
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT
    spec = component_specs(model)[CONNECTOR]
    (x,) = validation_inputs(model, spec, (2,), seed=3)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {spec.input_name: x.numpy()})
    expected = model.torch_encoders.connect(x)
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(got).double().flatten(), expected.double().flatten(), dim=0)
    assert got.dtype.name == "float32" and cosine.item() >= 0.999


@pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
def test_the_runtime_refuses_engines_it_cannot_run_here_and_falls_back(root, tmp_path, caplog):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: whether it runs the engines is tests/test_export_tensorrt.py's question")
    name = FIXTURES[0]
    model, _ = _engines(name, "fp32", root)
    (usable, *_) = ExportLocator(model, root / "export", root / "engines").engine_exports()
    assert not usable.files
    assert all("no CUDA GPU is usable here" in why for why in usable.refused.values())
    with pytest.raises(EngineMismatchError, match="TensorRT engines need the model on a CUDA GPU"):
        choose_encoder_backend(model.torch_encoders, "tensorrt", model=model, export_dir=root / "export", engine_dir=root / "engines")
    caplog.set_level("INFO", logger="vl2cli.runtime.selection")
    chosen = choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=root / "export", engine_dir=root / "engines")
    assert chosen.name == "onnxruntime"
    alone = choose_encoder_backend(model.torch_encoders, "auto", model=model, export_dir=tmp_path, engine_dir=root / "engines")
    assert alone is model.torch_encoders and "not tensorrt: TensorRT engines need the model on a CUDA GPU" in caplog.text


@pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
def test_targets_are_chosen_or_refused_clearly(root, tmp_path):
    model, _ = exported(FIXTURES[0], root)
    one = engines_from_export(model, root / "export", engine_dir=tmp_path, precision="fp16", components=[CONNECTOR],
                        max_batch=MAX_BATCH, targets=["8.9"])
    assert one.ok and Manifest.load(one.engine_folder).compute_capabilities == ["8.9"]
    assert one.engine_folder.name == f"sm89-rtx{RTX.version}-fp16"
    two = engines_from_export(model, root / "export", engine_dir=tmp_path, precision="fp16", components=[VISION_TOWER],
                              max_batch=MAX_BATCH, targets=["8.9"])
    assert two.engine_folder == one.engine_folder
    assert set(Manifest.load(two.engine_folder).components) == {CONNECTOR, VISION_TOWER}, "the earlier engine is kept"
    assert "9.0" not in rtx_compute_capabilities()
    with pytest.raises(ExportError, match="cannot build for compute capability 9.0.*full TensorRT"):
        engines_from_export(model, root / "export", engine_dir=tmp_path, targets=["9.0"])
    with pytest.raises(ExportError, match="fp32 engines for compute capability 7.5"):
        engines_from_export(model, root / "export", engine_dir=tmp_path, precision="fp32", targets=["7.5"])


@pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
def test_bf16_is_refused_before_anything_is_written(root, tmp_path):
    from vl2cli.exporting.tensorrt_build import TENSORRT

    if installed_product(TENSORRT) is not None and torch.cuda.is_available():
        pytest.skip("full TensorRT with a GPU builds bf16 engines")
    model, _ = exported(FIXTURES[0], root)
    with pytest.raises(ExportError, match="bf16.*TensorRT-RTX.*fp32 or fp16") as refused:
        export_model(model, tmp_path / "export", engine_dir=tmp_path / "engines", precision="bf16", build_engines=True)
    assert "nothing was exported" in str(refused.value)
    assert not (tmp_path / "export").exists() and not (tmp_path / "engines").exists()
    auto = export_model(model, tmp_path / "export", engine_dir=tmp_path / "engines", components=[VISION_TOWER], precision="bf16")
    assert auto.ok and auto.engine_folder is None and "bf16" in auto.engine_note


def test_manifest_records_what_a_reader_needs(root):
    if not FIXTURES:
        pytest.skip("no reference fixtures found")
    _, report = _engines(FIXTURES[0], "fp32", root)
    data = json.loads((report.engine_folder / "manifest.json").read_text())
    for key in ("tensorrt_product", "tensorrt_version", "compute_capabilities", "precision", "format"):
        assert data[key]
    for entry in data["components"].values():
        for key in ("input_shape", "output_shape", "profile", "size_bytes", "layer_types", "checked", "onnx_sha256"):
            assert entry[key]


def test_on_hopper_with_only_tensorrt_rtx_export_and_runtime_say_what_to_use(monkeypatch, tmp_path):
    """An H100/H200 (9.0) here: TensorRT-RTX still builds for its targets, and the export note and the
    runtime's reason say plainly that none of it runs on this GPU and what does (no GPU needed to check)."""
    from types import SimpleNamespace

    from vl2cli.exporting import pipeline, tensorrt_build
    from vl2cli.exporting.tensorrt_build import choose_builder
    from vl2cli.runtime import selection

    monkeypatch.setattr(tensorrt_build, "installed_products", lambda: {TENSORRT_RTX: RTX})
    choice, reason = choose_builder("9.0", "fp16")
    assert reason is None and choice.local_gpu is None and "9.0" not in choice.targets
    hopper_model = SimpleNamespace(device="cuda", model_id="org/model")
    monkeypatch.setattr(pipeline, "gpu_compute_capability", lambda device=None: "9.0")
    note = pipeline._engine_note(hopper_model, choice)
    assert "this GPU (compute capability 9.0) runs none of these engines" in note and "full TensorRT" in note
    monkeypatch.setattr(selection.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tensorrt_build, "gpu_compute_capability", lambda device=None: "9.0")
    no_engines = SimpleNamespace(engine_exports=lambda: [], engine_model_folder=tmp_path)
    backend, why = selection._try_tensorrt(None, hopper_model, no_engines)
    assert backend is None
    assert "never run on compute capability 9.0 (H100/H200)" in why and "NVIDIA's index" in why and "onnxruntime or torch" in why
