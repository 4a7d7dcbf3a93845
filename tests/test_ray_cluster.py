"""`--engine ray` joining a real Ray cluster: a head and a second node started by `ray start` (separate
processes, their own temp folders, token authentication as Ray 2.60 starts clusters by default), whose
environment lacks the hub variables the driver has. One CPU per node: one actor on each.

- the actors get HF_HUB_CACHE/HF_HUB_OFFLINE through runtime_env (else the tiny checkpoint cannot load);
- the second node lost mid-run (its raylet killed): its batch runs again on the live actor, every file
  gets exactly one record and none is `worker_lost`;
- joining without RAY_AUTH_MODE=token: vl2's one line says to set it.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from media_helpers.fixtures import MEDIA_FIXTURES, needs_fixtures
from reference_fixtures import offline_fixture_hub

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

AV_FIXTURE = "siglip-qwen2-av"
IMAGE = "img_smptehdbars_500x300.png"
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.ray, pytest.mark.slow,
    needs_fixtures(reference=(AV_FIXTURE,), media=(IMAGE,)),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes_of(folders: list[str]) -> list[Any]:
    """Every process a `ray start` left running for these temp folders, and their children (workers)."""
    found: dict[int, Any] = {}
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if any(folder in cmdline for folder in folders):
            found[process.pid] = process
            try:
                found.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.Error:
                pass
    return list(found.values())


class Cluster:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = scratch / "token"
        token.write_text(secrets.token_hex(32))
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.folders: list[str] = []
        # the nodes' own environment: no hub cache, not offline (as on machines set up elsewhere)
        self.env = {name: value for name, value in os.environ.items()
                    if not name.startswith(("HF_", "VL2_", "RAY_", "TRANSFORMERS_"))}
        self.env.update({**self.auth, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})

    def start_node(self, name: str, *, head: bool, cpus: int = 1) -> str:
        folder = str(self.scratch / name)
        self.folders.append(folder)
        common = ["--num-cpus", str(cpus), "--temp-dir", folder, "--disable-usage-stats",
                  "--dashboard-agent-listen-port", str(_free_port()), "--metrics-export-port", str(_free_port())]
        where = ["--head", "--port", str(self.port), "--include-dashboard", "false"] if head else ["--address", self.address]
        started = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", *where, *common],
                                 env=self.env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert started.returncode == 0, started.stdout + started.stderr
        return folder

    def raylet_of(self, folder: str) -> Any:
        for process in _processes_of([folder]):
            try:
                if process.name() == "raylet" or "raylet/raylet" in " ".join(process.cmdline()):
                    return process
            except psutil.Error:
                continue
        raise AssertionError(f"no raylet for {folder}")

    def stop(self) -> None:
        for _ in range(3):  # processes started while others end (a worker's restart) are caught next round
            processes = _processes_of(self.folders)
            if not processes:
                return
            for process in processes:
                try:
                    process.kill()
                except psutil.Error:
                    pass
            psutil.wait_procs(processes, timeout=10)


@pytest.fixture(scope="module")
def hub_env() -> Iterator[Any]:
    with offline_fixture_hub(AV_FIXTURE) as fixture:
        yield fixture


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Head (1 CPU) and a second node (1 CPU, or what the test's `node_cpus` parameter says)."""
    scratch = Path(tempfile.mkdtemp(prefix="vl2c-", dir="/tmp"))  # short: Ray's socket paths must fit
    running = Cluster(scratch)
    try:
        running.start_node("h", head=True)
        running.start_node("n", head=False, cpus=getattr(request, "param", 1))
        yield running
    finally:
        running.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def _vl2(archive: Path, checkpoint: Path, env: dict[str, str], *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vl2cli.cli", "caption", str(archive), "--engine", "ray",
                             "--model", str(checkpoint), "--max-new-tokens", "3", "--workers", "1", *more],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_a_node_lost_mid_run_costs_no_file_and_the_actors_get_the_hub_variables(
        cluster: Cluster, hub_env: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(24):  # three calls of 8: one on each node, a third for whichever is free first
        shutil.copy(MEDIA_FIXTURES / IMAGE, archive / f"img{i:02d}.png")
    node = cluster.folders[1]
    raylet = cluster.raylet_of(node)
    env = {**os.environ, **cluster.auth, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(ROOT)}
    run = _vl2(archive, hub_env.checkpoint, env, "--out", "-", "--actors", "2")
    deadline = time.monotonic() + 300  # a hang guard only
    while True:  # the second node's actor is up (a child of its raylet): lose the node
        assert run.poll() is None, run.communicate()[1]
        assert time.monotonic() < deadline, "no actor started on the second node"
        children = []
        for child in raylet.children(recursive=True):
            try:
                children.append(" ".join(child.cmdline()))
            except psutil.Error:
                continue
        if any("MapWorker" in line for line in children):
            break
        time.sleep(0.1)
    raylet.kill()
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]  # stdout: records only
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in archive.iterdir())  # each file once
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]]
    assert "Traceback" not in err


