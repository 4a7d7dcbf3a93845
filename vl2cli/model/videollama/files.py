"""Where a Video-LLaMA (v1) model's files are, without torch.

A v1 model is not one folder: upstream reads a vision-branch checkpoint (`VL_*.pth` or
`finetune-vicuna*.pth`), optionally an audio-branch one (`AL_*.pth` / `*audiobranch*.pth`) and
`imagebind_huge.pth`, a LLaMA-2-Chat or Vicuna folder, the BERT config of `bert-base-uncased` and two
files it downloads from LAVIS at run time (`eva_vit_g.pth`, `blip2_pretrained_flant5xxl.pth`).
vl2 takes, in this order of precedence:

* explicit paths (`V1Paths` fields, from the library call),
* an upstream eval config (`eval_configs/*.yaml`, given as the model, read with `yaml.safe_load`; its
  relative paths are taken from the YAML's parent folder, then from the current directory),
* a released folder or hub id (`DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned`): `VL_*`, `AL_*`,
  `imagebind_huge.pth` and the `llama-2-*-chat-hf/` (or any LLaMA) subfolder inside it,
* environment variables `VL2_V1_LAVIS_DIR` (the two LAVIS files), `VL2_V1_LLM` (a LLaMA folder when
  the checkpoint folder holds none, e.g. Vicuna for the Video-LLaMA-Series files),
* LAVIS files next to the checkpoints, in a `lavis/` folder beside or inside it, or in
  `$VL2_HOME/lavis/`; `bert-base-uncased` through the Hugging Face cache (HF_HUB_OFFLINE honoured).

Every missing file is a `CheckpointError` naming the file and where it was looked for.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...constants import V1_NUM_FRAMES  # noqa: F401 - re-exported for identity.py
from ...errors import CheckpointError
from ..hub import resolve_repo

EVA_FILE = "eva_vit_g.pth"
BLIP2_FILE = "blip2_pretrained_flant5xxl.pth"
IMAGEBIND_FILE = "imagebind_huge.pth"
LAVIS_URLS = {
    EVA_FILE: "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth",
    BLIP2_FILE: "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/blip2_pretrained_flant5xxl.pth",
}
BERT_REPO = "bert-base-uncased"
#: What vl2 fetches from a v1 hub repo: the branch checkpoints, ImageBind and the LLM folder.
V1_HUB_PATTERNS = ["*.pth", "*/*.json", "*/*.bin", "*/*.safetensors", "*/tokenizer.model"]
#: Hub ids of the v1 family (vl2 also recognises a folder by its files).
V1_HUB_PREFIXES = ("DAMO-NLP-SG/Video-LLaMA",)
LAVIS_ENV = "VL2_V1_LAVIS_DIR"
LLM_ENV = "VL2_V1_LLM"


@dataclass
class V1Paths:
    """Every file a v1 model loads from; `template` is "llama_v2" or "vicuna"."""

    vision_checkpoint: Path
    llm_folder: Path
    eva: Path
    blip2: Path
    bert_config: Path
    audio_checkpoint: Path | None = None
    imagebind: Path | None = None
    template: str = "llama_v2"
    extra: dict = field(default_factory=dict)

    @property
    def has_audio(self) -> bool:
        return self.audio_checkpoint is not None


def looks_like_v1(model: str) -> bool:
    """A v1 hub id, an upstream eval YAML, or a folder holding a v1 vision-branch checkpoint."""
    if model.startswith(V1_HUB_PREFIXES):
        return True
    path = Path(model).expanduser()
    if path.is_file():
        return path.suffix in (".yaml", ".yml")
    return path.is_dir() and _vision_checkpoint_in(path) is not None


#: Suffixes of a checkpoint file: upstream's pickle, or vl2 convert's safetensors copy (preferred).
SUFFIXES = (".safetensors", ".pth")


def _weights(folder: Path, pattern: str) -> list[Path]:
    """Files matching `pattern` (without suffix) as .pth or .safetensors, one per stem, safetensors first."""
    by_stem: dict[str, Path] = {}
    for suffix in reversed(SUFFIXES):
        for path in folder.glob(pattern + suffix):
            by_stem[path.stem] = path
    return [by_stem[stem] for stem in sorted(by_stem)]


def _vision_checkpoint_in(folder: Path) -> Path | None:
    found = _weights(folder, "VL_*") + _weights(folder, "finetune-vicuna*") + _weights(folder, "finetune_vicuna*")
    found = [p for p in found if "audio" not in p.name.lower()]
    return found[0] if found else None


def _audio_checkpoint_in(folder: Path) -> Path | None:
    found = _weights(folder, "AL_*") + [p for p in _weights(folder, "*") if "audiobranch" in p.name.lower()]
    return found[0] if found else None


def _named(folder: Path, name: str) -> Path | None:
    """`name` (a .pth file name) or its safetensors copy in `folder`, safetensors first."""
    for candidate in (folder / Path(name).with_suffix(".safetensors").name, folder / name):
        if candidate.is_file():
            return candidate
    return None


def llm_folder_in(folder: Path) -> Path | None:
    """The first subfolder holding a LLaMA config.json (the released repos ship it inside)."""
    for candidate in sorted(p.parent for p in folder.glob("*/config.json")):
        try:
            if json.loads((candidate / "config.json").read_text(encoding="utf-8")).get("model_type") == "llama":
                return candidate
        except (OSError, ValueError):
            continue
    return None


def template_for(llm_folder: Path, vision_checkpoint: Path) -> str:
    """LLaMA-2-Chat checkpoints use upstream's `conv_llava_llama_2`, Vicuna ones `default_conversation`."""
    names = f"{llm_folder.name} {vision_checkpoint.name}".lower()
    return "llama_v2" if ("llama-2" in names or "llama_2" in names or "llama2" in names) else "vicuna"


