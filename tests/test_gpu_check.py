"""The one-call GPU check (benchmarks/gpu_check.py): its dry run here checks what would travel to the
GPU machine against that machine's limits and runs the same steps on the CPU (the GPU tests skip, the
benchmark runs its smoke mode). CI runs it through this test."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_gpu, gpu_check

WHEELS = gpu_check.REPO_ROOT / gpu_check.DEFAULT_WHEELS
pytestmark = pytest.mark.skipif(not (gpu_check.REPO_ROOT / ".git").exists(), reason="needs a git checkout (it lists the tree)")


def test_the_device_command_fits_its_limit() -> None:
    command = gpu_check.device_command("0123456789abcdef+dirty")
    assert len(command) <= gpu_check.COMMAND_LIMIT_CHARS
    assert '"$OUT"' in command and gpu_check.DEFAULT_BUDGET_S <= gpu_check.CALL_LIMIT_S - 30


def test_the_wheels_are_the_locks_versions() -> None:
    versions = gpu_check.lock_versions()
    assert gpu_check.wheel_requirements() == [f"{n}=={versions[n]}" for n in gpu_check.WHEEL_DISTRIBUTIONS]


def test_travel_counts_tracked_and_untracked_files_but_not_ignored_ones(tmp_path: Path) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored/\ncarried/\n")
    (tmp_path / "kept.bin").write_bytes(b"x" * 1000)
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "big.bin").write_bytes(b"x" * 5000)
    (tmp_path / "carried").mkdir()
    (tmp_path / "carried" / "w.whl").write_bytes(b"x" * 300)
    report = gpu_check.travel_report(["carried"], root=tmp_path)
    assert report["tree_bytes"] == 1000 + len("ignored/\ncarried/\n")
    assert report["carried_bytes"] == {"carried": 300} and report["fits"]
    assert not gpu_check.travel_report(["absent"], root=tmp_path)["fits"]


@pytest.mark.skipif(not bench_gpu.smoke_requirements() or any(not p.is_file() for p in bench_gpu.smoke_requirements()),
                    reason="smoke fixtures missing")
@pytest.mark.skipif(not WHEELS.is_dir(), reason=f"{gpu_check.DEFAULT_WHEELS}/ not downloaded (make gpu-wheels)")
def test_the_dry_run_fits_the_limits_and_runs_every_step_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    status = gpu_check.run_check(out, dry_run=True, commit="test", budget_s=gpu_check.DEFAULT_BUDGET_S, wheels=WHEELS)
    check = json.loads((out / "check.json").read_text())
    steps = {s["name"]: s for s in check["steps"]}
    assert [s["status"] for s in check["steps"]] == ["passed"] * 4, steps
    assert status == 0
    travel = json.loads((out / "travel.json").read_text())
    assert travel["total_bytes"] <= gpu_check.TRAVEL_LIMIT_BYTES and travel["command_chars"] <= gpu_check.COMMAND_LIMIT_CHARS
    bench = json.loads((out / "bench_gpu.json").read_text())
    assert bench["mode"] == "smoke" and bench["valid"]
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary and "end to end from files" in summary
    environment = json.loads((out / "environment.json").read_text())
    assert environment["torch"] and len(environment["staged_wheels"]) == len(gpu_check.WHEEL_DISTRIBUTIONS)
