"""Video-LLaMA (v1) preprocessing, exactly as its upstream demo does it.

Upstream (DAMO-NLP-SG/Video-LLaMA) differs from VideoLLaMA 2 at every step, so v1 has its own
functions here rather than options on the VideoLLaMA 2 ones:

* video: decord decodes straight to a S×S square (aspect not kept, FFmpeg's swscale inside decord),
  `min(8, vlen)` indices `arange(0, vlen, vlen / n)`, /255 and the CLIP mean/std; the user message
  names the sampled seconds (`video_message`);
* image: PIL bicubic resize to S×S (no crop), ToTensor, the same normalisation;
* audio: all channels at 16 kHz (torchaudio's sinc resampler when the rate differs), 8 clips of 2 s
  with pytorchvideo's constant-clips-per-video times (the start step is `max_start / 8`, so the last
  clip ends before the end), each clip's mean subtracted **in place** from the shared waveform (later,
  overlapping clips see the shifted samples — upstream's behaviour, kept for parity), then a kaldi
  fbank of channel 0 (hanning window, 128 mels), padded/cut to 204 frames and normalised.

torchaudio is not a vl2 dependency: its resampler and fbank are re-derived here (same formulas).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
import torch
from PIL import Image
from transformers.audio_utils import mel_filter_bank

from vl2cli.constants import V1_IMAGE_SIZE, V1_NUM_FRAMES, V1_PIXEL_MEAN, V1_PIXEL_STD
from vl2cli.errors import CorruptMediaError, NoAudioStreamError
from vl2cli.media.notes import MediaNote

#: Upstream's frame count, frame side and image normalisation (BLIP-2 / CLIP mean and std).
V1_MEAN, V1_STD = V1_PIXEL_MEAN, V1_PIXEL_STD
#: `load_and_transform_audio_data` defaults.
V1_SAMPLE_RATE = 16000
V1_CLIPS = 8
V1_CLIP_SECONDS = 2
V1_MEL_BINS = 128
V1_TARGET_FRAMES = 204
V1_FBANK_MEAN = -4.268
V1_FBANK_STD = 9.138
#: kaldi fbank framing at 16 kHz (25 ms / 10 ms) and torchaudio's defaults for the rest.
_FRAME_LENGTH = 400
_FRAME_SHIFT = 160
_N_FFT = 512
_PREEMPHASIS = 0.97
_LOW_FREQ_HZ = 20.0
_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)
#: torchaudio.functional.resample defaults (sinc_interp_hann).
_LOWPASS_FILTER_WIDTH = 6
_ROLLOFF = 0.99
#: PCM scaling of integer sample formats to float (what torchaudio.load returns).
_PCM_FULL_SCALE = {"s16": 2 ** 15, "s16p": 2 ** 15, "s32": 2 ** 31, "s32p": 2 ** 31}


# ------------------------------------------------------------------ video / image

def frame_indices(total_frames: int, num_frames: int = V1_NUM_FRAMES) -> list[int]:
    """Upstream `load_video(sampling="uniform")`: `arange(0, vlen, vlen / n).astype(int)`, n = min(8, vlen)."""
    n = min(num_frames, total_frames)
    return [int(i) for i in np.arange(0, total_frames, total_frames / n).astype(int)]


def video_message(indices: list[int], avg_fps: float) -> str:
    """The sentence upstream appends after `<Video><ImageHere></Video> ` (trailing space included)."""
    seconds = ", ".join(str(round(index / avg_fps, 1)) for index in indices)
    return f"The video contains {len(indices)} frames sampled at {seconds} seconds. "


def decode_video_square(path: str, size: int = V1_IMAGE_SIZE, num_frames: int = V1_NUM_FRAMES,
                        threads: int = 1) -> tuple[np.ndarray, list[int], float]:
    """Frames (T, S, S, 3) uint8 as decord decodes them at S×S, with their indices and the avg fps."""
    import decord  # lazily: its native library is slow to load

    try:
        reader = decord.VideoReader(path, height=size, width=size, ctx=decord.cpu(0), num_threads=threads)
    except Exception as exc:  # decord raises its own DECORDError for unreadable files
        raise CorruptMediaError(f"{path}: the video cannot be decoded ({exc})", path=path) from exc
    try:
        total, fps = len(reader), float(reader.get_avg_fps())
        if total == 0:
            raise CorruptMediaError(f"{path}: the video has no frames", path=path)
        indices = frame_indices(total, num_frames)
        frames = reader.get_batch(indices).asnumpy()
    finally:
        del reader
    return frames, indices, fps


@dataclass
class V1Frames:
    """What the v1 video path decoded: S×S frames, their indices, the avg fps, and how (backend, notes)."""

    frames: np.ndarray
    indices: list[int]
    avg_fps: float
    backend: str
    rotation: int = 0
    notes: list[str] = field(default_factory=list)


def decode_v1_video(path: str, size: int = V1_IMAGE_SIZE, num_frames: int = V1_NUM_FRAMES,
                    threads: int = 1) -> V1Frames:
    """Upstream's decord S×S frames where decord reads the file right; PyAV's where it does not.

    The same rule as VideoLLaMA 2's path (`video.decord_misreads`): for the formats decord 0.6 seeks
    wrongly, the frames at upstream's indices are decoded pts-exactly with PyAV (display rotation applied)
    and squashed to S×S with PIL's bicubic (decord squashes inside FFmpeg's scaler), and a note says so.
    """
    from vl2cli.media.video import decode_with_pyav, decord_misreads

    reason = decord_misreads(path)
    if reason is None:
        frames, indices, fps = decode_video_square(path, size, num_frames, threads)
        return V1Frames(frames, indices, fps, "decord")
    try:
        decoded = decode_with_pyav(path, lambda total, _fps: frame_indices(total, num_frames), threads)
    except (av.error.FFmpegError, ValueError) as exc:
        raise CorruptMediaError(f"{path}: the video stream cannot be decoded ({exc})", path=path) from exc
    squares = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC), dtype=np.uint8)
                        for f in decoded.frames])
    note = (f"decoded with PyAV, not decord (upstream's reader): {reason}; vl2 shows the frames a player shows "
            "at the sampled indices, squashed to the model's square with PIL's bicubic, upstream's model may "
            "have seen others (a deliberate divergence, docs/media.md)")
    return V1Frames(squares, decoded.indices, decoded.avg_fps, "pyav", decoded.rotation, [note, *decoded.notes])


def normalize_frames(frames: np.ndarray) -> torch.Tensor:
    """(T, S, S, 3) uint8 -> (1, 3, T, S, S) float32: `alpro_video_eval`'s /255 and CLIP normalisation."""
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0
    mean = torch.tensor(V1_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(V1_STD).view(3, 1, 1, 1)
    return ((pixels - mean) / std).unsqueeze(0)


def image_pixels(image: Image.Image, size: int = V1_IMAGE_SIZE) -> torch.Tensor:
    """`Blip2ImageEvalProcessor(image_size=S)`: bicubic squash to S×S, ToTensor, normalise -> (3, S, S)."""
    resized = image.convert("RGB").resize((size, size), Image.BICUBIC)
    array = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(V1_MEAN).view(3, 1, 1)
    std = torch.tensor(V1_STD).view(3, 1, 1)
    return (array - mean) / std


# ------------------------------------------------------------------ audio

def read_audio_all_channels(path: str) -> tuple[torch.Tensor, int]:
    """The audio track a player plays (the one the ffmpeg CLI maps: `audio.pick_audio_stream`) as float32
    (channels, samples) at its own rate, as `torchaudio.load` gives the first track of a one-track file."""
    from vl2cli.media.audio import pick_audio_stream

    try:
        with av.open(path) as container:
            stream = pick_audio_stream(container)
            if stream is None:
                raise NoAudioStreamError(f"{path}: no audio stream", path=path)
            rate = stream.codec_context.sample_rate
            chunks = [_frame_channels(frame) for frame in container.decode(stream)]
    except av.error.FFmpegError as exc:
        raise CorruptMediaError(f"{path}: the audio stream cannot be decoded ({exc})", path=path) from exc
    if not chunks:
        raise CorruptMediaError(f"{path}: the audio stream holds no samples", path=path)
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1))
    if not bool(torch.isfinite(waveform).all()):
        raise CorruptMediaError(f"{path}: the audio holds NaN or infinite samples", path=path)
    return waveform, rate


