"""Split one run over the tasks of a Slurm job array: every task walks the same inputs and keeps the
files whose stable id hashes to its shard; each shard writes its own part file, lock and completion
marker in one output folder.

The contract is the one NeMo Curator uses for its Slurm arrays: every array task builds the same full
work list and keeps the items with `sha256(id) % N == K`. A file's id is its path relative to the
input folder it was found in (a file named on the command line: its name), so adding files to an
archive never moves the old ones to another shard, and the folder may be mounted elsewhere on another
node. The shard comes from `shard` ("K/N", 0-based) or, without it, from the Slurm array variables:
K = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN (arrays may start at 1 or anywhere), N =
SLURM_ARRAY_TASK_COUNT. The folder's `shards.json`, written by the first task to start, records N and
the array's first index, so a resubmission of only some indices (`--array=2,5`, whose own COUNT and
MIN differ) still maps each index to the same shard.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..atomic_files import write_atomically
from ..errors import ShardError
from ..bounded_files import read_small_file
from ..output.lock import lock_path_for
from ..output.reader import SkippedLines, read_records
from ..output.writer import STDOUT_NAME

log = logging.getLogger(__name__)

LAYOUT_NAME = "shards.json"
PART_PATTERN = re.compile(r"part-(\d+)-of-(\d+)\.jsonl")
_SHARD_TEXT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
#: The most shards a run may be split into (Slurm's own MaxArraySize defaults to 1001); a layout that
#: claims more is refused rather than walked shard by shard.
MAX_SHARDS = 100_000
SLURM_TASK_ID, SLURM_TASK_COUNT, SLURM_TASK_MIN = "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"
SLURM_TASK_MAX = "SLURM_ARRAY_TASK_MAX"
SLURM_JOB = "SLURM_ARRAY_JOB_ID"
#: An empty file per Slurm array job that ran a task into the folder, so `vl2 shards` can ask squeue
#: which of its tasks still wait in the queue.
JOB_NOTE = re.compile(r"slurm-array-(\d+)\.job")
#: Slurm job states (squeue %t) of a task not started yet, and of one running.
QUEUED_STATES, RUNNING_STATES = frozenset({"PD", "CF", "RQ", "RS", "RH", "RF", "S", "SI", "SO"}), frozenset({"R", "CG"})
SQUEUE_TIMEOUT_S = 20



@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard: {self.index}/{self.count} is not a shard; K/N needs 0 <= K < N")
        if self.count > MAX_SHARDS:
            raise ShardError(f"shard: {self.index}/{self.count}: at most {MAX_SHARDS} shards")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`"K/N"` -> Shard(K, N)."""
        match = _SHARD_TEXT.fullmatch(text)
        if match is None:
            raise ShardError(f"shard: {text!r} is not K/N (e.g. 0/4: the first of 4 shards, 0-based)")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def part_name(self) -> str:
        return f"part-{self.index}-of-{self.count}.jsonl"

    @property
    def marker_name(self) -> str:
        return f"part-{self.index}-of-{self.count}.done"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(file_id: str, count: int) -> int:
    """The shard a file id belongs to: sha256 of its UTF-8 bytes (surrogate escapes kept) mod `count`."""
    digest = hashlib.sha256(os.fsencode(file_id)).digest()
    return int.from_bytes(digest, "big") % count


def file_id(path: str | Path, roots: Sequence[Path]) -> str:
    """A file's id for sharding: its path relative to the first input folder holding it (as the walk
    found it), else its name (a file named on the command line)."""
    path = Path(path)
    for root in roots:
        if path != root and path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def input_roots(inputs: Iterable[str | Path]) -> list[Path]:
    """The input folders, spelled as the walk spells the files under them (absolute, not resolved)."""
    return [Path(os.path.abspath(raw)) for raw in inputs if Path(raw).is_dir()]


