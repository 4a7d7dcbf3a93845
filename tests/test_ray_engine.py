"""`--engine ray`: a Ray Data actor pool gives the local engine's records, loses nothing and writes
nothing twice when an actor dies, turns a file that raises into an error record, and leaves no Ray
processes or temporary folders behind.

One local Ray session (`ray.init(num_cpus=2)`) is shared by the in-process tests (starting Ray costs
seconds); the CLI test starts and stops its own, as a user's run does.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from media_helpers.fixtures import MEDIA_FIXTURES
from reference_fixtures import offline_fixture_hub, reference_root
from vl2cli import api
from vl2cli.runners.engines import model_load_options
from vl2cli.settings import resolve_settings
from vl2cli.run import lazy_model
from vl2cli.tasks.spec import RunOptions, TaskSpec

ray = pytest.importorskip("ray")
from vl2cli.runners.ray_engine import WORKER_LOST_CODE, RayRunner, RecordActor  # noqa: E402

AV_FIXTURE = "siglip-qwen2-av"
IMAGE, SPEECH, BROKEN = "img_smptehdbars_500x300.png", "speech_espeak_16k_mono_5s.wav", "broken_text_renamed.mp4"
MEDIA = (BROKEN, IMAGE, SPEECH)
#: a second, good image: in walk order broken, image, this one, speech
GOOD_COPY = "img_z_copy.png"
# marked `ray` (deselect with -m "not ray"); only the CLI test, a subprocess end-to-end run, is also `slow`
pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir() or not all((MEDIA_FIXTURES / m).is_file() for m in MEDIA),
                       reason="reference or media fixtures not found"),
]
TASK = TaskSpec("caption", max_new_tokens=3)
OPTIONS = RunOptions(workers=1)


@pytest.fixture(scope="module")
def hub_env() -> Iterator[Any]:
    with offline_fixture_hub(AV_FIXTURE) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive")
    for name in MEDIA:
        shutil.copy(MEDIA_FIXTURES / name, folder / name)
    shutil.copy(MEDIA_FIXTURES / IMAGE, folder / GOOD_COPY)
    return folder


@pytest.fixture(scope="module")
def settings(hub_env: Any) -> Any:
    return resolve_settings({"model": str(hub_env.checkpoint), "workers": 1}, env={}).settings


@pytest.fixture(scope="module")
def ray_session(hub_env: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One local Ray for the in-process tests; the actor classes below travel to it by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray", numbered=True)))
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_records(settings: Any, archive: Path) -> list[dict[str, Any]]:
    return [o.record for o in api.iter_outcomes(lazy_model(settings), archive, TASK, OPTIONS)]


def _essence(records: list[dict[str, Any]]) -> list[tuple]:
    return [(r["path"], r["output"], (r["error"] or {}).get("code"), r["modality"], r["media"], r["instruction"])
            for r in records]


def _ray_records(settings: Any, archive: Path, **runner: Any) -> list[dict[str, Any]]:
    engine = RayRunner(model_load_options(settings), **runner)
    try:
        return [o.record for o in api.iter_outcomes(lazy_model(settings), archive, TASK, OPTIONS, runner=engine)]
    finally:
        engine.shutdown()


class ExitOnce(RecordActor):
    """Dies (os._exit, as a crash would) the first time a batch holds the chosen file."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        paths = [str(p) for p in batch["path"]]
        flag = Path(paths[0]).parent.parent / "died-once"
        if any(p.endswith(IMAGE) for p in paths) and not flag.exists():
            flag.touch()
            os._exit(1)
        return super().__call__(batch)


