"""The random-checkpoint writer behind the GPU benchmark: released layout, loadable, seeded, sized right.

At the reference fixture's sizes the writer must reproduce the fixture's tensor names and shapes
exactly (the fixture was written by the upstream code, so this checks the writer against upstream,
not against vl2's own modules). The full VideoLLaMA2.1-7B-AV sizes are checked on the meta device
against published parameter counts, without writing 16 GB.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from benchmarks import random_checkpoint as rc

needs_template = pytest.mark.skipif(
    not all(p.is_file() for p in rc.template_files()),
    reason=f"needs the {rc.TEMPLATE_FIXTURE} reference fixture's config, tokenizer and tower files",
)

#: Qwen2-7B(-Instruct): 28 layers of 233,057,792 + untied embeddings and lm_head (2 x 152064 x 3584) + norm.
QWEN2_7B_PARAMETERS = 7_615_616_512
#: reference-facts.md §1: the AV audio projector, Linear(768->3584) + Linear(3584->3584), from its file size.
AUDIO_PROJECTOR_PARAMETERS = 15_604_736
#: gpu-notes.md: the full AV model has 8.53 B parameters (rounded to 10 M).
FULL_PARAMETERS_ROUNDED = 8.53e9
ROUNDING = 0.005e9
GENERATED_TOKENS = 3


def _shard_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    index = json.loads((folder / rc.INDEX_FILE).read_text())
    shapes = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(folder / shard), "pt") as handle:
            for key in handle.keys():
                assert index["weight_map"][key] == shard
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    assert set(shapes) == set(index["weight_map"])
    return shapes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> rc.WrittenCheckpoint:
    return rc.write_checkpoint(tmp_path_factory.mktemp("tiny"), rc.shape_of_template(), dtype=torch.float32)


@needs_template
@pytest.mark.skipif(not (rc.template_root() / "checkpoint" / "model.safetensors").is_file(),
                    reason="needs the template fixture's weights file to compare names and shapes with")
def test_tiny_checkpoint_has_the_fixture_layout(tiny):
    fixture = rc.template_root()
    with safe_open(str(fixture / "checkpoint" / "model.safetensors"), "pt") as handle:
        expected = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    assert _shard_shapes(tiny.folder) == expected
    assert tiny.parameters == sum(torch.Size(s).numel() for s in expected.values())

    written = json.loads((tiny.folder / "config.json").read_text())
    original = json.loads((fixture / "checkpoint" / "config.json").read_text())
    assert set(written) == set(original)
    differing = {k for k in original if written[k] != original[k]}
    assert differing == {"_name_or_path", "mm_vision_tower"}  # same sizes, same dtype; the tower is local
    assert Path(written["mm_vision_tower"]) == tiny.tower.resolve()

    tower = json.loads((tiny.tower / "config.json").read_text())
    fixture_tower = json.loads((rc._tower_snapshot(fixture) / "config.json").read_text())
    assert tower == fixture_tower
    for name in rc.COPIED_FILES:
        assert (tiny.folder / name).read_bytes() == (fixture / "checkpoint" / name).read_bytes()


@needs_template
def test_tiny_checkpoint_loads_and_generates(tiny, monkeypatch):
    from vl2cli.model.inputs import MultimodalInput
    from vl2cli.model.videollama2 import VideoLlama2

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the tower folder is local: no hub needed
    model = VideoLlama2.from_pretrained(str(tiny.folder), device="cpu", dtype="fp32")
    shape = rc.shape_of_template()
    assert model.num_frames == shape.num_frames and model.config.has_audio and model.config.has_vision
    side = model.image_processor_config["size"]["height"]
    assert side == shape.image_size
    clip = torch.randn(model.num_frames, 3, side, side, generator=torch.Generator().manual_seed(0))
    fbank = torch.randn(2998, 128, generator=torch.Generator().manual_seed(1))
    inputs = [MultimodalInput("av", pixel_values=clip, fbank=fbank), MultimodalInput("video", pixel_values=clip)]
    generations = model.generate(inputs, ["Describe the video in detail."] * 2, max_new_tokens=GENERATED_TOKENS)
    for generation in generations:
        assert 1 <= len(generation.token_ids) <= GENERATED_TOKENS
        assert all(0 <= t < shape.vocab_size for t in generation.token_ids)
        assert isinstance(generation.text, str)


@needs_template
def test_ids_beyond_the_tokenizer_decode_without_error(tiny):
    assert rc.check_high_ids_decode(tiny.folder, rc.FULL_AV_SHAPE.vocab_size) == ""


@needs_template
def test_same_seed_same_bytes_and_reuse(tiny, tmp_path):
    again = rc.write_checkpoint(tmp_path / "again", rc.shape_of_template(), dtype=torch.float32)
    shard = rc.SHARD_NAME.format(index=1, count=1)
    assert (again.folder / shard).read_bytes() == (tiny.folder / shard).read_bytes()

    stamp = (again.folder / shard).stat().st_mtime_ns
    reused = rc.write_checkpoint(tmp_path / "again", rc.shape_of_template(), dtype=torch.float32)
    assert reused.reused and reused.parameters == again.parameters
    assert (again.folder / shard).stat().st_mtime_ns == stamp

    other_seed = rc.write_checkpoint(tmp_path / "again", rc.shape_of_template(), dtype=torch.float32, seed=1)
    assert not other_seed.reused
    assert (again.folder / shard).read_bytes() != (tiny.folder / shard).read_bytes()


@needs_template
def test_weights_are_finite_and_initialised_by_kind(tiny):
    shard = tiny.folder / rc.SHARD_NAME.format(index=1, count=1)
    with safe_open(str(shard), "pt") as handle:
        for key in handle.keys():
            tensor = handle.get_tensor(key)
            assert torch.isfinite(tensor).all(), key
            if key.endswith("bias"):
                assert not tensor.any(), key
            elif tensor.ndim == 1:
                assert (tensor == 1).all(), key
        assert handle.get_tensor("lm_head.weight").std().item() == pytest.approx(rc.INIT_STD, rel=0.1)


def test_full_size_layout_counts():
    shapes = rc.tensor_shapes(rc.FULL_AV_SHAPE)
    multimodal = ("model.vision_tower.", "model.mm_projector.", "model.audio_tower.", "model.mm_projector_a.")
    llm = {k: s for k, s in shapes.items() if not k.startswith(multimodal)}
    projector = {k: s for k, s in shapes.items() if k.startswith(rc.AUDIO_PROJECTOR_PREFIX)}
    assert rc.parameter_count(llm) == QWEN2_7B_PARAMETERS
    assert rc.parameter_count(projector) == AUDIO_PROJECTOR_PARAMETERS
    assert abs(rc.parameter_count(shapes) - FULL_PARAMETERS_ROUNDED) <= ROUNDING
    assert shapes["model.vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight"] == (729, 1152)
    shards = rc.plan_shards(shapes, torch.finfo(torch.bfloat16).bits // 8)
    assert sorted(k for shard in shards for k in shard) == sorted(shapes)
    for shard in shards:
        assert sum(torch.Size(shapes[k]).numel() * 2 for k in shard) <= rc.MAX_SHARD_BYTES


@pytest.mark.slow
@needs_template
def test_released_beats_config_path_loads(tmp_path, monkeypatch):
    """The full-size run writes no audio_tower_config (BEATs defaults, as released): that path must load."""
    from dataclasses import replace

    from vl2cli.model.beats import BeatsConfig
    from vl2cli.model.inputs import MultimodalInput
    from vl2cli.model.videollama2 import VideoLlama2

    shape = replace(rc.shape_of_template(), beats=None)
    written = rc.write_checkpoint(tmp_path, shape, dtype=torch.float32)
    config = json.loads((written.folder / "config.json").read_text())
    assert "audio_tower_config" not in config
    assert config["mm_hidden_size_a"] == BeatsConfig().encoder_embed_dim
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = VideoLlama2.from_pretrained(str(written.folder), device="cpu", dtype="fp32")
    fbank = torch.randn(2998, 128, generator=torch.Generator().manual_seed(0))
    (block,) = model.encode([MultimodalInput("audio", fbank=fbank)])
    assert block.shape[1] == shape.hidden_size and torch.isfinite(block).all()
