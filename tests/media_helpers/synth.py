"""Small media files made with PyAV inside the tests (no ffmpeg CLI needed)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

FRAME_RATE = 25
AUDIO_RATE = 48000


def _moving_gradient(index: int, width: int, height: int) -> np.ndarray:
    x = np.arange(width, dtype=np.int32)[None, :]
    y = np.arange(height, dtype=np.int32)[:, None]
    frame = np.stack([(x * 4 + index * 8) % 256 + 0 * y, (y * 4 + index * 4) % 256 + 0 * x,
                      ((x + y) * 2 + index * 16) % 256], axis=-1)
    return frame.astype(np.uint8)


def write_video(path: Path, *, codec: str = "libx264", frames: int = 30, width: int = 96, height: int = 64,
                with_audio: bool = False, container_format: str | None = None) -> Path:
    """A short clip of a moving gradient (and optionally a 440 Hz tone)."""
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(codec, rate=FRAME_RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="mono") if with_audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_moving_gradient(i, width, height), format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            seconds = frames / FRAME_RATE
            write_tone(out, audio, seconds)
    return path


def write_tone(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    chunk = 1024
    t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
    signal = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, signal.shape[0], chunk):
        frame = av.AudioFrame.from_ndarray(signal[None, start:start + chunk], format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_audio(path: Path, seconds: float = 1.0, codec: str = "aac", container_format: str | None = None) -> Path:
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=AUDIO_RATE, layout="mono")
        write_tone(out, stream, seconds)
    return path


def corrupt_middle(source: Path, target: Path, fraction: float = 0.5, length: int = 2048) -> Path:
    """Copy with `length` bytes of noise written over the middle of the file (the frame data)."""
    data = bytearray(source.read_bytes())
    start = int(len(data) * fraction)
    noise = np.random.default_rng(0).integers(0, 256, size=length, dtype=np.uint8).tobytes()
    data[start:start + length] = noise[: len(data) - start]
    target.write_bytes(bytes(data))
    return target
