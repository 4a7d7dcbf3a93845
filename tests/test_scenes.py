"""Scene cuts of any colour (issue 20): hue-only and grey-to-grey hard cuts are found, none invented."""
from __future__ import annotations

from pathlib import Path

import pytest

from media_helpers import synth
from vl2cli.media.scenes import detect_scene_cuts

FPS = 4


@pytest.mark.parametrize(("name", "colours"), [
    ("red_green_blue", synth.EQUAL_BRIGHTNESS_COLOURS),
    ("two_greys", ((60, 60, 60), (90, 90, 90), (60, 60, 60))),
])
def test_hard_cuts_between_equally_bright_colours_are_found(tmp_path: Path, name: str, colours) -> None:
    path = synth.write_scene_video(tmp_path / f"{name}.mp4", seconds=120.0, fps=FPS, colours=colours)
    found = detect_scene_cuts(str(path))
    assert len(found.cuts_s) == 2, found.cuts_s
    for cut, made in zip(found.cuts_s, (40.0, 80.0)):
        assert abs(cut - made) <= 1.0 / FPS
    # the content detector alone (vl2's rule before) misses the red -> green -> blue cuts
    if name == "red_green_blue":
        assert detect_scene_cuts(str(path), histogram_threshold=None).cuts_s == []


def test_one_long_scene_has_no_cut(tmp_path: Path) -> None:
    path = synth.write_scene_video(tmp_path / "one.mp4", seconds=60.0, fps=FPS, scene_seconds=60.0)
    assert detect_scene_cuts(str(path)).cuts_s == []
