"""One file to model inputs: probe, decode, sample, preprocess — everything a decode worker does.

The container opened by the probe is reused for the audio; with a thread budget of 2+ the audio
track (decode + fbank) runs on a helper thread while the video is decoded and resized.
"""
from __future__ import annotations

import time
from concurrent.futures import wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import torch

from vl2cli.constants import AUDIO_SAMPLE_RATE, AUDIO_WINDOW_SAMPLES
from vl2cli.errors import CorruptMediaError, EmptyFileError
from vl2cli.media.audio import (
    INT16_SCALE,
    AudioReport,
    audio_file_waveform,
    decode_audio_track_16k_mono,
    decode_audio_window_16k_mono,
    kaldi_fbank,
    read_audio_channel0,
    read_audio_channel0_window,
    round_to_bfloat16,
    video_audio_waveform,
)
from vl2cli.media.image import ImageProcessorSpec, load_image_rgb, preprocess_frames
from vl2cli.media.notes import MediaNote
from vl2cli.media.parallel import resolve_threads, start_in_background
from vl2cli.media.probe import MediaInfo, open_and_probe
from vl2cli.media.sampling import clip_frame_range, sample_frame_indices
from vl2cli.media.video import VideoBackend, decode_video_frames

_MS_PER_S = 1000.0


@dataclass(frozen=True)
class MediaSpec:
    """What the checkpoint needs from each file.

    num_frames: frames per video (the checkpoint's `num_frames`); image: the tower's processor, or None
    when the model has no vision tower; want_audio: the model has an audio tower. start_s/end_s:
    upstream's `s`/`e` clip bounds in seconds. audio_window_start: for audio files longer than 30 s,
    the first native-rate sample of the window (None: the centred window, vl2's deterministic rule).
    """

    num_frames: int
    image: ImageProcessorSpec | None
    want_audio: bool
    video_backend: VideoBackend = "decord"
    start_s: float | None = None
    end_s: float | None = None
    audio_window_start: int | None = None
    #: False: pixel_values stay uint8 levels (see `image.normalize_levels`), the light hand-off from
    #: decode workers to the model process.
    normalize_pixels: bool = True
    #: The model family whose upstream preprocessing to reproduce: "videollama2" or "videollama" (v1,
    #: `vl2cli.media.videollama_v1`: decord's S×S squash, its own frame indices, 8 ImageBind clips).
    family: str = "videollama2"

    @property
    def audio_window(self) -> tuple[float, float] | None:
        """The clip bounds as the audio's window: both bounds set (a segment), else None (the whole track).

        Upstream applies `s`/`e` to the frames only; vl2 takes a segment's sound from the same window
        (upstream's 8 × 2 s clip selection then runs inside it), or a segment would hear the whole file.
        """
        if self.start_s is None or self.end_s is None:
            return None
        return self.start_s, self.end_s


@dataclass(frozen=True)
class Clip:
    """A window of a file to decode as upstream's `s`/`e` clip (one segment of a long file)."""

    path: str
    start_s: float
    end_s: float

    def __str__(self) -> str:
        return f"{self.path} [{self.start_s:g}-{self.end_s:g} s]"

    def spec_for(self, spec: MediaSpec) -> MediaSpec:
        """`spec` with this clip's bounds."""
        return replace(spec, start_s=self.start_s, end_s=self.end_s)


@dataclass
class LoadedMedia:
    """Preprocessed tensors for one file, plus what the result record should say about them."""

    info: MediaInfo
    pixel_values: torch.Tensor | None  # (T,3,S,S) video, (1,3,S,S) image; float32 (uint8 if not normalize_pixels)
    fbank: torch.Tensor | None  # (2998,128) float32 holding bf16-rounded values, not normalised
    audio_missing: bool  # True when want_audio and the file had no audio (30 s of silence used)
    frame_indices: list[int] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    video_backend: VideoBackend | None = None
    #: The container's index of the audio stream decoded (the one the ffmpeg CLI picks), None: no audio used.
    audio_stream_index: int | None = None
    #: The display rotation applied to the frames (counter-clockwise degrees; 0: none or decord's own).
    video_rotation: int = 0
    audio_samples_decoded: int | None = None
    #: Facts the record should carry (e.g. the file looks truncated); the file was still usable.
    notes: list["MediaNote"] = field(default_factory=list)
    #: True for a segment that lies after the video track's end (a sound longer than the pictures):
    #: no frames, its sound alone is the input.
    video_absent: bool = False
    #: Video-LLaMA (v1) only: upstream's sentence naming the sampled frames' seconds (part of its prompt).
    frame_times_message: str | None = None