def test_joining_a_token_cluster_without_its_auth_mode_says_to_set_it(cluster: Cluster, hub_env: Any,
                                                                       tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(MEDIA_FIXTURES / IMAGE, archive / IMAGE)
    env = {name: value for name, value in os.environ.items() if not name.startswith("RAY_AUTH")}
    env.update({"RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})  # no ~/.ray token
    run = _vl2(archive, hub_env.checkpoint, env, "--out", str(tmp_path / "out.jsonl"), "--ray-address",
               cluster.address)
    _, err = run.communicate(timeout=300)
    assert run.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vl2: error: engine ray: could not join the Ray cluster") and "RAY_AUTH_MODE=token" in last, err


class StallsOnTheDoomedNode(__import__("vl2cli.runners.ray_engine", fromlist=["RecordActor"]).RecordActor):
    """On the node named by VL2_TEST_DOOMED_NODE (forwarded to the actors like every VL2_ variable):
    says it holds a batch (a flag file), then works on it until the node is lost."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import ray as worker_ray

        if worker_ray.get_runtime_context().get_node_id() == os.environ.get("VL2_TEST_DOOMED_NODE"):
            flag = Path(os.environ["VL2_TEST_FLAG"])
            flag.write_text(str(os.getpid()))
            while True:  # the node's loss ends this process
                time.sleep(0.2)
        return super().__call__(batch)


def drive_a_run_that_loses_a_node(checkpoint: str, archive: str, address: str, doomed_raylet_pid: int) -> None:
    """The driver (in its own process: Ray reads RAY_AUTH_MODE when it is imported): a run whose actor on
    the doomed node stalls on its batch until the test's thread kills that node's raylet; prints the
    records as JSON lines."""
    import threading

    from vl2cli import api
    from vl2cli.runners.engines import model_load_options
    from vl2cli.runners.ray_engine import RayRunner, records_stdout
    from vl2cli.settings import resolve_settings
    from vl2cli.run import lazy_model
    from vl2cli.tasks.spec import RunOptions, TaskSpec

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    raylet = psutil.Process(doomed_raylet_pid)
    flag = Path(os.environ["VL2_TEST_FLAG"])
    settings = resolve_settings({"model": checkpoint, "workers": 1}, env={}).settings
    engine = RayRunner(model_load_options(settings), address=address, actor_class=StallsOnTheDoomedNode,
                       files_per_call=2, actors=2)

    def lose_the_node() -> None:
        while not flag.exists():
            time.sleep(0.05)
        raylet.kill()

    threading.Thread(target=lose_the_node, daemon=True).start()
    with records_stdout() as out:  # as the CLI does: Ray's "(raylet)" lines of the lost node go to stderr
        try:
            for outcome in api.iter_outcomes(lazy_model(settings), Path(archive), TaskSpec("caption", max_new_tokens=3),
                                             RunOptions(workers=1), runner=engine):
                print(json.dumps(outcome.record), file=out, flush=True)
        finally:
            engine.shutdown()


def test_the_batch_a_lost_node_was_working_on_runs_again_on_the_live_actor(
        cluster: Cluster, hub_env: Any, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(6):
        shutil.copy(MEDIA_FIXTURES / IMAGE, archive / f"img{i:02d}.png")
    raylet = cluster.raylet_of(cluster.folders[1])
    probe = subprocess.run([sys.executable, "-c", "import json, ray; ray.init(address=%r, log_to_driver=False); "
                            "print(json.dumps(ray.nodes()))" % cluster.address],
                           env={**os.environ, **cluster.auth}, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    doomed = [n["NodeID"] for n in json.loads(probe.stdout.splitlines()[-1])
              if n["Alive"] and cluster.folders[1] in n.get("RayletSocketName", "")]
    assert len(doomed) == 1, probe.stdout
    flag = tmp_path / "doomed-holds-a-batch"
    env = {**os.environ, **cluster.auth, "VL2_TEST_DOOMED_NODE": doomed[0], "VL2_TEST_FLAG": str(flag),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    code = (f"import test_ray_cluster as t; t.drive_a_run_that_loses_a_node({str(hub_env.checkpoint)!r}, "
            f"{str(archive)!r}, {cluster.address!r}, {raylet.pid})")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in run.stdout.splitlines()]
    assert flag.exists() and not raylet.is_running()  # the node really was lost holding a batch
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in archive.iterdir()), run.stderr[-3000:]
    assert [r["error"] for r in records if r["error"]] == []  # none worker_lost: the live actor did them


@pytest.mark.parametrize("cluster", [3], indirect=True)
def test_a_small_head_and_a_bigger_node_each_get_an_actor(cluster: Cluster, hub_env: Any, tmp_path: Path) -> None:
    """1 + 3 CPUs (the head small, the node big): one actor per node by default, both nodes work."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(24):
        shutil.copy(MEDIA_FIXTURES / IMAGE, archive / f"img{i:02d}.png")
    raylets = [cluster.raylet_of(folder) for folder in cluster.folders]
    env = {**os.environ, **cluster.auth, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(ROOT)}
    run = _vl2(archive, hub_env.checkpoint, env, "--out", str(tmp_path / "out.jsonl"))
    with_actor: set[int] = set()
    while run.poll() is None and len(with_actor) < 2:  # which nodes' raylets have an actor child
        for k, raylet in enumerate(raylets):
            for child in raylet.children(recursive=True):
                try:
                    if "MapWorker" in " ".join(child.cmdline()):
                        with_actor.add(k)
                except psutil.Error:
                    continue
        time.sleep(0.1)
    _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    assert "24 file(s) to 2 actor(s) on CPU" in err, err
    assert with_actor == {0, 1}, err