def audio_stream_index(path: str) -> int | None:
    """The index (in the container) of the audio track `read_audio_all_channels` decodes."""
    from vl2cli.media.audio import pick_audio_stream

    with av.open(path) as container:
        stream = pick_audio_stream(container)
        return None if stream is None else stream.index


def _frame_channels(frame: av.AudioFrame) -> np.ndarray:
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    planar = data if frame.format.is_planar else data.reshape(-1, channels).T
    scale = _PCM_FULL_SCALE.get(frame.format.name)
    if frame.format.name in ("u8", "u8p"):
        return ((planar.astype(np.float32) - 128) / 128).astype(np.float32)
    out = planar.astype(np.float32)
    return out / np.float32(scale) if scale else out


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int = V1_SAMPLE_RATE) -> torch.Tensor:
    """`torchaudio.functional.resample` with its defaults (windowed-sinc, hann, width 6, rolloff 0.99)."""
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = _sinc_kernel(orig, new, waveform.dtype)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * length / orig)
    return out[..., :target].reshape(*shape[:-1], -1)


def _sinc_kernel(orig: int, new: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * _ROLLOFF
    width = math.ceil(_LOWPASS_FILTER_WIDTH * orig / base)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t = (t * base).clamp(-_LOWPASS_FILTER_WIDTH, _LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / _LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones((), dtype=dtype), t.sin() / t)
    return kernel * window * (base / orig), width


def clip_times(num_samples: int, sample_rate: int = V1_SAMPLE_RATE, clips: int = V1_CLIPS,
               clip_seconds: int = V1_CLIP_SECONDS) -> list[tuple[Fraction, Fraction]]:
    """pytorchvideo `ConstantClipsPerVideoSampler` times: start k·max_start/clips, exact fractions."""
    duration = num_samples / sample_rate  # a Python float, as upstream computes it
    step = Fraction(max(duration - clip_seconds, 0)) / clips
    return [(step * k, step * k + clip_seconds) for k in range(clips)]


def clip_sample_ranges(num_samples: int, sample_rate: int = V1_SAMPLE_RATE) -> list[tuple[int, int]]:
    """`waveform[:, int(start·sr) : int(end·sr)]` bounds of each clip."""
    return [(int(start * sample_rate), int(end * sample_rate)) for start, end in clip_times(num_samples, sample_rate)]


@lru_cache(maxsize=1)
def _fbank_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """The hanning (symmetric) window and the kaldi mel bank (257, 128), float64."""
    window = torch.hann_window(_FRAME_LENGTH, periodic=False, dtype=torch.float64)
    with warnings.catch_warnings():  # kaldi's 128-bin bank at 512 points has empty low filters, as in torchaudio
        warnings.simplefilter("ignore", UserWarning)
        mel = mel_filter_bank(
            num_frequency_bins=_N_FFT // 2 + 1, num_mel_filters=V1_MEL_BINS, min_frequency=_LOW_FREQ_HZ,
        max_frequency=V1_SAMPLE_RATE / 2, sampling_rate=V1_SAMPLE_RATE, norm=None,
            mel_scale="kaldi", triangularize_in_mel_space=True,
        )
    return window, torch.from_numpy(np.asarray(mel, dtype=np.float64))


def kaldi_fbank(signal: torch.Tensor) -> torch.Tensor:
    """`kaldi.fbank(htk_compat=True, use_energy=False, window_type="hanning", num_mel_bins=128, dither=0)`
    of a 1-D 16 kHz signal: snip-edge frames, DC removal, pre-emphasis, |rfft(512)|², log mel. (frames, 128)."""
    window, mel = _fbank_tables()
    if signal.shape[0] < _FRAME_LENGTH:
        return torch.zeros(0, V1_MEL_BINS, dtype=torch.float32)
    frames = signal.double().unfold(0, _FRAME_LENGTH, _FRAME_SHIFT)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - _PREEMPHASIS * previous) * window
    power = torch.fft.rfft(frames, n=_N_FFT, dim=1).abs() ** 2
    return torch.log(torch.clamp(power @ mel, min=_FLOAT32_EPS)).float()


