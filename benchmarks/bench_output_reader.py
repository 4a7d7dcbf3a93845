"""What reading an output back costs: vl2's validating reader against bare `json.loads`, same file, same run.

Why: every reader (resume, dry run, report, merge, shards) checks each line against the record schema
(issue 21), so a nightly rerun over an archive pays that check once per record already written. This
row says how much, so the all-done path's budget (issue 25) starts from a measured figure.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.run import BenchResult

#: Records in the synthetic output (`VL2_BENCH_READER_RECORDS` overrides).
RECORDS = int(os.environ.get("VL2_BENCH_READER_RECORDS", "50000"))
REPEATS = 3


def _output(folder: Path, count: int) -> Path:
    from vl2cli.output import FileStamp, Request, build_record

    clip = folder / "clip.mp4"
    clip.write_bytes(b"0123")
    request = Request(task="caption", prompt=None, labels=None, model_id="m", revision=None, frames=16,
                      modality="auto")
    stamp = FileStamp.of(clip)
    record = build_record(request, path=stamp.path, stamp=stamp, vl2_version="0", modality="video",
                          output="a person slices vegetables in a kitchen " * 4,
                          instruction="Describe the video in detail.")
    out = folder / "out.jsonl"
    out.write_text((json.dumps(record) + "\n") * count)
    return out


def _best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run() -> BenchResult:
    from vl2cli.output import read_records

    with tempfile.TemporaryDirectory() as scratch:
        out = _output(Path(scratch), RECORDS)
        bare = _best(lambda: sum(1 for line in out.open("rb") if json.loads(line)))
        ours = _best(lambda: sum(1 for _ in read_records(out)))
    rows = [["json.loads per line (baseline)", f"{bare:.2f}", f"{bare / RECORDS * 1e6:.1f}", "1.0×"],
            ["vl2 read_records (schema-checked)", f"{ours:.2f}", f"{ours / RECORDS * 1e6:.1f}", f"{ours / bare:.1f}×"]]
    return BenchResult(f"Reading an output back ({RECORDS} records, best of {REPEATS})",
                       ["reader", "s", "µs/record", "vs baseline"], rows)
