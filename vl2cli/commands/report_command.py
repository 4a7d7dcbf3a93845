"""`vl2 report RESULTS.jsonl --out report.html`: typer options of the report command (forwarded from cli.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError, Vl2Error
from .exit_codes import EXIT_OK
from .guard import run_guarded
from ..report.page import DEFAULT_MAX_SHEETS, write_report



def report_command(
    results: Annotated[Path, typer.Argument(help="a vl2 JSONL output", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="the HTML file to write")] = Path("report.html"),
    max_sheets: Annotated[int, typer.Option("--max-sheets", min=0,
                                            help="rows that get a contact sheet (each decodes its frames again)")]
    = DEFAULT_MAX_SHEETS,
    video_backend: Annotated[str, typer.Option("--video-backend", help="decord or pyav")] = "decord",
) -> None:
    """Write one self-contained HTML page of a run: summary, filters, search, a row per file or segment
    with the frames the model saw."""
    raise typer.Exit(run_guarded(lambda: run_report(results, out, max_sheets=max_sheets, video_backend=video_backend)))


def run_report(results: Path, out: Path, *, max_sheets: int, video_backend: str) -> int:
    """The command body; errors end it through the command guard."""
    if not results.is_file():
        raise InputError(f"{results}: no such file")
    if video_backend not in ("decord", "pyav"):
        raise Vl2Error(f"video_backend: {video_backend!r} is not one of decord, pyav")
    written = write_report(results, out, max_sheets=max_sheets, video_backend=video_backend,
                           on_warning=lambda message: print(f"vl2: warning: {message}", file=sys.stderr))
    print(f"vl2: report written to {written}", file=sys.stderr)
    return EXIT_OK
