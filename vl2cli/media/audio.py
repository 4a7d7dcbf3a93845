"""Audio to BEATs input: decode with PyAV in-process, pick upstream's samples, kaldi log-mel fbank.

Upstream shells out to the ffmpeg CLI for a video's audio and uses torchaudio's kaldi fbank; vl2
decodes in-process with PyAV (no subprocess, no CLI dependency) and computes the same fbank from
transformers' kaldi window/mel-bank definitions with vectorised framing (transformers' own
`spectrogram` loops over the 2998 frames in Python and stores complex64, which is slower and less
exact).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import av
import numpy as np
import torch
from transformers.audio_utils import mel_filter_bank, window_function

from vl2cli.constants import (
    AUDIO_SAMPLE_RATE,
    AUDIO_WINDOW_SAMPLES,
    AUDIO_WINDOW_SECONDS,
    FBANK_FRAME_LENGTH_MS,
    FBANK_FRAME_SHIFT_MS,
    FBANK_NUM_MEL_BINS,
)
from vl2cli.errors import CorruptMediaError, NoAudioStreamError
from vl2cli.media.sampling import audio_clip_slices

#: upstream scales the [-1, 1) waveform to int16 range before the fbank (`waveform * 2**15`).
INT16_SCALE = 2 ** 15
#: torchaudio.compliance.kaldi.fbank defaults that BEATs relies on.
_KALDI_PREEMPHASIS = 0.97
_KALDI_LOW_FREQ_HZ = 20.0
_KALDI_MEL_FLOOR = float(np.finfo(np.float32).eps)
_MS_PER_SECOND = 1000
#: soundfile's scaling of integer PCM to float (what upstream's `soundfile.read` returns).
_PCM_FULL_SCALE = {"s16": 2 ** 15, "s16p": 2 ** 15, "s32": 2 ** 31, "s32p": 2 ** 31}
_PCM_U8_OFFSET = 128


# ---------------------------------------------------------------- decoding

@dataclass
class AudioReport:
    """What a decode learnt about the track, for the record: which stream, what was skipped, where it lies.

    `start_s`/`end_s`: the first decoded sample and the end of the last decoded frame on the file's
    timeline (seconds from the container's start); None when the frames carry no timestamps.
    """

    stream_index: int | None = None
    damaged_packets: int = 0
    start_s: float | None = None
    end_s: float | None = None


def pick_audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The audio stream the ffmpeg CLI maps without `-map` (what upstream's `ffmpeg -i` decodes).

    ffmpeg 5.1 scores each audio stream `channels + 5000000·default`: a stream flagged default wins,
    then the most channels, then the first (a dub or commentary track stored first is not taken).
    Streams this FFmpeg build cannot decode are passed over.
    """
    audios = [s for s in container.streams.audio if s.codec_context is not None]
    if not audios:
        return None
    return max(audios, key=lambda s: (bool(s.disposition & av.stream.Disposition.default), s.codec_context.channels))


def _open_audio_stream(path: str) -> tuple[av.container.InputContainer, av.audio.stream.AudioStream]:
    container = av.open(path)
    stream = pick_audio_stream(container)
    if stream is None:
        container.close()
        raise NoAudioStreamError(f"{path}: no audio stream", path=path)
    return container, stream


def _decode_first_audio_stream(path: str, container: av.container.InputContainer | None, decode,
                               report: AudioReport | None = None):
    """Run `decode(container, stream, report)` on the CLI's audio stream of `path` (or of the given open
    container, which is left open), turning FFmpeg's errors into typed media errors."""
    report = report if report is not None else AudioReport()
    try:
        if container is None:
            owned, stream = _open_audio_stream(path)
            with owned:
                report.stream_index = stream.index
                return _checked(path, decode(owned, stream, report), report)
        stream = pick_audio_stream(container)
        if stream is None:
            raise NoAudioStreamError(f"{path}: no audio stream", path=path)
        report.stream_index = stream.index
        return _checked(path, decode(container, stream, report), report)
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"{path}: the audio stream cannot be decoded ({exc})", path=path) from exc


