"""The whole GPU check as ONE command: GPU tests, then the full-size GPU benchmark, figures in one folder.

Why one command: the GPU machine vl2 is measured on is lent for minutes at a time (15 minutes of device
time a session, at most 10 a call) and sees only a copy of the working tree plus a few carried folders
(64 MiB in all) and one command line (2,000 characters). It has its own Python 3.12, torch 2.11 and
transformers 5.17 and no way to install anything but carried wheels; it lacks av, decord and jsonschema.
So this script stages the carried wheels itself (by unpacking them: no pip, no network), runs each step
under its own time limit so the whole stays under `--budget-s` (9 minutes by default), and writes every
figure as it comes, so a step cut short still leaves what it measured.

    python3 -m benchmarks.gpu_check run --out "$OUT" --commit SHA   # on the GPU machine (carry .gpu-wheels)
    python3 -m benchmarks.gpu_check run --dry-run --out DIR          # here: limits + the CPU smoke path
    python3 -m benchmarks.gpu_check wheels --into .gpu-wheels        # download the wheels it stages
    python3 -m benchmarks.gpu_check command                          # print the command line to send

What lands in `--out`: environment.json (GPU, versions, commit), gpu-tests.xml / gpu-tests.log,
bench_gpu.json / bench_gpu.log, summary.md (what docs/benchmarks.md quotes), and check.json (each
step's status and seconds). The dry run also writes travel.json (what travels against the limits).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: What the GPU machine is lent with (docs/benchmarks.md, "The GPU check").
TRAVEL_LIMIT_BYTES = 64 * 1024 * 1024
COMMAND_LIMIT_CHARS = 2000
CALL_LIMIT_S = 600
DEFAULT_BUDGET_S = 540
#: The GPU machine's Python: the wheels are downloaded for it.
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64")
#: What the GPU machine lacks, at the lock's versions (requirements/lock-cpu.txt). decord (13.6 MB) is
#: left out: with the fixtures in the tree it does not fit in what travels, and vl2 decodes with PyAV
#: where decord cannot be imported (the same frames on the well-formed fixture MP4s: docs/media.md).
WHEEL_DISTRIBUTIONS = ("av", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "attrs")
DEFAULT_WHEELS = ".gpu-wheels"
#: Slice of the budget each step may take (the rest is start-up and the summary); the benchmark gets
#: what the tests leave.
TESTS_SHARE = 0.30
SUMMARY_RESERVE_S = 20
#: Test files the GPU tests step runs: the CUDA tests, then the model tests that pick the device.
GPU_TEST_FILES = ("tests/test_gpu.py", "tests/test_stack_version.py", "tests/test_export_tensorrt.py")
#: The full-size benchmark, sized for what the tests leave of 9 minutes (docs/benchmarks.md).
BENCH_ARGS = ("--files", "60", "--baseline-files", "8")
SMOKE_BENCH_ARGS = ("--smoke",)


@dataclass
class Step:
    name: str
    status: str = "not run"  # "passed" | "failed" | "timed out" | "skipped" | "not run"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Check:
    dry_run: bool
    commit: str
    budget_s: float
    steps: list[Step] = field(default_factory=list)

    def write(self, out: Path) -> None:
        (out / "check.json").write_text(json.dumps(asdict(self), indent=2) + "\n")


# ------------------------------------------------------------------------------------------ travel
def lock_versions() -> dict[str, str]:
    text = (REPO_ROOT / "requirements" / "lock-cpu.txt").read_text()
    return dict(line.split("==", 1) for line in text.splitlines() if line and not line.startswith("#"))


def wheel_requirements() -> list[str]:
    versions = lock_versions()
    return [f"{name}=={versions[name]}" for name in WHEEL_DISTRIBUTIONS]


def tree_files(root: Path = REPO_ROOT) -> list[Path]:
    """What the GPU machine's copy holds: tracked files and untracked files git does not ignore."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, check=True, capture_output=True).stdout
    return [root / name for name in listing.decode("utf-8", "surrogateescape").split("\0") if name]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def travel_report(carry: Sequence[str], root: Path = REPO_ROOT) -> dict:
    tree = sum(p.stat().st_size for p in tree_files(root) if p.is_file() and not p.is_symlink())
    carried = {name: folder_bytes(root / name) if (root / name).exists() else None for name in carry}
    total = tree + sum(v or 0 for v in carried.values())
    return {"tree_bytes": tree, "carried_bytes": carried, "total_bytes": total, "limit_bytes": TRAVEL_LIMIT_BYTES,
            "fits": total <= TRAVEL_LIMIT_BYTES and all(v is not None for v in carried.values())}


def device_command(commit: str, budget_s: float = DEFAULT_BUDGET_S) -> str:
    """The one command line sent to the GPU machine (it runs in the copy's root; $OUT comes back)."""
    return f'python3 -m benchmarks.gpu_check run --out "$OUT" --commit {shlex.quote(commit)} --budget-s {budget_s:g}'


