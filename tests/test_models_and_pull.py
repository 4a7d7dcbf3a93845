"""What a model needs, `vl2 models` and `vl2 pull` (issue 22), on real Hugging Face cache layouts built in
tmp folders from the fixture checkpoints, offline (no machine here reaches the hub: the download itself is
huggingface_hub's snapshot_download and is not exercised)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fixture_pack import reference_root, reference_v1_root
from media_helpers.fixtures import needs_fixtures
from vl2cli.cli import app
from vl2cli.errors import HubResolutionError
from vl2cli.model.cache_inventory import cached_models
from vl2cli.model.identity import CheckpointIdentity
from vl2cli.model.requirements import TOWER_FILES, check_offline_requirements, model_requirements
from vl2cli.commands.exit_codes import EXIT_FATAL, EXIT_OK

FIXTURE = "siglip-qwen2-stc-v35"
V1_FIXTURE = "v1-llama2-vision"
MODEL_ID = "DAMO-NLP-SG/tiny-test-model"
V1_ID = "DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned"
TOWER_ID = "google/siglip-so400m-patch14-384"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
needs_checkpoint = needs_fixtures(reference=(FIXTURE,))
needs_v1 = needs_fixtures(v1=(V1_FIXTURE,))
runner = CliRunner()


def add_repo(cache: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """`repo_id` at `commit` in a hub cache as huggingface_hub leaves it: blobs, snapshot symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for index, file in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        blob = repo / "blobs" / f"{commit[:8]}{index:04d}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(link.relative_to(repo).parts) - 1)) / "blobs" / blob.name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _tower_source() -> Path:
    return next((reference_root() / FIXTURE / "hub" / "models--google--siglip-so400m-patch14-384" / "snapshots").iterdir())


def _v1() -> Path:
    return reference_v1_root() / V1_FIXTURE


@needs_checkpoint
def test_a_cached_model_with_its_tower_is_complete(hub: Path) -> None:
    add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    add_repo(hub, TOWER_ID, _tower_source(), commit="f" * 40)
    needs = model_requirements(MODEL_ID)
    assert needs.complete and [repo.repo_id for repo in needs.repos] == [MODEL_ID, TOWER_ID]
    assert needs.repos[0].folder == hub / f"models--{MODEL_ID.replace('/', '--')}" / "snapshots" / COMMIT
    check_offline_requirements(MODEL_ID)  # nothing raised


@needs_checkpoint
def test_a_missing_tower_is_named_before_anything_loads(hub: Path) -> None:
    add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    with pytest.raises(HubResolutionError) as caught:
        CheckpointIdentity.resolve(MODEL_ID)  # what --dry-run and every run resolve first
    message = str(caught.value)
    assert f"missing {TOWER_ID} (its vision tower)" in message and f"vl2 pull {MODEL_ID}" in message
    from vl2cli.model.videollama2 import VideoLlama2

    with pytest.raises(HubResolutionError, match="its vision tower"):
        VideoLlama2.from_pretrained(MODEL_ID, device="cpu")


def test_a_model_not_in_the_cache_is_named_with_how_to_get_it(hub: Path) -> None:
    with pytest.raises(HubResolutionError) as caught:
        check_offline_requirements(MODEL_ID)
    assert f"missing {MODEL_ID} (the model)" in str(caught.value) and f"`vl2 pull {MODEL_ID}`" in str(caught.value)
    assert str(hub) in str(caught.value)