def _checked(path: str, result, report: AudioReport):
    """A track of which every packet was damaged is corrupt; some damaged packets are only a note."""
    samples = result[0] if isinstance(result, tuple) else result
    if report.damaged_packets and samples.shape[0] == 0:
        raise CorruptMediaError(f"{path}: none of the audio stream's packets can be decoded "
                                f"({report.damaged_packets} damaged)", path=path)
    return result


def _decoded_frames(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                    report: AudioReport, after_seek: bool = False):
    """Every frame of `stream` from the container's position, a packet the decoder rejects skipped (and
    counted), as the ffmpeg CLI skips it: one bad packet (a partial first AC-3 frame) costs that packet,
    not the file. `after_seek`: the packets a seek lands inside before the decoder finds its first frame
    (an MPEG program stream's seek lands mid-frame) are skipped without being counted as damage."""
    origin = _container_start_s(container)
    decoded_any = False
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except (av.error.InvalidDataError, av.error.PatchWelcomeError, av.error.UndefinedError):
            if decoded_any or not after_seek:
                report.damaged_packets += 1
            continue
        decoded_any = decoded_any or bool(frames)
        for frame in frames:
            if frame.time is not None:
                time = float(frame.time) - origin
                if report.start_s is None:
                    report.start_s = time
                report.end_s = time + frame.samples / frame.sample_rate
            yield frame


def _container_start_s(container: av.container.InputContainer) -> float:
    return container.start_time / av.time_base if container.start_time not in (None, 0) else 0.0


def decode_audio_track_16k_mono(path: str, container: av.container.InputContainer | None = None,
                                report: AudioReport | None = None) -> np.ndarray:
    """The CLI's audio stream (`pick_audio_stream`) as 16 kHz mono int16, as upstream's
    `ffmpeg -ac 1 -ar 16000 -f s16le`.

    libswresample's default downmix (including 5.1 -> mono) and s16 quantisation are kept so values
    stay close to the CLI's; the sample count may differ by decoder priming (see docs/media.md).
    `container`: an already opened, not yet read container of `path` (the probe's); it is not closed here.
    `report`: filled with the stream used, the damaged packets skipped and the track's extent.
    """
    return _decode_first_audio_stream(path, container, _decode_16k_mono, report)


def _decode_16k_mono(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                     report: AudioReport) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_SAMPLE_RATE)
    chunks = []
    for frame in _decoded_frames(container, stream, report):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


#: Seconds decoded before a window's start after a seek: the codec's first frames after a seek are
#: primed from nothing (AAC's overlapped transform), so they fall outside the window.
AUDIO_SEEK_PREROLL_S = 1.0
#: Seconds decoded past a window's end so the resampler's tail covers it.
_AUDIO_WINDOW_TAIL_S = 0.1


