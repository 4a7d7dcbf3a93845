"""`vl2 convert`: a Video-LLaMA (v1) model rewritten as safetensors loads without `torch.load` and gives
the same logits; only `ckpt["model"]` is kept; the CLI reports where the copy is."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reference_v1_fixtures import case_input, case_question, fixture_heads, load_v1_fixture, load_v1_model, v1_fixture_names
from vl2cli import api
from vl2cli.errors import CheckpointError

FIXTURES = v1_fixture_names()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="no Video-LLaMA v1 reference fixtures found")


def _offline_hub(monkeypatch, fixture) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(fixture.root / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", FIXTURES)
def test_converted_copy_loads_without_unpickling_and_matches(monkeypatch, tmp_path, name):
    fixture = load_v1_fixture(name)
    _offline_hub(monkeypatch, fixture)
    out = tmp_path / "converted"
    written = api.convert_model(str(fixture.checkpoint_folder), out)
    assert not any(p.suffix in (".pth", ".bin") for p in out.rglob("*"))
    assert any(p.suffix == ".safetensors" for p in written)
    reference = load_v1_model(monkeypatch, name)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called on a converted model")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # the BERT config travels with the copy
    eva, audio = fixture_heads(name)
    from vl2cli.model.videollama.modeling import VideoLlamaV1

    converted = VideoLlamaV1.from_pretrained(str(out), device="cpu", dtype="fp32", eva_heads=eva, imagebind_heads=audio)
    assert converted.paths.has_audio == reference.paths.has_audio
    for case_name, case in fixture.cases().items():
        question = case_question(case)
        if question is None:
            continue
        item = case_input(fixture, case_name)
        got, _ = converted.forward_logits([item], [question])
        want, _ = reference.forward_logits([item], [question])
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_convert_refuses_a_non_empty_output_folder(monkeypatch, tmp_path):
    fixture = load_v1_fixture(FIXTURES[0])
    _offline_hub(monkeypatch, fixture)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        api.convert_model(str(fixture.checkpoint_folder), tmp_path / "busy")


def test_cli_convert(tmp_path):
    fixture = load_v1_fixture(FIXTURES[0])
    env = dict(os.environ)  # conftest.py left only the isolated VL2_* folders (and fixture locations)
    env.update(HF_HUB_CACHE=str(fixture.root / "hub"), HF_HUB_OFFLINE="1", VL2_HOME=str(tmp_path / "home"),
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    script = Path(sys.executable).with_name("vl2")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vl2cli.cli"]
    out = tmp_path / "copy"
    run = subprocess.run([*command, "convert", str(fixture.checkpoint_folder), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout
    assert list(out.glob("VL_*.safetensors"))
    again = subprocess.run([*command, "convert", str(fixture.checkpoint_folder), "--out", str(out)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode != 0 and "not empty" in again.stderr and "Traceback" not in again.stderr