def current_commit(root: Path = REPO_ROOT) -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True).stdout.strip()
    commit = result.stdout.strip() or "unknown"
    return commit + ("+dirty" if dirty else "")


# ------------------------------------------------------------------------------------------ wheels
def download_wheels(into: Path) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
               "--python-version", GPU_PYTHON, "--implementation", "cp", "--dest", str(into)]
    for tag in GPU_PLATFORMS:
        command += ["--platform", tag]
    subprocess.run(command + wheel_requirements(), check=True)
    return sorted(into.glob("*.whl"))


def stage_wheels(wheels: Path, target: Path) -> list[str]:
    """Unpack every wheel into `target` (what `pip install --no-deps --target` does for these wheels)."""
    target.mkdir(parents=True, exist_ok=True)
    staged = []
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
        staged.append(wheel.name)
    return staged


# ------------------------------------------------------------------------------------------- steps
def run_step(step: Step, command: list[str], *, env: dict[str, str], log: Path, timeout_s: float) -> None:
    """Run one step under its own limit; its output goes to `log` as it comes."""
    if timeout_s <= 5:
        step.status, step.detail = "skipped", "no time left in the budget"
        return
    started = time.monotonic()
    with log.open("w") as sink:
        sink.write("$ " + " ".join(shlex.quote(c) for c in command) + "\n")
        sink.flush()
        try:
            result = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                    timeout=timeout_s)
            step.status = "passed" if result.returncode == 0 else "failed"
            step.detail = f"exit {result.returncode}"
        except subprocess.TimeoutExpired:
            step.status, step.detail = "timed out", f"after {timeout_s:.0f} s"
    step.seconds = round(time.monotonic() - started, 1)


def environment_facts(dry_run: bool, commit: str, staged: list[str]) -> dict:
    facts: dict = {"commit": commit, "dry_run": dry_run, "python": platform.python_version(),
                   "machine": platform.machine(), "cpus": os.cpu_count(), "staged_wheels": staged}
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["cuda"] = torch.version.cuda
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if facts["gpus"]:
            facts["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    except Exception as error:  # a broken torch is itself the finding
        facts["torch_error"] = repr(error)
    from importlib.metadata import PackageNotFoundError, version

    for name in ("transformers", "huggingface_hub", "timm", "onnxruntime", "onnxruntime-gpu", "av", "decord",
                 "jsonschema", "tensorrt", "tensorrt-rtx-cu13-bindings"):
        try:
            facts[name] = version(name)
        except PackageNotFoundError:
            facts[name] = None
    return facts


def junit_counts(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, 0))
    totals["passed"] = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    return totals


def summary_markdown(check: Check, facts: dict, tests: dict[str, int], bench_json: Path) -> str:
    lines = [f"# vl2 GPU check ({'DRY RUN on CPU' if check.dry_run else 'GPU'})", "",
             f"- commit: `{check.commit}`",
             f"- machine: {', '.join(facts.get('gpus') or []) or 'no GPU'}"
             f" (capability {facts.get('capability', '-')}), {facts.get('cpus')} cores, Python {facts.get('python')}",
             f"- torch {facts.get('torch')} (CUDA {facts.get('cuda')}), transformers {facts.get('transformers')}, "
             f"huggingface_hub {facts.get('huggingface_hub')}, av {facts.get('av')}, decord {facts.get('decord')}",
             "", "| step | status | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds} | {s.detail} |" for s in check.steps]
    if tests:
        lines += ["", f"GPU tests: {tests['passed']} passed, {tests['failures'] + tests['errors']} failed, "
                      f"{tests['skipped']} skipped"]
    if bench_json.is_file():
        from benchmarks.bench_gpu import tables
        from benchmarks.run import format_table

        data = json.loads(bench_json.read_text())
        lines += ["", f"Benchmark valid: {data.get('valid')}", ""]
        for result in tables(data):
            lines += [format_table(result), ""]
    return "\n".join(lines) + "\n"