@dataclass(frozen=True)
class SlurmArray:
    """The Slurm array variables of this task."""

    task_id: int
    task_count: int
    task_min: int
    #: the array's last index (SLURM_ARRAY_TASK_MAX; without it, MIN + COUNT - 1)
    task_max: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "SlurmArray | None":
        """None outside an array task; ShardError when the variables are there but unusable."""
        if not env.get(SLURM_TASK_ID):
            return None
        values: dict[str, int | None] = {}
        for name in (SLURM_TASK_ID, SLURM_TASK_COUNT, SLURM_TASK_MIN, SLURM_TASK_MAX):
            text = env.get(name)
            if text is None and name == SLURM_TASK_MIN:
                text = "0"
            if text is None and name == SLURM_TASK_MAX:
                values[name] = None
                continue
            try:
                values[name] = int(text)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ShardError(f"{name}={text!r}: a Slurm array task needs it to be an integer") from None
        return cls(values[SLURM_TASK_ID], values[SLURM_TASK_COUNT], values[SLURM_TASK_MIN],  # type: ignore[arg-type]
                   values[SLURM_TASK_MAX])

    @property
    def last(self) -> int:
        return self.task_max if self.task_max is not None else self.task_min + self.task_count - 1


def array_of_layout(layout: Mapping[str, int]) -> str:
    """The `--array=` a folder's recorded layout was made by, e.g. "10-13"."""
    first, count = layout["array_min"], layout["shards"]
    return str(first) if count == 1 else f"{first}-{first + count - 1}"


def array_expression(indices: Iterable[int]) -> str:
    """Indices as a compact `sbatch --array` list: [0, 1, 2, 5, 7, 8] -> "0-2,5,7-8"."""
    ordered = sorted(set(indices))
    runs: list[str] = []
    start = previous = None
    for index in [*ordered, None]:
        if index is not None and previous is not None and index == previous + 1:
            previous = index
            continue
        if start is not None:
            runs.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = index
    return ",".join(runs)


def _names_a_folder(out: str) -> bool:
    """`DIR/`: a folder, whether it exists or not."""
    return out != STDOUT_NAME and out.endswith(("/", os.sep))


def _write_json_atomically(path: Path, payload: dict[str, Any], *, exclusive: bool = False) -> bool:
    """Write a small JSON file whole or not at all (temp file, fsync, rename); with `exclusive`, only
    if `path` does not exist yet (returns False then)."""
    try:
        write_atomically(path, json.dumps(payload, indent=1, sort_keys=True) + "\n", exclusive=exclusive)
    except FileExistsError:
        return False
    return True


ShardStateName = Literal["complete", "running", "pending", "incomplete", "missing"]


@dataclass(frozen=True)
class ShardState:
    """What a shard folder says of one shard."""

    shard: Shard
    state: ShardStateName
    records: int
    marker: dict[str, Any] | None
    #: the Slurm array index that runs this shard (the folder's first index + the shard's index)
    array_index: int = 0
    #: the Slurm array job whose task for this shard is queued or running (known from squeue)
    slurm_job: str | None = None
    #: lines of the part file that are not records (skipped by the reader)
    skipped: int = 0

    @property
    def failed(self) -> int:
        """Files of a complete shard whose latest record is an error (counted in its marker)."""
        value = (self.marker or {}).get("failed_in_part") if self.state == "complete" else 0
        return value if isinstance(value, int) else 0

    def line(self) -> str:
        name = f"array index {self.array_index} (shard {self.shard})"
        skipped = f", {self.skipped} line(s) not vl2 records, skipped" if self.skipped else ""
        if self.state == "complete":
            marker = self.marker or {}
            failed = f", {self.failed} ending in an error" if self.failed else ""
            return f"{name}: complete ({marker.get('files', '?')} files{failed}{skipped}; {self.shard.part_name})"
        if self.state == "running":
            why = "its lock is held" if self.slurm_job is None else f"Slurm job {self.slurm_job}_{self.array_index}"
            return f"{name}: running ({self.records} records so far, {why}; {self.shard.part_name})"
        if self.state == "pending":
            return f"{name}: pending (Slurm job {self.slurm_job}_{self.array_index} waits in the queue; {self.shard.part_name})"
        if self.state == "incomplete":
            return f"{name}: incomplete ({self.records} records{skipped}, no completion marker; {self.shard.part_name})"
        return f"{name}: missing (no {self.shard.part_name})"


