"""Loading through the real code paths: hub ids via the HF cache, folders, broken checkpoints."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from reference_fixtures import case_input, fixture_names, load_reference, use_fixture_hub
from vl2cli.errors import CheckpointError, HubResolutionError, UnsupportedModelError
from vl2cli.model.config import Vl2Config
from vl2cli.model.videollama2 import VideoLlama2

FIXTURES = fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no reference fixtures found")
FIXTURE = "siglip-qwen2-stc-v35" if "siglip-qwen2-stc-v35" in FIXTURES else (FIXTURES[0] if FIXTURES else "")


def _copy_checkpoint(tmp_path: Path, name: str = FIXTURE) -> Path:
    target = tmp_path / "checkpoint"
    shutil.copytree(load_reference(name).checkpoint, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def _split_into_shards(folder: Path) -> list[str]:
    """Rewrite model.safetensors as two shards + index, the layout of the released checkpoints."""
    tensors = load_file(folder / "model.safetensors")
    keys = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    weight_map = {}
    for shard, shard_keys in halves.items():
        save_file({k: tensors[k] for k in shard_keys}, folder / shard, metadata={"format": "pt"})
        weight_map.update({k: shard for k in shard_keys})
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return list(halves)


def _build_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> str:
    """A huggingface_hub cache holding `repo_id` at one commit, as `hf download` would leave it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_sharded_checkpoint_loads_and_gives_the_same_logits(monkeypatch, tmp_path):
    fixture = load_reference(FIXTURE)
    use_fixture_hub(monkeypatch, fixture)
    folder = _copy_checkpoint(tmp_path)
    _split_into_shards(folder)
    model = VideoLlama2.from_pretrained(str(folder), device="cpu")
    case = fixture.cases()["text"]
    from vl2cli.model.inputs import MultimodalInput

    logits, _ = model.forward_logits([MultimodalInput("text")], [case["instruction"]])
    assert (logits[:, fixture.tensors["text.logits_positions"]] - fixture.tensors["text.logits"]).abs().max() <= 1e-4


def test_hub_id_resolves_offline_through_the_cache_and_records_the_revision(monkeypatch, tmp_path):
    fixture = load_reference(FIXTURE)
    cache = tmp_path / "hub"
    shutil.copytree(fixture.hub_cache, cache)  # the tower repo
    commit = _build_hub_cache(cache, "DAMO-NLP-SG/tiny-test-model", fixture.checkpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = VideoLlama2.from_pretrained("DAMO-NLP-SG/tiny-test-model", device="cpu")
    assert model.revision == commit
    assert model.model_id == "DAMO-NLP-SG/tiny-test-model"
    assert model.config.model_type == fixture.golden["model_type"]


def test_hub_id_not_in_cache_while_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubResolutionError, match="HF_HUB_OFFLINE is set and it is not in the cache"):
        VideoLlama2.from_pretrained("DAMO-NLP-SG/VideoLLaMA2.1-7B-AV", device="cpu")


def test_missing_shard_is_named(monkeypatch, tmp_path):
    use_fixture_hub(monkeypatch, load_reference(FIXTURE))
    folder = _copy_checkpoint(tmp_path)
    shards = _split_into_shards(folder)
    (folder / shards[1]).unlink()
    with pytest.raises(CheckpointError, match=f"missing shard file.*{shards[1]}"):
        VideoLlama2.from_pretrained(str(folder), device="cpu")


@pytest.mark.parametrize("damage", ["truncate", "garbage_header"])
def test_corrupt_safetensors_is_a_clear_error(monkeypatch, tmp_path, damage):
    use_fixture_hub(monkeypatch, load_reference(FIXTURE))
    folder = _copy_checkpoint(tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\xff" * 64 + data[64:])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        VideoLlama2.from_pretrained(str(folder), device="cpu")


def test_unknown_model_type_is_named(monkeypatch, tmp_path):
    folder = _copy_checkpoint(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "videollama2_gemma2"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedModelError, match="videollama2_gemma2"):
        VideoLlama2.from_pretrained(str(folder), device="cpu")


def test_unknown_projector_type_is_named(tmp_path):
    raw = dict(load_reference(FIXTURE).golden and json.loads((load_reference(FIXTURE).checkpoint / "config.json").read_text()))
    raw["mm_projector_type"] = "honeybee"
    with pytest.raises(UnsupportedModelError, match="honeybee"):
        Vl2Config.from_dict(raw)


def test_missing_multimodal_weights_are_named(monkeypatch, tmp_path):
    use_fixture_hub(monkeypatch, load_reference(FIXTURE))
    folder = _copy_checkpoint(tmp_path)
    tensors = {k: v for k, v in load_file(folder / "model.safetensors").items() if not k.startswith("model.mm_projector.")}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="video connector"):
        VideoLlama2.from_pretrained(str(folder), device="cpu")