def clip_fbank(clip: torch.Tensor) -> torch.Tensor:
    """Upstream `waveform2melspec` after its mean subtraction: (1, 128, 204), normalised."""
    fbank = kaldi_fbank(clip[0]).transpose(0, 1)
    frames = fbank.shape[1]
    if frames < V1_TARGET_FRAMES:
        fbank = torch.nn.functional.pad(fbank, (0, V1_TARGET_FRAMES - frames))
    fbank = fbank[:, :V1_TARGET_FRAMES]
    return ((fbank - V1_FBANK_MEAN) / V1_FBANK_STD).unsqueeze(0)


def audio_clips(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(channels, samples) float32 -> (8, 1, 128, 204): upstream `load_and_transform_audio_data` for one file.

    The waveform is copied first; on that copy every clip's mean is subtracted in place, so overlapping
    later clips see samples already shifted by earlier clips, as upstream's views do.
    """
    shared = resample(waveform.float(), sample_rate, V1_SAMPLE_RATE).clone()
    clips = []
    for start, end in clip_sample_ranges(shared.shape[1]):
        clip = shared[:, start:end]
        clip -= clip.mean()
        clips.append(clip_fbank(clip))
    return torch.stack(clips)


def load_audio_clips(path: str) -> torch.Tensor:
    """A file's audio (standalone or a video's track) as the (8, 1, 128, 204) ImageBind input."""
    waveform, rate = read_audio_all_channels(path)
    return audio_clips(waveform, rate)


# ------------------------------------------------------------------ one file, for the pipeline

def load_v1_media(path: str, spec, info, result, threads: int = 1) -> None:
    """Fill `result` (a `LoadedMedia`) for a Video-LLaMA (v1) model, as its upstream demo would.

    Videos: decord's S×S frames at upstream's indices and the frame-times sentence; with `want_audio`,
    the 8 ImageBind clips of the file's audio track — a video without one is marked `audio_missing`
    (upstream silently falls back to vision only; vl2 does the same and says so in the record).
    Images: the BLIP-2 squash. Audio files: refused, upstream has no audio-only input.
    `spec.normalize_pixels=False` hands over uint8 levels (normalised on the model's device with the
    same mean/std, `image.value_lookup_table`).
    """
    from vl2cli.errors import ModalityError

    size = spec.image.size if spec.image is not None else V1_IMAGE_SIZE
    timings = result.timings_ms
    if info.kind == "video":
        start = _now()
        video = decode_v1_video(path, size, spec.num_frames, threads=threads)
        timings["decode_video"] = _ms_since(start)
        result.pixel_values = _pixels(video.frames, spec.normalize_pixels)
        result.frame_indices = video.indices
        result.frame_times_message = video_message(video.indices, video.avg_fps)
        result.video_backend = video.backend
        result.video_rotation = video.rotation
        if video.notes:
            result.notes += [MediaNote("video", text) for text in video.notes]
        if spec.want_audio:
            start = _now()
            if not info.has_audio:
                result.audio_missing = True
            else:
                waveform, rate = read_audio_all_channels(path)
                result.audio_stream_index = audio_stream_index(path)
                result.audio_samples_decoded = int(waveform.shape[1])
                result.fbank = audio_clips(waveform, rate)
            timings["fbank"] = _ms_since(start)
    elif info.kind == "image":
        start = _now()
        from vl2cli.media.image import load_image_rgb

        rgb = load_image_rgb(path)[0]
        squashed = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC), dtype=np.uint8)
        result.pixel_values = _pixels(squashed[None], spec.normalize_pixels)
        timings["preprocess_frames"] = _ms_since(start)
    else:
        raise ModalityError(f"{path}: Video-LLaMA (v1) hears sound only together with a video's frames; "
                            "an audio file cannot be used with it", path=path)


def _pixels(frames: np.ndarray, normalize: bool) -> torch.Tensor:
    """(T, S, S, 3) uint8 → (T, 3, S, S): normalised float32, or the uint8 levels."""
    if normalize:
        return normalize_frames(frames)[0].permute(1, 0, 2, 3).contiguous()
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def _now() -> float:
    import time

    return time.perf_counter()


def _ms_since(start: float) -> float:
    return (_now() - start) * 1000.0
