"""vl2 writes only where it means to: the output is locked by the file (not its name), a replaced output
stops the run, subtitles never clobber a file vl2 did not write, and listed paths that do not exist are
recorded once."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from media_helpers.fixtures import needs_fixtures
from reference_fixtures import load_reference, reference_root, use_fixture_hub
from vl2cli.errors import OutputReplacedError
from vl2cli.settings import resolve_settings
from vl2cli.commands.run_command import execute

AV_FIXTURE = "siglip-qwen2-av"
needs_checkpoint = needs_fixtures(reference=(AV_FIXTURE,))


def _settings(out: Path | str, **more):
    flags = {"model": str(reference_root() / AV_FIXTURE / "checkpoint"), "out": str(out), "quiet": True,
             "workers": 1, "batch_size": 1, "log_level": "info", **more}  # (the tests read info lines)
    return resolve_settings(flags, env={}).settings


class _ListThatReplacesTheOutput(io.StringIO):
    """Paths on stdin; when the run asks for the third one, the output is replaced as an editor would."""

    def __init__(self, paths: list[Path], out: Path) -> None:
        super().__init__()
        self.paths, self.out, self.copied, self.given = paths, out, None, 0

    def readline(self, size: int | None = -1) -> str:  # noqa: ARG002 (a path line is always short)
        if self.given == len(self.paths):
            return ""
        if self.given == 2:
            self.copied = self.out.read_bytes()
            self.out.with_name("copy").write_bytes(self.copied)
            os.replace(self.out.with_name("copy"), self.out)
        self.given += 1
        return f"{self.paths[self.given - 1]}\n"


@needs_checkpoint
def test_an_output_replaced_mid_run_stops_the_run_and_nothing_goes_into_the_unlinked_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fixture_hub(monkeypatch, load_reference(AV_FIXTURE))
    out = tmp_path / "out.jsonl"
    out.write_text("")
    os.link(out, tmp_path / "opened")  # a name for the file the run opens, to look into it afterwards
    listing = _ListThatReplacesTheOutput([tmp_path / f"gone{i}.mp4" for i in range(6)], out)
    with pytest.raises(OutputReplacedError, match="was replaced or removed while this run was writing it"):
        execute("caption", [Path("-")], _settings(out), stdin=listing, stderr=io.StringIO())
    assert listing.copied is not None
    assert (tmp_path / "opened").read_bytes() == listing.copied  # no record went into the file no name reaches
    assert out.read_bytes() == listing.copied


def _segment_record(source: Path, text: str) -> dict:
    return {"path": str(source), "error": None, "output": text,
            "segment": {"index": 0, "start_s": 0.0, "end_s": 30.0, "count": 1, "by": "30s"}}


def _subtitles(source: Path, text: str, **options) -> tuple[list[Path], list[str]]:
    from vl2cli.output.subtitles import SubtitleFiles

    files = SubtitleFiles("srt", **options)
    files.add(source, _segment_record(source, text))
    files.close()
    return files.written, files.refused


def test_subtitles_never_replace_a_file_vl2_did_not_write(tmp_path: Path) -> None:
    source = tmp_path / "clip.mp4"
    mine = tmp_path / "clip.srt"
    mine.write_text("1\n00:00:00,000 --> 00:00:01,000\nmy own subtitles\n")
    written, refused = _subtitles(source, "hello")
    assert written == [] and len(refused) == 1 and "was not written by vl2" in refused[0]
    assert mine.read_text().endswith("my own subtitles\n")
    written, refused = _subtitles(source, "hello", overwrite=True)  # asked for: replaced
    assert written == [mine] and "hello" in mine.read_text()
    written, refused = _subtitles(source, "again")  # vl2's own file now (its sidecar vouches): rewritten on resume
    assert written == [mine] and "again" in mine.read_text() and not refused
    mine.write_text(mine.read_text() + "\n2\n00:00:01,000 --> 00:00:02,000\nedited by hand\n")
    written, refused = _subtitles(source, "third")  # changed since vl2 wrote it: the user's now
    assert written == [] and "edited by hand" in mine.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".clip.srt.vl2", "clip.srt"]  # no temporary left


def test_subtitles_are_never_written_through_a_planted_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    archive = tmp_path / "archive"
    archive.mkdir()
    source = archive / "clip.mp4"
    (archive / "clip.srt").symlink_to(outside)
    written, refused = _subtitles(source, "hello")
    assert written == [] and "is a symlink" in refused[0] and outside.read_text() == "precious"
    # a planted sidecar that vouches for the target does not help: the link is still not followed
    from vl2cli.output.subtitles import sidecar_path
    import hashlib
    sidecar_path(archive / "clip.srt").write_text(json.dumps({"sha256": hashlib.sha256(b"precious").hexdigest()}))
    written, refused = _subtitles(source, "hello")
    assert written == [] and outside.read_text() == "precious"
    written, refused = _subtitles(source, "hello", overwrite=True)  # replaces the link itself, not its target
    assert outside.read_text() == "precious" and not (archive / "clip.srt").is_symlink()
    assert "hello" in (archive / "clip.srt").read_text()


@needs_checkpoint
def test_a_listed_file_that_does_not_exist_is_recorded_once_until_it_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vl2cli.output.merge import latest_records

    use_fixture_hub(monkeypatch, load_reference(AV_FIXTURE))
    out = tmp_path / "out.jsonl"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tmp_path / 'gone.mp4'}\n{tmp_path / 'no' / 'such' / 'folder.mp4'}\n")
    settings = _settings(out, files_from=str(listing))
    for night in range(3):
        log = io.StringIO()
        execute("caption", [], settings, stderr=log)
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(records) == 2, (night, records)  # recorded by the first run only
        assert {r["error"]["code"] for r in records} == {"unreadable_file"}
        if night:
            assert "0 done, 2 skipped" in log.getvalue(), log.getvalue()
    merged = latest_records([out])  # and merge keeps them
    assert len(merged.records) == 2 and merged.foreign == 0
    (tmp_path / "gone.mp4").write_bytes(b"not a video")  # it exists now: tried again
    execute("caption", [], settings, stderr=io.StringIO())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and records[-1]["path"] == str(tmp_path / "gone.mp4") and records[-1]["file"] is not None


@needs_checkpoint
def test_a_dry_run_plans_only_its_shard_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vl2cli.runners.shards import file_id, input_roots, shard_of

    use_fixture_hub(monkeypatch, load_reference(AV_FIXTURE))
    archive = tmp_path / "archive"
    archive.mkdir()
    names = [f"clip{i:02d}.mp4" for i in range(12)]
    for name in names:
        (archive / name).write_bytes(b"x")
    roots = input_roots([archive])
    mine = sorted(str(archive / n) for n in names if shard_of(file_id(archive / n, roots), 3) == 1)
    assert 0 < len(mine) < len(names)
    parts = tmp_path / "parts"
    for attempt in range(2):  # before and after the shard folder exists
        stdout, stderr = io.StringIO(), io.StringIO()
        code = execute("caption", [archive], _settings(f"{parts}/", shard="1/3"), dry_run=True,
                       stdout=stdout, stderr=stderr)
        assert code == 0, stderr.getvalue()
        assert sorted(line.split(None, 1)[1] for line in stdout.getvalue().splitlines()) == mine
        assert not (parts / "shards.json").exists()  # a dry run claims no layout
        parts.mkdir(exist_ok=True)


def test_the_same_question_twice_is_asked_once() -> None:
    from vl2cli.run import task_spec

    settings = resolve_settings({}, env={}).settings
    assert task_spec("ask", settings, questions=["who?", "where?", "who?"]).questions == ("who?", "where?")
    once = task_spec("ask", settings, questions=["who?", "who?"])
    assert once.prompt == "who?" and once.questions == ()


def test_merge_refuses_to_write_over_the_shard_layout(tmp_path: Path) -> None:
    from vl2cli.errors import Vl2Error
    from vl2cli.commands.shard_commands import merge_shards

    layout = tmp_path / "shards.json"
    layout.write_text(json.dumps({"shards": 2, "array_min": 0}))
    for name in ("shards.json", "part-0-of-2.done", "part-1-of-2.jsonl"):
        with pytest.raises(Vl2Error, match="must not replace the shard folder's own files"):
            merge_shards(tmp_path, tmp_path / name, stderr=io.StringIO())
    assert json.loads(layout.read_text()) == {"shards": 2, "array_min": 0}
