"""Manifests, matching rules, batch profiles, precision choices and the parity gate, without
TensorRT: every refusal reason an engine or graph can get is produced here from real files, for
engines of full TensorRT and of TensorRT-RTX."""
from __future__ import annotations

import json

import pytest
import torch

from vl2cli.errors import EngineMismatchError, ExportError
from vl2cli.exporting.components import ComponentSpec
from vl2cli.exporting.locations import engine_folder_name, model_slug
from vl2cli.exporting.manifest import (
    KIND_ONNX,
    KIND_TENSORRT,
    BatchProfile,
    ComponentEntry,
    Manifest,
    RuntimeTarget,
    component_mismatch,
    sha256_file,
)
from vl2cli.exporting.pipeline import engine_profile
from vl2cli.exporting.tensorrt_build import (
    PINNED_FP32_LAYER_TYPES,
    TENSORRT_RTX,
    parse_layer_listing,
    precision_plan,
    timing_cache_path,
)
from vl2cli.exporting.validate import FP16_THRESHOLD, FP32_THRESHOLD, check_parity, compare

WEIGHTS = "a" * 64
ONNX_SHA = "b" * 64


def _engine_folder(tmp_path, **overrides) -> tuple[Manifest, RuntimeTarget]:
    plan = tmp_path / "vision_tower.plan"
    plan.write_bytes(b"serialized engine bytes")
    entry = ComponentEntry(
        file=plan.name, sha256=sha256_file(plan), weights_sha256=WEIGHTS, input_name="pixel_values", output_name="features",
        input_shape=["batch", 3, 28, 28], output_shape=["batch", 4, 32], onnx_sha256=ONNX_SHA, profile=BatchProfile(1, 8, 16),
    )
    manifest = Manifest(KIND_TENSORRT, "org/model", "abc123", {"vision_tower": entry}, precision="fp16",
                        tensorrt_product="tensorrt", tensorrt_version="10.13.0", compute_capabilities=["9.0"])
    target = RuntimeTarget("org/model", {"vision_tower": WEIGHTS}, compute_capability="9.0", products={"tensorrt": "10.13.0"})
    for key, value in overrides.items():
        setattr(target if hasattr(target, key) else manifest, key, value)
    return manifest, target


