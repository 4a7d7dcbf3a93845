"""Video-LLaMA (v1) checkpoint loading and its refusals: pickles only through `weights_only=True` (a `.pth`
holding any other global is refused, not run), a missing LAVIS file is named with where to get it, a
checkpoint of the wrong size is a CheckpointError, and the released folder layout loads as the YAML does."""
from __future__ import annotations

import argparse
import shutil

import pytest
import torch

from reference_v1_fixtures import fixture_heads, load_v1_fixture, v1_fixture_names
from vl2cli.errors import CheckpointError
from vl2cli.model.videollama.checkpoint import load_state_dict
from vl2cli.model.videollama.files import looks_like_v1, resolve_v1_paths

FIXTURES = v1_fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no Video-LLaMA v1 reference fixtures found")


@pytest.fixture
def fixture_copy(tmp_path, monkeypatch):
    """A writable copy of the first fixture, its hub cache active and offline; returns (fixture, copy root)."""
    fixture = load_v1_fixture(FIXTURES[0])
    root = tmp_path / "fixture"
    shutil.copytree(fixture.root, root)
    monkeypatch.setenv("HF_HUB_CACHE", str(root / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("VL2_V1_LAVIS_DIR", raising=False)
    monkeypatch.delenv("VL2_V1_LLM", raising=False)
    return fixture, root


def _load(folder, name):
    from vl2cli.model.videollama.modeling import VideoLlamaV1

    eva, audio = fixture_heads(name)
    return VideoLlamaV1.from_pretrained(str(folder), device="cpu", dtype="fp32", eva_heads=eva, imagebind_heads=audio)


def test_released_folder_layout_is_found_and_recognised(fixture_copy):
    fixture, root = fixture_copy
    folder = root / fixture.checkpoint_folder.relative_to(fixture.root)
    assert looks_like_v1(str(folder))
    paths, revision = resolve_v1_paths(str(folder))
    assert revision is None
    assert paths.vision_checkpoint.name.endswith(".pth") and paths.eva.name == "eva_vit_g.pth"
    assert paths.has_audio == fixture.has_audio
    assert (paths.llm_folder / "tokenizer.model").is_file()


def test_only_the_model_entry_is_read(fixture_copy):
    fixture, root = fixture_copy
    vl = next((root / fixture.checkpoint_folder.relative_to(fixture.root)).glob("VL_*.pth"))
    full = torch.load(vl, weights_only=True)
    assert {"optimizer", "model"} <= set(full)  # the file carries training state besides the weights
    state = load_state_dict(vl, "vision-branch checkpoint", model_key=True)
    assert set(state) == set(full["model"])


def test_a_pth_with_a_non_tensor_global_is_refused(fixture_copy):
    fixture, root = fixture_copy
    folder = root / fixture.checkpoint_folder.relative_to(fixture.root)
    vl = next(folder.glob("VL_*.pth"))
    ckpt = torch.load(vl, weights_only=True)
    ckpt["config"] = argparse.Namespace(lr=1e-4)  # a pickled object: loading it would mean running its class
    torch.save(ckpt, vl)
    with pytest.raises(CheckpointError, match=vl.name):
        load_state_dict(vl, "vision-branch checkpoint", model_key=True)
    with pytest.raises(CheckpointError, match="never unpickles"):
        _load(folder, fixture.name)


def test_a_missing_lavis_file_is_named_with_where_to_get_it(fixture_copy, monkeypatch, tmp_path):
    fixture, root = fixture_copy
    folder = root / fixture.checkpoint_folder.relative_to(fixture.root)
    (root / fixture.lavis_folder.relative_to(fixture.root) / "eva_vit_g.pth").unlink()
    monkeypatch.setenv("VL2_HOME", str(tmp_path / "home"))
    with pytest.raises(CheckpointError, match=r"eva_vit_g\.pth not found.*LAVIS.*VL2_V1_LAVIS_DIR"):
        _load(folder, fixture.name)


def test_lavis_files_found_through_the_setting_and_its_variable(fixture_copy, monkeypatch, tmp_path):
    """The model core takes the folder as a parameter; the library's loading layer reads VL2_V1_LAVIS_DIR."""
    from vl2cli.loading import v1_locations

    fixture, root = fixture_copy
    folder = root / fixture.checkpoint_folder.relative_to(fixture.root)
    elsewhere = tmp_path / "lavis-files"
    shutil.move(str(root / fixture.lavis_folder.relative_to(fixture.root)), elsewhere)
    with pytest.raises(CheckpointError, match=r"eva_vit_g\.pth not found"):
        resolve_v1_paths(str(folder))
    paths, _ = resolve_v1_paths(str(folder), lavis_dir=str(elsewhere))
    assert paths.eva.parent == elsewhere.resolve() and paths.blip2.parent == elsewhere.resolve()
    monkeypatch.setenv("VL2_V1_LAVIS_DIR", str(elsewhere))
    paths, _ = resolve_v1_paths(str(folder), **v1_locations())
    assert paths.eva.parent == elsewhere.resolve()


def test_a_checkpoint_for_another_llm_size_is_refused(fixture_copy):
    fixture, root = fixture_copy
    folder = root / fixture.checkpoint_folder.relative_to(fixture.root)
    vl = next(folder.glob("VL_*.pth"))
    ckpt = torch.load(vl, weights_only=True)
    width = ckpt["model"]["llama_proj.weight"].shape[1]
    ckpt["model"]["llama_proj.weight"] = torch.zeros(2 * ckpt["model"]["llama_proj.weight"].shape[0], width)
    ckpt["model"]["llama_proj.bias"] = torch.zeros(ckpt["model"]["llama_proj.weight"].shape[0])
    torch.save(ckpt, vl)
    with pytest.raises(CheckpointError, match="another LLM size"):
        _load(folder, fixture.name)


def test_a_truncated_checkpoint_is_refused(fixture_copy):
    fixture, root = fixture_copy
    folder = root / fixture.checkpoint_folder.relative_to(fixture.root)
    vl = next(folder.glob("VL_*.pth"))
    vl.write_bytes(vl.read_bytes()[: vl.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=vl.name):
        _load(folder, fixture.name)


def test_mis_shaped_qformer_weights_are_a_checkpoint_error(fixture_copy):
    fixture, root = fixture_copy
    folder = root / fixture.checkpoint_folder.relative_to(fixture.root)
    vl = next(folder.glob("VL_*.pth"))
    ckpt = torch.load(vl, weights_only=True)
    key = next(k for k in ckpt["model"] if k.startswith("video_Qformer.") and k.endswith("query.weight"))
    ckpt["model"][key] = torch.zeros(3, 3)
    torch.save(ckpt, vl)
    with pytest.raises(CheckpointError, match="video Q-Former"):
        _load(folder, fixture.name)
