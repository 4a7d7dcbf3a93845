"""docs/cli.md's "Run it on a cluster" Slurm scripts, copied out of the docs and submitted as written to a
real one-node Slurm (slurmctld + slurmd + a private munged, brought up in a temporary folder): the
array's shards (one holding a broken file) all end COMPLETED, the afterok merge job runs and merges
one record per file; another array size into the same folder fails in every task and changes nothing.

Skips only where Slurm or munge is not installed (`apt-get install slurm-wlm munge`); needs root (the
daemons run as this user).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from media_helpers.fixtures import MEDIA_FIXTURES
from reference_fixtures import offline_fixture_hub, reference_root
from vl2cli.runners.shards import shard_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "cli.md"
AV_FIXTURE = "siglip-qwen2-av"
IMAGE, BROKEN = "img_smptehdbars_500x300.png", "broken_empty.mp4"
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all(shutil.which(name) or Path(f"/usr/sbin/{name}").exists() for name in DAEMONS),
                       reason="Slurm (slurm-wlm) or munge not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test's slurmd runs jobs as root"),
    pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir()
                       or not all((MEDIA_FIXTURES / m).is_file() for m in (IMAGE, BROKEN)),
                       reason=f"fixtures not found: {AV_FIXTURE}, {IMAGE} or {BROKEN}"),
]


def documented_script(name: str) -> str:
    """The ```bash block of docs/cli.md whose second line is `# NAME: ...`."""
    for block in re.findall(r"```bash\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S):
        lines = block.splitlines()
        if len(lines) > 1 and lines[1].startswith(f"# {name}:"):
            return block
    raise AssertionError(f"docs/cli.md has no script {name}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Slurm:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen] = []
        host = socket.gethostname().split(".")[0]
        for sub in ("state", "spool"):
            (folder / sub).mkdir()
        key = folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf = folder / "slurm.conf"
        self.conf.write_text("\n".join([
            "ClusterName=vl2test", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={folder}/munge.sock", "CredType=cred/munge",
            f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "ReturnToService=2",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MpiDefault=none", "JobCompType=jobcomp/none", "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none", "MinJobAge=3600",
            f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
            f"NodeName={host} CPUs={max(1, min(os.cpu_count() or 1, 2))} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        subprocess.run([_binary("munged"), f"--socket={folder}/munge.sock", f"--key-file={key}",
                        f"--pid-file={folder}/munged.pid", f"--log-file={folder}/munged.log",
                        f"--seed-file={folder}/munge.seed", "--force"], check=True, timeout=60)
        for daemon in ("slurmctld", "slurmd"):
            self.processes.append(subprocess.Popen([_binary(daemon), "-D", "-f", str(self.conf)], env=self.env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 120  # a hang guard only
        while "idle" not in self.run("sinfo", "-h", "-o", "%t", check=False).stdout:
            assert time.monotonic() < deadline, (folder / "slurmctld.log").read_text()[-2000:]
            time.sleep(0.5)

    def run(self, *command: str, env: dict[str, str] | None = None, check: bool = True,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        merged = {**self.env, **(env or {})}
        binary = shutil.which(command[0], path=merged.get("PATH")) or _binary(command[0])
        done = subprocess.run([binary, *command[1:]], env=merged, cwd=cwd,
                              capture_output=True, text=True, timeout=120)
        assert not check or done.returncode == 0, done.stderr
        return done

    def wait_for(self, job: str) -> dict[str, str]:
        """{array task id or job id: "STATE exit:code"} once no task of `job` is pending or running."""
        deadline = time.monotonic() + 900  # a hang guard only
        while self.run("squeue", "-h", "-j", job, check=False).stdout.strip():
            assert time.monotonic() < deadline, f"job {job} did not end"
            time.sleep(1)
        shown = self.run("scontrol", "show", "job", job, "-o").stdout
        states = {}
        for line in shown.splitlines():
            fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
            states[fields.get("ArrayTaskId", fields["JobId"])] = f"{fields['JobState']} exit:{fields['ExitCode']}"
        return states

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        pid_file = self.folder / "munged.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass


@pytest.fixture
def slurm() -> Iterator[Slurm]:
    folder = Path(tempfile.mkdtemp(prefix="vl2s-", dir="/tmp"))
    cluster = None
    try:
        cluster = Slurm(folder)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def hub_env() -> Iterator[Any]:
    with offline_fixture_hub(AV_FIXTURE) as fixture:
        yield fixture


def test_the_documented_sbatch_scripts_shard_complete_and_the_afterok_merge_runs(slurm: Slurm, hub_env: Any,
                                                                                 tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    names = ["broken.mp4"] + [f"img{i}.png" for i in range(5)]
    for name in names:
        shutil.copy(MEDIA_FIXTURES / (BROKEN if name.endswith(".mp4") else IMAGE), archive / name)
    submit = tmp_path / "submit"  # the folder sbatch runs from: the scripts as the docs give them, no logs/ folder
    submit.mkdir()
    for name in ("caption.sbatch", "merge.sbatch"):
        (submit / name).write_text(documented_script(name))
    out, merged = f"{tmp_path / 'captions'}/", tmp_path / "captions.jsonl"
    env = {"VL2": str(ROOT / ".venv" / "bin" / "vl2"), "ARCHIVE": str(archive), "OUT": out, "MERGED": str(merged),
           "VL2_MODEL": str(hub_env.checkpoint), "VL2_MAX_NEW_TOKENS": "3", "VL2_WORKERS": "1", "VL2_BATCH_SIZE": "1"}
    if not Path(env["VL2"]).exists():
        pytest.skip("no .venv/bin/vl2 in this checkout (make install)")
    # a test Slurm has no GPUs and two CPUs: sbatch's options override the script's #SBATCH lines
    job = slurm.run("sbatch", "--parsable", "--array=0-2", "--gres=none", "--cpus-per-task=1", "caption.sbatch",
                    env=env, cwd=submit).stdout.strip()
    merge = slurm.run("sbatch", "--parsable", f"--dependency=afterok:{job}", "merge.sbatch", env=env,
                      cwd=submit).stdout.strip()
    tasks = slurm.wait_for(job)
    logs = {path.name: path.read_text() for path in submit.glob("*.log")}
    assert tasks == {str(k): "COMPLETED exit:0:0" for k in range(3)}, logs  # the broken file's shard too
    assert shard_of("broken.mp4", 3) in range(3)
    assert slurm.wait_for(merge) == {merge: "COMPLETED exit:0:0"}, logs
    records = [json.loads(line) for line in merged.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == sorted(names)
    assert [Path(r["path"]).name for r in records if r["error"]] == ["broken.mp4"]
    assert {f"vl2-captions-{job}_{k}.log" for k in range(3)} <= set(logs)

    # an array whose tasks wait in the queue (held; one released): `vl2 shards` calls them pending, and
    # never puts a queued or running index in its resubmit line
    fresh = f"{tmp_path / 'held'}/"
    held = slurm.run("sbatch", "--parsable", "--hold", "--array=0-2", "--gres=none", "--cpus-per-task=1",
                     "caption.sbatch", env={**env, "OUT": fresh}, cwd=submit).stdout.strip()
    slurm.run("scontrol", "release", f"{held}_0")
    deadline = time.monotonic() + 300  # a hang guard only
    while not any(Path(fresh).glob("slurm-array-*.job")):  # task 0 started and noted its job
        assert time.monotonic() < deadline, "the released task did not start"
        time.sleep(0.5)
    shown = slurm.run("vl2", "shards", fresh, env={"PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"},
                      check=False)
    assert shown.returncode == 1 and "--array" not in shown.stdout, shown.stdout
    for k in (1, 2):
        assert f"array index {k} (shard {k}/3): pending (Slurm job {held}_{k} waits in the queue" in shown.stdout
    slurm.run("scontrol", "release", held)
    assert set(slurm.wait_for(held).values()) == {"COMPLETED exit:0:0"}

    # another array size into the same folder: every task refuses, and the folder is as it was
    before = sorted((p.name, p.read_bytes()) for p in Path(out).iterdir() if not p.name.endswith(".lock"))
    again = slurm.run("sbatch", "--parsable", "--array=0-4", "--gres=none", "--cpus-per-task=1", "caption.sbatch",
                      env=env, cwd=submit).stdout.strip()
    assert slurm.wait_for(again) == {str(k): "FAILED exit:2:0" for k in range(5)}
    for k in range(5):
        log = (submit / f"vl2-captions-{again}_{k}.log").read_text()
        assert "by --array=0-2" in log and "Traceback" not in log, log
    assert sorted((p.name, p.read_bytes()) for p in Path(out).iterdir() if not p.name.endswith(".lock")) == before
