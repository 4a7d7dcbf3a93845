"""`vl2 shards DIR` and `vl2 merge DIR --out FILE`: the bodies of the commands that look after a
sharded run's output folder (the CLI only parses their arguments)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from ..errors import Vl2Error
from ..output.merge import MergeFormat, latest_records, write_merged
from .exit_codes import EXIT_OK, EXIT_SOME_FAILED
from ..runners.shards import LAYOUT_NAME, ShardFolder, array_expression, report_lines


def shards_report(folder: str | Path, *, stdout: TextIO | None = None) -> int:
    """Print each shard's state (by its array index); when some are incomplete or missing, a last line
    with the `--array` expression that reruns them (running shards left out: their lock is held). Exit 0
    when every shard is complete (files ending in an error are counted, not a failure), else 1."""
    stdout = stdout or sys.stdout
    report = report_lines(ShardFolder(folder))
    for line in report.lines:
        print(line, file=stdout)
    if report.rerun:
        print(f"--array={array_expression(report.rerun)}", file=stdout)
    return EXIT_SOME_FAILED if report.not_complete else EXIT_OK


def merge_shards(folder: str | Path, out: str | Path, fmt: MergeFormat = "jsonl", *,
                 stderr: TextIO | None = None) -> int:
    """Merge the part files of `folder` into `out` (last record per key wins). Exit 1 when some shards
    were not complete (what exists is merged all the same), else 0."""
    stderr = stderr or sys.stderr
    shard_folder = ShardFolder(folder)
    out = Path(out)
    if out.resolve().parent == shard_folder.root.resolve() and (out.name == LAYOUT_NAME or out.name.startswith("part-")):
        raise Vl2Error(f"{out}: the merged file must not replace the shard folder's own files (its part files, "
                       f"markers and {LAYOUT_NAME}); write it beside the folder")
    report = report_lines(shard_folder)
    parts = shard_folder.parts()
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = latest_records(parts, temp_dir=out.parent)  # its sort spills beside the merged file, not to /tmp
    for warning in merged.warnings:
        print(f"vl2: warning: {warning}", file=stderr, flush=True)
    write_merged(merged.records, out, fmt)
    dropped = f"; {merged.superseded} earlier record(s) of the same files dropped" if merged.superseded else ""
    print(f"vl2: merged {len(merged.records)} records from {len(parts)} part file(s) into {out}{dropped}",
          file=stderr, flush=True)
    left = report.not_complete
    if left:
        running = f", {len(report.running)} of them running or queued" if report.running else ""
        print(f"vl2: warning: {len(left)} shard(s) not complete (array indices {array_expression(left)}{running}); "
              f"`vl2 shards {folder}` says which to run again", file=stderr, flush=True)
    return EXIT_SOME_FAILED if left else EXIT_OK
