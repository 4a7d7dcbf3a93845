"""A broken or unavailable checkpoint, as a user meets it on the command line: one clear message on
stderr, exit code 2 (fatal), and no Python traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reference_fixtures import load_reference, reference_root
from test_cli import vl2_in_process as vl2
from vl2cli.commands.exit_codes import EXIT_FATAL

FIXTURE = "siglip-qwen2-av"
pytestmark = pytest.mark.skipif(
    not (reference_root() / FIXTURE).is_dir(), reason=f"reference fixture {FIXTURE} not found"
)


def _checkpoint_copy(tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(load_reference(FIXTURE).checkpoint, target)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def _missing_shard(folder: Path) -> str:
    weights = folder / "model.safetensors"
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}
    weights.rename(folder / "model-00001-of-00002.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return "missing shard file"


def _corrupt(folder: Path) -> str:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return "not a readable safetensors file"


def _unknown_type(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "videollama3_qwen2"
    (folder / "config.json").write_text(json.dumps(config))
    return "videollama3_qwen2"


def _any_file(tmp_path: Path) -> Path:
    """An input file: the checkpoint fails before any file is read, so its content does not matter."""
    path = tmp_path / "clip.png"
    path.write_bytes(b"never decoded")
    return path


@pytest.mark.parametrize("damage", [_missing_shard, _corrupt, _unknown_type], ids=["missing-shard", "corrupt", "unknown-type"])
def test_broken_checkpoint_is_a_clear_fatal_error(tmp_path, damage):
    folder = _checkpoint_copy(tmp_path)
    expected = damage(folder)
    run = vl2("caption", str(_any_file(tmp_path)), "--model", str(folder), "--quiet", "--out", str(tmp_path / "o.jsonl"))
    assert run.returncode == EXIT_FATAL
    assert expected in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_hub_id_missing_from_the_offline_cache_is_a_clear_fatal_error(tmp_path):
    run = vl2("ask", str(_any_file(tmp_path)), "what is this?", "--model", "DAMO-NLP-SG/VideoLLaMA2.1-7B-AV",
              HF_HUB_CACHE=str(tmp_path / "empty"), HF_HUB_OFFLINE="1")
    assert run.returncode == EXIT_FATAL
    assert "HF_HUB_OFFLINE is set and it is not in the cache" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
