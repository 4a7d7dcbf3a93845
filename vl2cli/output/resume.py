"""Which files an earlier run already finished, read from its own output file."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .record import ResumeKey, key_of_record
from .writer import read_records


@dataclass
class ResumeIndex:
    """For each resume key, whether its latest record was an error (later records win)."""

    failed_last: dict[ResumeKey, bool] = field(default_factory=dict)

    @classmethod
    def from_output(cls, path: str | Path) -> "ResumeIndex":
        """Index an existing output; a missing file is an empty index."""
        index = cls()
        if not Path(path).exists():
            return index
        for record in read_records(path):
            key = key_of_record(record)
            if key is not None:
                index.failed_last[key] = record.get("error") is not None
        return index

    def is_done(self, key: ResumeKey, *, retry_failed: bool = False) -> bool:
        """Done = has a record; with retry_failed, an error record does not count as done."""
        if key not in self.failed_last:
            return False
        return not (retry_failed and self.failed_last[key])

    def __len__(self) -> int:
        return len(self.failed_last)
