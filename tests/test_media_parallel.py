"""The thread budget: threaded, deduplicated and overlapped ingestion gives bit-equal outputs, and
DecodePool gives each worker its share of the cores.

No golden is compared here (only one path against another), so the files are made by the tests
themselves (media_helpers/synth.py) and the tests run whatever VL2_MEDIA_FIXTURES holds."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from media_helpers import synth
from media_helpers.fixtures import PROCESSOR_CONFIGS
from vl2cli.media import parallel
from vl2cli.media.audio import decode_audio_track_16k_mono, read_audio_channel0
from vl2cli.media.image import ImageProcessorSpec, first_occurrences, preprocess_frames
from vl2cli.media.loader import LoadedMedia, MediaSpec, load_media
from vl2cli.media.probe import open_and_probe
from vl2cli.media.sampling import sample_frame_indices
from vl2cli.media.video import decode_video_frames
from vl2cli.media.workers import DecodePool

SIGLIP = ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["siglip384"])
CLIP = ImageProcessorSpec.from_config(PROCESSOR_CONFIGS["clip336"])
TINY = "tiny_6frames_av.mp4"  # 6 frames: 16 sampled indices repeat
STEREO = "stereo_4s_av.mp4"  # stereo sound: the 16 kHz mono downmix path
WAV = "tone_16k_mono.wav"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("parallel-media")
    return {
        TINY: synth.write_video(folder / TINY, frames=6, width=128, height=96, with_audio=True),
        STEREO: synth.write_video(folder / STEREO, frames=4 * synth.FRAME_RATE, width=160, height=120,
                                  with_audio=True, audio_layout="stereo"),
        WAV: synth.write_pcm_wav(folder / WAV, seconds=2.0),
    }


@pytest.fixture(autouse=True)
def _default_budget() -> None:
    yield
    parallel.set_media_threads(None)


@pytest.mark.parametrize("threads,count", [(1, 5), (2, 7), (4, 3), (3, 0)])
def test_for_each_index_runs_every_item_once(threads: int, count: int) -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        with lock:
            seen.append(index)

    parallel.for_each_index(count, work, threads)
    assert sorted(seen) == list(range(count))


def test_for_each_index_reports_a_helpers_error() -> None:
    def work(index: int) -> None:
        if index == 3:
            raise ZeroDivisionError("item 3")

    with pytest.raises(ZeroDivisionError, match="item 3"):
        parallel.for_each_index(8, work, 2)


def test_budget_setting_and_validation() -> None:
    parallel.set_media_threads(3)
    assert parallel.default_media_threads() == 3 and parallel.resolve_threads(None) == 3
    assert parallel.resolve_threads(1) == 1
    parallel.set_media_threads(None)
    assert 1 <= parallel.default_media_threads() <= parallel.MAX_DEFAULT_MEDIA_THREADS
    with pytest.raises(ValueError):
        parallel.set_media_threads(0)
    with pytest.raises(ValueError):
        parallel.resolve_threads(0)
    assert parallel.start_in_background(lambda: 1, 1) is None
    assert parallel.start_in_background(lambda: 1, 2).result() == 1


def _tiny_frames(media: dict[str, Path]) -> tuple[np.ndarray, list[int]]:
    decoded = decode_video_frames(str(media[TINY]), lambda total, fps: sample_frame_indices(total, fps, 16))
    return decoded.frames, decoded.indices


def test_repeated_frames_are_found_from_the_pixels(media: dict[str, Path]) -> None:
    frames, indices = _tiny_frames(media)
    sources = first_occurrences(frames)
    assert [indices[s] for s in sources] == indices  # each frame points at an equal, earlier-or-same frame
    assert len(set(sources)) == len(set(indices)) == 6


@pytest.mark.parametrize("spec", [SIGLIP, CLIP], ids=["siglip", "clip"])
def test_threaded_deduplicated_preprocess_equals_frame_by_frame(spec: ImageProcessorSpec,
                                                                 media: dict[str, Path]) -> None:
    frames, _ = _tiny_frames(media)
    one_by_one = torch.cat([preprocess_frames(frame[None], spec, threads=1) for frame in frames])
    for threads in (1, 3):
        assert torch.equal(preprocess_frames(frames, spec, threads=threads), one_by_one)


def test_audio_from_the_probes_container_equals_a_fresh_open(media: dict[str, Path]) -> None:
    path = str(media[STEREO])
    info, container = open_and_probe(path)
    with container:
        reused = decode_audio_track_16k_mono(path, container)
    assert info.kind == "video" and info.audio_channels == 2 and reused.size > 0
    assert np.array_equal(reused, decode_audio_track_16k_mono(path))
    wav = str(media[WAV])
    _, container = open_and_probe(wav)
    with container:
        samples, rate = read_audio_channel0(wav, container)
    fresh_samples, fresh_rate = read_audio_channel0(wav)
    assert rate == fresh_rate == 16000 and samples.size > 0 and np.array_equal(samples, fresh_samples)


@pytest.mark.parametrize("stem", [STEREO, TINY])
def test_load_media_is_bit_equal_whatever_the_budget(stem: str, media: dict[str, Path]) -> None:
    spec = MediaSpec(num_frames=16, image=SIGLIP, want_audio=True)
    single = load_media(media[stem], spec, threads=1)
    overlapped = load_media(media[stem], spec, threads=3)
    assert torch.equal(single.pixel_values, overlapped.pixel_values)
    assert torch.equal(single.fbank, overlapped.fbank)
    assert (single.frame_indices, single.audio_samples_decoded) == (overlapped.frame_indices,
                                                                    overlapped.audio_samples_decoded)
    assert {"decode_audio", "fbank", "wait_audio"} <= set(overlapped.timings_ms)


def budget_reporting_load(path: str, spec: MediaSpec) -> LoadedMedia:
    """Runs in a DecodePool worker: loads normally and records the worker's thread budget."""
    loaded = load_media(path, spec)
    loaded.timings_ms["budget"] = float(parallel.default_media_threads())
    return loaded


@pytest.mark.parametrize("workers,threads_per_worker,expected", [(2, 1, 1), (1, 3, 3)])
def test_pool_workers_get_their_share(workers: int, threads_per_worker: int, expected: int,
                                      media: dict[str, Path]) -> None:
    spec = MediaSpec(num_frames=4, image=SIGLIP, want_audio=True)
    path = media[TINY]
    direct = load_media(path, spec, threads=1)
    with DecodePool(spec, workers=workers, threads_per_worker=threads_per_worker,
                    load_fn=budget_reporting_load) as pool:
        results = [result for _, result in pool.imap([path, path])]
    for result in results:
        assert isinstance(result, LoadedMedia), result
        assert result.timings_ms["budget"] == expected
        assert torch.equal(result.pixel_values, direct.pixel_values) and torch.equal(result.fbank, direct.fbank)
    with pytest.raises(ValueError):
        DecodePool(spec, threads_per_worker=0)
