"""An archive where everything is already done: what vl2's bookkeeping costs beyond the walk it cannot avoid.

Why (issue 25): a nightly cron rerun over a large archive finds nothing to do, yet paid 2.7× the time and
3× the memory of a bare walk + stat + parsing the output into a set of keys; `vl2 report` took memory and
a page size proportional to the archive. Each row here runs as its own child process over the same
synthetic tree (FOLDERS folders of hard links to a clip, with an output holding a record for each file),
and is set against the bare baseline measured in the same run: wall time and peak memory (ru_maxrss).

`vl2 merge` rows: the output dealt line by line into the part files of a shard folder (PARTS shards, all
marked complete), merged back into walk order as JSONL and as Parquet.

`VL2_BENCH_ARCHIVE_FILES` sets the sizes (default 100000; `100000,1000000` for the 1M row, which takes
several minutes to build on 2 cores: hard links and records are made in the benchmark, under /tmp).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import BenchResult

SIZES = tuple(int(size) for size in os.environ.get("VL2_BENCH_ARCHIVE_FILES", "100000").split(","))
FOLDERS = 100
#: A small stand-in for a clip: the all-done path never opens a file, it stats it.
CLIP_BYTES = b"\0" * 4096
#: The reference fixture whose config.json is the benchmark's checkpoint (only the config is read).
CHECKPOINT_FIXTURE = "siglip-qwen2-av"
KIB = 1024
#: Part files of the shard folder the merge rows read.
PARTS = 4

#: The floor: walk + stat every file, parse every output line into a set of (path, size, mtime) keys.
BASELINE = r"""
import json, os, sys
root, out = sys.argv[1], sys.argv[2]
keys = set()
with open(out, "rb") as handle:
    for line in handle:
        record = json.loads(line)
        keys.add((record["path"], record["file"]["size_bytes"], record["file"]["mtime_ns"]))
todo = 0
for folder, _, names in os.walk(root):
    for name in names:
        path = os.path.join(folder, name)
        info = os.stat(path)
        todo += (path, info.st_size, info.st_mtime_ns) not in keys
print(todo)
"""


def _checkpoint(scratch: Path) -> Path:
    from tests.fixture_pack import reference_root

    folder = scratch / "checkpoint"
    folder.mkdir()
    shutil.copy(reference_root() / CHECKPOINT_FIXTURE / "checkpoint" / "config.json", folder / "config.json")
    return folder


def _request(checkpoint: Path, out: Path):
    from vl2cli.settings import resolve_settings
    from vl2cli.run import lazy_model, run_options, task_spec
    from vl2cli.tasks.plan import build_request

    settings = resolve_settings({"model": str(checkpoint), "out": str(out)}, env={}).settings
    return build_request(lazy_model(settings), task_spec("caption", settings), run_options(settings))


def _archive(scratch: Path, files: int, checkpoint: Path) -> tuple[Path, Path]:
    """FOLDERS folders of hard links to a clip (one per folder), and an output holding a success record for each."""
    from vl2cli import __version__
    from vl2cli.output.record import FileStamp, build_record
    from vl2cli.output.writer import encode_record

    root, out = scratch / "archive", scratch / "out.jsonl"
    request = _request(checkpoint, out)
    per_folder = files // FOLDERS
    with open(out, "wb") as handle:
        for number in range(FOLDERS):
            folder = root / f"f{number:03d}"
            folder.mkdir(parents=True)
            clip = scratch / f"clip{number:03d}.mp4"  # one per folder: a file system caps the links to one inode
            clip.write_bytes(CLIP_BYTES)
            for item in range(per_folder):
                path = folder / f"clip{item:06d}.mp4"
                os.link(clip, path)
                stamp = FileStamp.of(path)
                handle.write(encode_record(build_record(
                    request, path=stamp.path, stamp=stamp, vl2_version=__version__, modality="video",
                    output="a person slices vegetables in a kitchen", instruction="Describe the video in detail.",
                    timings_ms={"decode": 40.0, "model": 900.0, "total": 950.0})))
    return root, out


def _shard_folder(scratch: Path, out: Path) -> Path:
    """`out`'s records dealt round-robin into PARTS part files of a shard folder, every shard complete."""
    from vl2cli.runners.shards import Shard, ShardFolder

    folder = ShardFolder(scratch / "parts")
    folder.claim(PARTS, 0)
    shards = [Shard(index, PARTS) for index in range(PARTS)]
    handles = [open(folder.part_path(shard), "wb") for shard in shards]  # noqa: SIM115 (closed below)
    try:
        with open(out, "rb") as lines:
            for number, line in enumerate(lines):
                handles[number % PARTS].write(line)
    finally:
        for handle in handles:
            handle.close()
    for shard in shards:
        folder.mark_complete(shard, {})
    return folder.root


