"""Loading a model: the family's model core, then the encoder backend composed on top of it.

Below the library API (which re-exports both functions as `vl2cli.load_model` / `vl2cli.convert_model`)
so that whatever loads a model in its own process, e.g. a Ray actor (`vl2cli.runners.ray_engine`),
does so without importing the API above it. Where a model's other files are (the `home` folder,
Video-LLaMA v1's LLM, LAVIS files and head counts) is a setting like any other: a caller with resolved
settings passes them; one without (a library user) gets each from its `VL2_*` variable, as the CLI
would. The model core below takes them as plain parameters and reads no environment.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Vl2Error
from .settings import DEFAULT_MODEL, setting_from_env

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
    home: str | None = None,
    v1_llm: str | None = None,
    v1_lavis_dir: str | None = None,
    v1_eva_heads: int | None = None,
    v1_imagebind_heads: int | None = None,
) -> "VideoLlama2":
    """Load a checkpoint (hub id through the HF cache, or a local folder); a Video-LLaMA (v1) hub id, folder
    or upstream eval YAML loads that family (`vl2cli.model.families`). `frames` overrides num_frames,
    `device_map` (e.g. "auto") spreads the LLM over several GPUs, `export_dir`/`engine_dir` say where
    `vl2 export` wrote encoders for `encoder_backend` to find (default: under `home`). The `v1_*` options
    locate a Video-LLaMA (v1) model's files (docs/video-llama-v1.md). Each of `home` and the `v1_*`
    options not given comes from its `VL2_*` variable (`VL2_HOME`, `VL2_V1_LLM`...)."""
    from .exporting.locations import default_engine_dir, default_export_dir
    from .model.families import family_of, model_class
    from .model.videollama2 import VideoLlama2
    from .runtime.selection import attach_encoder_backend, check_backend_name

    check_backend_name(encoder_backend)
    family = family_of(model)
    if family != "videollama2":  # Video-LLaMA (v1): torch encoders only (no export path for its encoders)
        if encoder_backend not in ("auto", "torch"):
            raise Vl2Error(f"encoder_backend {encoder_backend!r}: {model} is a Video-LLaMA (v1) model; "
                           "its encoders run in torch only.")
        return model_class(family).from_pretrained(
            model, revision=revision, device=device, dtype=dtype, num_frames=frames,
            **v1_locations(home=home, v1_llm=v1_llm, v1_lavis_dir=v1_lavis_dir),
            **_v1_heads(v1_eva_heads, v1_imagebind_heads))
    # the model core always loads with torch encoders; the backend is composed on top of it
    loaded = VideoLlama2.from_pretrained(model, revision=revision, device=device, dtype=dtype, num_frames=frames,
                                         device_map=device_map)
    home = _given_or_env(home, "home")
    attach_encoder_backend(loaded, encoder_backend, export_dir=export_dir or default_export_dir(home),
                           engine_dir=engine_dir or default_engine_dir(home))
    return loaded


def _given_or_env(value: Any, name: str) -> Any:
    """`value`, or the setting `name` from its `VL2_*` variable when not given (None)."""
    return value if value is not None else setting_from_env(name)


def v1_locations(*, home: str | None = None, v1_llm: str | None = None,
                 v1_lavis_dir: str | None = None) -> dict[str, str | None]:
    """The model core's keywords for where a Video-LLaMA (v1) model's other files are, each not given
    taken from its `VL2_*` variable (`CheckpointIdentity.resolve`, the loader and the converter take them)."""
    return {"lavis_dir": _given_or_env(v1_lavis_dir, "v1_lavis_dir"), "llm": _given_or_env(v1_llm, "v1_llm"),
            "home": _given_or_env(home, "home")}


def _v1_heads(eva_heads: int | None, imagebind_heads: int | None) -> dict[str, int | None]:
    return {"eva_heads": _given_or_env(eva_heads, "v1_eva_heads"),
            "imagebind_heads": _given_or_env(imagebind_heads, "v1_imagebind_heads")}


def convert_model(model: str, out: str | Path, *, revision: str | None = None, home: str | None = None,
                  v1_llm: str | None = None, v1_lavis_dir: str | None = None) -> list[Path]:
    """Write a safetensors copy of a Video-LLaMA (v1) model (folder, hub id or eval YAML) into the new
    folder `out`, which then loads with `load_model(out)` without unpickling anything. `home` and the
    `v1_*` options locate its other files as for `load_model` (each not given: its `VL2_*` variable)."""
    from .model.families import family_of
    from .model.videollama.convert import convert_v1

    if family_of(model) != "videollama":
        raise Vl2Error(f"{model}: not a Video-LLaMA (v1) model; VideoLLaMA 2 checkpoints are safetensors already.")
    return convert_v1(model, Path(out), revision=revision,
                      **v1_locations(home=home, v1_llm=v1_llm, v1_lavis_dir=v1_lavis_dir))


__all__ = ["convert_model", "load_model", "v1_locations"]
