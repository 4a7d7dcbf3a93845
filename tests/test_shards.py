"""Slurm array shards: every file in exactly one shard, ids that survive a growing archive, the
SLURM_ARRAY_* contract (offset arrays, resubmitting some indices), completion markers, `vl2 shards`
after a killed shard, and `vl2 merge` giving the unsharded run's records."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from media_helpers.fixtures import MEDIA_FIXTURES
from reference_fixtures import offline_fixture_hub, reference_root
from vl2cli import api
from vl2cli.errors import Vl2Error
from vl2cli.output.merge import latest_records, write_merged
from vl2cli.commands.shard_commands import merge_shards, shards_report
from vl2cli.runners.shards import (Shard, ShardError, ShardFolder, SlurmArray, array_expression, file_id,
                                   plan_sharded_output, shard_of)
from vl2cli.settings import resolve_settings
from vl2cli.commands.run_command import execute
from vl2cli.commands.exit_codes import EXIT_OK, EXIT_SOME_FAILED
from vl2cli.tasks.spec import RunOptions, TaskSpec

AV_FIXTURE = "siglip-qwen2-av"
IMAGE = "img_smptehdbars_500x300.png"
BROKEN = "broken_empty.mp4"
needs_model = pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir() or not (MEDIA_FIXTURES / IMAGE).is_file()
                                 or not (MEDIA_FIXTURES / BROKEN).is_file(), reason="reference or media fixtures not found")
SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN")


def _slurm(task_id: int, count: int, first: int) -> dict[str, str]:
    return dict(zip(SLURM, map(str, (task_id, count, first))))


# ------------------------------------------------------------------ the contract, no model
def test_every_id_lands_in_exactly_one_shard_and_the_hash_is_sha256_mod_n() -> None:
    ids = [f"day{d}/clip{i:03d}.mp4" for d in range(5) for i in range(40)]
    for count in (1, 3, 7):
        owners = {name: [k for k in range(count) if shard_of(name, count) == k] for name in ids}
        assert all(len(owner) == 1 for owner in owners.values())
        if count > 1:
            assert len({owner[0] for owner in owners.values()}) == count  # 200 ids reach every shard
    # the documented rule, spelled out independently: the whole digest as a big-endian integer
    import hashlib
    assert shard_of("a/b.mp4", 5) == int(hashlib.sha256(b"a/b.mp4").hexdigest(), 16) % 5


def test_ids_are_relative_to_the_input_folder_so_new_files_and_other_mounts_keep_old_shards(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    (archive / "2024").mkdir(parents=True)
    old = [archive / "2024" / f"c{i}.mp4" for i in range(30)]
    for path in old:
        path.write_bytes(b"x")
    before = {path.name: shard_of(file_id(path, [archive]), 4) for path in old}
    for i in range(30, 60):  # the archive grows: old files keep their shards
        (archive / "2025").mkdir(exist_ok=True)
        (archive / "2025" / f"c{i}.mp4").write_bytes(b"x")
    assert {path.name: shard_of(file_id(path, [archive]), 4) for path in old} == before
    moved = tmp_path / "mnt" / "elsewhere"  # the same archive mounted at another path on another node
    shutil.copytree(archive, moved)
    assert {p.name: shard_of(file_id(moved / "2024" / p.name, [moved]), 4) for p in old} == before
    assert file_id(archive / "2024" / "c1.mp4", [tmp_path / "other", archive]) == "2024/c1.mp4"
    assert file_id(tmp_path / "loose.mp4", [archive]) == "loose.mp4"  # a file named on the command line


def test_shard_settings_and_array_expressions() -> None:
    assert Shard.parse("2/8") == Shard(2, 8) and Shard.parse(" 0 / 1 ") == Shard(0, 1)
    for bad in ("3/3", "1", "a/b", "-1/4", "0/0"):
        with pytest.raises(ShardError):
            Shard.parse(bad)
    assert array_expression([7, 0, 1, 2, 5, 8]) == "0-2,5,7-8" and array_expression([4]) == "4"
    assert SlurmArray.from_env({}) is None
    with pytest.raises(ShardError, match="SLURM_ARRAY_TASK_COUNT"):
        SlurmArray.from_env({"SLURM_ARRAY_TASK_ID": "3"})


def test_slurm_arrays_with_an_offset_and_a_resubmission_of_some_indices(tmp_path: Path) -> None:
    out = f"{tmp_path / 'parts'}/"
    # sbatch --array=1-4: tasks 1..4 are shards 0..3 of 4
    shards = [plan_sharded_output(None, out, [tmp_path], env=_slurm(task, 4, 1)).shard for task in (1, 2, 3, 4)]
    assert shards == [Shard(0, 4), Shard(1, 4), Shard(2, 4), Shard(3, 4)]
    assert json.loads((tmp_path / "parts" / "shards.json").read_text()) == {"array_min": 1, "shards": 4}
    # resubmitting only index 3 (sbatch --array=3: COUNT 1, MIN 3) is still shard 2 of 4
    assert plan_sharded_output(None, out, [tmp_path], env=_slurm(3, 1, 3)).shard == Shard(2, 4)
    with pytest.raises(ShardError, match="contiguous"):
        plan_sharded_output(None, out, [tmp_path], env=_slurm(9, 4, 1))
    with pytest.raises(ShardError, match="split into 4 shards, not 3"):
        plan_sharded_output("0/3", out, [tmp_path], env={})
    # an array whose tasks each write their own file is not sharded; a shard needs a folder
    assert plan_sharded_output(None, str(tmp_path / "task.jsonl"), [tmp_path], env=_slurm(2, 4, 1)) is None
    with pytest.raises(ShardError, match="folder"):
        plan_sharded_output("0/2", str(tmp_path / "one.jsonl"), [tmp_path], env={})
    assert plan_sharded_output(None, str(tmp_path / "plain.jsonl"), [tmp_path], env={}) is None


def _record(path: str, output: str | None, *, created: str = "t", code: str | None = None) -> dict[str, Any]:
    return {"schema_version": 1, "path": path, "file": {"size_bytes": 1, "mtime_ns": 2}, "media": None,
            "task": "classify", "prompt": None, "instruction": "i", "labels": ["a", "b"],
            "model": {"id": "m", "revision": None}, "frames": 8, "modality_requested": "auto", "modality": "image",
            "audio_missing": False, "notes": [], "output": output,
            "label_scores": None if code else [{"label": "a", "probability": 0.75, "log_likelihood": -0.2,
                                                 "num_tokens": 2}],
            "top_k": None if code else ["a"], "timings_ms": {"decode": 1.5, "model": None, "total": None},
            "error": {"code": code, "message": "m", "attempt": 1} if code else None, "vl2_version": "0", "created_at": created}


def test_merge_keeps_the_last_record_per_key_in_walk_order_and_writes_parquet(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [_record("/r/z.png", None, code="model_error"),
                                                         _record("/r/a.png", "a")]) + "\nnot json\n")
    second.write_text(json.dumps(_record("/r/z.png", "b", created="later")) + "\n"
                      + json.dumps(_record("/r/a/b.png", "a")) + "\n")
    merged = latest_records([first, second])
    assert [r["path"] for r in merged.records] == ["/r/a/b.png", "/r/a.png", "/r/z.png"]  # folder a before a.png
    assert merged.records[-1]["output"] == "b" and merged.superseded == 1
    write_merged(merged.records, tmp_path / "m.jsonl")
    assert [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()] == merged.records
    pq = pytest.importorskip("pyarrow.parquet")
    write_merged(merged.records, tmp_path / "m.parquet", "parquet")
    assert pq.read_table(tmp_path / "m.parquet").to_pylist() == merged.records
    with pytest.raises(Vl2Error):
        write_merged(merged.records, tmp_path / "m.csv", "csv")  # type: ignore[arg-type]


# ------------------------------------------------------------------ with the tiny model
@pytest.fixture(scope="module")
def hub_env() -> Iterator[Any]:
    with offline_fixture_hub(AV_FIXTURE) as fixture, pytest.MonkeyPatch.context() as patch:
        for name in SLURM:
            patch.delenv(name, raising=False)
        yield fixture


def _archive(folder: Path, names: list[str]) -> Path:
    for name in names:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MEDIA_FIXTURES / (BROKEN if name.endswith(".mp4") else IMAGE), target)
    return folder


def _names_filling_every_shard(count: int, *, at_least: int, busiest: int, busy: int) -> list[str]:
    """Image names (and one broken file) such that every shard has `at_least` files, `busy` has `busiest`."""
    names, per_shard = ["sub/broken.mp4"], [0] * count
    per_shard[shard_of("sub/broken.mp4", count)] += 1
    i = 0
    while min(per_shard) < at_least or per_shard[busy] < busiest:
        name = f"img{i:03d}.png" if i % 3 else f"sub/img{i:03d}.png"
        k = shard_of(name, count)
        if per_shard[k] < (busiest if k == busy else at_least):
            names.append(name)
            per_shard[k] += 1
        i += 1
    return names


def _run_settings(checkpoint: Path, out: str, **more: Any):
    flags = {"model": str(checkpoint), "max_new_tokens": 3, "out": out, "quiet": True, "batch_size": 1,
             "workers": 1, "log_level": "info", **more}  # (quiet's log level is error: the tests read info lines)
    return resolve_settings(flags, env={}).settings


def _essence(records: list[dict[str, Any]]) -> list[tuple]:
    return sorted((r["path"], r["output"], (r["error"] or {}).get("code"), r["modality"]) for r in records)


@needs_model
def test_three_shards_together_are_the_unsharded_run(tmp_path: Path, hub_env: Any) -> None:
    folder = _archive(tmp_path / "archive", _names_filling_every_shard(3, at_least=2, busiest=2, busy=0))
    model = api.load_model(str(hub_env.checkpoint), encoder_backend="torch")
    task, options = TaskSpec("caption", max_new_tokens=3), RunOptions(batch_size=2, workers=1)
    whole = [o.record for o in api.iter_outcomes(model, folder, task, options)]
    parts = []
    for k in range(3):
        sharded = plan_sharded_output(f"{k}/3", f"{tmp_path / 'out'}/", [folder], env={})
        parts.append([o.record for o in api.iter_outcomes(model, folder, task, options, keep=sharded.keeps)])
    paths = [r["path"] for part in parts for r in part]
    assert len(paths) == len(set(paths)) == len(whole) and all(parts)  # no file twice, none missing, no empty shard
    assert _essence([r for part in parts for r in part]) == _essence(whole)


@pytest.mark.slow
@needs_model
def test_killed_shard_is_reported_resubmitted_by_its_array_index_and_the_merge_equals_one_run(
        tmp_path: Path, hub_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _archive(tmp_path / "archive", _names_filling_every_shard(3, at_least=1, busiest=6, busy=1))
    out = f"{tmp_path / 'parts'}/"
    settings = _run_settings(hub_env.checkpoint, out)
    log = io.StringIO()
    for task_id in (1, 3):  # sbatch --array=1-3: indices 1 and 3 are shards 0 and 2
        for name, value in _slurm(task_id, 3, 1).items():
            monkeypatch.setenv(name, value)
        assert execute("caption", [folder], settings, stderr=log) in (EXIT_OK, EXIT_SOME_FAILED), log.getvalue()
    # index 2 (shard 1) is killed after its first record
    command = [sys.executable, "-m", "vl2cli.cli", "caption", str(folder), "--out", out, "--model",
               str(hub_env.checkpoint), "--max-new-tokens", "3", "--batch-size", "1", "--workers", "1", "--quiet"]
    env = {**os.environ, **_slurm(2, 3, 1), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    part = tmp_path / "parts" / "part-1-of-3.jsonl"
    try:
        deadline = time.monotonic() + 300
        while not (part.exists() and part.read_bytes().count(b"\n") >= 1):
            assert victim.poll() is None and time.monotonic() < deadline, "shard 1 ended before it could be killed"
            time.sleep(0.02)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    report = io.StringIO()
    assert shards_report(tmp_path / "parts", stdout=report) == EXIT_SOME_FAILED
    lines = report.getvalue().splitlines()
    assert lines[0].startswith("array index 1 (shard 0/3): complete") and lines[2].startswith("array index 3 (shard 2/3): complete")
    assert lines[1].startswith("array index 2 (shard 1/3): incomplete") and lines[-1] == "--array=2"
    assert merge_shards(tmp_path / "parts", tmp_path / "early.jsonl", stderr=io.StringIO()) == EXIT_SOME_FAILED

    # resubmitted as `sbatch --array=2` (COUNT 1, MIN 2): the same shard, resumed, then marked complete
    for name, value in _slurm(2, 1, 2).items():
        monkeypatch.setenv(name, value)
    log = io.StringIO()
    execute("caption", [folder], settings, stderr=log)
    assert "skipped" in log.getvalue() and " 0 skipped" not in log.getvalue(), log.getvalue()
    report = io.StringIO()
    assert shards_report(tmp_path / "parts", stdout=report) == EXIT_OK and "--array" not in report.getvalue()
    marker = json.loads((tmp_path / "parts" / "part-1-of-3.done").read_text())
    assert marker["shard"] == 1 and marker["files"] == sum(shard_of(file_id(p, [folder]), 3) == 1
                                                           for p in folder.rglob("*") if p.is_file())

    merged = tmp_path / "all.jsonl"
    assert merge_shards(tmp_path / "parts", merged, stderr=io.StringIO()) == EXIT_OK
    records = [json.loads(line) for line in merged.read_text().splitlines()]
    for name in SLURM:
        monkeypatch.delenv(name)
    model = api.load_model(str(hub_env.checkpoint), encoder_backend="torch")
    whole = api.caption(model, folder, max_new_tokens=3, batch_size=1, workers=1)
    assert [r["path"] for r in records] == [r["path"] for r in whole]  # one record per file, in walk order
    assert _essence(records) == _essence(whole)


def test_shards_and_merge_commands_and_the_shard_flag(tmp_path: Path) -> None:
    """The typer wiring, on a folder written by hand (no model): states, the --array line, exit codes."""
    from typer.testing import CliRunner

    from vl2cli.cli import app
    from vl2cli.commands.exit_codes import EXIT_FATAL

    parts = tmp_path / "parts"
    folder = ShardFolder(parts)
    folder.claim(4, 1)
    (parts / "part-0-of-4.jsonl").write_text(json.dumps(_record("/r/a.png", "a")) + "\n")
    folder.mark_complete(Shard(0, 4), {"files": 1, "failed_in_part": 0})
    (parts / "part-2-of-4.jsonl").write_text(json.dumps(_record("/r/b.png", "b")) + "\n")
    runner = CliRunner()
    shown = runner.invoke(app, ["shards", str(parts)])
    assert shown.exit_code == EXIT_SOME_FAILED
    assert shown.output.splitlines() == [
        "array index 1 (shard 0/4): complete (1 files; part-0-of-4.jsonl)",
        "array index 2 (shard 1/4): missing (no part-1-of-4.jsonl)",
        "array index 3 (shard 2/4): incomplete (1 records, no completion marker; part-2-of-4.jsonl)",
        "array index 4 (shard 3/4): missing (no part-3-of-4.jsonl)", "1 of 4 shards complete; 3 to run again",
        "--array=2-4"]
    merged = runner.invoke(app, ["merge", str(parts), "--out", str(tmp_path / "all.jsonl")])
    assert merged.exit_code == EXIT_SOME_FAILED and "merged 2 records from 2 part file(s)" in merged.output
    assert "not complete (array indices 2-4)" in merged.output  # the indices `vl2 shards` prints, not shard numbers
    assert [json.loads(line)["path"] for line in (tmp_path / "all.jsonl").read_text().splitlines()] == ["/r/a.png", "/r/b.png"]
    assert runner.invoke(app, ["shards", str(tmp_path)]).exit_code == EXIT_FATAL  # not a shard folder
    bad = runner.invoke(app, ["caption", str(tmp_path), "--shard", "4/4", "--out", f"{parts}/"])
    assert bad.exit_code == EXIT_FATAL and "not a shard" in bad.output and "Traceback" not in bad.output


def test_another_array_into_a_folder_is_refused_by_every_task_before_it_touches_the_folder(tmp_path: Path) -> None:
    out = f"{tmp_path / 'parts'}/"
    for task in range(10, 14):  # sbatch --array=10-13: the folder's own array
        sharded = plan_sharded_output(None, out, [tmp_path], env={**_slurm(task, 4, 10), "SLURM_ARRAY_TASK_MAX": "13"})
        sharded.folder.mark_complete(sharded.shard, {"files": 0, "failed_in_part": 0})
    before = sorted((p.name, p.read_bytes()) for p in (tmp_path / "parts").iterdir())
    for array in [(range(10, 18), 10, 17), (range(0, 4), 0, 3), (range(12, 16), 12, 15)]:  # 10-17, 0-3, 12-15
        tasks, first, last = array
        for task in tasks:  # every task, the ones whose index is a shard of the folder too
            env = {**_slurm(task, len(tasks), first), "SLURM_ARRAY_TASK_MAX": str(last)}
            with pytest.raises(ShardError, match=r"by --array=10-13; .*Resubmit indices of --array=10-13"):
                plan_sharded_output(None, out, [tmp_path], env=env)
    # nothing was written, no completion marker removed
    assert sorted((p.name, p.read_bytes()) for p in (tmp_path / "parts").iterdir()) == before
    # a resubmission of some of its indices is still each index's shard
    env = {**_slurm(13, 2, 11), "SLURM_ARRAY_TASK_MAX": "13"}  # --array=11,13
    assert plan_sharded_output(None, out, [tmp_path], env=env).shard == Shard(3, 4)
    # a Slurm without SLURM_ARRAY_TASK_MAX: MIN + COUNT - 1 stands in for it
    with pytest.raises(ShardError, match="--array=10-13"):
        plan_sharded_output(None, out, [tmp_path], env=_slurm(10, 8, 10))
    # --shard K/N of another count names the folder's array as well
    with pytest.raises(ShardError, match=r"split into 4 shards, not 2.*--array=10-13"):
        plan_sharded_output("0/2", out, [tmp_path], env={})


def test_a_running_shard_is_told_from_an_incomplete_one_and_left_out_of_the_resubmit_line(tmp_path: Path) -> None:
    from vl2cli.output.lock import OutputLock

    parts = tmp_path / "parts"
    folder = ShardFolder(parts)
    folder.claim(3, 0)
    for k in range(3):
        (parts / Shard(k, 3).part_name).write_text(json.dumps(_record(f"/r/{k}.png", "a")) + "\n")
    folder.mark_complete(Shard(2, 3), {"files": 4, "failed_in_part": 2})
    report = io.StringIO()
    with OutputLock(parts / Shard(0, 3).part_name):  # shard 0 is being written by a live run
        assert shards_report(parts, stdout=report) == EXIT_SOME_FAILED
        merge_log = io.StringIO()
        assert merge_shards(parts, tmp_path / "all.jsonl", stderr=merge_log) == EXIT_SOME_FAILED
    assert report.getvalue().splitlines() == [
        "array index 0 (shard 0/3): running (1 records so far, its lock is held; part-0-of-3.jsonl)",
        "array index 1 (shard 1/3): incomplete (1 records, no completion marker; part-1-of-3.jsonl)",
        "array index 2 (shard 2/3): complete (4 files, 2 ending in an error; part-2-of-3.jsonl)",
        "1 of 3 shards complete (2 file(s) ending in an error; a run with retry_failed tries them again); "
        "1 running; 1 to run again",
        "--array=1"]
    assert "(array indices 0-1, 1 of them running or queued)" in merge_log.getvalue()
    # the lock released (the run ended without a marker): incomplete, and in the line again
    report = io.StringIO()
    assert shards_report(parts, stdout=report) == EXIT_SOME_FAILED
    assert "array index 0 (shard 0/3): incomplete" in report.getvalue() and report.getvalue().endswith("--array=0-1\n")
    # every shard complete, some files ending in an error: complete all the same (exit 0)
    for k in (0, 1):
        folder.mark_complete(Shard(k, 3), {"files": 1, "failed_in_part": 0})
    report = io.StringIO()
    assert shards_report(parts, stdout=report) == EXIT_OK and "--array" not in report.getvalue()


@needs_model
def test_a_shard_recording_every_file_exits_0_with_its_failures_counted_and_an_empty_shard_is_complete_quietly(
        tmp_path: Path, hub_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _archive(tmp_path / "archive", ["sub/broken.mp4", "img000.png"])
    count = 3
    while shard_of("sub/broken.mp4", count) == shard_of("img000.png", count):
        count += 1  # the two files in two different shards of `count`: at least one shard is empty
    out = f"{tmp_path / 'parts'}/"
    settings = _run_settings(hub_env.checkpoint, out)
    broken_shard = shard_of("sub/broken.mp4", count)
    empty_shard = next(k for k in range(count) if k not in (broken_shard, shard_of("img000.png", count)))
    for shard in (broken_shard, empty_shard):
        for name, value in _slurm(shard, count, 0).items():
            monkeypatch.setenv(name, value)
        log = io.StringIO()
        assert execute("caption", [folder], settings, stderr=log) == EXIT_OK, log.getvalue()
        marker = json.loads((tmp_path / "parts" / Shard(shard, count).marker_name).read_text())
        if shard == broken_shard:
            assert marker["files"] == 1 and marker["failed_in_part"] == 1
            assert "1 failed" in log.getvalue() and "complete" in log.getvalue()
        else:
            assert marker["files"] == 0 and "warning" not in log.getvalue(), log.getvalue()
    report = io.StringIO()
    shards_report(tmp_path / "parts", stdout=report)
    assert f"array index {broken_shard} (shard {broken_shard}/{count}): complete (1 files, 1 ending in an error" in report.getvalue()
    # an unsharded run over the same files still exits 1 for the broken one
    plain = _run_settings(hub_env.checkpoint, str(tmp_path / "plain.jsonl"))
    for name in SLURM:
        monkeypatch.delenv(name)
    assert execute("caption", [folder], plain, stderr=io.StringIO()) == EXIT_SOME_FAILED


def test_merge_options_are_settings_and_its_out_is_required(tmp_path: Path) -> None:
    """merge's --out and --format are settings of its own (the runs' --format takes srt|vtt, not parquet)."""
    from typer.testing import CliRunner

    from vl2cli.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["merge", str(tmp_path)], env={"VL2_MERGE_OUT": None})
    assert missing.exit_code == 2 and "--out is required" in missing.output
    bad = runner.invoke(app, ["merge", str(tmp_path), "--out", str(tmp_path / "all.xml")],
                        env={"VL2_MERGE_FORMAT": "xml"})
    assert bad.exit_code == 2 and "merge_format: 'xml' is not one of jsonl, parquet" in bad.output
    assert not (tmp_path / "all.xml").exists()