def lavis_file(name: str, near: list[Path], lavis_dir: str | None) -> Path:
    """A LAVIS file from the first place that holds it, or a CheckpointError naming every place looked in."""
    places: list[Path] = []
    for base in ([Path(lavis_dir)] if lavis_dir else []) + ([Path(os.environ[LAVIS_ENV])] if os.environ.get(LAVIS_ENV) else []):
        places.append(base.expanduser())
    for folder in near:
        places += [folder, folder / "lavis", folder.parent / "lavis"]
    if os.environ.get("VL2_HOME"):
        places.append(Path(os.environ["VL2_HOME"]) / "lavis")
    for place in places:
        found = _named(place, name)
        if found is not None:
            return found.resolve()
    looked = ", ".join(dict.fromkeys(str(p) for p in places))
    raise CheckpointError(
        f"{name} not found (looked in: {looked}). Video-LLaMA downloads it from LAVIS: get it from "
        f"{LAVIS_URLS[name]} and put it in one of those folders, or point {LAVIS_ENV} at its folder."
    )


def bert_config_path(near: Path | None = None) -> Path:
    """`bert-base-uncased`'s config.json: a copy `vl2 convert` left beside the checkpoints, else through
    the Hugging Face cache (it holds the sizes of every Q-Former)."""
    if near is not None and (near / BERT_REPO / "config.json").is_file():
        return near / BERT_REPO / "config.json"
    repo = resolve_repo(BERT_REPO, allow_patterns=["config.json"])
    path = repo.folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{repo.folder}: no config.json for {BERT_REPO} (the Q-Former sizes come from it).")
    return path


def _required(path: Path | None, what: str, where: Path) -> Path:
    if path is None or not path.exists():
        raise CheckpointError(f"{where}: no {what} found{f' ({path.name} is missing)' if path is not None else ''}.")
    return path