def run_check(out: Path, *, dry_run: bool, commit: str, budget_s: float, wheels: Path) -> int:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(dry_run=dry_run, commit=commit, budget_s=budget_s)
    scratch = Path(tempfile.mkdtemp(prefix="vl2-gpu-check-"))
    failed = False

    # 1. limits (the dry run's own job; on the GPU machine, only recorded)
    limits = Step("limits")
    check.steps.append(limits)
    if dry_run:
        travel = travel_report([str(wheels.relative_to(REPO_ROOT)) if wheels.is_relative_to(REPO_ROOT) else str(wheels)])
        command = device_command(commit, budget_s)
        travel.update({"command": command, "command_chars": len(command), "command_limit": COMMAND_LIMIT_CHARS,
                       "budget_s": budget_s, "call_limit_s": CALL_LIMIT_S, "wheels": wheel_requirements()})
        (out / "travel.json").write_text(json.dumps(travel, indent=2) + "\n")
        problems = []
        if not travel["fits"]:
            missing = [k for k, v in travel["carried_bytes"].items() if v is None]
            problems.append(f"carried folder missing: {', '.join(missing)} (make gpu-wheels)" if missing else
                            f"{travel['total_bytes'] / 2**20:.1f} MiB travel, over {TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB")
        if len(command) > COMMAND_LIMIT_CHARS:
            problems.append(f"command line {len(command)} characters, over {COMMAND_LIMIT_CHARS}")
        if budget_s > CALL_LIMIT_S:
            problems.append(f"budget {budget_s:g} s over the {CALL_LIMIT_S} s a call may run")
        limits.status = "failed" if problems else "passed"
        limits.detail = "; ".join(problems) or (f"{travel['total_bytes'] / 2**20:.1f} of "
                                                f"{TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB, command {len(command)} chars")
        failed |= bool(problems)
    else:
        limits.status, limits.detail = "skipped", "checked by the dry run before sending"

    # 2. stage the wheels (on the GPU machine they go on PYTHONPATH; here only unpacked, to prove they unpack)
    stage = Step("stage wheels")
    check.steps.append(stage)
    target = scratch / "site"
    staged = stage_wheels(wheels, target) if wheels.is_dir() else []
    stage.status = "passed" if staged else "failed"
    stage.detail = f"{len(staged)} wheels" if staged else f"no wheels in {wheels} (make gpu-wheels)"
    failed |= not staged
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VL2_HOME": str(scratch / "home"), "PYTHONUNBUFFERED": "1",
           "VL2_EXPORT_DIR": str(scratch / "export"), "VL2_ENGINE_DIR": str(scratch / "engines")}
    path = [str(REPO_ROOT)] + ([] if dry_run else [str(target)])
    env["PYTHONPATH"] = os.pathsep.join(path + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    facts = environment_facts(dry_run, commit, staged)
    (out / "environment.json").write_text(json.dumps(facts, indent=2) + "\n")

    # 3. the GPU tests (they skip on CPU: the dry run proves they collect and run)
    tests = Step("gpu tests")
    check.steps.append(tests)
    left = budget_s - (time.monotonic() - started) - SUMMARY_RESERVE_S
    run_step(tests, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                     "--junitxml", str(out / "gpu-tests.xml"), *GPU_TEST_FILES],
             env=env, log=out / "gpu-tests.log", timeout_s=min(left, budget_s * TESTS_SHARE))
    failed |= tests.status != "passed"
    check.write(out)

    # 4. the benchmark: full size on a GPU, its smoke mode on CPU
    bench = Step("bench-gpu")
    check.steps.append(bench)
    left = budget_s - (time.monotonic() - started) - SUMMARY_RESERVE_S
    bench_args = SMOKE_BENCH_ARGS if dry_run else BENCH_ARGS + ("--workdir", str(scratch / "bench"))
    run_step(bench, [sys.executable, "-m", "benchmarks.bench_gpu", *bench_args, "--json", str(out / "bench_gpu.json")],
             env=env, log=out / "bench_gpu.log", timeout_s=left)
    failed |= bench.status != "passed"

    check.write(out)
    (out / "summary.md").write_text(summary_markdown(check, facts, junit_counts(out / "gpu-tests.xml"), out / "bench_gpu.json"))
    print((out / "summary.md").read_text())
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the check (on the GPU machine), or its dry run here")
    run.add_argument("--out", type=Path, required=True, help="folder for every figure and log")
    run.add_argument("--dry-run", action="store_true", help="CPU: check the limits, run the smoke path")
    run.add_argument("--commit", default=None, help="the commit measured (the GPU machine's copy has no git)")
    run.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-clock budget of the whole check")
    run.add_argument("--wheels", type=Path, default=REPO_ROOT / DEFAULT_WHEELS, help="folder of carried wheels")
    wheels = commands.add_parser("wheels", help="download the wheels the GPU machine lacks")
    wheels.add_argument("--into", type=Path, default=REPO_ROOT / DEFAULT_WHEELS)
    commands.add_parser("command", help="print the command line to send and the folders to carry")
    args = parser.parse_args(argv)
    if args.command == "wheels":
        for wheel in download_wheels(args.into):
            print(f"{wheel.name}  {wheel.stat().st_size / 2**20:.1f} MiB")
        return 0
    if args.command == "command":
        print(json.dumps({"command": device_command(current_commit()), "carry": [DEFAULT_WHEELS]}, indent=2))
        return 0
    commit = args.commit or (current_commit() if (REPO_ROOT / ".git").exists() else "unknown")
    return run_check(args.out.resolve(), dry_run=args.dry_run, commit=commit, budget_s=args.budget_s,
                     wheels=args.wheels.resolve())


if __name__ == "__main__":
    sys.exit(main())
