"""`vl2 models` and `vl2 pull MODEL`: the command bodies (the cache reading and fetching are
`vl2cli.model.cache_inventory` and `vl2cli.model.requirements`).

Offline setup is two steps: `vl2 pull MODEL` on a connected machine (the model and every repo its
config names), then `HF_HUB_OFFLINE=1` with that cache; `vl2 models` says which cached models are
ready and what the others lack.
"""
from __future__ import annotations

import json
from typing import TextIO

from ..model.cache_inventory import CachedModel, cache_folder, cached_models
from ..model.hub import hub_offline
from ..model.requirements import ModelRequirements, RepoNeed, fetch_requirements, model_requirements
from .exit_codes import EXIT_FATAL, EXIT_OK

#: Characters of a commit hash shown in the table (as git and `hf cache scan` shorten them).
SHORT_REVISION = 12
#: Table columns.
HEADER = ("MODEL", "REVISION", "SIZE", "STATUS")
#: Spaces between table columns.
COLUMN_GAP = 2


def _status(model: CachedModel) -> str:
    needs = model.requirements
    if needs.complete:
        return "ready"
    missing = [f"{repo.repo_id} ({repo.role}{'; incomplete' if repo.folder is not None else ''})"
               for repo in needs.missing_repos] + [f"{file.name} ({file.role})" for file in needs.missing_files]
    return "missing: " + ", ".join(missing)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    gap = " " * COLUMN_GAP
    return [gap.join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip() for row in rows]


def models_command(*, as_json: bool, stdout: TextIO, stderr: TextIO) -> int:
    """List the cached models vl2 runs: a table (or one JSON array with --json); always exit 0."""
    found = cached_models()
    if as_json:
        print(json.dumps([model.as_json() for model in found], indent=2), file=stdout)
        return EXIT_OK
    if not found:
        print(f"vl2: no VideoLLaMA 2 or Video-LLaMA models in the cache ({cache_folder()}); "
              "`vl2 pull MODEL` fetches one", file=stderr)
        return EXIT_OK
    rows = [HEADER] + [(m.repo_id, m.revision[:SHORT_REVISION], m.size_text, _status(m)) for m in found]
    for line in _table(rows):
        print(line, file=stdout)
    missing = [m.repo_id for m in found if not m.requirements.complete]
    if missing:
        print(f"vl2: {len(missing)} model(s) lack something; `vl2 pull MODEL` fetches what the hub has", file=stderr)
    return EXIT_OK


def _report_done(needs: ModelRequirements, stdout: TextIO, stderr: TextIO) -> int:
    if not needs.complete:
        print(f"vl2: error: {needs.missing_message()}", file=stderr)
        return EXIT_FATAL
    names = ", ".join(repo.repo_id for repo in needs.repos) or "nothing from the hub"
    print(f"{needs.model}: ready ({names} in {cache_folder()})", file=stdout)
    return EXIT_OK


def pull_command(model: str, *, revision: str | None, stdout: TextIO, stderr: TextIO) -> int:
    """Fetch `model` and every hub repo it needs (exit 0 once all is there); offline, name what is missing
    (exit 2). Files that are not on the hub (Video-LLaMA's LAVIS files) are named with where to get them."""
    if hub_offline():
        return _report_done(model_requirements(model, revision=revision), stdout, stderr)

    def announce(repo: RepoNeed) -> None:
        print(f"vl2: fetching {repo.repo_id} ({repo.role})", file=stderr, flush=True)

    return _report_done(fetch_requirements(model, revision=revision, on_fetch=announce), stdout, stderr)
