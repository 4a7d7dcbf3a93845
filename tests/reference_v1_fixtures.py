"""Locating and loading the Video-LLaMA (v1) reference fixtures (tiny upstream-written checkpoints + goldens).

`VL2_REFERENCE_V1_FIXTURES` points at another folder of the same format; by default the shared one.
Tests iterate whatever fixtures and cases the folder holds: nothing here names a fixture or a case.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_v1_root() -> Path:
    return Path(os.environ.get("VL2_REFERENCE_V1_FIXTURES") or REPO_ROOT.parent / "shared" / "fixtures" / "reference-v1")


def v1_fixture_names() -> list[str]:
    root = reference_v1_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "golden.json").is_file() and (p / "golden.safetensors").is_file())


@dataclass
class V1Fixture:
    name: str
    root: Path
    golden: dict
    tensors: dict[str, torch.Tensor]

    def cases(self) -> dict[str, dict]:
        return self.golden["cases"]

    def eval_config(self) -> dict:
        import yaml

        return yaml.safe_load((self.root / self.golden["eval_yaml"]).read_text())

    @property
    def model_cfg(self) -> dict:
        return self.eval_config()["model"]

    @property
    def checkpoint_folder(self) -> Path:
        """The released repo folder (the one holding VL_*.pth and the LLM subfolder)."""
        return (self.root / self.model_cfg["ckpt"]).parent

    @property
    def lavis_folder(self) -> Path:
        return (self.root / self.model_cfg["q_former_model"]).parent

    @property
    def bert_config(self) -> Path:
        return next((self.root / "hub" / "models--bert-base-uncased" / "snapshots").glob("*/config.json"))

    @property
    def has_audio(self) -> bool:
        return bool(self.model_cfg.get("equip_audio_branch"))

    def case_tensor(self, case: str, name: str) -> torch.Tensor | None:
        return self.tensors.get(f"{case}.{name}")


@cache
def load_v1_fixture(name: str) -> V1Fixture:
    root = reference_v1_root() / name
    return V1Fixture(name, root, json.loads((root / "golden.json").read_text()), load_file(root / "golden.safetensors"))


def v1_cases() -> list[tuple[str, str]]:
    """(fixture, case) for every case of every fixture present."""
    return [(name, case) for name in v1_fixture_names() for case in load_v1_fixture(name).cases()]
