"""Counting what a run did, for the summary line and the exit code."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from time import perf_counter

from .exit_codes import EXIT_OK, EXIT_SOME_FAILED


@dataclass
class RunSummary:
    """Files done, skipped (already in the output) and failed; walk problems that lost files."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    unreadable_folders: int = 0
    #: list entries that cannot be a path (a NUL byte), skipped with a warning
    bad_list_entries: int = 0
    #: subtitle files not written because their name held a file vl2 did not write
    subtitles_refused: int = 0
    #: files of the whole output file whose latest record is an error (None: no output file)
    failed_in_output: int | None = None
    #: of those, the transient failures a later run tries again (the rest are permanent: a corrupt file
    #: fails the same way every night, so a run that meets only those exits 0)
    pending_in_output: int = 0
    started: float = field(default_factory=perf_counter)
    #: what one outcome is: "files", or "segments" in a run that cuts files (--segment)
    unit: str = "files"

    def count(self, record: dict | None) -> None:
        """Count one outcome: None means skipped."""
        if record is None:
            self.skipped += 1
        elif record.get("error") is not None:
            self.failed += 1
        else:
            self.done += 1

    def count_skipped(self, files: int) -> None:
        """Count a run of files skipped as already done."""
        self.skipped += files

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed

    @property
    def seconds(self) -> float:
        return perf_counter() - self.started

    @property
    def permanent_in_output(self) -> int:
        """Files of the output ending in an error no later run retries (unless told to: retry_failed)."""
        return max((self.failed_in_output or 0) - self.pending_in_output, 0)

    def exit_code(self) -> int:
        """1 when this run recorded failures, or transient ones wait in the output to be retried; old
        permanent failures alone do not fail every later run (the summary line counts them)."""
        some_failed = (self.failed or self.unreadable_folders or self.pending_in_output or self.subtitles_refused
                       or self.bad_list_entries)
        return EXIT_SOME_FAILED if some_failed else EXIT_OK

    def line(self, *, now: datetime | None = None) -> str:
        """e.g. `vl2: 2026-12-02T14:03:11Z done: 12 files: 9 done, 2 skipped, 1 failed in 4.2 s (2.5 files/s)`:
        the UTC time tells the nights of a cron log apart."""
        stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        total = self.total
        rate = f" ({self.done / self.seconds:.2f} {self.unit}/s)" if self.done and self.seconds > 0 else ""
        folders = f"; {self.unreadable_folders} folder(s) unreadable" if self.unreadable_folders else ""
        output = ""
        if self.pending_in_output:
            output += f"; {self.pending_in_output} file(s) of the output end in a transient error (a rerun tries them again)"
        if self.permanent_in_output:
            output += (f"; {self.permanent_in_output} file(s) of the output end in a permanent error "
                       f"(not retried unless retry_failed is set)")
        if self.bad_list_entries:
            output += f"; {self.bad_list_entries} list entr{'y' if self.bad_list_entries == 1 else 'ies'} skipped"
        if self.subtitles_refused:
            output += f"; {self.subtitles_refused} subtitle file(s) not written"
        return (f"vl2: {stamp} done: {total} {self.unit}: {self.done} done, {self.skipped} skipped, {self.failed} failed "
                f"in {self.seconds:.1f} s{rate}{folders}{output}")
