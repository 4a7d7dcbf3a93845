"""Hub ids and local folders to a local checkpoint folder, without importing torch.

Kept apart from the tensor reading (`checkpoint.py`) so that a cron rerun with nothing new can learn
the checkpoint's identity (folder, resolved revision, config.json) in milliseconds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

from ..errors import CheckpointError, HubResolutionError

#: What vl2 needs from a model repo; weights of other formats (.bin pickles) are never downloaded.
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.tiktoken"]


@dataclass(frozen=True)
class ResolvedRepo:
    """A local folder for a hub id or path, with the revision it came from (None for plain folders)."""

    folder: Path
    revision: str | None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_repo(
    name_or_path: str, *, revision: str | None = None, allow_patterns: list[str] | None = None
) -> ResolvedRepo:
    """Local folder as is; otherwise a hub id fetched into (or found in) the huggingface_hub cache."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return ResolvedRepo(local.resolve(), None)
    if local.exists():
        raise CheckpointError(f"{name_or_path}: expected a checkpoint folder or a hub id, got a file.")
    try:
        folder = snapshot_download(
            name_or_path,
            revision=revision,
            allow_patterns=allow_patterns,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,  # read now, not at import: tests and users switch caches
            local_files_only=hub_offline(),
        )
    except LocalEntryNotFoundError as exc:
        hint = (
            "HF_HUB_OFFLINE is set and it is not in the cache"
            if hub_offline()
            else "it is not in the cache and the hub cannot be reached"
        )
        raise HubResolutionError(
            f"{name_or_path}: cannot resolve this hub id: {hint} (cache: {os.environ.get('HF_HUB_CACHE') or 'default'}). "
            f"Fetch the model on a connected machine (`vl2 pull MODEL` gets it and every repo it needs) or pass a "
            "local folder."
        ) from exc
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise HubResolutionError(f"{name_or_path}: not a local folder and not a hub repository: {exc}") from exc
    except OSError as exc:  # network errors surface as OSError subclasses
        raise HubResolutionError(f"{name_or_path}: could not download: {exc}") from exc
    folder_path = Path(folder)
    return ResolvedRepo(folder_path, folder_path.name if folder_path.parent.name == "snapshots" else revision)
