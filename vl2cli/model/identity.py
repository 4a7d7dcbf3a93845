"""What a checkpoint is, read from its config.json alone: enough to key resume records, without torch.

A nightly rerun over an archive where every file is done must answer "is this file done?" in
milliseconds; that needs the checkpoint's identity (id, resolved revision, frame count) and which
towers it has, nothing that needs torch or transformers. `Vl2Config` (config.py) is the full reading,
used once the weights actually load; both read the same keys with the same defaults.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..constants import DEFAULT_NUM_FRAMES
from ..errors import CheckpointError
from .hub import CHECKPOINT_PATTERNS, resolve_repo

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class CheckpointIdentity:
    """A checkpoint's identity for records and resume, and its towers (duck-types `Vl2Config` there).

    model_id: the hub id as given, or the folder's absolute path for a local folder (so reruns from
    another directory still match); revision: the resolved hub commit (None for folders).
    """

    model_id: str
    revision: str | None
    folder: Path
    num_frames: int
    has_vision: bool
    has_audio: bool
    family: str = "videollama2"

    @classmethod
    def resolve(cls, model: str, *, revision: str | None = None) -> "CheckpointIdentity":
        """Resolve a hub id (through the HF cache) or a local folder and read its config.json."""
        from .families import family_of

        if family_of(model) == "videollama":
            return cls._resolve_v1(model, revision=revision)
        repo = resolve_repo(model, revision=revision, allow_patterns=CHECKPOINT_PATTERNS)
        raw = read_config_json(repo.folder / CONFIG_FILE)
        return cls(
            model_id=model if repo.revision is not None else str(repo.folder),
            revision=repo.revision,
            folder=repo.folder,
            num_frames=int(raw.get("num_frames") or DEFAULT_NUM_FRAMES),
            has_vision=raw.get("mm_vision_tower") is not None,
            has_audio=raw.get("mm_audio_tower") is not None,
        )

    @classmethod
    def _resolve_v1(cls, model: str, *, revision: str | None) -> "CheckpointIdentity":
        """A Video-LLaMA (v1) model: every file located (a missing one is named now), 8 frames."""
        from .videollama.files import V1_NUM_FRAMES, resolve_v1_paths

        paths, resolved = resolve_v1_paths(model, revision=revision)
        return cls(
            model_id=model if resolved is not None else str(Path(model).expanduser().resolve()),
            revision=resolved, folder=paths.vision_checkpoint.parent, num_frames=V1_NUM_FRAMES,
            has_vision=True, has_audio=paths.has_audio, family="videollama",
        )


def read_config_json(path: Path) -> dict:
    """config.json as a dict, or a CheckpointError that says what is wrong with it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no config.json; is this a VideoLLaMA 2 checkpoint folder?") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: config.json is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: config.json does not hold a JSON object.")
    return raw