@needs_checkpoint
def test_online_the_check_leaves_fetching_to_the_loaders(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    check_offline_requirements(MODEL_ID)  # nothing cached, but online the loader downloads it


@needs_checkpoint
def test_an_interrupted_download_lacks_its_weights(hub: Path) -> None:
    snapshot = add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    add_repo(hub, TOWER_ID, _tower_source(), commit="f" * 40)
    (snapshot / "model.safetensors").unlink()
    needs = model_requirements(MODEL_ID)
    assert not needs.complete and needs.missing_repos[0].lacks == ("model.safetensors",)


@needs_checkpoint
def test_a_local_folder_needs_only_its_tower(hub: Path, tmp_path: Path) -> None:
    needs = model_requirements(str(reference_root() / FIXTURE / "checkpoint"))
    assert [repo.repo_id for repo in needs.repos] == [TOWER_ID] and not needs.complete
    add_repo(hub, TOWER_ID, _tower_source())
    assert model_requirements(str(reference_root() / FIXTURE / "checkpoint")).complete


def test_the_tower_files_are_the_ones_the_tower_loader_reads() -> None:
    from vl2cli.model import vision_tower

    assert TOWER_FILES == vision_tower.TOWER_FILES


@needs_v1
def test_video_llama_names_bert_and_both_lavis_files_at_once(hub: Path, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("VL2_HOME", str(tmp_path / "home"))
    with pytest.raises(HubResolutionError) as caught:
        CheckpointIdentity.resolve(V1_ID)
    assert f"missing {V1_ID} (the model), bert-base-uncased" in str(caught.value)
    assert "eva_vit_g.pth not found" in str(caught.value) and "vision tower" not in str(caught.value)
    add_repo(hub, V1_ID, _v1() / "Video-LLaMA-2-7B-Finetuned")
    with pytest.raises(HubResolutionError) as caught:
        CheckpointIdentity.resolve(V1_ID)
    message = str(caught.value)
    assert "missing bert-base-uncased" in message
    assert "eva_vit_g.pth not found" in message and "blip2_pretrained_flant5xxl.pth not found" in message
    add_repo(hub, "bert-base-uncased", next((_v1() / "hub" / "models--bert-base-uncased" / "snapshots").iterdir()))
    lavis = str(_v1() / "lavis")  # the v1_lavis_dir setting, passed to the model core as a plain parameter
    assert model_requirements(V1_ID, lavis_dir=lavis).complete
    assert CheckpointIdentity.resolve(V1_ID, lavis_dir=lavis).revision == COMMIT


@needs_checkpoint
def test_vl2_models_lists_the_cache_with_sizes_revisions_and_what_is_missing(hub: Path) -> None:
    add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    add_repo(hub, TOWER_ID, _tower_source(), commit="f" * 40)
    add_repo(hub, "DAMO-NLP-SG/second-model", reference_root() / FIXTURE / "checkpoint", commit="a" * 40)
    (hub / "models--google--siglip-so400m-patch14-384" / "refs" / "main").write_text("b" * 40)  # the tower's main moved on
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == EXIT_OK, result.output
    listed = {row["model"]: row for row in json.loads(result.stdout)}
    assert set(listed) == {MODEL_ID, "DAMO-NLP-SG/second-model"}  # the tower is no model of its own
    row = listed[MODEL_ID]
    assert row["revision"] == COMMIT and row["refs"] == ["main"] and row["needs"] == [TOWER_ID]
    weights = (reference_root() / FIXTURE / "checkpoint" / "model.safetensors").stat().st_size
    assert weights < row["size_bytes"] < 2 * weights
    assert not row["complete"] and row["missing"][0]["repo"] == TOWER_ID
    assert [model.repo_id for model in cached_models()] == sorted(listed)
    table = runner.invoke(app, ["models"])
    assert table.exit_code == EXIT_OK
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "REVISION", "SIZE", "STATUS"]
    assert any(line.startswith(MODEL_ID) and COMMIT[:12] in line and f"missing: {TOWER_ID}" in line for line in lines)


def test_vl2_models_on_an_empty_cache_says_so(hub: Path) -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == EXIT_OK and "no VideoLLaMA 2 or Video-LLaMA models in the cache" in result.output
    assert json.loads(runner.invoke(app, ["models", "--json"]).stdout) == []


@needs_checkpoint
def test_vl2_pull_offline_names_what_is_missing_and_is_fatal(hub: Path) -> None:
    add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    result = runner.invoke(app, ["pull", MODEL_ID])
    assert result.exit_code == EXIT_FATAL and "Traceback" not in result.output
    assert f"missing {TOWER_ID} (its vision tower)" in result.stderr


@needs_checkpoint
def test_vl2_pull_of_a_complete_model_says_it_is_ready(hub: Path) -> None:
    add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    add_repo(hub, TOWER_ID, _tower_source(), commit="f" * 40)
    result = runner.invoke(app, ["pull", MODEL_ID])
    assert result.exit_code == EXIT_OK, result.output
    assert f"{MODEL_ID}: ready ({MODEL_ID}, {TOWER_ID} in {hub})" in result.stdout


@needs_checkpoint
def test_vl2_pull_online_with_everything_cached_downloads_nothing(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    add_repo(hub, TOWER_ID, _tower_source(), commit="f" * 40)
    result = runner.invoke(app, ["pull", MODEL_ID])
    assert result.exit_code == EXIT_OK and "fetching" not in result.output


@needs_checkpoint
def test_a_dry_run_offline_names_the_missing_tower(hub: Path, tmp_path: Path) -> None:
    add_repo(hub, MODEL_ID, reference_root() / FIXTURE / "checkpoint")
    clip = tmp_path / "videos" / "clip.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"x")
    result = runner.invoke(app, ["caption", str(clip.parent), "--model", MODEL_ID, "--dry-run"])
    assert result.exit_code == EXIT_FATAL and "Traceback" not in result.output
    assert f"missing {TOWER_ID} (its vision tower)" in result.output
