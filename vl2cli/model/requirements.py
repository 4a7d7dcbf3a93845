"""Everything a model needs before it can load (its hub repos and other files), found without torch.

A VideoLLaMA 2 checkpoint names its vision tower repo in config.json (`mm_vision_tower`): the tower's
config and image processor come from there, its weights from the checkpoint (as do BEATs' weights in
the audio-visual checkpoints: `mm_audio_tower` is never opened). A Video-LLaMA (v1) model also needs
`bert-base-uncased`'s config, a LLaMA folder and two LAVIS files that are not on the hub.

Checked only in the local cache (never a download), so that `vl2 models`, `vl2 pull`, a dry run and an
offline run can all name every missing piece at once, before any weights load; the loaders would
otherwise find them one at a time, the tower only after the language model has loaded.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.constants import HF_HUB_CACHE
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

from ..errors import CheckpointError, HubResolutionError
from .hub import CHECKPOINT_PATTERNS, hub_offline

#: Files vl2 needs from a tower's hub repo: its architecture and its image processor (no weights:
#: the released VideoLLaMA 2 checkpoints carry the tower weights themselves).
TOWER_FILES = ["config.json", "preprocessor_config.json"]
CONFIG_FILE = "config.json"
SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class RepoNeed:
    """A hub repo a model needs, and what the cache holds of it (`folder` None: not in the cache)."""

    repo_id: str
    role: str
    patterns: tuple[str, ...]
    revision: str | None = None
    folder: Path | None = None
    lacks: tuple[str, ...] = ()

    @property
    def present(self) -> bool:
        return self.folder is not None and not self.lacks

    def describe(self) -> str:
        if self.folder is None:
            return f"{self.repo_id} ({self.role})"
        return f"{self.repo_id} ({self.role}; the cached copy lacks {', '.join(self.lacks)})"


@dataclass(frozen=True)
class FileNeed:
    """A file that is not on the hub (Video-LLaMA's LAVIS files, its LLaMA folder); `problem` says how to
    get it when it is missing (`path` None)."""

    name: str
    role: str
    path: Path | None
    problem: str = ""

    @property
    def present(self) -> bool:
        return self.path is not None


@dataclass
class ModelRequirements:
    """What `model` needs. `pending` is set when a VideoLLaMA 2 repo itself is not cached yet: the repos
    its config.json names (its vision tower) are only known once it is."""

    model: str
    family: str
    repos: list[RepoNeed] = field(default_factory=list)
    files: list[FileNeed] = field(default_factory=list)
    pending: bool = False

    @property
    def missing_repos(self) -> list[RepoNeed]:
        return [repo for repo in self.repos if not repo.present]

    @property
    def missing_files(self) -> list[FileNeed]:
        return [file for file in self.files if not file.present]

    @property
    def complete(self) -> bool:
        return not self.missing_repos and not self.missing_files and not self.pending

    def missing_message(self) -> str:
        """One sentence naming every missing repo and file, and how to get them."""
        parts = []
        if self.missing_repos:
            repos = ", ".join(repo.describe() for repo in self.missing_repos)
            parts.append(f"missing {repos} (run `vl2 pull {self.model}` on a connected machine; it fetches "
                         "every repo the model needs into the Hugging Face cache)")
        if self.pending:
            parts.append("the repos its config.json names (its vision tower) are known once the model is cached")
        parts += [file.problem for file in self.missing_files]
        state = ("HF_HUB_OFFLINE is set and it is not in the cache, or not all of it" if hub_offline()
                 else "not everything it needs is in the cache")
        return f"{self.model}: {state} ({cache_folder()}): " + "; ".join(parts)


def cache_folder() -> Path:
    """The hub cache vl2 reads: HF_HUB_CACHE now (tests and users switch it), else huggingface_hub's."""
    return Path(os.environ.get("HF_HUB_CACHE") or HF_HUB_CACHE)


def cached_snapshot(repo_id: str, *, revision: str | None = None) -> Path | None:
    """The cached snapshot folder of a hub repo, or None; never downloads."""
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True,
                                      cache_dir=os.environ.get("HF_HUB_CACHE") or None))
    except LocalEntryNotFoundError:
        return None
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise HubResolutionError(f"{repo_id}: not a local folder and not a hub repository: {exc}") from exc


def _checkpoint_lacks(folder: Path) -> tuple[str, ...]:
    """Files a VideoLLaMA 2 snapshot should hold but does not (an interrupted download)."""
    if not (folder / CONFIG_FILE).is_file():
        return (CONFIG_FILE,)
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return (SAFETENSORS_INDEX,)
        return tuple(name for name in shards if not (folder / name).is_file())
    return () if (folder / SAFETENSORS_SINGLE).is_file() else (SAFETENSORS_SINGLE,)


def _hub_need(repo_id: str, role: str, patterns: list[str], *, revision: str | None = None,
              files: list[str] | None = None) -> RepoNeed:
    folder = cached_snapshot(repo_id, revision=revision)
    lacks = tuple(name for name in files or [] if folder is not None and not (folder / name).is_file())
    return RepoNeed(repo_id, role, tuple(patterns), revision, folder, lacks)


def _vision_tower_of(folder: Path) -> str | None:
    try:
        raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the loader names what is wrong with config.json
    tower = raw.get("mm_vision_tower") if isinstance(raw, dict) else None
    return tower if isinstance(tower, str) and tower else None