def test_num_frames_defaults_to_eight_when_the_key_is_absent():
    raw = json.loads((load_reference(FIXTURE).checkpoint / "config.json").read_text())
    raw.pop("num_frames")
    config = Vl2Config.from_dict(raw)
    assert config.num_frames == 8 and not config.num_frames_in_config


#: fp32 logits of the same weights loaded two ways (memory-mapped vs built in memory).
LOGITS_ATOL = 1e-5


def test_mixtral_checkpoint_loads_its_llm_from_the_shared_shards(monkeypatch, tmp_path):
    """No Mixtral fixture exists: build one from the Mistral fixture with a tiny random Mixtral LLM and
    check vl2's loader gives exactly transformers' own MixtralForCausalLM logits on the same weights."""
    if "clip-mistral-stc" not in FIXTURES:
        pytest.skip("needs the clip-mistral-stc fixture")
    from transformers import MixtralConfig, MixtralForCausalLM

    fixture = load_reference("clip-mistral-stc")
    use_fixture_hub(monkeypatch, fixture)
    folder = _copy_checkpoint(tmp_path, "clip-mistral-stc")
    raw = json.loads((folder / "config.json").read_text())
    raw.update(model_type="videollama2_mixtral", num_local_experts=4, num_experts_per_tok=2, architectures=["Videollama2MixtralForCausalLM"])
    (folder / "config.json").write_text(json.dumps(raw))
    llm_config = Vl2Config.from_dict(raw).llm_config
    assert isinstance(llm_config, MixtralConfig)
    torch.manual_seed(0)
    reference = MixtralForCausalLM(llm_config).eval()
    multimodal = {k: v for k, v in load_file(folder / "model.safetensors").items() if not k.startswith(("model.layers", "model.embed", "model.norm", "lm_head"))}
    save_file({**multimodal, **{k: v.contiguous() for k, v in reference.state_dict().items()}}, folder / "model.safetensors", metadata={"format": "pt"})
    model = VideoLlama2.from_pretrained(str(folder), device="cpu")
    ids = torch.tensor([[1, 5, 9, 33, 2]])
    with torch.inference_mode():
        # not bit-equal: MKL may pick another kernel for memory-mapped (unaligned) weights (~1e-7 apart)
        torch.testing.assert_close(model.llm(input_ids=ids).logits, reference(input_ids=ids).logits,
                                   atol=LOGITS_ATOL, rtol=0)


def test_bf16_on_cpu_by_flag_stays_close_to_fp32(monkeypatch):
    fixture = load_reference(FIXTURE)
    use_fixture_hub(monkeypatch, fixture)
    model = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16 and model.llm.dtype == torch.bfloat16
    # any fixture's first single-input case (fixture sets differ in their case names)
    case_name, case = next((n, c) for n, c in fixture.cases().items() if len(c.get("images_arg") or [None]) == 1)
    instruction = case["instruction"] if isinstance(case["instruction"], str) else case["instruction"][0]
    logits, _ = model.forward_logits([case_input(fixture, case)], [instruction])
    expected = fixture.tensors[f"{case_name}.logits"]
    cosine = torch.nn.functional.cosine_similarity(logits[0, -1].float(), expected[0, -1], dim=0)
    assert cosine > 0.99


@pytest.mark.parametrize("prefix", ["model.vision_tower.", "model.mm_projector."])
def test_mis_shaped_encoder_weights_are_a_checkpoint_error(tmp_path: Path, monkeypatch, prefix: str) -> None:
    fixture = load_reference(FIXTURE)
    use_fixture_hub(monkeypatch, fixture)
    folder = _copy_checkpoint(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    name = next(k for k in sorted(tensors) if k.startswith(prefix) and tensors[k].ndim == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="wrong shape"):
        VideoLlama2.from_pretrained(str(folder), device="cpu", dtype="fp32")