def _stream_start_s(stream: av.audio.stream.AudioStream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _window_frames(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                   start_s: float, end_s: float, report: AudioReport) -> tuple[list[av.AudioFrame], float]:
    """Decoded frames covering [start_s, end_s) after a seek, and the time of the first one.

    Times are on the file's timeline (seconds from the container's start, where the video's frame 0
    lies and where a segment's bounds are counted), not from the audio stream's own start: a track
    that starts 2 s late gives the window [10, 20) its samples from 8 s in, not its 10th second on.
    The sample at `start_s` is then (start_s - first time) · rate samples in.
    """
    origin = _container_start_s(container)
    seek_to = start_s - AUDIO_SEEK_PREROLL_S
    seeked = seek_to > max(_stream_start_s(stream) - origin, 0.0)
    if seeked:
        container.seek(int((origin + seek_to) / stream.time_base), stream=stream, backward=True)
    frames: list[av.AudioFrame] = []
    first_time: float | None = None
    before = 0  # samples decoded before the first frame with a timestamp (a seek can land on untimed ones)
    for frame in _decoded_frames(container, stream, report, after_seek=seeked):
        time = float(frame.time) - origin if frame.time is not None else None
        if first_time is None:
            if time is not None:
                first_time = time - before / frame.sample_rate
            else:
                before += frame.samples
        frames.append(frame)
        if time is not None and time > end_s + _AUDIO_WINDOW_TAIL_S:
            break
    if seeked:
        frames, first_time = _from_first_consistent_frame(frames, origin, first_time)
    if first_time is None:
        first_time = _stream_start_s(stream) - origin
    return frames, first_time


def _from_first_consistent_frame(frames: list[av.AudioFrame], origin: float,
                                 first_time: float | None) -> tuple[list[av.AudioFrame], float | None]:
    """Drop the frames after a seek whose timestamp the next frame contradicts.

    An MPEG program stream's demuxer resyncs after a seek with a stale pts on its first good frame
    (the next frame then lies two frames later, not one); slicing by it shifts the window by a frame.
    The first frame whose successor starts where it ends (within timestamp rounding) is trusted.
    """
    for k in range(len(frames) - 1):
        current, following = frames[k], frames[k + 1]
        if current.time is None or following.time is None:
            continue
        duration = current.samples / current.sample_rate
        if abs(float(following.time) - float(current.time) - duration) < 0.25 * duration:  # timebase rounding
            return frames[k:], float(current.time) - origin
    return frames, first_time


def _on_output_grid(frames: list[av.AudioFrame], first_time_s: float, rate: int) -> tuple[list[av.AudioFrame], float]:
    """Drop leading input samples so the decode starts on a sample that falls on the 16 kHz grid of the
    whole track (e.g. a multiple of 3 at 48 kHz, of 441 at 44.1 kHz): the resampler then produces the
    very samples a whole-track decode does, not ones shifted by a fraction of a sample."""
    if not frames or rate == AUDIO_SAMPLE_RATE:
        return frames, first_time_s
    period = rate // gcd(rate, AUDIO_SAMPLE_RATE)
    skip = (-int(round(first_time_s * rate))) % period
    kept: list[av.AudioFrame] = []
    left = skip
    for frame in frames:
        if left >= frame.samples:
            left -= frame.samples
            continue
        if left:
            frame = _without_leading_samples(frame, left)
            left = 0
        kept.append(frame)
    return kept, first_time_s + skip / rate


def _without_leading_samples(frame: av.AudioFrame, count: int) -> av.AudioFrame:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    trimmed = data[:, count:] if frame.format.is_planar else data[:, count * channels:]
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(trimmed), format=frame.format.name, layout=frame.layout.name)
    out.sample_rate = frame.sample_rate
    return out


def _slice_window(samples: np.ndarray, rate: int, first_time_s: float, start_s: float, end_s: float) -> np.ndarray:
    """Samples [int(start_s·rate), int(end_s·rate)) of the whole track, from a decode that began at `first_time_s`."""
    offset = int(round(first_time_s * rate))
    first, last = max(int(start_s * rate) - offset, 0), max(int(end_s * rate) - offset, 0)
    return samples[first:last]


