"""Locating and loading the upstream-written reference fixtures (tiny checkpoints + goldens).

`VL2_REFERENCE_FIXTURES` points at another folder of the same format; by default the set packed in
`tests/fixtures/` (unpacked on first use, see fixture_pack.py).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import torch
from fixture_pack import reference_root
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]


def fixture_names() -> list[str]:
    root = reference_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "golden.json").is_file() and (p / "checkpoint").is_dir())


@dataclass
class ReferenceFixture:
    name: str
    root: Path
    golden: dict
    tensors: dict[str, torch.Tensor]

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint"

    @property
    def hub_cache(self) -> Path:
        return self.root / "hub"

    def cases(self) -> dict[str, dict]:
        return self.golden["cases"]


@cache
def load_reference(name: str) -> ReferenceFixture:
    root = reference_root() / name
    return ReferenceFixture(name, root, json.loads((root / "golden.json").read_text()), load_file(root / "golden.safetensors"))


def use_fixture_hub(monkeypatch: pytest.MonkeyPatch, fixture: ReferenceFixture) -> None:
    """Point huggingface_hub at the fixture's cache, offline, as a user without network would run."""
    monkeypatch.setenv("HF_HUB_CACHE", str(fixture.hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@contextmanager
def offline_fixture_hub(name: str) -> Iterator[ReferenceFixture]:
    """`use_fixture_hub` for a module-scoped fixture (no function-scoped monkeypatch there): the fixture,
    with the hub cache pointed at it and offline mode on until the `with` ends."""
    fixture = load_reference(name)
    with pytest.MonkeyPatch.context() as patch:
        use_fixture_hub(patch, fixture)
        yield fixture


_models: dict[str, object] = {}


def load_fixture_model(monkeypatch: pytest.MonkeyPatch, name: str):
    """The fixture checkpoint loaded through the real loader (cached per test session)."""
    from vl2cli.model.videollama2 import VideoLlama2

    fixture = load_reference(name)
    use_fixture_hub(monkeypatch, fixture)
    if name not in _models:
        _models[name] = VideoLlama2.from_pretrained(str(fixture.checkpoint), device="cpu", dtype="fp32")
    return _models[name]


def case_input(fixture: ReferenceFixture, case: dict, index: int = 0):
    """The MultimodalInput a golden case fed to upstream (its `images_arg`)."""
    from vl2cli.model.inputs import MultimodalInput

    args = case.get("images_arg") or []
    if not args:
        return MultimodalInput("text")
    arg = args[index]
    if "audio" in arg and "video" in arg:
        return MultimodalInput("av", pixel_values=fixture.tensors[arg["video"]], fbank=fixture.tensors["inputs.fbank"].float())
    if arg["modal"] == "audio":
        return MultimodalInput("audio", fbank=fixture.tensors["inputs.fbank"].float())
    return MultimodalInput(arg["modal"], pixel_values=fixture.tensors[arg["tensor"]])


def case_instructions(case: dict) -> list[str]:
    instruction = case["instruction"]
    return instruction if isinstance(instruction, list) else [instruction]
