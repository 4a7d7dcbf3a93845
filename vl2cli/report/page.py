"""The report page: rows and summary as JSON inside one HTML file whose script renders them a page at a time.

Self-contained: the contact sheets are data URIs and the page's Content-Security-Policy allows
nothing but its own inline script and styles and `data:` images, so it opens offline and fetches
nothing. The rows are rendered by the page's own script, `page_size` at a time, so 10 000 records
stay quick to filter and search.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic_files import write_atomically
from ..output.subtitles import timestamp
from ..errors import Vl2Error
from ..settings import DEFAULT_MAX_SHEETS
from ..output.reader import SkippedLines, read_records
from ..output.record import printable
from .contact_sheet import Sheet, contact_sheet
from .rows import latest_records, summarise

#: Rows drawn at a time; the rest wait behind the pager.
PAGE_SIZE = 100
_DATA_MARK = "/*VL2_REPORT_DATA*/"


def _when(segment: dict[str, Any] | None) -> str | None:
    if not segment:
        return None
    return (f"{timestamp(segment['start_s'])} – {timestamp(segment['end_s'])} "
            f"({segment['index'] + 1}/{segment['count']})")


def _row(index: int, record: dict[str, Any], sheet: Sheet) -> dict[str, Any]:
    record = printable(record)  # a file name that is not UTF-8: its bytes shown as \xNN
    path = str(record.get("path", ""))
    error = record.get("error")
    output = record.get("output")
    search = " ".join(str(part) for part in (path, output or "", (error or {}).get("code", ""),
                                               (error or {}).get("message", "")))
    return {
        "i": index, "path": path, "name": os.path.basename(path) or path, "when": _when(record.get("segment")),
        "modality": record.get("modality"), "task": record.get("task"), "output": output,
        "error": {"code": error.get("code"), "message": error.get("message")} if error else None,
        "timings": record.get("timings_ms") or {}, "sheet": sheet.data_uri, "note": sheet.note,
        "indices": sheet.frame_indices, "search": search.lower(),
    }


def build_report(results: str | Path, *, max_sheets: int = DEFAULT_MAX_SHEETS, video_backend: str = "decord",
                 on_row: Callable[[int, int], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> str:
    """The HTML text of the report for a JSONL output (the latest record per file or segment).

    `max_sheets`: contact sheets to make (0: none); `on_row(done, total)` hears progress.
    """
    skipped = SkippedLines()
    rows_in = latest_records(read_records(results, on_skipped=skipped))
    if skipped and not rows_in:
        raise Vl2Error(f"no vl2 records in it: {skipped.describe(results)}; give the JSONL file a vl2 run wrote")
    if skipped and on_warning is not None:
        on_warning(f"{skipped.describe(results)}; they are left out of the report")
    rows = []
    for index, record in enumerate(rows_in):
        if index < max_sheets:
            sheet = contact_sheet(record, video_backend=video_backend)
        else:
            sheet = Sheet(None, f"no contact sheet: only the first {max_sheets} rows get one (max_sheets)")
        rows.append(_row(index, record, sheet))
        if on_row is not None:
            on_row(index + 1, len(rows_in))
    data = {
        "source": os.path.basename(str(results)), "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": asdict(summarise(rows_in)), "page_size": PAGE_SIZE, "rows": rows,
    }
    # inside <script>: "<" escaped so no text can close the element early
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    template = resources.files(__package__).joinpath("template.html").read_text(encoding="utf-8")
    return template.replace(_DATA_MARK, payload, 1)


def write_report(results: str | Path, out: str | Path, **options: Any) -> Path:
    """Write the report next to nothing else: one file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, build_report(results, **options), errors="backslashreplace")
    return out