class ShardFolder:
    """The output folder of a sharded run: `shards.json`, and per shard a part file, its lock and,
    once the shard has finished with every file recorded, its completion marker."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def layout_path(self) -> Path:
        return self.root / LAYOUT_NAME

    def layout(self) -> dict[str, int] | None:
        """{"shards": N, "array_min": M} as recorded by the first task, or None (no sharded run here)."""
        try:
            payload = json.loads(read_small_file(self.layout_path).decode("utf-8"))
        except FileNotFoundError:
            return None
        except RecursionError:
            raise ShardError(f"{self.layout_path}: cannot read the shard layout (nested too deep)") from None
        except (OSError, ValueError) as exc:
            raise ShardError(f"{self.layout_path}: cannot read the shard layout ({exc})") from None
        if not (isinstance(payload, dict) and isinstance(payload.get("shards"), int)
                and not isinstance(payload["shards"], bool) and 1 <= payload["shards"] <= MAX_SHARDS
                and isinstance(payload.get("array_min"), int) and not isinstance(payload["array_min"], bool)):
            raise ShardError(f"{self.layout_path}: not a vl2 shard layout (needs integer shards from 1 to "
                             f"{MAX_SHARDS} and an integer array_min)")
        return {"shards": payload["shards"], "array_min": payload["array_min"]}

    def claim(self, count: int, array_min: int) -> dict[str, int]:
        """Record the layout if this is the first task; a folder holding another shard count is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        layout = self.layout()
        if layout is None:
            _write_json_atomically(self.layout_path, {"shards": count, "array_min": array_min}, exclusive=True)
            layout = self.layout()
        assert layout is not None
        if layout["shards"] != count:
            raise ShardError(f"{self.root} holds a run split into {layout['shards']} shards, not {count}; "
                             f"use the same shard count (its array: --array={array_of_layout(layout)}) "
                             f"or another output folder")
        return layout

    def part_path(self, shard: Shard) -> Path:
        return self.root / shard.part_name

    def marker_path(self, shard: Shard) -> Path:
        return self.root / shard.marker_name

    def clear_marker(self, shard: Shard) -> None:
        """A shard being run again is not known complete until that run ends."""
        self.marker_path(shard).unlink(missing_ok=True)

    def mark_complete(self, shard: Shard, facts: dict[str, Any]) -> None:
        payload = {"shard": shard.index, "shards": shard.count, "part": shard.part_name, "vl2_version": __version__,
                   "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **facts}
        _write_json_atomically(self.marker_path(shard), payload)

    def states(self) -> tuple[dict[str, int], list[ShardState]]:
        """The layout and every shard's state (ShardError when the folder holds no sharded run)."""
        layout = self.layout()
        if layout is None:
            raise ShardError(f"{self.root}: no {LAYOUT_NAME}; not the output folder of a sharded vl2 run")
        states = []
        queued: dict[int, tuple[str, str]] | None = None
        for index in range(layout["shards"]):
            shard = Shard(index, layout["shards"])
            marker = self._marker(shard)
            part = self.part_path(shard)
            skipped = SkippedLines()
            records = sum(1 for _ in read_records(part, on_skipped=skipped)) if part.exists() else 0
            array_index, job = layout["array_min"] + index, None
            state: ShardStateName = ("complete" if marker is not None else "running" if self._locked(part)
                                     else "incomplete" if part.exists() else "missing")
            if state in ("incomplete", "missing"):  # not known to be running here: is it in Slurm's queue?
                queued = self.queued_tasks() if queued is None else queued
                if array_index in queued:
                    job, code = queued[array_index]
                    state = "running" if code in RUNNING_STATES else "pending"
            states.append(ShardState(shard, state, records, marker, array_index=array_index, slurm_job=job,
                                     skipped=len(skipped)))
        return layout, states

    def note_slurm_job(self, job_id: str) -> None:
        """Remember that Slurm array job `job_id` runs tasks into this folder (an empty file)."""
        if job_id.isdigit():
            (self.root / f"slurm-array-{job_id}.job").touch()

    def queued_tasks(self) -> dict[int, tuple[str, str]]:
        """{array index: (job id, squeue state)} of the queued or running tasks of the array jobs that
        ran tasks into this folder; empty without squeue or when it does not answer."""
        jobs = sorted(match.group(1) for path in self.root.glob("slurm-array-*.job")
                      if (match := JOB_NOTE.fullmatch(path.name)))
        squeue = shutil.which("squeue")
        if not jobs or squeue is None:
            return {}
        try:
            shown = subprocess.run([squeue, "-h", "-r", "-j", ",".join(jobs), "-o", "%F %K %t"], capture_output=True,
                                   text=True, timeout=SQUEUE_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError):
            return {}
        tasks: dict[int, tuple[str, str]] = {}
        for line in shown.stdout.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[1].isdigit() and fields[2] in QUEUED_STATES | RUNNING_STATES:
                tasks[int(fields[1])] = (fields[0], fields[2])
        return tasks

    def parts(self) -> list[Path]:
        """The part files of the recorded layout that exist, in shard order."""
        layout = self.layout()
        if layout is None:
            raise ShardError(f"{self.root}: no {LAYOUT_NAME}; not the output folder of a sharded vl2 run")
        return [path for k in range(layout["shards"]) if (path := self.part_path(Shard(k, layout["shards"]))).exists()]

    @staticmethod
    def _locked(part: Path) -> bool:
        """Whether a live vl2 run holds the part file's lock: a non-blocking shared flock probe, held for
        an instant, that writes nothing and creates no lock file."""
        try:
            fd = os.open(lock_path_for(os.path.realpath(part)), os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)  # closing drops the probe's lock, if it got one
        return False

    def _marker(self, shard: Shard) -> dict[str, Any] | None:
        try:
            payload = json.loads(read_small_file(self.marker_path(shard)).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return None
        return payload if isinstance(payload, dict) else None


@dataclass
class ShardedOutput:
    """One shard's share of a run: where it writes, which files it keeps, and its completion marker."""

    folder: ShardFolder
    shard: Shard
    roots: list[Path]
    #: the folder's first Slurm array index: this shard is array index array_min + shard.index
    array_min: int = 0

    @property
    def array_index(self) -> int:
        return self.array_min + self.shard.index

    @property
    def part(self) -> Path:
        return self.folder.part_path(self.shard)

    def keeps(self, path: Path) -> bool:
        """Whether a discovered file belongs to this shard."""
        return shard_of(file_id(path, self.roots), self.shard.count) == self.shard.index

    def finish(self, *, files: int, failed_in_part: int, complete: bool) -> bool:
        """Mark the shard complete when every one of its files has a record (errors count as records);
        whether it was."""
        if complete:
            self.folder.mark_complete(self.shard, {"files": files, "failed_in_part": failed_in_part})
        return complete


def _shard_from_slurm(array: SlurmArray, folder: ShardFolder) -> tuple[Shard, int]:
    """(shard, the array's first index), the folder's recorded layout winning over a resubmission's
    own COUNT and MIN."""
    layout = folder.layout()
    count, array_min = (layout["shards"], layout["array_min"]) if layout else (array.task_count, array.task_min)
    own = array_of_layout({"shards": count, "array_min": array_min})
    if layout and not (array_min <= array.task_min and array.last <= array_min + count - 1
                       and array.task_count <= count):
        # another array than the folder's (or a subset of its indices): every task of it sees the same
        # MIN/MAX/COUNT, so every one refuses, before it writes anything here
        raise ShardError(f"{folder.root} holds a run split into {count} shards by --array={own}; this array "
                         f"(indices {array.task_min}-{array.last}, {array.task_count} tasks) is not that array or "
                         f"some of its indices. Resubmit indices of --array={own} (vl2 shards {folder.root} names "
                         f"them), or use another output folder")
    if layout and (array.task_count, array.task_min) != (count, array_min):
        log.info("Slurm array task %d: %s records %d shards from array index %d; the shard is %d/%d",
                 array.task_id, folder.layout_path, count, array_min, array.task_id - array_min, count)
    index = array.task_id - array_min
    if not 0 <= index < count:
        raise ShardError(f"{SLURM_TASK_ID}={array.task_id} gives no shard of {count} counted from array index "
                         f"{array_min}; the array must be contiguous (e.g. --array={own}), or give the shard as K/N")
    return Shard(index, count), array_min


def plan_sharded_output(shard_setting: str | None, out: str, inputs: Sequence[str | Path],
                        env: Mapping[str, str] | None = None, *, dry_run: bool = False) -> ShardedOutput | None:
    """The shard this run is, or None for an ordinary run.

    `shard_setting` ("K/N") wins; without it a Slurm array task shards itself when `out` is a folder
    (an array whose tasks each write their own file is left alone). `out` ending in "/" without
    either is shard 0/1 (an existing folder named without the slash stays an error, as before). The shard's marker is cleared: it is rewritten when this run ends complete.
    `dry_run`: the same shard, checked against the folder's layout, but nothing is written.
    """
    env = os.environ if env is None else env
    slash = _names_a_folder(out)
    folder_out = slash or (out != STDOUT_NAME and Path(out).is_dir())
    array = SlurmArray.from_env(env) if shard_setting is None and folder_out else None
    if shard_setting is None and array is None and not slash:
        if env.get(SLURM_TASK_ID):
            log.info("%s is set but the output is not a folder: this task is not sharded (give out/ to shard)",
                     SLURM_TASK_ID)
        return None
    if not folder_out:
        raise ShardError(f"shard {shard_setting}: a sharded run writes one part file per shard into a folder; "
                         f"give the output as a folder (e.g. out/), not {out!r}")
    folder = ShardFolder(out)
    if shard_setting is not None:
        shard, array_min = Shard.parse(shard_setting), 0
        layout = folder.layout()
        array_min = layout["array_min"] if layout else array_min
    elif array is not None:
        shard, array_min = _shard_from_slurm(array, folder)
    else:
        shard, array_min = Shard(0, 1), 0
    if dry_run:  # the same checks, nothing written
        layout = folder.layout()
        if layout is not None and layout["shards"] != shard.count:
            raise ShardError(f"{folder.root} holds a run split into {layout['shards']} shards, not {shard.count}; "
                             f"use the same shard count (its array: --array={array_of_layout(layout)}) "
                             f"or another output folder")
        return ShardedOutput(folder, shard, input_roots(inputs), layout["array_min"] if layout else array_min)
    layout = folder.claim(shard.count, array_min)
    if array is not None and env.get(SLURM_JOB):
        folder.note_slurm_job(env[SLURM_JOB])
    folder.clear_marker(shard)
    return ShardedOutput(folder, shard, input_roots(inputs), layout["array_min"])


@dataclass(frozen=True)
class ShardReport:
    """What `vl2 shards` prints: a line per shard and a summary; the array indices to submit again (not
    complete, not running, not queued) and those still running or queued."""

    lines: list[str]
    rerun: list[int]
    running: list[int]

    @property
    def not_complete(self) -> list[int]:
        return sorted(self.rerun + self.running)


def report_lines(folder: ShardFolder) -> ShardReport:
    layout, states = folder.states()
    rerun = [state.array_index for state in states if state.state in ("incomplete", "missing")]
    running = [state.array_index for state in states if state.state == "running"]
    pending = [state.array_index for state in states if state.state == "pending"]
    lines = [state.line() for state in states]
    done = len(states) - len(rerun) - len(running) - len(pending)
    failed = sum(state.failed for state in states)
    summary = f"{done} of {len(states)} shards complete"
    if failed:
        summary += f" ({failed} file(s) ending in an error; a run with retry_failed tries them again)"
    if running:
        summary += f"; {len(running)} running"
    if pending:
        summary += f"; {len(pending)} pending in Slurm's queue"
    if rerun:
        summary += f"; {len(rerun)} to run again"
    lines.append(summary)
    return ShardReport(lines, rerun, running + pending)