#: A stream that ends this much before the duration its container declares is reported as truncated:
#: at least TRUNCATION_MIN_GAP_S and TRUNCATION_MIN_GAP_FRACTION of the declared length (frame counts,
#: codec priming and rounding make well-formed files differ by a frame or two, never by this much).
TRUNCATION_MIN_GAP_S = 1.0
TRUNCATION_MIN_GAP_FRACTION = 0.05


def truncation_note(stream: str, decoded_s: float, declared_s: float | None) -> MediaNote | None:
    """A note when `stream` ends well before the length the container declares (a cut-off download or
    copy: the file decodes, but its end is missing and the model sees only what is there)."""
    if not declared_s or decoded_s <= 0:
        return None
    gap = declared_s - decoded_s
    if gap < max(TRUNCATION_MIN_GAP_S, TRUNCATION_MIN_GAP_FRACTION * declared_s):
        return None
    return MediaNote(stream, f"the {stream} ends at {decoded_s:.1f} s of the {declared_s:.1f} s the container "
                             "declares: the file looks truncated; only what is there was used")


def _declared_end_s(container: av.container.InputContainer, info: MediaInfo,
                    stream: av.stream.Stream | None) -> float | None:
    """Where `stream` should end on the file's timeline: its own declared start + duration when the
    container gives them, else the file's duration."""
    if stream is not None and stream.duration and stream.time_base:
        origin = container.start_time / av.time_base if container.start_time else 0.0
        start = float(stream.start_time * stream.time_base) - origin if stream.start_time is not None else 0.0
        return start + float(stream.duration * stream.time_base)
    return info.duration_s


def truncation_notes(ends: dict[str, float | None], declared: dict[str, float | None]) -> list[MediaNote]:
    """Truncation notes for the decoded streams (`ends`: stream -> where its decode ended on the file's
    timeline), only when every decoded stream ends well before its declared end: a cut-off file loses
    all its streams' ends, while one stream reaching the end means the file is whole (a video track
    shorter than the sound, a track starting late, a gap in the sound are no truncation)."""
    notes = [truncation_note(stream, end, declared.get(stream)) for stream, end in ends.items() if end is not None]
    if not notes or any(note is None for note in notes):
        return []
    return [note for note in notes if note is not None]


def _stream_notes(report: AudioReport, container: av.container.InputContainer) -> list[MediaNote]:
    """What the record says about the audio decode: damaged packets skipped, which of several tracks."""
    notes = []
    if report.damaged_packets:
        notes.append(MediaNote("audio", f"{report.damaged_packets} damaged audio packet(s) could not be decoded "
                                        "and were skipped, as the ffmpeg CLI skips them"))
    if len(container.streams.audio) > 1 and report.stream_index is not None:
        notes.append(MediaNote("audio", f"the file has {len(container.streams.audio)} audio tracks: stream "
                                        f"#{report.stream_index} was used, the one the ffmpeg CLI (upstream) "
                                        "picks (flagged default, else the most channels, else the first)"))
    return notes


def _first_video(container: av.container.InputContainer) -> av.stream.Stream | None:
    return container.streams.video[0] if container.streams.video else None


def _picked_audio(container: av.container.InputContainer, report: AudioReport) -> av.stream.Stream | None:
    if report.stream_index is None:
        return None
    return next((s for s in container.streams.audio if s.index == report.stream_index), None)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - start) * _MS_PER_S


def check_audio_samples(path: str, samples: np.ndarray) -> None:
    """Refuse sound the model would only turn into noise.

    A stream with no samples would be padded into 30 s of silence and captioned as if heard; NaN or
    infinite samples (float PCM can hold them) make every fbank value NaN and the answer garbage.
    """
    if samples.shape[0] == 0:
        raise EmptyFileError(f"{path}: the audio stream holds no samples", path=path)
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.shape[0] - finite.sum())
        raise CorruptMediaError(f"{path}: {bad} of {samples.shape[0]} audio samples are NaN or infinite", path=path)