class RaisesOnOneDiesOnAnother(RecordActor):
    """The pipeline raising for one file (as a bug would), and an actor dying on every batch with another."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if any(str(p).endswith(SPEECH) for p in batch["path"]):
            os._exit(1)
        return super().__call__(batch)

    def process(self, plans: list[Any]) -> Iterator[Any]:
        if any(str(plan.path).endswith(IMAGE) for plan in plans):
            raise RuntimeError("chosen file blew up")
        return super().process(plans)


def _vl2_processes_under(folder: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if folder in cmdline:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


@pytest.mark.slow
def test_cli_engine_ray_reports_start_once_and_leaves_nothing_behind(hub_env: Any, archive: Path, tmp_path: Path,
                                                                      local_records: list[dict[str, Any]],
                                                                      request: pytest.FixtureRequest) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="vl2t-", dir="/tmp"))  # short: Ray's socket paths must fit
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run([sys.executable, "-m", "vl2cli.cli", "caption", str(archive), "--engine", "ray", "--out", str(out),
                          "--model", str(hub_env.checkpoint), "--max-new-tokens", "3", "--workers", "1", "--quiet"],
                         env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 1, run.stderr  # the broken file
    assert sum("Ray: started a local Ray instance in" in line for line in run.stderr.splitlines()) == 1, run.stderr
    assert "Traceback" not in run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert _essence(records) == _essence(local_records)
    assert list(scratch.iterdir()) == []  # Ray's session folder was vl2's own and is gone
    assert _vl2_processes_under(str(scratch)) == []  # raylet, GCS, workers: all stopped


def test_an_actor_killed_mid_run_costs_no_file_and_writes_none_twice(ray_session: None, settings: Any, archive: Path,
                                                                     local_records: list[dict[str, Any]]) -> None:
    """Also the plain case: with ray.init(num_cpus=2) the records are the local engine's."""
    records = _ray_records(settings, archive, actor_class=ExitOnce, files_per_call=1)
    assert (archive.parent / "died-once").exists()  # the actor really died on the chosen file
    assert _essence(records) == _essence(local_records)  # each file once, in order, the chosen one done after all


def test_a_file_that_raises_is_an_error_record_and_one_that_kills_every_actor_is_worker_lost(
        ray_session: None, settings: Any, archive: Path, local_records: list[dict[str, Any]]) -> None:
    # two files per call: [broken, image], [good copy, speech]
    records = _ray_records(settings, archive, actor_class=RaisesOnOneDiesOnAnother, files_per_call=2, task_retries=0)
    by_name = {Path(r["path"]).name: r for r in records}
    assert len(records) == len(by_name) == len(MEDIA) + 1
    raised = by_name[IMAGE]["error"]
    assert raised["code"] == "model_error" and "RuntimeError: chosen file blew up" in raised["message"]
    for name in (SPEECH, GOOD_COPY):  # the batch that killed its actor: given up, its files recorded as lost
        message = by_name[name]["error"]["message"]
        assert by_name[name]["error"]["code"] == WORKER_LOST_CODE and "died on each of 2 pass(es)" in message, message
    # the image's neighbour in its batch got its own record, not the image's error
    assert _essence([by_name[BROKEN]]) == _essence([r for r in local_records if r["path"].endswith(BROKEN)])


class CannotLoad(RecordActor):
    """An actor on a node without the model (e.g. no hub cache there)."""

    def load(self, load_options: dict[str, Any]) -> Any:
        raise FileNotFoundError("no checkpoint under /nowhere on this node")


def test_an_actor_that_cannot_load_the_model_stops_the_run_with_the_cause(ray_session: None, settings: Any,
                                                                          archive: Path) -> None:
    from vl2cli.errors import Vl2Error

    with pytest.raises(Vl2Error, match=r"could not load the model on .*: FileNotFoundError: no checkpoint under /nowhere"):
        _ray_records(settings, archive, actor_class=CannotLoad)


def test_the_actors_get_the_hub_and_vl2_variables_but_no_token() -> None:
    from vl2cli.runners.ray_engine import forwarded_env, local_cpus

    env = {"HF_HUB_CACHE": "/c", "HF_HUB_OFFLINE": "1", "VL2_MODEL": "m", "HF_TOKEN": "secret", "PATH": "/bin",
           "CUDA_VISIBLE_DEVICES": "0", "TRANSFORMERS_OFFLINE": "1"}
    assert forwarded_env(env) == {"HF_HUB_CACHE": "/c", "HF_HUB_OFFLINE": "1", "VL2_MODEL": "m",
                                  "TRANSFORMERS_OFFLINE": "1"}
    # a local Ray inside a Slurm allocation gets the task's CPUs, not the node's
    assert local_cpus({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "3"}) == 3
    assert local_cpus({"SLURM_JOB_ID": "7"}) == len(os.sched_getaffinity(0))
    assert local_cpus({}) is None
    from vl2cli.errors import Vl2Error

    with pytest.raises(Vl2Error, match="actors: must be at least 1"):
        resolve_settings({"actors": 0}, env={})
    assert resolve_settings({}, env={"VL2_ACTORS": "3"}).settings.actors == 3


