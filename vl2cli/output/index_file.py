"""The resume index's sidecar file, `<output>.index`: what the validating reader found in a prefix of the
output, so a rerun reads only the lines appended since.

The JSONL stays the truth. The sidecar is a checkpoint of it: fixed-size digests of resume keys and
their latest state, plus the facts that tie it to the bytes it was built from (the output's device and
inode, how many bytes and lines it covers, digests of the output's head and of the bytes just before
that point, and a checksum of itself). It is trusted only when every one of those still matches; then
the output is read on from the covered offset (lines another writer appended, or that this run wrote
before a crash), else the whole output is read again and the sidecar rewritten. A garbled, truncated or
foreign sidecar is therefore never trusted, only rebuilt; deleting it costs one full read.

Written whole to a temporary name and renamed over, under the output's lock (a run), never by a reader
(a dry run reads it but leaves a stale one as it is).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

INDEX_SUFFIX = ".index"
_MAGIC = b"vl2-resume-index 2\n"  # 2: a 32-bit state word (cut-off answers keep their token count)
#: One entry: the key's digest, its state word (see resume.py) and the length of its extra bytes.
_ENTRY = struct.Struct("<16sIH")
DIGEST_BYTES = 16
#: Bytes of the output hashed at its head and just before the covered offset: enough that a rewritten,
#: truncated or replaced output is told from the one indexed, little enough to read at every start.
_PROBE_BYTES = 64 * 1024
_HEADER_LENGTH = struct.Struct("<I")


def index_path_for(out: str | Path) -> Path:
    """The sidecar beside an output file."""
    out = Path(out)
    return out.with_name(out.name + INDEX_SUFFIX)


@dataclass(frozen=True)
class Coverage:
    """Which bytes of which output an index was built from."""

    device: int
    inode: int
    offset: int
    lines: int
    head: str
    tail: str


def _probe(fd: int, start: int, end: int) -> str:
    start = max(0, start)
    data = os.pread(fd, end - start, start) if end > start else b""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).hexdigest()


def coverage_of(out: str | Path, offset: int, lines: int) -> Coverage | None:
    """The output's identity as it is now, up to `offset` (None: not a regular file, or shorter)."""
    try:
        fd = os.open(out, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size < offset:
            return None
        return Coverage(info.st_dev, info.st_ino, offset, lines,
                        _probe(fd, 0, min(offset, _PROBE_BYTES)), _probe(fd, offset - _PROBE_BYTES, offset))
    finally:
        os.close(fd)


@dataclass
class IndexFile:
    """A sidecar's content: the coverage, the skipped lines it saw (first few, and how many) and the entries."""

    coverage: Coverage
    skipped_total: int
    skipped_first: list[tuple[int, str]]
    entries: bytes
    #: whether some entries carry extra bytes (a segment's record)
    with_extras: bool = False


def write_index(path: Path, index: IndexFile) -> None:
    """Write the sidecar whole, then rename it over the old one (no reader sees half of it)."""
    header = json.dumps({"coverage": index.coverage.__dict__, "skipped_total": index.skipped_total,
                         "skipped_first": index.skipped_first, "with_extras": index.with_extras,
                         "entries": hashlib.blake2b(index.entries, digest_size=DIGEST_BYTES).hexdigest()},
                        ensure_ascii=True).encode("ascii")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as handle:
            handle.write(_MAGIC + _HEADER_LENGTH.pack(len(header)) + header + index.entries)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def read_index(path: Path) -> IndexFile | None:
    """The sidecar's content, or None when it is missing, foreign or damaged in any way."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(_MAGIC):
        return None
    start = len(_MAGIC) + _HEADER_LENGTH.size
    try:
        (length,) = _HEADER_LENGTH.unpack_from(data, len(_MAGIC))
        header = json.loads(data[start:start + length])
        coverage = Coverage(**header["coverage"])
        entries = data[start + length:]
        if hashlib.blake2b(entries, digest_size=DIGEST_BYTES).hexdigest() != header["entries"]:
            return None
        skipped_first = [(int(number), str(reason)) for number, reason in header["skipped_first"]]
        return IndexFile(coverage, int(header["skipped_total"]), skipped_first, entries, bool(header["with_extras"]))
    except (struct.error, ValueError, TypeError, KeyError, RecursionError):
        return None


def pack_entry(digest: bytes, state: int, extra: bytes = b"") -> bytes:
    """One entry's bytes."""
    return _ENTRY.pack(digest, state, len(extra)) + extra


def unpack_entries(entries: bytes, *, with_extras: bool
                   ) -> tuple[dict[bytes, int], list[tuple[bytes, bytes]]]:
    """(digest -> state, [(digest, extra)...]) from the entries' bytes (ValueError: damaged).
    Without extras every entry has one size and they unpack in one pass."""
    size = _ENTRY.size
    if not with_extras:
        if len(entries) % size:
            raise ValueError("entries cut short")
        return {digest: state for digest, state, _ in _ENTRY.iter_unpack(entries)}, []
    states: dict[bytes, int] = {}
    extras: list[tuple[bytes, bytes]] = []
    offset = 0
    while offset < len(entries):
        digest, state, length = _ENTRY.unpack_from(entries, offset)
        offset += size
        extra = entries[offset:offset + length]
        if len(extra) != length:
            raise ValueError("entries cut short")
        offset += length
        states[digest] = state
        if length:
            extras.append((digest, extra))
    return states, extras