def _video_fbank(path: str, has_audio: bool, container: av.container.InputContainer,
                 timings: dict[str, float], window: tuple[float, float] | None = None,
                 report: AudioReport | None = None) -> tuple[torch.Tensor, bool, int]:
    """Upstream's audio-of-a-video fbank (of `window` only, when given); silence (reported) when there
    is no audio track, or (noted by the caller) when the track holds no sound in the window."""
    with _timed(timings, "decode_audio"):
        if not has_audio:
            pcm = np.zeros(0, dtype=np.int16)
        elif window is not None:
            pcm = decode_audio_window_16k_mono(path, *window, container=container, report=report)
        else:
            pcm = decode_audio_track_16k_mono(path, container, report=report)
    missing = pcm.shape[0] == 0
    with _timed(timings, "fbank"):
        # upstream's fallback is 30 s of zeros *before* clip selection; selecting from zeros gives zeros
        samples = pcm.astype(np.float32) / INT16_SCALE if not missing else np.zeros(AUDIO_WINDOW_SAMPLES, np.float32)
        fbank = round_to_bfloat16(kaldi_fbank(video_audio_waveform(samples)))
    return fbank, missing, int(pcm.shape[0])


def _audio_file_fbank(path: str, spec: MediaSpec, container: av.container.InputContainer,
                      timings: dict[str, float], report: AudioReport) -> tuple[torch.Tensor, int]:
    with _timed(timings, "decode_audio"):
        window = spec.audio_window
        if window is not None:
            samples, rate = read_audio_channel0_window(path, *window, container=container, report=report)
        else:
            samples, rate = read_audio_channel0(path, container, report=report)
    check_audio_samples(path, samples)
    with _timed(timings, "fbank"):
        fbank = round_to_bfloat16(kaldi_fbank(audio_file_waveform(samples, rate, spec.audio_window_start)))
    return fbank, int(samples.shape[0])


class _NoFramesInWindow(Exception):
    """The segment's bounds select no frame index (by the average frame rate, as upstream maps them)."""


def _video_end_s(path: str) -> float | None:
    """Where the video track's last frame ends on the file's timeline, from its packets (no decoding)."""
    with av.open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        end = None
        for packet in container.demux(stream):
            if packet.pts is not None:
                end = max(end if end is not None else packet.pts, packet.pts + (packet.duration or 0))
        if end is None or not stream.time_base:
            return None
        origin = container.start_time / av.time_base if container.start_time else 0.0
        return float(end * stream.time_base) - origin


def _decode_window(path: str, spec: MediaSpec, threads: int, result: LoadedMedia):
    """The planned frames; for a segment that selects none, the video's last frame when the window still
    lies within the video (a variable frame rate file: the average rate maps its last seconds past the
    last index), or no frames at all (`video_absent`) when the window lies after the video's end."""
    def plan(total: int, fps: float) -> list[int]:
        if spec.start_s is not None and spec.end_s is not None and total > 0 and not len(
                clip_frame_range(total, fps, spec.start_s, spec.end_s)):
            raise _NoFramesInWindow()
        return sample_frame_indices(total, fps, spec.num_frames, spec.start_s, spec.end_s)

    try:
        return decode_video_frames(path, plan, spec.video_backend, threads=threads)
    except _NoFramesInWindow:
        pass
    end = _video_end_s(path)
    if end is not None and spec.start_s is not None and spec.start_s >= end:
        result.video_absent = True
        result.notes.append(MediaNote("audio", f"the video track ends at {end:.1f} s, before this segment: it has "
                                               "no frames, only its sound was used"))
        return None
    decoded = decode_video_frames(path, lambda total, fps: [max(total - 1, 0)] * spec.num_frames,
                                  spec.video_backend, threads=threads)
    result.notes.append(MediaNote("video", "the segment lies past the last frame by the average frame rate "
                                           "(a variable frame rate video): its last frame was shown"))
    return decoded


