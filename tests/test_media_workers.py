"""DecodePool: hung, crashing and buggy decoders cost one file each; order and bounded memory hold."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from media_helpers.faulty_loaders import misbehaving_load
from media_helpers import synth
from media_helpers.fixtures import PROCESSOR_CONFIGS
from vl2cli.errors import DecoderCrashError, DecodeTimeoutError, EmptyFileError, MediaError
from vl2cli.media.image import ImageProcessorSpec
from vl2cli.media.loader import LoadedMedia, MediaSpec
from vl2cli.media.workers import READ_AHEAD, DecodePool

SPEC = MediaSpec(num_frames=4, image=ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["clip336"]), want_audio=True)
#: Short enough to keep the test quick, long enough for a healthy 4-frame decode on a busy 2-core box.
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def good_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A healthy 6-frame clip with sound, made here: the pool's behaviour needs no golden."""
    return synth.write_video(tmp_path_factory.mktemp("workers") / "good.mp4", frames=6, width=128, height=96,
                             with_audio=True)


@pytest.fixture()
def mixed_files(tmp_path: Path, good_video: Path) -> list[Path]:
    good = good_video
    names = ["ok1.mp4", "hang.mp4", "ok2.mp4", "exit.mp4", "abort.mp4", "bug.mp4", "ok3.mp4"]
    paths = [Path(shutil.copy(good, tmp_path / n)) for n in names]
    (tmp_path / "empty.mp4").write_bytes(b"")
    return paths + [tmp_path / "empty.mp4"]


def test_faults_cost_one_file_each_and_order_is_kept(mixed_files: list[Path]) -> None:
    with DecodePool(SPEC, workers=2, timeout_s=TIMEOUT_S, load_fn=misbehaving_load) as pool:
        results = list(pool.imap(mixed_files))
        restarts = pool.restarts
    assert [p for p, _ in results] == mixed_files
    by_name = {p.name: r for p, r in results}
    for ok in ("ok1.mp4", "ok2.mp4", "ok3.mp4"):
        assert isinstance(by_name[ok], LoadedMedia) and by_name[ok].pixel_values.shape == (4, 3, 336, 336)
    assert isinstance(by_name["hang.mp4"], DecodeTimeoutError)
    assert isinstance(by_name["exit.mp4"], DecoderCrashError) and "exit code 3" in str(by_name["exit.mp4"])
    assert isinstance(by_name["abort.mp4"], DecoderCrashError)
    assert type(by_name["bug.mp4"]) is MediaError and "ZeroDivisionError" in str(by_name["bug.mp4"])
    assert isinstance(by_name["empty.mp4"], EmptyFileError) and by_name["empty.mp4"].path.endswith("empty.mp4")
    assert restarts == 3  # hang, exit, abort


def test_in_flight_work_is_bounded(tmp_path: Path) -> None:
    """The pool pulls paths lazily: never more than max_pending (+ the reader's read-ahead and the path
    in its hand) ahead of what it has yielded."""
    pulled: list[int] = []
    good = str(synth.write_png(tmp_path / "bars.png", width=500, height=300))

    def paths():
        for i in range(12):
            pulled.append(i)
            yield good

    with DecodePool(SPEC, workers=2, max_pending=3) as pool:
        for yielded, (_, result) in enumerate(pool.imap(paths())):
            assert isinstance(result, LoadedMedia)
            assert len(pulled) <= yielded + 1 + 3 + READ_AHEAD + 1
    assert len(pulled) == 12


def test_a_worker_frozen_right_after_sending_costs_at_most_one_later_file(tmp_path: Path,
                                                                        good_video: Path) -> None:
    """Results travel by value: taking one never needs the (frozen) worker's help, so the run goes on.

    Told by what happened, not by the clock: every file has a result, at most one is a timeout, and the
    pool replaced at most the one frozen worker."""
    from media_helpers.faulty_loaders import freezing_load

    files = [Path(shutil.copy(good_video, tmp_path / name)) for name in ("freeze.mp4", "ok1.mp4", "ok2.mp4")]
    with DecodePool(SPEC, workers=1, timeout_s=TIMEOUT_S, load_fn=freezing_load) as pool:
        results = dict((p.name, r) for p, r in pool.imap(files))
        restarts = pool.restarts
    assert sorted(results) == ["freeze.mp4", "ok1.mp4", "ok2.mp4"]
    assert isinstance(results["freeze.mp4"], LoadedMedia)
    # Which later file the frozen worker takes down with it depends on when the freeze lands (a fast
    # decode of ok1 inside that half second leaves it holding ok2): any one, never two, nothing else.
    assert sum(isinstance(r, DecodeTimeoutError) for r in results.values()) <= 1
    assert all(isinstance(r, (LoadedMedia, DecodeTimeoutError)) for r in results.values()), results
    assert restarts <= 1
