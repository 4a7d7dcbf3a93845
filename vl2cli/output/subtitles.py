"""Records of a segmented run as subtitles: SRT and WebVTT files, and a subtitle-like list for a terminal.

Written after whisper's writers: one cue per segment with its text, numbered (SRT) or under a
`WEBVTT` header, timestamps `HH:MM:SS,mmm` (SRT) / `HH:MM:SS.mmm` (VTT). A file's cues are gathered
from this run's records and, on a resumed run, from the earlier records in the output, so a subtitle
file always covers every finished segment.

vl2 writes only subtitle files it made. Each file it writes gets a small hidden sidecar,
`.<name>.vl2`, holding the SHA-256 of what it wrote; an existing `<stem>.srt` is replaced only when
its sidecar vouches for its content (vl2 wrote it and nobody changed it since), or with `--overwrite`.
Anything else there — a user's own subtitles, a symlink, a folder — is left alone and the file is
refused with a clear message. Files are written to a temporary name opened with O_NOFOLLOW|O_EXCL and
renamed into place, so no write ever goes through a symlink.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..atomic_files import write_atomically
from .reader import read_records

SubtitleFormat = Literal["srt", "vtt"]
SUBTITLE_FORMATS: tuple[SubtitleFormat, ...] = ("srt", "vtt")
_MS_PER_S = 1000
#: The latest time a timestamp shows (99 999 hours); later ones (a record's 1e308) are shown as this.
_MAX_TIMESTAMP_S = 99999 * 3600.0


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


def timestamp(seconds: float, *, decimal: str = ".", always_hours: bool = True) -> str:
    """`HH:MM:SS.mmm` (SRT passes `decimal=","`)."""
    total_ms = int(round(min(max(seconds, 0.0), _MAX_TIMESTAMP_S) * _MS_PER_S))
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


#: The sidecar that says vl2 wrote a subtitle file: `.<name>.vl2` beside it.
SIDECAR_SUFFIX = ".vl2"
#: Subtitles and sidecars are readable by everyone (players, web servers) and writable by their owner.
SUBTITLE_MODE = 0o644
_SIDECAR_MAX_BYTES = 4096


def sidecar_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{SIDECAR_SUFFIX}")


class SubtitleRefused(Exception):
    """A subtitle file was not written: its name is taken by something vl2 did not write."""


def _read_small(path: Path, limit: int) -> bytes | None:
    """A small regular file's bytes, never through a symlink; None when absent, not regular or too big."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return os.read(fd, limit + 1)
    finally:
        os.close(fd)


def _digest_of_file(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def written_by_vl2(target: Path) -> bool:
    """True when `target` is a regular file whose sidecar records exactly its content."""
    raw = _read_small(sidecar_path(target), _SIDECAR_MAX_BYTES)
    try:
        claimed = json.loads(raw) if raw is not None else None
    except ValueError:
        return False
    if not isinstance(claimed, dict) or not isinstance(claimed.get("sha256"), str):
        return False
    return _digest_of_file(target) == claimed["sha256"]


def write_subtitle_file(target: Path, text: str, *, overwrite: bool = False) -> None:
    """Write `text` at `target` unless its name holds something vl2 did not write (SubtitleRefused);
    `overwrite`: replace whatever is there (a symlink itself, never what it points to)."""
    try:
        there = os.lstat(target)
    except FileNotFoundError:
        there = None
    if there is not None and not overwrite:
        if stat.S_ISLNK(there.st_mode):
            raise SubtitleRefused(f"{target} is a symlink; vl2 does not write through it (overwrite replaces the link)")
        if not stat.S_ISREG(there.st_mode):
            raise SubtitleRefused(f"{target} exists and is not a regular file; left as it is")
        if not written_by_vl2(target):
            raise SubtitleRefused(f"{target} exists and was not written by vl2 (or was changed since); left as it is "
                                  "(overwrite replaces it, out_dir writes subtitles elsewhere)")
    elif there is not None and stat.S_ISDIR(there.st_mode):
        raise SubtitleRefused(f"{target} is a folder; no subtitle file written there")
    data = text.encode("utf-8")
    sidecar = json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "written_by": "vl2"}).encode("ascii") + b"\n"
    try:
        # the subtitle first (a new name only if it is still free), then the sidecar that vouches for it
        write_atomically(target, data, exclusive=there is None, mode=SUBTITLE_MODE)
    except FileExistsError:
        raise SubtitleRefused(f"{target} appeared while vl2 was writing it; left as it is") from None
    write_atomically(sidecar_path(target), sidecar, mode=SUBTITLE_MODE)


class SubtitleFiles:
    """Collects records as a run yields them and writes one subtitle file per input file once the run
    moves on to the next file (outcomes come in input order, a file's segments together).

    `earlier`: the output file of a resumed run; its records fill in segments this run skipped.
    `out_dir`: where the files go (default: beside each input, as `<stem>.<format>`).
    """

    def __init__(self, fmt: SubtitleFormat, *, out_dir: str | Path | None = None,
                 earlier: str | Path | None = None, overwrite: bool = False,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.fmt, self.out_dir = fmt, Path(out_dir) if out_dir is not None else None
        self.overwrite, self.on_refused = overwrite, on_refused
        #: why subtitle files were not written (one message each)
        self.refused: list[str] = []
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
        try:
            write_subtitle_file(target, text, overwrite=self.overwrite)
        except SubtitleRefused as refused:
            self.refused.append(str(refused))
            if self.on_refused is not None:
                self.on_refused(str(refused))
            return None
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
