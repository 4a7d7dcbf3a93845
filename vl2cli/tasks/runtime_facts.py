"""The record's `runtime` object: what made a record, so that answers that differ can be traced to the
device, precision, encoder backend or library versions that gave them.

Computed once per run from the loaded model (not per record): none of it changes while a run lasts.
"""
from __future__ import annotations

from importlib import metadata
from typing import Any

from .. import __version__

#: The libraries whose versions change answers (the distribution names pip knows them by).
VERSIONED_LIBRARIES = ("torch", "transformers")
#: The encoder backend of a model that has no exchangeable encoders (Video-LLaMA v1 runs them in torch).
DEFAULT_ENCODER_BACKEND = "torch"


def library_version(name: str) -> str | None:
    """The installed version of a library, None when it is not installed as a distribution."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def runtime_facts(model: Any, video_backend: str | None) -> dict[str, Any]:
    """`runtime` for records a loaded model makes: its device and dtype (torch's names: "cuda:0",
    "bfloat16"), the backend its encoders run on, the video_backend setting the files were decoded
    under, and the versions of vl2, torch and transformers."""
    encoders = getattr(model, "encoders", None)
    return {
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "encoder_backend": getattr(encoders, "name", None) or DEFAULT_ENCODER_BACKEND,
        "video_backend": video_backend,
        "versions": {"vl2": __version__, **{name: library_version(name) for name in VERSIONED_LIBRARIES}},
    }