def _cli(archive: Path, checkpoint: Path, scratch: Path, *more: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "vl2cli.cli", "caption", str(archive), "--engine", "ray",
                             "--model", str(checkpoint), "--max-new-tokens", "3", "--workers", "1", *more],
                            env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_actor(run: subprocess.Popen) -> Any:
    """The Ray Data actor process of a vl2 run, once it is there (a descendant named ray::...MapWorker)."""
    import time

    import psutil

    deadline = time.monotonic() + 300  # a hang guard only
    while time.monotonic() < deadline:
        assert run.poll() is None, "vl2 ended before its actor could be found"
        for child in psutil.Process(run.pid).children(recursive=True):
            try:
                if "MapWorker" in " ".join(child.cmdline()):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.1)
    raise AssertionError("no actor process appeared")


@pytest.fixture
def scratch(request: pytest.FixtureRequest) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="vl2t-", dir="/tmp"))  # short: Ray's socket paths must fit
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    return folder


@pytest.mark.slow
def test_out_dash_stays_pure_jsonl_when_an_actor_is_killed_and_the_log_says_where_ray_logs_are(
        hub_env: Any, archive: Path, scratch: Path, local_records: list[dict[str, Any]]) -> None:
    import psutil

    run = _cli(archive, hub_env.checkpoint, scratch, "--out", "-")
    actor = _wait_for_actor(run)
    started = psutil.Process(run.pid).children(recursive=True)  # raylet, GCS, workers
    actor.kill()  # a crash: Ray reports the dead worker (its "(raylet)" lines)
    out, err = run.communicate(timeout=400)
    # every process of vl2's Ray ended with the run (the restarted actor, a child of the raylet, too)
    assert [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert run.returncode == 1, err  # the broken file
    records = [json.loads(line) for line in out.splitlines()]  # nothing but records on stdout
    assert _essence(records) == _essence(local_records), err
    assert "vl2: Ray: its logs are in " in err and "Traceback" not in err
    kept = [line for line in err.splitlines() if "Ray's logs are kept in" in line]
    assert all(Path(line.rsplit(" ", 1)[1]).is_dir() for line in kept)


@pytest.mark.slow
@pytest.mark.parametrize("signal_number, code, name", [(15, 143, "SIGTERM"), (2, 130, "SIGINT")])
def test_sigterm_and_sigint_give_vl2s_line_and_code_and_leave_no_ray_process(
        hub_env: Any, archive: Path, scratch: Path, tmp_path: Path, signal_number: int, code: int, name: str) -> None:
    import psutil

    run = _cli(archive, hub_env.checkpoint, scratch, "--out", str(tmp_path / "out.jsonl"), stdout=subprocess.DEVNULL)
    _wait_for_actor(run)
    started = psutil.Process(run.pid).children(recursive=True)  # raylet, GCS, the actor, idle workers
    os.kill(run.pid, signal_number)
    _, err = run.communicate(timeout=120)
    assert run.returncode == code, err
    assert err.splitlines()[-1].startswith(f"vl2: interrupted by {name}"), err
    assert "Traceback" not in err and "*** " not in err  # no C++ stack dump ("*** SIGTERM received ...")
    left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], left  # vl2 waited for (or killed) every process of its Ray before it exited


def test_actor_count_one_per_node_on_cpus_never_more_than_the_batches_and_the_setting_wins(
        ray_session: None, settings: Any) -> None:
    one_node = RayRunner(model_load_options(settings), files_per_call=2)
    assert one_node._pool(OPTIONS, 100)[1:] == (1, 2)  # ray.init(num_cpus=2): one node, one CPU actor
    three = RayRunner(model_load_options(settings), files_per_call=2, actors=3)
    assert three._pool(OPTIONS, 100)[1] == 3
    assert three._pool(OPTIONS, 3)[1] == 2  # 3 files in calls of 2: two batches, two actors


def test_ray_client_addresses_are_refused_with_what_to_use_instead(settings: Any) -> None:
    from vl2cli.errors import Vl2Error

    with pytest.raises(Vl2Error, match="Ray Client address.*ray_address auto"):
        RayRunner(model_load_options(settings), address="ray://head:10001")._start()