def test_matching_engine_is_accepted_and_survives_a_json_round_trip(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    manifest.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded == manifest
    assert loaded.components["vision_tower"].profile == BatchProfile(1, 8, 16)
    assert component_mismatch(loaded, tmp_path, "vision_tower", target, current_onnx_sha256=ONNX_SHA) is None


def test_engine_of_another_model_is_refused(tmp_path):
    manifest, _ = _engine_folder(tmp_path)
    other = RuntimeTarget("org/other", {"vision_tower": "c" * 64}, "9.0", {"tensorrt": "10.13.0"})
    reason = component_mismatch(manifest, tmp_path, "vision_tower", other)
    assert "other weights" in reason and "org/model@abc123" in reason and "org/other" in reason


def test_engine_for_another_gpu_architecture_is_refused(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    ampere = RuntimeTarget(target.model_id, target.weights_sha256, compute_capability="8.6", products=target.products)
    assert "compute capability 9.0, this GPU is 8.6" in component_mismatch(manifest, tmp_path, "vision_tower", ampere)
    no_gpu = RuntimeTarget(target.model_id, target.weights_sha256, products=target.products)
    assert "no CUDA GPU is usable here" in component_mismatch(manifest, tmp_path, "vision_tower", no_gpu)


def test_engine_from_another_tensorrt_version_is_refused(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    newer = RuntimeTarget(target.model_id, target.weights_sha256, compute_capability="9.0", products={"tensorrt": "10.14.1"})
    assert "TensorRT 10.13.0, this is TensorRT 10.14.1" in component_mismatch(manifest, tmp_path, "vision_tower", newer)
    absent = RuntimeTarget(target.model_id, target.weights_sha256, compute_capability="9.0", products={"tensorrt-rtx": "1.7.1.116"})
    assert "TensorRT 10.13.0, which is not installed here" in component_mismatch(manifest, tmp_path, "vision_tower", absent)


def _rtx_folder(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    manifest.tensorrt_product, manifest.tensorrt_version = "tensorrt-rtx", "1.7.1.116"
    manifest.compute_capabilities = ["8.0", "8.6", "8.9", "12.0"]
    return manifest, RuntimeTarget(target.model_id, target.weights_sha256, "8.9", {"tensorrt-rtx": "1.7.1.116"})


def test_rtx_engine_runs_on_any_of_its_targets_only(tmp_path):
    manifest, target = _rtx_folder(tmp_path)
    assert component_mismatch(manifest, tmp_path, "vision_tower", target, current_onnx_sha256=ONNX_SHA) is None
    blackwell = RuntimeTarget(target.model_id, target.weights_sha256, "12.0", target.products)
    assert component_mismatch(manifest, tmp_path, "vision_tower", blackwell) is None
    turing = RuntimeTarget(target.model_id, target.weights_sha256, "7.5", target.products)
    assert "compute capability 8.0, 8.6, 8.9, 12.0, this GPU is 7.5" in component_mismatch(manifest, tmp_path, "vision_tower", turing)
    full_only = RuntimeTarget(target.model_id, target.weights_sha256, "8.9", {"tensorrt": "10.13.0"})
    reason = component_mismatch(manifest, tmp_path, "vision_tower", full_only)
    assert "TensorRT-RTX 1.7.1.116, which is not installed here" in reason and "vl2[tensorrt-rtx]" in reason


def test_rtx_engine_on_hopper_says_what_to_use_instead(tmp_path):
    manifest, target = _rtx_folder(tmp_path)
    hopper = RuntimeTarget(target.model_id, target.weights_sha256, "9.0", target.products)
    reason = component_mismatch(manifest, tmp_path, "vision_tower", hopper)
    assert "this GPU is 9.0" in reason and "H100/H200" in reason
    assert "full TensorRT" in reason and "NVIDIA's package index" in reason and "onnxruntime/torch" in reason


def test_engine_built_from_an_edited_onnx_graph_is_refused(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    reason = component_mismatch(manifest, tmp_path, "vision_tower", target, current_onnx_sha256="d" * 64)
    assert "another ONNX graph" in reason


def test_modified_or_missing_plan_file_is_refused(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    (tmp_path / "vision_tower.plan").write_bytes(b"swapped")
    assert "modified after export" in component_mismatch(manifest, tmp_path, "vision_tower", target)
    (tmp_path / "vision_tower.plan").unlink()
    assert "missing" in component_mismatch(manifest, tmp_path, "vision_tower", target)


def test_absent_component_and_old_format_are_refused(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    assert "no connector" in component_mismatch(manifest, tmp_path, "connector", target)
    manifest.format = 0
    assert "format 0" in component_mismatch(manifest, tmp_path, "vision_tower", target)


def test_manifest_of_the_previous_format_is_refused_as_such(tmp_path):
    manifest, target = _engine_folder(tmp_path)
    data = json.loads(manifest.to_json())
    data["format"], data["compute_capability"] = 1, data.pop("compute_capabilities")[0]  # the format-1 layout
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    assert "format 1" in component_mismatch(Manifest.load(tmp_path), tmp_path, "vision_tower", target)


def test_onnx_manifest_ignores_gpu_and_tensorrt(tmp_path):
    manifest, _ = _engine_folder(tmp_path)
    manifest.kind = KIND_ONNX
    cpu_only = RuntimeTarget("org/model", {"vision_tower": WEIGHTS})
    assert component_mismatch(manifest, tmp_path, "vision_tower", cpu_only) is None


def test_unreadable_manifest_is_a_typed_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(EngineMismatchError, match="unreadable manifest"):
        Manifest.load(tmp_path)


def test_batch_profiles():
    assert BatchProfile.up_to(8) == BatchProfile(1, 4, 8)
    assert BatchProfile.up_to(1) == BatchProfile(1, 1, 1)
    with pytest.raises(ValueError):
        BatchProfile.up_to(0)
    tower = ComponentSpec("vision_tower", "pixel_values", "features", (), (3, 384, 384))
    connector = ComponentSpec("connector", "features", "tokens", (), (16, 729, 1152))
    assert engine_profile(tower, 8, 16) == BatchProfile(1, 32, 64)  # frames, capped per tower call
    assert engine_profile(tower, 2, 8) == BatchProfile(1, 8, 16)
    assert engine_profile(connector, 8, 16) == BatchProfile(1, 4, 8)


def test_precision_choices():
    assert precision_plan("fp32").builder_flags == () and precision_plan("fp32").pinned_layer_types == ()
    fp16 = precision_plan("fp16")
    assert fp16.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert set(PINNED_FP32_LAYER_TYPES) == {"NORMALIZATION", "SOFTMAX"} == set(fp16.pinned_layer_types)
    assert precision_plan("bf16").builder_flags[0] == "BF16"
    with pytest.raises(ExportError, match="int8"):
        precision_plan("int8")


def test_tensorrt_rtx_takes_precision_from_the_graph():
    """Strongly typed: no builder flag or pin in any precision (the fp32 islands are casts in the graph), no bf16."""
    for precision in ("fp32", "fp16"):
        plan = precision_plan(precision, TENSORRT_RTX)
        assert plan.builder_flags == () and plan.pinned_layer_types == () and plan.pinned_unary_ops == ()
    with pytest.raises(ExportError, match="bf16.*TensorRT-RTX.*fp32 or fp16.*full TensorRT"):
        precision_plan("bf16", TENSORRT_RTX)


def test_layer_listing_is_read_from_tensorrts_one_line_format():
    listing = (
        "Layers:\n"
        "Name: __myl_Move_myl0_1, LayerType: kgen, Inputs: [ { Name: pixel_values, Dimensions: [-1,3,56,56] }], TacticName: , StreamId: 0\n"
        "Name: /encoder/layers.0/q_proj/MatMul_myl0_4, LayerType: gemm, Inputs: [], Outputs: []\n"
    )
    assert parse_layer_listing(listing) == [("__myl_Move_myl0_1", "kgen"), ("/encoder/layers.0/q_proj/MatMul_myl0_4", "gemm")]
    assert parse_layer_listing("") == []


def test_parity_gate_passes_rounding_and_fails_real_drift():
    torch.manual_seed(0)
    reference = torch.nn.Linear(16, 16)
    inputs = [torch.randn(b, 16) for b in (1, 2, 3)]
    exact = check_parity(reference, lambda x: reference(x) + 1e-7, inputs, "fp32")
    assert exact.passed and exact.threshold == FP32_THRESHOLD and exact.batch_sizes == (1, 2, 3)
    drifted = check_parity(reference, lambda x: reference(x) + 1e-2, inputs, "fp32")
    assert not drifted.passed and "FAILED" in drifted.describe()
    assert check_parity(reference, lambda x: reference(x) + 1e-3, inputs, "fp16").threshold == FP16_THRESHOLD
    assert check_parity(reference, lambda x: reference(x) + 1e-3, inputs, "fp16").passed
    broken = check_parity(reference, lambda x: torch.full_like(reference(x), float("nan")), inputs, "fp16")
    assert not broken.passed


def test_compare_rejects_shape_changes():
    with pytest.raises(ValueError, match="shape"):
        compare(torch.zeros(2, 3), torch.zeros(3, 2))
    max_abs, cosine = compare(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert max_abs == 1.0 and cosine == pytest.approx(0.0)


def test_folder_names(tmp_path):
    assert model_slug("DAMO-NLP-SG/VideoLLaMA2.1-7B-AV") == "DAMO-NLP-SG--VideoLLaMA2.1-7B-AV"
    first, second = tmp_path / "a" / "checkpoint", tmp_path / "b" / "checkpoint"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    assert model_slug(str(first)).startswith("checkpoint-") and model_slug(str(first)) != model_slug(str(second))
    assert engine_folder_name("9.0", "10.13.0", "fp16") == "sm90-trt10.13.0-fp16"
    assert engine_folder_name(["8.6", "8.9", "12.0"], "1.7.1.116", "fp16", "tensorrt-rtx") == "sm86_89_120-rtx1.7.1.116-fp16"
    assert timing_cache_path(tmp_path, "8.6", "10.13.0").name == "sm86-trt10.13.0.timing-cache"


def test_the_builder_is_chosen_by_product_gpu_and_targets(monkeypatch):
    """Which product builds, for which GPUs, or why none can: decided from what is installed (faked here)."""
    from vl2cli.exporting import tensorrt_build
    from vl2cli.exporting.tensorrt_build import TENSORRT, EngineProduct, choose_builder

    full, rtx = EngineProduct(TENSORRT, "10.13.0"), EngineProduct(TENSORRT_RTX, "1.7.1.116")
    monkeypatch.setattr(tensorrt_build, "rtx_compute_capabilities", lambda module=None: ("7.5", "8.0", "8.6", "8.9", "12.0"))

    def installed(*products):
        monkeypatch.setattr(tensorrt_build, "installed_products", lambda: {p.name: p for p in products})

    installed()
    assert "neither TensorRT nor TensorRT-RTX" in choose_builder("8.9", "fp16")[1]
    installed(full)
    choice, _ = choose_builder("9.0", "bf16")
    assert choice.product == full and choice.targets == ("9.0",) and choice.local_gpu == "9.0"
    assert "no CUDA GPU is usable" in choose_builder(None, "fp16")[1]
    assert "only for the GPU here (compute capability 9.0), not for 8.9" in choose_builder("9.0", "fp16", ("8.9",))[1]
    installed(full, rtx)
    assert choose_builder("8.9", "fp16")[0].product == full  # a GPU here: full TensorRT builds for it
    choice, _ = choose_builder(None, "fp16")
    assert choice.product == rtx and choice.targets == ("7.5", "8.0", "8.6", "8.9", "12.0") and choice.local_gpu is None
    installed(rtx)
    assert choose_builder(None, "fp32")[0].targets == ("8.0", "8.6", "8.9", "12.0")  # no fp32 for Turing
    assert choose_builder("8.6", "fp16")[0].local_gpu == "8.6"
    assert choose_builder("9.0", "fp16")[0].local_gpu is None  # built for the others, not run here
    assert "bf16" in choose_builder(None, "bf16")[1]
    assert "Turing" in choose_builder(None, "fp32", ("7.5",))[1]
    assert "cannot build for compute capability 9.0" in choose_builder(None, "fp16", ("9.0",))[1]