def resolve_v1_paths(model: str, *, revision: str | None = None, lavis_dir: str | None = None,
                     llm: str | None = None) -> tuple[V1Paths, str | None]:
    """Every file of a v1 model given as a folder, hub id or eval YAML; also the hub revision (None locally)."""
    path = Path(model).expanduser()
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return _from_eval_yaml(path, lavis_dir=lavis_dir, llm=llm), None
    repo = resolve_repo(model, revision=revision, allow_patterns=V1_HUB_PATTERNS)
    folder = repo.folder
    vision = _required(_vision_checkpoint_in(folder), "vision-branch checkpoint (VL_*.pth or finetune-vicuna*.pth)", folder)
    audio = _audio_checkpoint_in(folder)
    llm_folder = Path(llm or os.environ.get(LLM_ENV) or "").expanduser() if (llm or os.environ.get(LLM_ENV)) else llm_folder_in(folder)
    if llm_folder is None or not (llm_folder / "config.json").is_file():
        raise CheckpointError(
            f"{folder}: no LLaMA folder found inside it (e.g. llama-2-7b-chat-hf/); for the Video-LLaMA-Series "
            f"files point {LLM_ENV} at the Vicuna/LLaMA folder they were trained with."
        )
    imagebind = (_named(folder, IMAGEBIND_FILE) or folder / IMAGEBIND_FILE) if audio is not None else None
    if imagebind is not None and not imagebind.is_file():
        raise CheckpointError(f"{folder}: {audio.name} needs {IMAGEBIND_FILE} beside it (upstream's imagebind_ckpt_path); it is missing.")
    near = [folder, vision.parent]
    paths = V1Paths(
        vision_checkpoint=vision, audio_checkpoint=audio, imagebind=imagebind, llm_folder=llm_folder.resolve(),
        eva=lavis_file(EVA_FILE, near, lavis_dir), blip2=lavis_file(BLIP2_FILE, near, lavis_dir),
        bert_config=bert_config_path(folder), template=template_for(llm_folder, vision),
    )
    return paths, repo.revision


def _from_eval_yaml(path: Path, *, lavis_dir: str | None, llm: str | None) -> V1Paths:
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))["model"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not a Video-LLaMA eval config (needs a 'model:' section): {exc}") from exc
    bases = [path.parent.parent, path.parent, Path.cwd()]  # upstream runs from the repo root (eval_configs/..)

    def find(key: str, *, required: bool = True) -> Path | None:
        value = config.get(key)
        if not value:
            if required:
                raise CheckpointError(f"{path}: model.{key} is not set.")
            return None
        for base in bases:
            candidate = (base / value).expanduser()
            if candidate.exists():
                return candidate.resolve()
        if required:
            raise CheckpointError(f"{path}: model.{key} = {value}: not found (relative paths are tried from "
                                  f"{', '.join(str(b) for b in bases)}).")
        return None

    vision = find("ckpt")
    llm_folder = Path(llm).expanduser() if llm else find("llama_model")
    audio = find("ckpt_2", required=False) if config.get("equip_audio_branch") else None
    imagebind = None
    if audio is not None:
        imagebind_dir = find("imagebind_ckpt_path")
        imagebind = (_named(imagebind_dir, IMAGEBIND_FILE) or imagebind_dir / IMAGEBIND_FILE) if imagebind_dir.is_dir() else imagebind_dir
        if not imagebind.is_file():
            raise CheckpointError(f"{path}: {imagebind} (ImageBind weights) is missing.")
    blip2 = find("q_former_model", required=False)
    near = [vision.parent] + ([blip2.parent] if blip2 is not None else [])
    model_type = str(config.get("model_type", ""))
    return V1Paths(
        vision_checkpoint=vision, audio_checkpoint=audio, imagebind=imagebind, llm_folder=llm_folder,
        eva=lavis_file(EVA_FILE, near, lavis_dir),
        blip2=blip2 if blip2 is not None and blip2.is_file() else lavis_file(BLIP2_FILE, near, lavis_dir),
        bert_config=bert_config_path(),
        template="llama_v2" if model_type.endswith("llama_v2") else ("vicuna" if model_type else template_for(llm_folder, vision)),
        extra={k: config[k] for k in ("image_size", "num_query_token", "max_frame_pos", "num_video_query_token",
                                      "num_audio_query_token") if k in config},
    )
