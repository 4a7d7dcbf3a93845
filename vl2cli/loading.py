"""Loading a model: the family's model core, then the encoder backend composed on top of it.

Below the library API (which re-exports both functions as `vl2cli.load_model` / `vl2cli.convert_model`)
so that whatever loads a model in its own process, e.g. a Ray actor (`vl2cli.runners.ray_engine`),
does so without importing the API above it.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import Vl2Error
from .settings import DEFAULT_MODEL

if TYPE_CHECKING:
    from .model.videollama2 import VideoLlama2


def load_model(
    model: str = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    frames: int | None = None,
    encoder_backend: str = "auto",
    device_map: str | dict | None = None,
    export_dir: str | None = None,
    engine_dir: str | None = None,
) -> "VideoLlama2":
    """Load a checkpoint (hub id through the HF cache, or a local folder); a Video-LLaMA (v1) hub id, folder
    or upstream eval YAML loads that family (`vl2cli.model.families`). `frames` overrides num_frames,
    `device_map` (e.g. "auto") spreads the LLM over several GPUs, `export_dir`/`engine_dir` say where
    `vl2 export` wrote encoders for `encoder_backend` to find."""
    from .model.families import family_of, model_class
    from .model.videollama2 import VideoLlama2
    from .runtime.selection import attach_encoder_backend, check_backend_name

    check_backend_name(encoder_backend)
    family = family_of(model)
    if family != "videollama2":  # Video-LLaMA (v1): torch encoders only (no export path for its encoders)
        if encoder_backend not in ("auto", "torch"):
            raise Vl2Error(f"encoder_backend {encoder_backend!r}: {model} is a Video-LLaMA (v1) model; "
                           "its encoders run in torch only.")
        return model_class(family).from_pretrained(model, revision=revision, device=device, dtype=dtype,
                                                   num_frames=frames)
    # the model core always loads with torch encoders; the backend is composed on top of it
    loaded = VideoLlama2.from_pretrained(model, revision=revision, device=device, dtype=dtype, num_frames=frames,
                                         device_map=device_map)
    attach_encoder_backend(loaded, encoder_backend, export_dir=export_dir, engine_dir=engine_dir)
    return loaded


def convert_model(model: str, out: str | Path, *, revision: str | None = None) -> list[Path]:
    """Write a safetensors copy of a Video-LLaMA (v1) model (folder, hub id or eval YAML) into the new
    folder `out`, which then loads with `load_model(out)` without unpickling anything."""
    from .model.families import family_of
    from .model.videollama.convert import convert_v1

    if family_of(model) != "videollama":
        raise Vl2Error(f"{model}: not a Video-LLaMA (v1) model; VideoLLaMA 2 checkpoints are safetensors already.")
    return convert_v1(model, Path(out), revision=revision)


__all__ = ["convert_model", "load_model"]
