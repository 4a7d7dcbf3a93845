"""`vl2 convert`: a Video-LLaMA (v1) model as a folder of safetensors files that loads without unpickling.

The released files are pickles (`.pth`, LLaMA `.bin` shards). Converting once, on a machine that has
them, writes a folder holding only safetensors (plus the LLaMA's json/tokenizer files and the BERT
config) in the released layout, so later runs never call `torch.load` at all:

    <out>/VL_*.safetensors, AL_*.safetensors, imagebind_huge.safetensors   (only `ckpt["model"]`)
    <out>/lavis/eva_vit_g.safetensors, blip2_pretrained_flant5xxl.safetensors
    <out>/bert-base-uncased/config.json
    <out>/<llm folder>/model-0000k-of-0000n.safetensors + model.safetensors.index.json + configs, tokenizer

Reading the pickles still goes through `torch.load(weights_only=True)`: a file with anything but
tensors is refused here too. Training state (optimizer moments, scaler) is not copied.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ...errors import CheckpointError
from .checkpoint import load_state_dict
from ..requirements import check_offline_requirements
from .files import BERT_REPO, resolve_v1_paths
from .language_model import weight_files

#: LLaMA-folder files copied as they are (configs and tokenizer).
LLM_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json",
                  "special_tokens_map.json")


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    """safetensors needs each tensor to own its storage: shared or strided views are copied."""
    seen: set[int] = set()
    owned = {}
    for key, tensor in state.items():
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        shared = pointer in seen
        seen.add(pointer)
        owned[key] = tensor.clone() if shared or not tensor.is_contiguous() else tensor
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(owned, str(path), metadata={"format": "pt", "written_by": "vl2 convert"})
    return path


def convert_v1(model: str, out: Path, *, revision: str | None = None) -> list[Path]:
    """Write the safetensors copy of `model` (folder, hub id or eval YAML) into `out`; returns the files."""
    check_offline_requirements(model, revision=revision)
    paths, _ = resolve_v1_paths(model, revision=revision)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out}: the output folder exists and is not empty; choose a new folder.")
    written: list[Path] = []
    branches = [(paths.vision_checkpoint, "vision-branch checkpoint", True)]
    if paths.audio_checkpoint is not None:
        branches.append((paths.audio_checkpoint, "audio-branch checkpoint", True))
        branches.append((paths.imagebind, "ImageBind (imagebind_huge.pth)", False))
    for source, what, model_key in branches:
        state = load_state_dict(source, what, model_key=model_key)
        written.append(_save(state, out / (source.stem + ".safetensors")))
    for source, what in ((paths.eva, "EVA ViT (eva_vit_g.pth)"), (paths.blip2, "BLIP-2 Q-Former")):
        state = load_state_dict(source, what, model_key=None)
        written.append(_save(state, out / "lavis" / (source.stem + ".safetensors")))
    bert = out / BERT_REPO / "config.json"
    bert.parent.mkdir(parents=True)
    shutil.copyfile(paths.bert_config, bert)
    written.append(bert)
    written += _convert_llm(paths.llm_folder, out / paths.llm_folder.name)
    return written


def _convert_llm(folder: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True)
    written = []
    shards = weight_files(folder)
    weight_map: dict[str, str] = {}
    for k, shard in enumerate(shards, start=1):
        state = load_state_dict(shard, "LLaMA weight", model_key=False)
        state = {key: t for key, t in state.items() if not key.endswith("rotary_emb.inv_freq")}
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        written.append(_save(state, out / name))
        weight_map.update({key: name for key in state})
    index = out / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"written_by": "vl2 convert"}, "weight_map": weight_map}, indent=1))
    written.append(index)
    for name in LLM_SIDE_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
            written.append(out / name)
    return written
