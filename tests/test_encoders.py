"""The torch encoders' speed settings on the CPU: compile policy and its failure handling, tower
chunking, channels-last STC, and (through dynamo with a CPU backend) that compiled encoders give the
eager numbers. The CUDA side (inductor, bf16, timings) is in test_gpu.py."""
from __future__ import annotations

import functools
import logging

import pytest
import torch
from torch import nn

from reference_fixtures import case_input, fixture_names, load_fixture_model, load_reference

from vl2cli.model.connector import build_video_connector
from vl2cli.model.encoders import (
    DEFAULT_FRAMES_PER_TOWER_CALL,
    MAX_FRAMES_PER_TOWER_CALL,
    TOWER_MEMORY_SHARE,
    EncoderCall,
    TorchEncoders,
    frames_for_budget,
    resolve_compile,
)
from vl2cli.model.vision_tower import TowerSpec, VisionTower

FIXTURES = fixture_names()
AV_FIXTURE = "siglip-qwen2-av"
#: Same maths, another schedule (chunking, layout, traced graphs): only fp32 rounding may differ.
SAME_MATHS_ATOL = 1e-5
GIB = 1024**3


class RecordingTower(nn.Module):
    """Stands in for a tower: doubles its input and records each call's batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x * self.scale


def test_compile_defaults_to_cuda_only_and_obeys_an_explicit_choice():
    assert resolve_compile(None, torch.device("cuda")) is True
    assert resolve_compile(None, torch.device("cpu")) is False
    assert resolve_compile(False, torch.device("cuda")) is False
    assert resolve_compile(True, torch.device("cpu")) is True


def test_frames_per_call_fit_the_budget_in_steps_of_the_cpu_chunk():
    per_frame = 1000
    assert frames_for_budget(0, per_frame) == DEFAULT_FRAMES_PER_TOWER_CALL  # never fewer than the CPU chunk
    assert frames_for_budget(300 * per_frame, per_frame) == 4 * DEFAULT_FRAMES_PER_TOWER_CALL  # 300 -> 256
    assert frames_for_budget(10**12, per_frame) == MAX_FRAMES_PER_TOWER_CALL
    with pytest.raises(ValueError):
        frames_for_budget(GIB, 0)


def test_full_size_siglip_estimate_gives_an_h100_with_a_7b_llm_hundreds_of_frames_per_call():
    """SigLIP so400m-384 in bf16 (gpu-notes sizes); 80 GiB GPU with the 16 GiB of VideoLLaMA2.1-7B resident."""
    from transformers import SiglipVisionConfig

    config = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                num_attention_heads=16, image_size=384, patch_size=14)
    with torch.device("meta"):
        sdpa = VisionTower(TowerSpec("siglip", config, {}, "test"), -2, "patch")
        eager = VisionTower(TowerSpec("siglip", config, {}, "test"), -2, "patch", attn_implementation="eager")
    assert sdpa.tokens_per_frame == 27 * 27
    per_frame = sdpa.activation_bytes_per_frame(torch.bfloat16)
    assert 10 * 1024**2 < per_frame < 40 * 1024**2  # tens of MB per frame, as a 729 x 1152 ViT has
    assert eager.activation_bytes_per_frame(torch.bfloat16) > per_frame  # scores of 16 x 729 x 729
    assert frames_for_budget((80 - 16) * GIB * TOWER_MEMORY_SHARE, per_frame) == 768


def test_tower_calls_are_chunked_and_concatenated_in_order():
    tower = RecordingTower()
    encoders = TorchEncoders(tower, None, None, None, pool_frames=False, frames_per_tower_call=3)
    frames = torch.arange(7.0).reshape(7, 1)
    assert torch.equal(encoders.encode_frames(frames), frames * 2)
    assert tower.batches == [3, 3, 1]
    with pytest.raises(ValueError):
        TorchEncoders(tower, None, None, None, pool_frames=False, frames_per_tower_call=0)


def test_cpu_defaults_are_eager_with_the_cpu_chunk():
    encoders = TorchEncoders(RecordingTower(), None, None, None, pool_frames=False)
    assert encoders.compile_encoders is False
    assert encoders.frames_per_tower_call == DEFAULT_FRAMES_PER_TOWER_CALL
    assert not any(call.compiled for call in encoders.calls().values())
    assert "eager" in encoders.describe()


def _counting_compiler(behaviour):
    """A stand-in for torch.compile: counts compilations; the 'compiled' function is `behaviour(fn)`."""
    count = {"compilations": 0}

    def compiler(fn):
        count["compilations"] += 1
        return behaviour(fn)

    return compiler, count


def test_compiled_forward_is_built_once_and_used_for_every_call():
    calls = []

    def behaviour(fn):
        def compiled(x):
            calls.append(x.shape[0])
            return fn(x)
        return compiled

    compiler, count = _counting_compiler(behaviour)
    call = EncoderCall("tower", lambda x: x + 1, use_compile=True, compiler=compiler)
    for batch in (4, 2, 7):
        assert torch.equal(call(torch.zeros(batch, 3)), torch.ones(batch, 3))
    assert count["compilations"] == 1 and calls == [4, 2, 7]
    assert call.first_call_seconds is not None and call.compiled


def test_a_failing_compiler_falls_back_to_eager_once_with_a_warning(caplog):
    def behaviour(fn):
        def broken(x):
            raise RuntimeError("inductor: no C compiler found")
        return broken

    compiler, count = _counting_compiler(behaviour)
    call = EncoderCall("tower", lambda x: x * 3, use_compile=True, compiler=compiler)
    with caplog.at_level(logging.WARNING, logger="vl2cli.model.encoders"):
        assert torch.equal(call(torch.ones(2)), torch.full((2,), 3.0))
    assert call.compile_failed and not call.compiled
    assert "torch.compile failed for the tower" in caplog.text and "no C compiler" in caplog.text
    assert torch.equal(call(torch.ones(5)), torch.full((5,), 3.0))
    assert count["compilations"] == 1


def test_an_input_error_is_raised_and_keeps_compilation_on():
    def eager(x):
        if x.shape[-1] != 3:
            raise ValueError("expected 3 channels")
        return x

    compiler, _ = _counting_compiler(lambda fn: fn)
    call = EncoderCall("tower", eager, use_compile=True, compiler=compiler)
    with pytest.raises(ValueError, match="3 channels"):
        call(torch.zeros(1, 4))
    assert not call.compile_failed and call.compiled


def test_out_of_memory_is_not_mistaken_for_a_compiler_failure():
    def behaviour(fn):
        def oom(x):
            raise torch.OutOfMemoryError("CUDA out of memory")
        return oom

    compiler, _ = _counting_compiler(behaviour)
    call = EncoderCall("tower", lambda x: x, use_compile=True, compiler=compiler)
    with pytest.raises(torch.OutOfMemoryError):
        call(torch.zeros(1))
    assert not call.compile_failed


def test_switching_compilation_off_after_load_rebuilds_the_calls():
    compiler, count = _counting_compiler(lambda fn: fn)
    encoders = TorchEncoders(RecordingTower(), None, None, None, pool_frames=False, compile_encoders=True, compiler=compiler)
    encoders.encode_frames(torch.ones(2, 1))
    assert count["compilations"] == 1
    encoders.compile_encoders = False
    assert not encoders.calls()["vision_tower"].compiled
    encoders.encode_frames(torch.ones(2, 1))
    assert count["compilations"] == 1


@pytest.mark.parametrize("projector_type,frames,side", [("stc_connector", 4, 4), ("stc_connector_v35", 4, 5)])
def test_channels_last_stc_gives_the_same_tokens(projector_type, frames, side):
    torch.manual_seed(0)
    connector = build_video_connector(projector_type, 8, 16).eval()
    features = torch.randn(3, frames, side * side, 8)
    with torch.inference_mode():
        expected = connector(features)
        connector.set_channels_last(True)
        assert connector.sampler[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
        got = connector(features)
        connector.set_channels_last(False)
        assert connector.sampler[0].weight.is_contiguous()
    assert (got - expected).abs().max().item() <= SAME_MATHS_ATOL


def _fixture_items(name):
    fixture = load_reference(name)
    cases = fixture.cases()
    wanted = "av" if "av" in cases else "video"
    return fixture, case_input(fixture, cases[wanted])


@pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
@pytest.mark.parametrize("name", FIXTURES)
def test_small_tower_calls_give_the_same_features(monkeypatch, name):
    model = load_fixture_model(monkeypatch, name)
    _, item = _fixture_items(name)
    frames = torch.cat([model.frames_of(item)] * 3)
    whole = model.torch_encoders.encode_frames(frames)
    chunked = TorchEncoders(model.torch_encoders.vision_tower, None, None, None, pool_frames=False,
                            frames_per_tower_call=2).encode_frames(frames)
    assert (chunked - whole).abs().max().item() <= SAME_MATHS_ATOL


@pytest.mark.slow
@pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
@pytest.mark.parametrize("name", FIXTURES)
def test_dynamo_traced_encoders_match_eager_at_two_batch_sizes(monkeypatch, name):
    """torch.compile's graph capture (AOT autograd, no code generation: the CPU has no inductor
    compiler to rely on) on the real modules, batch axis dynamic: same numbers as eager."""
    model = load_fixture_model(monkeypatch, name)
    eager = model.torch_encoders
    compiler, count = _counting_compiler(functools.partial(torch.compile, backend="aot_eager"))
    traced = TorchEncoders(eager.vision_tower, eager.connector, eager.audio_tower, eager.audio_projector,
                           pool_frames=eager.pool_frames, compile_encoders=True, compiler=compiler)
    _, item = _fixture_items(name)
    for videos in (2, 3):
        frames = torch.cat([model.frames_of(item)] * videos)
        features = eager.encode_frames(frames)
        assert (traced.encode_frames(frames) - features).abs().max().item() <= SAME_MATHS_ATOL
        grouped = features.reshape(videos, -1, *features.shape[1:])
        assert (traced.connect(grouped) - eager.connect(grouped)).abs().max().item() <= SAME_MATHS_ATOL
        if item.fbank is not None:
            fbank = item.fbank.reshape(1, *item.fbank.shape[-2:]).expand(videos, -1, -1)
            assert (traced.encode_audio(fbank) - eager.encode_audio(fbank)).abs().max().item() <= SAME_MATHS_ATOL
    failed = [name for name, call in traced.calls().items() if call.compile_failed]
    assert not failed, f"graph capture failed for {failed}"
    assert count["compilations"] == (3 if item.fbank is not None else 2)


@pytest.mark.skipif(AV_FIXTURE not in FIXTURES, reason=f"needs the {AV_FIXTURE} fixture")
def test_loaded_model_runs_its_encoders_with_the_fast_defaults(monkeypatch):
    model = load_fixture_model(monkeypatch, AV_FIXTURE)
    encoders = model.torch_encoders
    assert encoders.vision_tower.attn_implementation == "sdpa"
    assert encoders.audio_tower.attn_implementation == "sdpa"
    assert encoders.compile_encoders is False  # a CPU model
    assert encoders.frames_per_tower_call == DEFAULT_FRAMES_PER_TOWER_CALL
    assert encoders.connector.channels_last is False  # channels-last is for CUDA
