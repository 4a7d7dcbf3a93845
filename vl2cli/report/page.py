"""The report: rows and summary as JSON inside HTML files whose script renders them a page at a time.

Self-contained: the contact sheets are data URIs and the page's Content-Security-Policy allows
nothing but its own inline script and styles and `data:` images, so it opens offline and fetches
nothing. The rows are rendered by the page's own script, `page_size` at a time, so 10 000 records
stay quick to filter and search. Past ROWS_PER_FILE rows (or FILE_ROW_BYTES of them) the rows go on
in further files beside the first (`report-2.html`, ...), which the first page lists; the report is
written as it is read, in memory that does not grow with the output.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

from ..atomic_files import write_atomically
from ..output.subtitles import timestamp
from ..errors import Vl2Error
from ..settings import DEFAULT_MAX_SHEETS
from ..output.latest import LatestRecords
from ..output.record import printable
from .contact_sheet import Sheet, contact_sheet
from .rows import SummaryCounter, shown_details

#: Rows drawn at a time; the rest wait behind the pager.
PAGE_SIZE = 100
#: Rows per file of the report: the first file holds the summary, the failures and the first rows, the
#: others link back to it and to each other, so a million-record report opens at once.
ROWS_PER_FILE = 10_000
#: Bytes of rows per file (a contact sheet is tens of kB): a file starts afresh past this, so the first
#: page stays a few MB whatever the sheets.
FILE_ROW_BYTES = 4 * 1024 * 1024
#: Failures listed by name on the first page of a report of several files (all are counted).
LISTED_FAILURES = 200
_DATA_MARK = "/*VL2_REPORT_DATA*/"
#: What encodes each row (json.dumps with options builds an encoder a call).
_ROW_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _when(segment: dict[str, Any] | None) -> str | None:
    if not segment:
        return None
    return (f"{timestamp(segment['start_s'])} – {timestamp(segment['end_s'])} "
            f"({segment['index'] + 1}/{segment['count']})")


def _row(index: int, record: dict[str, Any], sheet: Sheet) -> dict[str, Any]:
    details = shown_details(record)  # its link from the path's very bytes, before they are made printable
    # a file name that is not UTF-8: its bytes shown as \xNN (each field shown made printable, not the record)
    error = record.get("error")
    row = {
        "i": index, "path": str(printable(record.get("path", ""))), "when": _when(record.get("segment")),
        "modality": printable(record.get("modality")), "task": printable(record.get("task")),
        "output": printable(record.get("output")),
        "error": {"code": printable(error.get("code")), "message": printable(error.get("message"))} if error else None,
        "timings": printable(record.get("timings_ms")) or {}, "sheet": sheet.data_uri, "note": sheet.note,
        "indices": sheet.frame_indices, **details,
    }
    return {key: value for key, value in row.items() if value is not None}  # the page reads a missing key as null


def file_name(out_name: str, number: int) -> str:
    """The name of the report's file `number` (1: the first page itself, `report.html`; then `report-2.html`...)."""
    if number == 1:
        return out_name
    stem, dot, suffix = out_name.rpartition(".")
    return f"{stem}-{number}.{suffix}" if dot and stem else f"{out_name}-{number}"


def _payload(data: dict[str, Any], rows: list[str]) -> str:
    """The page's data as JSON, its rows already encoded (each row is encoded once, as it is made)."""
    head = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    return head[:-1] + ', "rows": [' + ",".join(rows) + "]}"


def _html(template: str, data: dict[str, Any], rows: list[str]) -> str:
    return template.replace(_DATA_MARK, _payload(data, rows), 1)