def decode_audio_window_16k_mono(path: str, start_s: float, end_s: float,
                                 container: av.container.InputContainer | None = None,
                                 report: AudioReport | None = None) -> np.ndarray:
    """The sound of the file's [start_s, end_s) (file timeline) at 16 kHz mono, without decoding the rest.

    For a track starting with the file this is `decode_audio_track_16k_mono(path)[int(start_s·16000):
    int(end_s·16000)]` (within a few samples; the values agree after the codec's first frame); a track
    starting later is shifted by its start. A segment of a long file must not decode its whole track:
    this seeks to AUDIO_SEEK_PREROLL_S before the window, decodes past its end, and slices by the first
    decoded frame's time. Empty when the track holds no sound in the window.
    """
    def decode(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
               report: AudioReport) -> np.ndarray:
        frames, first_time = _window_frames(container, stream, start_s, end_s, report)
        frames, first_time = _on_output_grid(frames, first_time, stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_SAMPLE_RATE)
        chunks = [out.to_ndarray().reshape(-1) for frame in frames for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return _slice_window(pcm, AUDIO_SAMPLE_RATE, first_time, start_s, end_s)

    return _decode_first_audio_stream(path, container, decode, report)


def read_audio_channel0_window(path: str, start_s: float, end_s: float,
                               container: av.container.InputContainer | None = None,
                               report: AudioReport | None = None) -> tuple[np.ndarray, int]:
    """`read_audio_channel0` of [start_s, end_s) only (native rate), by seeking as `decode_audio_window_16k_mono`."""
    def decode(container: av.container.InputContainer,
               stream: av.audio.stream.AudioStream, report: AudioReport) -> tuple[np.ndarray, int]:
        rate = stream.codec_context.sample_rate
        frames, first_time = _window_frames(container, stream, start_s, end_s, report)
        samples = np.concatenate([_channel0_as_float64(f) for f in frames]) if frames else np.zeros(0)
        return _slice_window(samples, rate, first_time, start_s, end_s), rate

    return _decode_first_audio_stream(path, container, decode, report)


def _channel0_as_float64(frame: av.AudioFrame) -> np.ndarray:
    """First channel of a decoded frame, scaled like soundfile's float64 read."""
    data = frame.to_ndarray()
    fmt = frame.format.name
    channels = len(frame.layout.channels)
    first = data[0] if frame.format.is_planar else data.reshape(-1, channels)[:, 0]
    if fmt in ("u8", "u8p"):
        return (first.astype(np.float64) - _PCM_U8_OFFSET) / _PCM_U8_OFFSET
    scale = _PCM_FULL_SCALE.get(fmt)
    return first.astype(np.float64) / scale if scale else first.astype(np.float64)


def read_audio_channel0(path: str, container: av.container.InputContainer | None = None,
                        report: AudioReport | None = None) -> tuple[np.ndarray, int]:
    """Upstream `process_audio_file`'s read: channel 0 (not a mix) at the native rate, float64.

    `container`: an already opened, not yet read container of `path` (the probe's); it is not closed here.
    """
    return _decode_first_audio_stream(path, container, _decode_channel0, report)


def _decode_channel0(container: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                     report: AudioReport) -> tuple[np.ndarray, int]:
    rate = stream.codec_context.sample_rate
    chunks = [_channel0_as_float64(frame) for frame in _decoded_frames(container, stream, report)]
    return (np.concatenate(chunks) if chunks else np.zeros(0)), rate


# ---------------------------------------------------------------- sample selection

def centred_window_start(num_samples: int, window: int) -> int:
    """vl2's deterministic replacement for upstream's random 30 s crop: the middle window."""
    return max(num_samples - window, 0) // 2


def fft_resample(signal: np.ndarray, num: int) -> np.ndarray:
    """`scipy.signal.resample` (what `librosa.resample(res_type="fft")` calls) for a real 1-D signal.

    Spectrum truncated or zero-padded to `num`; for an even cut length the Nyquist bin is doubled when
    downsampling and halved when upsampling, exactly as scipy does. Computed in float64.
    """
    length = signal.shape[0]
    spectrum = np.fft.rfft(signal)
    kept = min(num, length)
    out = np.zeros(num // 2 + 1, dtype=spectrum.dtype)
    nyquist = kept // 2 + 1
    out[:nyquist] = spectrum[:nyquist]
    if kept % 2 == 0:
        if num < length:
            out[kept // 2] *= 2.0
        elif length < num:
            out[kept // 2] *= 0.5
    return np.fft.irfft(out, num) * (float(num) / float(length))


def audio_file_waveform(samples: np.ndarray, rate: int, window_start: int | None = None) -> np.ndarray:
    """30 s at 16 kHz from a standalone audio file, as upstream but with a deterministic crop.

    Longer than 30 s: the window starting at `window_start` (native-rate samples; default centred);
    shorter: zero-padded; both at the native rate, then FFT-resampled to 16 kHz if needed.
    """
    window = AUDIO_WINDOW_SECONDS * rate
    if samples.shape[0] > window:
        start = centred_window_start(samples.shape[0], window) if window_start is None else window_start
        samples = samples[start:start + window]
    elif samples.shape[0] < window:
        samples = np.pad(samples, (0, window - samples.shape[0]))
    if rate != AUDIO_SAMPLE_RATE:
        target = int(np.ceil(samples.shape[0] * AUDIO_SAMPLE_RATE / rate))
        samples = fft_resample(samples, target)[:AUDIO_WINDOW_SAMPLES]
    return samples


def video_audio_waveform(waveform_16k: np.ndarray) -> np.ndarray:
    """Upstream's audio-of-a-video selection: 8 clips of 2 s (pytorchvideo slices) concatenated, padded to 30 s."""
    picked = np.concatenate([waveform_16k[a:b] for a, b in audio_clip_slices(waveform_16k.shape[0])])
    picked = picked[:AUDIO_WINDOW_SAMPLES]
    return np.pad(picked, (0, AUDIO_WINDOW_SAMPLES - picked.shape[0]))


# ---------------------------------------------------------------- fbank

@lru_cache(maxsize=1)
def _kaldi_tables() -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Povey window, kaldi mel bank (n_fft/2+1, mels), frame length/shift and FFT size (next power of 2)."""
    frame_length = AUDIO_SAMPLE_RATE * FBANK_FRAME_LENGTH_MS // _MS_PER_SECOND
    frame_shift = AUDIO_SAMPLE_RATE * FBANK_FRAME_SHIFT_MS // _MS_PER_SECOND
    n_fft = 1 << (frame_length - 1).bit_length()
    window = window_function(frame_length, "povey", periodic=False).astype(np.float64)
    with warnings.catch_warnings():  # kaldi's 128-bin bank at 512 points has empty low filters, as in torchaudio
        warnings.simplefilter("ignore", UserWarning)
        mel = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1, num_mel_filters=FBANK_NUM_MEL_BINS,
            min_frequency=_KALDI_LOW_FREQ_HZ, max_frequency=AUDIO_SAMPLE_RATE / 2, sampling_rate=AUDIO_SAMPLE_RATE,
            norm=None, mel_scale="kaldi", triangularize_in_mel_space=True,
        ).astype(np.float64)
    return window, mel, frame_length, frame_shift, n_fft


def kaldi_fbank(waveform: np.ndarray) -> np.ndarray:
    """torchaudio `kaldi.fbank(waveform * 2**15, num_mel_bins=128, frame_length=25, frame_shift=10)`.

    snip_edges framing, per-frame DC removal, pre-emphasis 0.97 (first sample against itself), povey
    window, |rfft(512)|², kaldi mel bank, log floored at float32 eps. Returns (frames, 128) float64.
    """
    window, mel, frame_length, frame_shift, n_fft = _kaldi_tables()
    scaled = np.asarray(waveform, dtype=np.float64) * INT16_SCALE
    frames = np.lib.stride_tricks.sliding_window_view(scaled, frame_length)[::frame_shift]
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - _KALDI_PREEMPHASIS * previous) * window
    power = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    return np.log(np.maximum(_apply_mel_bank(power), _KALDI_MEL_FLOOR))


def _apply_mel_bank(power: np.ndarray) -> np.ndarray:
    """`power @ mel` in float64 through torch, whose thread count DecodePool workers pin to 1.

    Why not numpy's matmul: numpy's OpenBLAS starts its own thread pool in every worker process
    (oversubscribing the cores the workers share), and two such workers were seen spinning for minutes
    in OpenBLAS on a busy 2-core machine.
    """
    mel = _kaldi_tables()[1]
    return (torch.from_numpy(power) @ torch.from_numpy(mel)).numpy()


def round_to_bfloat16(fbank: np.ndarray) -> torch.Tensor:
    """float32 tensor holding the bf16-rounded values upstream returns (`.to(torch.bfloat16)`)."""
    return torch.from_numpy(np.ascontiguousarray(fbank, dtype=np.float32)).to(torch.bfloat16).float()
