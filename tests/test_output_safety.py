"""vl2 writes only where it means to: the output is locked by the file (not its name), a replaced output
stops the run, subtitles never clobber a file vl2 did not write, and listed paths that do not exist are
recorded once."""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference_fixtures import load_reference, reference_root, use_fixture_hub
from vl2cli.errors import OutputReplacedError
from vl2cli.settings import resolve_settings
from vl2cli.tasks.command import execute

AV_FIXTURE = "siglip-qwen2-av"
needs_checkpoint = pytest.mark.skipif(not (reference_root() / AV_FIXTURE).is_dir(), reason="reference fixture not found")


def _settings(out: Path, **more):
    flags = {"model": str(reference_root() / AV_FIXTURE / "checkpoint"), "out": str(out), "quiet": True,
             "workers": 1, "batch_size": 1, **more}
    return resolve_settings(flags, env={}).settings


class _ListThatReplacesTheOutput(io.StringIO):
    """Paths on stdin; when the run asks for the third one, the output is replaced as an editor would."""

    def __init__(self, paths: list[Path], out: Path) -> None:
        super().__init__()
        self.paths, self.out, self.copied = paths, out, None

    def __iter__(self) -> Iterator[str]:
        for number, path in enumerate(self.paths):
            if number == 2:
                self.copied = self.out.read_bytes()
                self.out.with_name("copy").write_bytes(self.copied)
                os.replace(self.out.with_name("copy"), self.out)
            yield f"{path}\n"


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