def report_files(results: str | Path, *, out_name: str = "report.html", max_sheets: int = DEFAULT_MAX_SHEETS,
                 video_backend: str = "decord", on_row: Callable[[int, int], None] | None = None,
                 on_warning: Callable[[str], None] | None = None) -> Iterator[tuple[str, str]]:
    """(file name, HTML) of each file of the report, the first page last (it holds the summary, the
    failures and the list of files, known only once every row is made).

    Streams: records are read back one at a time, and at most two files' rows are held (the first
    page's, and the one waiting to learn whether another follows it); a file holds up to ROWS_PER_FILE
    rows and FILE_ROW_BYTES of them. `max_sheets`: contact sheets to make (0: none); `on_row(done,
    total)` hears progress.
    """
    latest = LatestRecords.scan([results])
    skipped = latest.skipped[0]
    if skipped and not len(latest):
        raise Vl2Error(f"no vl2 records in it: {skipped.describe(results)}; give the JSONL file a vl2 run wrote")
    if skipped and on_warning is not None:
        on_warning(f"{skipped.describe(results)}; they are left out of the report")
    template = resources.files(__package__).joinpath("template.html").read_text(encoding="utf-8")
    common = {"source": os.path.basename(str(results)),
              "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    counter = SummaryCounter()
    failures: list[dict[str, Any]] = []
    files: list[dict[str, Any]] = []  # per file: its name and first and last row
    first_rows: list[str] = []
    rows: list[str] = []
    size = 0
    waiting: tuple[dict[str, Any], list[str]] | None = None  # a full file, until it is known whether one follows

    def further_page(number: int, rows: list[str], has_next: bool) -> tuple[str, str]:
        data = {**common, "summary": None, "page_size": PAGE_SIZE, "failures": [], "files": [],
                "file": {"number": number, "first": files[number - 1]["first"], "home": out_name,
                         "prev": file_name(out_name, number - 1),
                         "next": file_name(out_name, number + 1) if has_next else None}}
        return file_name(out_name, number), _html(template, data, rows)

    for index, record in enumerate(latest):
        counter.add(record)
        if index < max_sheets:
            sheet = contact_sheet(record, video_backend=video_backend)
        else:
            sheet = Sheet(None, f"no contact sheet: only the first {max_sheets} rows get one (max_sheets)")
        row = _row(index, record, sheet)
        text = _ROW_ENCODER.encode(row).replace("<", "\\u003c")
        if rows and (len(rows) >= ROWS_PER_FILE or size + len(text) > FILE_ROW_BYTES):  # this file is full
            if len(files) == 1:
                first_rows = rows
            else:
                if waiting is not None:
                    yield further_page(len(files) - 1, waiting[1], True)
                waiting = (files[-1], rows)
            rows, size = [], 0
        if not rows:
            files.append({"href": file_name(out_name, len(files) + 1), "first": index, "last": index})
        files[-1]["last"] = index
        rows.append(text)
        size += len(text)
        if row.get("error") is not None and len(failures) < LISTED_FAILURES:
            failures.append({"i": index, "path": row["path"], "code": row["error"]["code"],
                             "message": row["error"]["message"], "href": files[-1]["href"]})
        if on_row is not None:
            on_row(index + 1, len(latest))
    if len(files) <= 1:
        first_rows = rows
    else:
        if waiting is not None:
            yield further_page(len(files) - 1, waiting[1], True)
        yield further_page(len(files), rows, False)
    data = {**common, "summary": asdict(counter.summary()), "page_size": PAGE_SIZE, "failures": failures if len(files) > 1 else [],
            "files": files if len(files) > 1 else [],
            "file": {"number": 1, "first": 0, "home": out_name, "prev": None,
                     "next": file_name(out_name, 2) if len(files) > 1 else None}}
    yield out_name, _html(template, data, first_rows)


def build_report(results: str | Path, **options: Any) -> str:
    """The HTML of the report's first page (a report of more than ROWS_PER_FILE rows has further files:
    write_report writes them all)."""
    first = ""
    for _name, html in report_files(results, **options):
        first = html
    return first


def write_report(results: str | Path, out: str | Path, **options: Any) -> Path:
    """Write the report: `out`, and beside it `<name>-2.html`... when the rows do not fit one file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, html in report_files(results, out_name=out.name, **options):
        write_atomically(out.with_name(name), html, errors="backslashreplace")
    return out