#: Runs the measured command from a small, fresh process and prints its wall time and peak memory: a child
#: forked straight from the benchmark would count the benchmark's own resident memory (copied at fork).
_MEASURER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
elapsed = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": done.returncode, "s": elapsed, "kib": peak_kib, "stderr": done.stderr.decode()[-500:]}))
"""


def _measure(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one child process."""
    done = subprocess.run([sys.executable, "-c", _MEASURER, *command], capture_output=True, check=True, text=True)
    figures = json.loads(done.stdout)
    if figures["code"] != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed: {figures['stderr']}")
    return figures["s"], figures["kib"] / KIB


def _vl2(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from vl2cli.cli import main; sys.exit(main())", *args]


def _row(name: str, figures: tuple[float, float], baseline: tuple[float, float], extra: str = "") -> list[str]:
    seconds, megabytes = figures
    return [name, f"{seconds:.2f}", f"{megabytes:.0f}", f"{seconds / baseline[0]:.2f}×",
            f"{megabytes / baseline[1]:.2f}×", extra]


def _size(files: int) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="vl2-bench-archive-", dir="/tmp") as name:
        scratch = Path(name)
        checkpoint = _checkpoint(scratch)
        root, out = _archive(scratch, files, checkpoint)
        run = _vl2("caption", str(root), "--out", str(out), "--model", str(checkpoint), "--quiet")
        baseline = _measure([sys.executable, "-c", BASELINE, str(root), str(out)])
        first = _measure(run)  # no sidecar yet: the whole output is read and the sidecar written
        nightly = _measure(run)
        dry = _measure(_vl2("caption", str(root), "--out", str(out), "--model", str(checkpoint), "--dry-run"))
        report_path = scratch / "report.html"
        report = _measure(_vl2("report", str(out), "--out", str(report_path), "--max-sheets", "0"))
        first_page = report_path.stat().st_size / KIB / KIB
        lines = sum(1 for _ in open(out, "rb"))
        parts = _shard_folder(scratch, out)
        merged_jsonl, merged_parquet = scratch / "merged.jsonl", scratch / "merged.parquet"
        merge_jsonl = _measure(_vl2("merge", str(parts), "--out", str(merged_jsonl)))
        merge_parquet = _measure(_vl2("merge", str(parts), "--out", str(merged_parquet), "--format", "parquet"))
        merged_lines = sum(1 for _ in open(merged_jsonl, "rb"))
        merged_rows = _parquet_rows(merged_parquet)
    assert lines == files and merged_lines == files and merged_rows == files
    rows = [_row("walk + stat + parse into a set (baseline)", baseline, baseline),
            _row("vl2 caption, all done, first rerun (builds the sidecar)", first, baseline),
            _row("vl2 caption, all done, nightly rerun", nightly, baseline),
            _row("vl2 caption --dry-run", dry, baseline),
            _row("vl2 report --max-sheets 0", report, baseline, f"first page {first_page:.1f} MB"),
            _row(f"vl2 merge, {PARTS} part files, JSONL", merge_jsonl, baseline),
            _row(f"vl2 merge, {PARTS} part files, Parquet", merge_parquet, baseline)]
    return BenchResult(f"An archive already done ({files} files in {FOLDERS} folders, one record each)",
                       ["run", "s", "peak MB", "time vs baseline", "memory vs baseline", ""], rows,
                       [f"targets: nightly rerun ≤ 2× the baseline's time and ≤ 1.5× its memory; report ≤ 200 MB "
                        f"at 1M records with a first page ≤ 5 MB; machine load {os.getloadavg()[0]:.1f} at the end"])


def _parquet_rows(path: Path) -> int:
    """The merged Parquet file's row count (the Parquet row needs pyarrow, vl2's `parquet` extra)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def run() -> list[BenchResult]:
    return [_size(files) for files in SIZES]


if __name__ == "__main__":
    from benchmarks.run import format_table

    for result in run():
        print(format_table(result), end="\n\n")
