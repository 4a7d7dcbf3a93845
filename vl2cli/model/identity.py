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

from ..constants import DEFAULT_NUM_FRAMES, FRAMES_LIMIT
from ..errors import CheckpointError
from .hub import CHECKPOINT_PATTERNS, resolve_repo
from .requirements import check_offline_requirements

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

        check_offline_requirements(model, revision=revision)  # every missing repo named, the tower's too
        if family_of(model) == "videollama":
            return cls._resolve_v1(model, revision=revision)
        repo = resolve_repo(model, revision=revision, allow_patterns=CHECKPOINT_PATTERNS)
        raw = read_config_json(repo.folder / CONFIG_FILE)
        return cls(
            model_id=model if repo.revision is not None else str(repo.folder),
            revision=repo.revision,
            folder=repo.folder,
            num_frames=config_num_frames(raw, repo.folder / CONFIG_FILE),
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


def config_num_frames(raw: dict, source: str | Path) -> int:
    """config.json's `num_frames` (the default when absent), range-checked as the `frames` setting is."""
    value = raw.get("num_frames") or DEFAULT_NUM_FRAMES
    if isinstance(value, float) and value.is_integer():  # 8.0: what int() always took
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= FRAMES_LIMIT:
        raise CheckpointError(f"{source}: num_frames {value!r} is not a frame count vl2 supports "
                              f"(an integer from 1 to {FRAMES_LIMIT})")
    return value


#: Size fields of a config.json that must be positive integers when present (and their most).
CONFIG_SIZE_FIELDS = {"hidden_size": 1 << 20, "mm_hidden_size": 1 << 20, "hidden_size_a": 1 << 20,
                      "mm_hidden_size_a": 1 << 20, "intermediate_size": 1 << 22, "vocab_size": 1 << 24,
                      "num_hidden_layers": 1024, "num_attention_heads": 4096, "num_key_value_heads": 4096,
                      "max_position_embeddings": 1 << 24}


def check_config_sizes(raw: dict, source: str | Path) -> None:
    """A CheckpointError naming the first size field that is not a positive integer in range."""
    for name, most in CONFIG_SIZE_FIELDS.items():
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise CheckpointError(f"{source}: {name} {value!r} is not a size vl2 can build a model with "
                                  f"(an integer from 1 to {most})")


def read_config_json(path: Path) -> dict:
    """config.json as a dict, or a CheckpointError that says what is wrong with it."""
    from ..bounded_files import read_small_file, reason

    try:
        raw = json.loads(read_small_file(path).decode("utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no config.json; is this a VideoLLaMA 2 checkpoint folder?") from exc
    except OSError as exc:
        raise CheckpointError(f"{path}: config.json cannot be read ({reason(exc)})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: config.json is nested too deep to be a model config") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: config.json is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: config.json does not hold a JSON object.")
    return raw