def videollama2_requirements(model: str, *, revision: str | None = None) -> ModelRequirements:
    """The checkpoint repo (unless `model` is a folder) and the vision tower repo its config names."""
    needs = ModelRequirements(model, "videollama2")
    local = Path(model).expanduser()
    if local.is_dir():
        folder: Path | None = local
    else:
        folder = cached_snapshot(model, revision=revision)
        lacks = _checkpoint_lacks(folder) if folder is not None else ()
        needs.repos.append(RepoNeed(model, "the model", tuple(CHECKPOINT_PATTERNS), revision, folder, lacks))
    if folder is None or not (folder / CONFIG_FILE).is_file():
        needs.pending = folder is None
        return needs
    tower = _vision_tower_of(folder)
    if tower is not None and not Path(tower).expanduser().is_dir():
        needs.repos.append(_hub_need(tower, "its vision tower", TOWER_FILES, files=TOWER_FILES))
    return needs


def videollama_v1_requirements(model: str, *, revision: str | None = None, lavis_dir: str | None = None,
                               llm: str | None = None) -> ModelRequirements:
    """The release repo (unless a folder or eval YAML), bert-base-uncased's config, the LLaMA folder and
    the two LAVIS files."""
    from .videollama import files as v1

    needs = ModelRequirements(model, "videollama")
    local = Path(model).expanduser()
    folder: Path | None = None
    if local.is_dir():
        folder = local
    elif not local.is_file():
        folder = cached_snapshot(model, revision=revision)
        needs.repos.append(RepoNeed(model, "the model", tuple(v1.V1_HUB_PATTERNS), revision, folder))
    if not (folder is not None and (folder / v1.BERT_REPO / CONFIG_FILE).is_file()):
        needs.repos.append(_hub_need(v1.BERT_REPO, "the Q-Former sizes", [CONFIG_FILE], files=[CONFIG_FILE]))
    if local.is_file():
        return needs  # an eval YAML names its own files; the loader checks each of them
    if folder is not None and (llm or os.environ.get(v1.LLM_ENV)) is None and v1.llm_folder_in(folder) is None:
        needs.files.append(FileNeed("LLaMA folder", "its language model", None,
                                    f"{folder}: no LLaMA folder inside it; point {v1.LLM_ENV} at the "
                                    "Vicuna/LLaMA folder it was trained with"))
    near = [folder] if folder is not None else []
    for name in (v1.EVA_FILE, v1.BLIP2_FILE):
        try:
            needs.files.append(FileNeed(name, "LAVIS weights", v1.lavis_file(name, near, lavis_dir)))
        except CheckpointError as exc:
            needs.files.append(FileNeed(name, "LAVIS weights", None, str(exc)))
    return needs


def model_requirements(model: str, *, revision: str | None = None, lavis_dir: str | None = None,
                       llm: str | None = None) -> ModelRequirements:
    """What `model` (hub id, folder, or a v1 eval YAML) needs, and which of it the cache holds."""
    from .families import family_of

    if family_of(model) == "videollama":
        return videollama_v1_requirements(model, revision=revision, lavis_dir=lavis_dir, llm=llm)
    return videollama2_requirements(model, revision=revision)


def check_offline_requirements(model: str, *, revision: str | None = None, lavis_dir: str | None = None,
                               llm: str | None = None) -> None:
    """With HF_HUB_OFFLINE set, a HubResolutionError naming everything the model lacks, before anything
    loads (online, the loaders fetch what is missing)."""
    if not hub_offline():
        return
    needs = model_requirements(model, revision=revision, lavis_dir=lavis_dir, llm=llm)
    if not needs.complete:
        raise HubResolutionError(needs.missing_message())


#: Rounds of fetching in `fetch_requirements`: the model first, then the repos its config names.
FETCH_ROUNDS = 3


def fetch_requirements(model: str, *, revision: str | None = None, lavis_dir: str | None = None,
                       llm: str | None = None, on_fetch: Callable[[RepoNeed], None] | None = None) -> ModelRequirements:
    """Download every missing hub repo `model` needs through huggingface_hub (its own progress bars on
    stderr); what is still missing afterwards (files not on the hub) is in the returned requirements."""
    fetched: set[str] = set()
    for _ in range(FETCH_ROUNDS):
        needs = model_requirements(model, revision=revision, lavis_dir=lavis_dir, llm=llm)
        todo = [repo for repo in needs.missing_repos if repo.repo_id not in fetched]
        if not todo:
            return needs
        for repo in todo:
            if on_fetch is not None:
                on_fetch(repo)
            fetched.add(repo.repo_id)
            try:
                snapshot_download(repo.repo_id, revision=repo.revision, allow_patterns=list(repo.patterns),
                                  cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=hub_offline())
            except LocalEntryNotFoundError as exc:
                raise HubResolutionError(f"{repo.repo_id} ({repo.role}): cannot download it: the hub cannot be "
                                         "reached; what was fetched is kept, fetch again once it can") from exc
            except (RepositoryNotFoundError, HFValidationError) as exc:
                raise HubResolutionError(f"{repo.repo_id}: not a hub repository: {exc}") from exc
            except OSError as exc:  # network errors surface as OSError subclasses
                raise HubResolutionError(f"{repo.repo_id}: could not download: {exc}") from exc
    return model_requirements(model, revision=revision, lavis_dir=lavis_dir, llm=llm)
