"""Locating and loading the Video-LLaMA (v1) reference fixtures (tiny upstream-written checkpoints + goldens).

`VL2_REFERENCE_V1_FIXTURES` points at another folder of the same format; by default the set packed in
`tests/fixtures/` (unpacked on first use, see fixture_pack.py).
Tests iterate whatever fixtures and cases the folder holds: nothing here names a fixture or a case.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from fixture_pack import reference_v1_root
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]


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


# ---------------------------------------------------------------- head counts
# Head counts are not stored by upstream anywhere (the fixture README's table gives them); they are
# read from that table, or else found as the count whose output matches a stored golden.

def _readme_heads(fixture: V1Fixture) -> tuple[int | None, int | None]:
    import re

    readme = fixture.root.parent / "README.md"
    if not readme.is_file():
        return None, None
    for line in readme.read_text(encoding="utf-8").splitlines():
        if not line.startswith(f"| `{fixture.name}` |"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        eva = re.match(r"\s*\d+,\s*\d+,\s*\d+,\s*\d+\s*/\s*\d+,\s*(\d+),", cells[2])
        audio = re.search(r"audio: width \d+, \d+ blocks, (\d+) heads", line)
        return (int(eva.group(1)) if eva else None), (int(audio.group(1)) if audio else None)
    return None, None


def _search_heads(width: int, matches) -> int:
    for heads in (h for h in range(1, width + 1) if width % h == 0):
        if matches(heads):
            return heads
    raise AssertionError("no head count reproduces the golden")


@cache
def fixture_heads(name: str) -> tuple[int, int | None]:
    """(EVA heads, ImageBind audio heads or None) of a fixture."""
    from vl2cli.model.videollama.checkpoint import load_state_dict
    from vl2cli.model.videollama.eva_vit import build_eva_vit

    fixture = load_v1_fixture(name)
    eva, audio = _readme_heads(fixture)
    if eva is None:
        sd = load_state_dict(fixture.lavis_folder / "eva_vit_g.pth", "EVA")
        case = next(c for c in fixture.cases() if f"{c}.eva_out" in fixture.tensors)
        golden = fixture.tensors[f"{case}.eva_out"]
        pixels = _case_pixels(fixture, case)
        size = pixels.shape[-1]

        def eva_matches(heads: int) -> bool:
            model = build_eva_vit(sd, image_size=size, heads=heads).float()
            with torch.no_grad():
                out = model(pixel_values=pixels.permute(0, 2, 1, 3, 4).reshape(-1, 3, size, size)).last_hidden_state
            return out.shape == golden.shape and torch.allclose(out, golden, atol=1e-4, rtol=1e-4)

        eva = _search_heads(sd["cls_token"].shape[-1], eva_matches)
    if audio is None and fixture.has_audio:
        from vl2cli.model.videollama.imagebind_audio import build_imagebind_audio

        sd = load_state_dict(fixture.checkpoint_folder / "imagebind_huge.pth", "ImageBind")
        case = next(c for c in fixture.cases() if f"{c}.audio_feature" in fixture.tensors)
        clips = fixture.tensors["preprocess.audio_clips"][0]
        golden = fixture.tensors[f"{case}.audio_feature"][0]

        def audio_matches(heads: int) -> bool:
            with torch.no_grad():
                feature, _ = build_imagebind_audio(sd, heads=heads)(clips)
            return torch.allclose(feature, golden, atol=1e-4, rtol=1e-4)

        audio = _search_heads(sd["modality_preprocessors.audio.cls_token"].shape[-1], audio_matches)
    return eva, audio


# ---------------------------------------------------------------- cases
def _tensor_name(arg: str) -> str:
    return arg.strip().split(" ")[0]


def _case_pixels(fixture: V1Fixture, case: str) -> torch.Tensor:
    """The (1, 3, T, S, S) visual input a case fed upstream (its `images_arg`)."""
    arg = fixture.cases()[case]["images_arg"]
    if ";" in arg:
        arg = next(part.split(":", 1)[1] for part in arg.split(";") if part.strip().startswith("video"))
    return fixture.tensors[_tensor_name(arg)]


def case_kind(case: dict) -> str:
    return {"audio+video": "av", "video": "video", "image": "image", "text": "text"}[case["modal"]]


def case_input(fixture: V1Fixture, case_name: str):
    """The MultimodalInput of a case: pixels (T, 3, S, S), audio clips, the frame-times message."""
    from vl2cli.model.inputs import MultimodalInput

    case = fixture.cases()[case_name]
    kind = case_kind(case)
    if kind == "text":
        return MultimodalInput("text")
    pixels = _case_pixels(fixture, case_name)[0].permute(1, 0, 2, 3)
    if kind == "image":
        return MultimodalInput("image", pixel_values=pixels)
    message = case.get("load_video_msg") or fixture.golden["preprocess"]["video"]["msg"]
    if kind == "av":
        audio_arg = next(p.split(":", 1)[1] for p in case["images_arg"].split(";") if p.strip().startswith("audio"))
        clips = fixture.tensors[_tensor_name(audio_arg)][0]
        return MultimodalInput("av", pixel_values=pixels, fbank=clips, frame_times_message=message)
    return MultimodalInput("video", pixel_values=pixels, frame_times_message=message)


def case_question(case: dict) -> str | None:
    """The question of a single-turn case (the user message without upstream's upload text); None for multi-turn."""
    from vl2cli.model.videollama.prompt import AUDIO_VIDEO_MESSAGE, IMAGE_MESSAGE, VIDEO_MESSAGE_PREFIX

    messages = case["messages"]
    if len(messages) != 2:
        return None
    user = messages[0][1]
    kind = case_kind(case)
    if kind == "text":
        return user
    if kind == "av":
        prefix = AUDIO_VIDEO_MESSAGE + " "
    elif kind == "image":
        prefix = IMAGE_MESSAGE + " "
    else:
        prefix = user[: user.index("seconds. ") + len("seconds. ")] + " "
        assert prefix.startswith(VIDEO_MESSAGE_PREFIX)
    assert user.startswith(prefix)
    return user[len(prefix):]


_models: dict[str, object] = {}


def load_v1_model(monkeypatch, name: str):
    """The fixture's model through the real loader, from its upstream eval YAML (cached per session)."""
    from vl2cli.model.videollama.modeling import VideoLlamaV1

    fixture = load_v1_fixture(name)
    monkeypatch.setenv("HF_HUB_CACHE", str(fixture.root / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if name not in _models:
        eva, audio = fixture_heads(name)
        _models[name] = VideoLlamaV1.from_pretrained(str(fixture.root / fixture.golden["eval_yaml"]), device="cpu",
                                                     dtype="fp32", eva_heads=eva, imagebind_heads=audio)
    return _models[name]
