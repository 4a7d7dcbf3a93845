"""Counting what a run did, for the summary line and the exit code."""
from __future__ import annotations

from dataclasses import dataclass, field
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

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed

    @property
    def seconds(self) -> float:
        return perf_counter() - self.started

    def exit_code(self) -> int:
        still_failed = bool(self.failed_in_output)
        some_failed = (self.failed or self.unreadable_folders or still_failed or self.subtitles_refused
                       or self.bad_list_entries)
        return EXIT_SOME_FAILED if some_failed else EXIT_OK

    def line(self) -> str:
        """e.g. `vl2: 12 files: 9 done, 2 skipped, 1 failed in 4.2 s (2.5 files/s)`."""
        total = self.total
        rate = f" ({self.done / self.seconds:.2f} {self.unit}/s)" if self.done and self.seconds > 0 else ""
        folders = f"; {self.unreadable_folders} folder(s) unreadable" if self.unreadable_folders else ""
        output = f"; {self.failed_in_output} file(s) of the output end in an error" if self.failed_in_output else ""
        if self.bad_list_entries:
            output += f"; {self.bad_list_entries} list entr{'y' if self.bad_list_entries == 1 else 'ies'} skipped"
        if self.subtitles_refused:
            output += f"; {self.subtitles_refused} subtitle file(s) not written"
        return (f"vl2: {total} {self.unit}: {self.done} done, {self.skipped} skipped, {self.failed} failed "
                f"in {self.seconds:.1f} s{rate}{folders}{output}")
