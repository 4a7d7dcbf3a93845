"""The models vl2 can run that sit in the Hugging Face cache: id, revision, size on disk, what they lack.

Sizes and revisions come from huggingface_hub's own `scan_cache_dir`, so they agree with
`hf cache scan`; what each model still lacks is `requirements.model_requirements` at that revision.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from huggingface_hub import CachedRepoInfo, scan_cache_dir
from huggingface_hub.errors import CacheNotFound

from .families import family_of
from .requirements import CONFIG_FILE, ModelRequirements, cache_folder, model_requirements

#: config.json model_type prefix of the VideoLLaMA 2 checkpoints (videollama2, videollama2_qwen2, ...).
VL2_MODEL_TYPE_PREFIX = "videollama2"
#: Ref that names the revision a plain `--model ID` loads.
DEFAULT_REF = "main"


@dataclass(frozen=True)
class CachedModel:
    """One cached model repo at the revision a run would load, and what it still needs."""

    repo_id: str
    revision: str
    refs: tuple[str, ...]
    size_on_disk: int
    size_text: str
    requirements: ModelRequirements

    def as_json(self) -> dict:
        needs = self.requirements
        return {
            "model": self.repo_id, "family": needs.family, "revision": self.revision, "refs": list(self.refs),
            "size_bytes": self.size_on_disk, "complete": needs.complete,
            "needs": [repo.repo_id for repo in needs.repos if repo.repo_id != self.repo_id],
            "missing": [{"repo": repo.repo_id, "role": repo.role, "lacks": list(repo.lacks)} for repo in needs.missing_repos]
                       + [{"file": file.name, "role": file.role, "problem": file.problem} for file in needs.missing_files],
        }


def _is_vl2_model(repo: CachedRepoInfo, snapshot: Path) -> bool:
    if family_of(repo.repo_id) == "videollama":
        return True
    try:
        model_type = json.loads((snapshot / CONFIG_FILE).read_text(encoding="utf-8")).get("model_type", "")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(model_type, str) and model_type.startswith(VL2_MODEL_TYPE_PREFIX)


def cached_models() -> list[CachedModel]:
    """The VideoLLaMA 2 / Video-LLaMA model repos in the cache, sorted by id (towers and BERT are not
    models of their own: they show as what a model needs)."""
    try:
        info = scan_cache_dir(cache_folder())
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        by_ref = [rev for rev in repo.revisions if DEFAULT_REF in rev.refs]
        revision = by_ref[0] if by_ref else max(repo.revisions, key=lambda rev: rev.last_modified)
        if not _is_vl2_model(repo, revision.snapshot_path):
            continue
        needs = model_requirements(repo.repo_id, revision=revision.commit_hash)
        found.append(CachedModel(repo.repo_id, revision.commit_hash, tuple(sorted(revision.refs)),
                                 repo.size_on_disk, repo.size_on_disk_str, needs))
    return found
