"""The one atomic-write helper: whole new content or the old file, never half of one."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vl2cli.atomic_files import NEW_FILE_MODE, replacing, temporary_name, write_atomically


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_new_content_replaces_the_old_whole(tmp_path: Path) -> None:
    target = tmp_path / "marker.json"
    target.write_text("old\n")
    write_atomically(target, "new ünïcode\n")
    assert target.read_text(encoding="utf-8") == "new ünïcode\n" and _leftovers(tmp_path) == []


def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old content\n")

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        with replacing(target) as temp:
            temp.write_bytes(b"half of the new")
            raise Crash
    assert target.read_bytes() == b"old content\n"
    assert _leftovers(tmp_path) == [], "the half-written temporary file is removed"


def test_exclusive_never_replaces_and_says_so(tmp_path: Path) -> None:
    target = tmp_path / "layout.json"
    write_atomically(target, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomically(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first" and _leftovers(tmp_path) == []


def test_permissions_follow_the_mode_and_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "default", b"x")
        write_atomically(tmp_path / "private", b"x", mode=0o600)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(tmp_path / "default").st_mode) == NEW_FILE_MODE & ~0o022
    assert stat.S_IMODE(os.stat(tmp_path / "private").st_mode) == 0o600


def test_a_symlink_at_the_name_is_replaced_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    target = tmp_path / "subtitle.srt"
    target.symlink_to(victim)
    write_atomically(target, b"subtitle")
    assert not target.is_symlink() and target.read_bytes() == b"subtitle" and victim.read_bytes() == b"keep me"


def test_a_planted_temporary_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    target = tmp_path / "report.html"
    temporary_name(target).symlink_to(victim)  # e.g. left by someone who guessed the pid
    write_atomically(target, b"report")
    assert target.read_bytes() == b"report" and victim.read_bytes() == b"keep me"


def test_the_content_is_synced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync of the file must come before the rename (else a power cut can leave an empty file under
    the new name). The calls are recorded around the real functions, which still run."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_atomically(tmp_path / "x", b"data")
    assert events[:2] == ["fsync", "replace"] and events[2:] == ["fsync"], events  # then the folder
