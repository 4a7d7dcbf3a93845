"""The body of `vl2 report RESULTS.jsonl --out report.html`: its options are settings (`report_out`,
`max_sheets`, `video_backend`), declared once in `vl2cli.settings` like every other command's; errors end
it through the command guard (`vl2cli.commands.guard`), as for every command."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..report.page import write_report
from ..settings import Settings
from .exit_codes import EXIT_OK


def run_report(results: Path, settings: Settings) -> int:
    """Write one self-contained HTML page of a run; returns the exit code."""
    if not results.is_file():
        raise InputError(f"{results}: no such file")
    written = write_report(results, Path(settings.report_out), max_sheets=settings.max_sheets,
                           video_backend=settings.video_backend,
                           on_warning=lambda message: print(f"vl2: warning: {message}", file=sys.stderr))
    print(f"vl2: report written to {written}", file=sys.stderr)
    return EXIT_OK
