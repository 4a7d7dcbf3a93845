"""Records of a segmented run as subtitles: SRT and WebVTT files, and a subtitle-like list for a terminal.

Written after whisper's writers: one cue per segment with its text, numbered (SRT) or under a
`WEBVTT` header, timestamps `HH:MM:SS,mmm` (SRT) / `HH:MM:SS.mmm` (VTT). A file's cues are gathered
from this run's records and, on a resumed run, from the earlier records in the output, so a subtitle
file always covers every finished segment.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .writer import read_records

SubtitleFormat = Literal["srt", "vtt"]
SUBTITLE_FORMATS: tuple[SubtitleFormat, ...] = ("srt", "vtt")
_MS_PER_S = 1000


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = True) -> str:
    """`HH:MM:SS.mmm` (SRT passes `decimal=","`)."""
    total_ms = int(round(max(seconds, 0.0) * _MS_PER_S))
    hours, rest = divmod(total_ms, 3600 * _MS_PER_S)
    minutes, rest = divmod(rest, 60 * _MS_PER_S)
    secs, ms = divmod(rest, _MS_PER_S)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _one_line(text: str) -> str:
    """Cue text without blank lines (a blank line ends a cue in both formats)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line)


def srt_text(cues: Iterable[Cue]) -> str:
    blocks = [f"{n}\n{timestamp(c.start_s, decimal=',')} --> {timestamp(c.end_s, decimal=',')}\n{_one_line(c.text)}\n"
              for n, c in enumerate(cues, start=1)]
    return "\n".join(blocks)


def vtt_text(cues: Iterable[Cue]) -> str:
    blocks = [f"{timestamp(c.start_s)} --> {timestamp(c.end_s)}\n{_one_line(c.text)}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def subtitle_line(record: dict[str, Any]) -> str:
    """One record as a line of a subtitle-like list: `[00:01:00.000 - 00:02:00.000] text`."""
    segment = record.get("segment")
    if segment is not None:
        when = f"[{timestamp(segment['start_s'])} - {timestamp(segment['end_s'])}]"
    else:
        when = "[whole file]"
    error = record.get("error")
    text = f"(failed: {error['code']})" if error is not None else " ".join((record.get("output") or "").split())
    return f"{when} {text}"


def cue_of(record: dict[str, Any]) -> Cue | None:
    """A successful record's cue (a whole file spans its duration); None for errors or unknown times."""
    if record.get("error") is not None or record.get("output") is None:
        return None
    segment = record.get("segment")
    if segment is not None:
        return Cue(float(segment["start_s"]), float(segment["end_s"]), record["output"])
    duration = (record.get("media") or {}).get("duration_s")
    return Cue(0.0, float(duration), record["output"]) if duration else None


class SubtitleFiles:
    """Collects records as a run yields them and writes one subtitle file per input file once the run
    moves on to the next file (outcomes come in input order, a file's segments together).

    `earlier`: the output file of a resumed run; its records fill in segments this run skipped.
    `out_dir`: where the files go (default: beside each input, as `<stem>.<format>`).
    """

    def __init__(self, fmt: SubtitleFormat, *, out_dir: str | Path | None = None,
                 earlier: str | Path | None = None) -> None:
        self.fmt, self.out_dir = fmt, Path(out_dir) if out_dir is not None else None
        self._earlier_path = Path(earlier) if earlier is not None and Path(earlier).is_file() else None
        self._earlier: dict[str, list[dict[str, Any]]] | None = None
        self._current: str | None = None
        self._records: list[dict[str, Any]] = []
        self._names: dict[Path, str] = {}
        self.written: list[Path] = []

    def _earlier_records(self, path: str) -> list[dict[str, Any]]:
        if self._earlier_path is None:
            return []
        if self._earlier is None:  # read once, on the first file that needs it
            self._earlier = {}
            for record in read_records(self._earlier_path):
                if isinstance(record.get("path"), str):
                    self._earlier.setdefault(record["path"], []).append(record)
        return self._earlier.pop(path, [])

    def add(self, path: str | Path, record: dict[str, Any] | None) -> None:
        """One outcome of the run (`record` None: skipped as done earlier)."""
        path = os.path.abspath(path)
        if path != self._current:
            self.flush()
            self._current = path
        if record is not None:
            self._records.append(record)

    def flush(self) -> Path | None:
        """Write the current file's subtitles (if it has any cue); returns the file written."""
        if self._current is None:
            return None
        path, records = self._current, self._earlier_records(self._current) + self._records
        self._current, self._records = None, []
        cues = _latest_cues(records)
        if not cues:
            return None
        target = self._target(Path(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        text = srt_text(cues) if self.fmt == "srt" else vtt_text(cues)
        target.write_text(text, encoding="utf-8")
        self.written.append(target)
        return target

    def _target(self, source: Path) -> Path:
        folder = self.out_dir if self.out_dir is not None else source.parent
        target = folder / f"{source.stem}.{self.fmt}"
        owner = self._names.setdefault(target, str(source))
        if owner != str(source):  # two inputs with one name in --out-dir: tell them apart by their path
            digest = hashlib.sha1(str(source).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            target = folder / f"{source.stem}.{digest}.{self.fmt}"
        return target

    def close(self) -> None:
        self.flush()


def _latest_cues(records: list[dict[str, Any]]) -> list[Cue]:
    """Cues of the last segmenting used for the file, the last record per segment winning, in time order."""
    segmented = [r for r in records if r.get("segment") is not None]
    if segmented:
        by = segmented[-1]["segment"]["by"]
        latest: dict[int, dict[str, Any]] = {}
        for record in segmented:
            if record["segment"]["by"] == by:
                latest[record["segment"]["index"]] = record
        chosen = [latest[i] for i in sorted(latest)]
    else:
        chosen = records[-1:]
    return [cue for cue in (cue_of(r) for r in chosen) if cue is not None]
