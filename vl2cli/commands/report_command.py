"""`vl2 report RESULTS.jsonl --out report.html`: typer options of the report command (forwarded from cli.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import Vl2Error
from .exit_codes import EXIT_FATAL
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
    if not results.is_file():
        print(f"vl2: error: {results}: no such file", file=sys.stderr)
        raise typer.Exit(EXIT_FATAL)
    if video_backend not in ("decord", "pyav"):
        print(f"vl2: error: video_backend: {video_backend!r} is not one of decord, pyav", file=sys.stderr)
        raise typer.Exit(EXIT_FATAL)
    try:
        written = write_report(results, out, max_sheets=max_sheets, video_backend=video_backend,
                               on_warning=lambda message: print(f"vl2: warning: {message}", file=sys.stderr))
    except Vl2Error as exc:
        print(f"vl2: error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FATAL) from None
    except OSError as exc:
        print(f"vl2: error: {exc.filename or out}: {exc.strerror or exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FATAL) from None
    print(f"vl2: report written to {written}", file=sys.stderr)