def _load_video(path: str, spec: MediaSpec, info: MediaInfo, container: av.container.InputContainer,
                threads: int, result: LoadedMedia) -> None:
    """Frames and audio of a video; with a budget of 2+ threads the audio runs beside the video."""
    timings = result.timings_ms
    audio_timings: dict[str, float] = {}
    report = AudioReport()
    audio_job = ((lambda: _video_fbank(path, info.has_audio, container, audio_timings, spec.audio_window, report))
                 if spec.want_audio else None)
    ends: dict[str, float | None] = {}
    decoded = None
    background = start_in_background(audio_job, threads) if audio_job is not None and spec.image is not None else None
    try:
        if spec.image is not None:
            decoder_threads = threads - 1 if background is not None else threads  # the audio holds one thread
            with _timed(timings, "decode_video"):
                decoded = _decode_window(path, spec, decoder_threads, result)
        if spec.image is not None and decoded is not None:
            with _timed(timings, "preprocess_frames"):
                result.pixel_values = preprocess_frames(decoded.frames, spec.image, threads=threads,
                                                        normalize=spec.normalize_pixels)
            result.frame_indices, result.video_backend = decoded.indices, decoded.backend
            result.video_rotation = decoded.rotation
            result.notes += [MediaNote("video", text) for text in decoded.notes]
            if decoded.end_s is not None:
                ends["video"] = decoded.end_s
            elif decoded.avg_fps > 0:
                ends["video"] = decoded.total_frames / decoded.avg_fps
        if audio_job is not None:
            with _timed(timings, "wait_audio"):
                audio = background.result() if background is not None else audio_job()
            result.fbank, result.audio_missing, result.audio_samples_decoded = audio
            result.audio_stream_index = report.stream_index
            result.notes += _stream_notes(report, container)
            if result.audio_missing and info.has_audio and spec.audio_window is not None:
                result.audio_missing = False  # the file has a track; it is silent here, which is said
                result.notes.append(MediaNote("audio", "the audio track holds no sound in this segment: 30 s of "
                                                       "silence was used for the audio"))
            if not result.audio_missing and spec.audio_window is None:  # a segment's sound is not the file's end
                ends["audio"] = (report.end_s if report.end_s is not None
                                 else result.audio_samples_decoded / AUDIO_SAMPLE_RATE)
        video_stream = _first_video(container)
        if info.has_audio and "audio" not in ends and not (video_stream is not None and video_stream.duration):
            ends.pop("video", None)  # only the file's length to compare with, which a longer sound may set
        declared = {"video": _declared_end_s(container, info, video_stream),
                    "audio": _declared_end_s(container, info, _picked_audio(container, report))}
        if (decoded is not None and decoded.end_s is None and ends.get("video") is not None
                and truncation_note("video", ends["video"], declared["video"]) is not None):
            # frames / average fps says "short", which a variable frame rate also says: ask the packets
            ends["video"] = _video_end_s(path) or ends["video"]
        result.notes += truncation_notes(ends, declared)
    finally:
        if background is not None and not background.done():
            wait([background])  # the audio thread still reads the container that the caller is about to close
        for stage, ms in audio_timings.items():
            timings[stage] = timings.get(stage, 0.0) + ms


def load_media(path: str | Path, spec: MediaSpec, *, threads: int | None = None) -> LoadedMedia:
    """Decode and preprocess one file as upstream would for this checkpoint.

    `threads`: how many threads this file may use (None: `vl2cli.media.parallel.default_media_threads()`,
    the cores, or a DecodePool worker's share). The outputs do not depend on it.
    `timings_ms` holds each stage's wall time; with 2+ threads the audio stages ("decode_audio", "fbank")
    overlap the video ones, and "wait_audio" is how long the video side then waited for them.
    Raises the `vl2cli.errors.MediaError` subclasses (empty, unsupported, corrupt file).
    """
    path = str(path)
    budget = resolve_threads(threads)
    timings: dict[str, float] = {}
    with _timed(timings, "probe"):
        info, container = open_and_probe(path)
    result = LoadedMedia(info=info, pixel_values=None, fbank=None, audio_missing=False, frame_indices=None,
                         timings_ms=timings)
    with container:
        if spec.family == "videollama":
            from vl2cli.media.videollama_v1 import load_v1_media

            load_v1_media(path, spec, info, result, budget)
        elif info.kind == "video":
            _load_video(path, spec, info, container, budget, result)
        elif info.kind == "image":
            if spec.image is not None:
                with _timed(timings, "decode_image"):
                    said: list[str] = []
                    rgb = load_image_rgb(path, said)
                    result.notes += [MediaNote("video", text) for text in said]
                with _timed(timings, "preprocess_frames"):
                    result.pixel_values = preprocess_frames(rgb, spec.image, threads=budget,
                                                            normalize=spec.normalize_pixels)
        elif spec.want_audio:
            report = AudioReport()
            result.fbank, result.audio_samples_decoded = _audio_file_fbank(path, spec, container, timings, report)
            result.audio_stream_index = report.stream_index
            result.notes += _stream_notes(report, container)
            if spec.audio_window is None:  # a segment ends where it was cut, not where the file does
                rate = info.audio_sample_rate or AUDIO_SAMPLE_RATE
                end = report.end_s if report.end_s is not None else result.audio_samples_decoded / rate
                result.notes += truncation_notes({"audio": end},
                                                 {"audio": _declared_end_s(container, info, _picked_audio(container, report))})
    return result
