"""Where exported graphs and engines live, and the per-model folder name inside those roots.

A source checkout uses its own `export/` and `engines/` folders (the repo layout); an installed tool
uses the `home` setting (`VL2_HOME`) or `~/.cache/vl2`. The `export_dir` / `engine_dir` settings
override either. Callers with resolved settings pass `home`; without it the settings' own reading of
the environment decides (`vl2cli.settings.setting_from_env`), so a library call behaves as the CLI.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..settings import setting_from_env

EXPORT_FOLDER = "export"
ENGINE_FOLDER = "engines"
#: Hex digits of the path hash that keeps two local checkpoints with the same folder name apart.
PATH_HASH_CHARS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _checkout_root() -> Path | None:
    """The source checkout this package runs from, recognised by its tracked `export/README.md`."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / EXPORT_FOLDER / "README.md").is_file():
        return root
    return None


def vl2_home(home: str | Path | None = None) -> Path:
    """Root for exports: `home` (default: the `home` setting from the environment), else the source
    checkout, else `~/.cache/vl2`."""
    home = home or setting_from_env("home")
    if home:
        return Path(home).expanduser()
    checkout = _checkout_root()
    if checkout is not None:
        return checkout
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vl2"


def default_export_dir(home: str | Path | None = None) -> Path:
    """The `export_dir` setting from the environment, else `export/` under the home folder."""
    return Path(setting_from_env("export_dir") or vl2_home(home) / EXPORT_FOLDER).expanduser()


def default_engine_dir(home: str | Path | None = None) -> Path:
    """The `engine_dir` setting from the environment, else `engines/` under the home folder."""
    return Path(setting_from_env("engine_dir") or vl2_home(home) / ENGINE_FOLDER).expanduser()


def model_slug(model_id: str) -> str:
    """Folder name for one model: `owner--name` for a hub id, `name-<hash>` for a local folder."""
    path = Path(model_id).expanduser()
    if path.exists():
        resolved = str(path.resolve())
        digest = hashlib.sha256(resolved.encode()).hexdigest()[:PATH_HASH_CHARS]
        return f"{_UNSAFE.sub('_', path.resolve().name)}-{digest}"
    return _UNSAFE.sub("_", model_id.replace("/", "--"))


def engine_folder_name(compute_capabilities, tensorrt_version: str, precision: str, product: str = "tensorrt") -> str:
    """One engine folder per GPU architecture(s) x TensorRT product and version x precision.

    Full TensorRT: `sm90-trt10.13.0-fp16`; TensorRT-RTX, built for several GPUs ahead of time:
    `sm75_86_89_120-rtx1.7.1.116-fp16`.
    """
    ccs = [compute_capabilities] if isinstance(compute_capabilities, str) else list(compute_capabilities)
    gpus = "sm" + "_".join(cc.replace(".", "") for cc in ccs)
    tag = "rtx" if product == "tensorrt-rtx" else "trt"
    return f"{gpus}-{tag}{tensorrt_version}-{precision}"
