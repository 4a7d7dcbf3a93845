"""Find a checkpoint (hub id or folder) and read tensors from its safetensors shards.

Hub ids resolve through huggingface_hub's cache, so HF_HUB_OFFLINE and HF_HUB_CACHE behave as users
of transformers expect. Shards are checked up front (present, readable headers) so a broken download
gives one clear message instead of a failure half-way through loading.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import CheckpointError
from .hub import CHECKPOINT_PATTERNS, ResolvedRepo, hub_offline, resolve_repo

__all__ = ["CHECKPOINT_PATTERNS", "ResolvedRepo", "ShardedSafetensors", "hub_offline", "resolve_repo"]

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


class ShardedSafetensors:
    """Read-only view over a checkpoint's safetensors file(s), key -> tensor, reading lazily."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.key_to_file = self._index(folder)
        self._check_shards()

    @staticmethod
    def _index(folder: Path) -> dict[str, Path]:
        index_path = folder / SAFETENSORS_INDEX
        if index_path.exists():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise CheckpointError(f"{index_path}: unreadable shard index: {exc}") from exc
            return {key: folder / name for key, name in weight_map.items()}
        single = folder / SAFETENSORS_SINGLE
        if single.exists():
            with _open_shard(single) as handle:
                return {key: single for key in handle.keys()}
        if any(folder.glob("*.bin")):
            raise CheckpointError(
                f"{folder}: only PyTorch .bin weights found; vl2 loads safetensors only (it never unpickles files)."
            )
        raise CheckpointError(f"{folder}: no {SAFETENSORS_SINGLE} or {SAFETENSORS_INDEX}; not a complete checkpoint.")

    def _check_shards(self) -> None:
        files = sorted(set(self.key_to_file.values()))
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(
                f"{self.folder}: missing shard file(s) {', '.join(missing)} listed in {SAFETENSORS_INDEX}; "
                "the download is incomplete."
            )
        for shard in files:
            with _open_shard(shard) as handle:
                present = set(handle.keys())
            expected = {k for k, f in self.key_to_file.items() if f == shard}
            absent = sorted(expected - present)
            if absent:
                raise CheckpointError(f"{shard}: tensors listed in the index are missing: {', '.join(absent[:5])}")

    def keys(self) -> list[str]:
        return list(self.key_to_file)

    def keys_with_prefix(self, prefix: str) -> list[str]:
        return [k for k in self.key_to_file if k.startswith(prefix)]

    def load(self, keys: Iterable[str], *, strip_prefix: str = "", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Tensors for `keys` (each read once, shard by shard), optionally renamed and cast."""
        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self.key_to_file[key], []).append(key)
        out: dict[str, torch.Tensor] = {}
        for shard, shard_keys in by_file.items():
            with _open_shard(shard) as handle:
                for key in shard_keys:
                    try:
                        tensor = handle.get_tensor(key)
                    except Exception as exc:  # safetensors raises its own error types for bad data
                        raise CheckpointError(f"{shard}: cannot read tensor {key}: {exc}") from exc
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    out[key[len(strip_prefix):] if key.startswith(strip_prefix) else key] = tensor
        return out

    def iter_prefix(self, prefix: str, **kwargs) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self.load(self.keys_with_prefix(prefix), **kwargs).items()


class _open_shard:
    """`safe_open` with safetensors' errors turned into a CheckpointError naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self):
        try:
            self._cm = safe_open(str(self.path), framework="pt", device="cpu")
            return self._cm.__enter__()
        except Exception as exc:
            raise CheckpointError(f"{self.path}: not a readable safetensors file ({exc}); re-download it.") from exc

    def __exit__(self, *exc_info) -> None:
        self._cm.__exit__(*exc_info)
