"""Reading v1's pickled checkpoints safely: `torch.load(weights_only=True, mmap=True)`, nothing else.

The released `.pth` files are pickles; `weights_only=True` lets torch rebuild tensors, dicts, lists
and numbers only, so a file carrying any other global (code) is refused instead of run. `mmap=True`
maps the file rather than reading it: upstream's branch checkpoints also hold the AdamW moments and
other training state, and only `ckpt["model"]` is touched. A `.safetensors` file written by
`vl2 convert` beside a `.pth` is preferred over it (no unpickling at all).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ...errors import CheckpointError


def safetensors_twin(path: Path) -> Path:
    return path.with_suffix(".safetensors")


def load_state_dict(path: Path, what: str, *, model_key: bool | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth` (or its converted `.safetensors` twin) as a flat dict.

    model_key: True: the state dict is `ckpt["model"]` (upstream's runner checkpoints and the LAVIS
    BLIP-2 file); False: the file is a plain state dict; None: whichever it is.
    """
    twin = safetensors_twin(path)
    if path.suffix != ".safetensors" and twin.is_file():
        path = twin
    if not path.is_file():
        raise CheckpointError(f"{path}: the {what} file is missing.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); convert it again.") from exc
    obj = _torch_load(path, what)
    if isinstance(obj, dict) and "model" in obj and model_key is not False and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif model_key:
        raise CheckpointError(f"{path}: the {what} file has no 'model' entry (keys: {sorted(obj)[:6] if isinstance(obj, dict) else type(obj).__name__}).")
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: the {what} file does not hold a state dict of tensors.")
    return obj


def _torch_load(path: Path, what: str):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: the {what} file holds more than tensors (a pickled object vl2 will not load: "
            f"{str(exc).splitlines()[0][:200]}). vl2 never unpickles code; re-save the state dict or use `vl2 convert` on a trusted copy."
        ) from exc
    except RuntimeError as exc:
        if "mmap" in str(exc).lower() or "zip" in str(exc).lower() and "legacy" in str(exc).lower():
            try:  # files from torch < 1.6 are not zip archives and cannot be memory-mapped
                return torch.load(str(path), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as inner:
                raise CheckpointError(f"{path}: the {what} file holds more than tensors ({inner}).") from inner
            except Exception as inner:
                raise CheckpointError(f"{path}: cannot read the {what} file ({inner}); re-download it.") from inner
        raise CheckpointError(f"{path}: cannot read the {what} file ({exc}); it is truncated or not a PyTorch checkpoint: re-download it.") from exc
    except (OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the {what} file ({exc}); re-download it.") from exc


def with_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with it removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
