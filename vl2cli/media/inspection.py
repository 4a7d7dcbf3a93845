"""`vl2 inspect`: what the model is given from one file, written out for people to look at and tests to compare.

`DIR/inspect.json` holds the probe (`media`), the decoded frames (`video`: backend, rotation, and per
sampled frame its index, time and a PNG of the RGB frame at decoded size after the display rotation,
before the image processor), the sound (`audio`: the stream heard, its 16 kHz mono samples as decoded,
before upstream's clip selection, as a 16-bit WAV) and the notes a record would carry. Paths in it are
relative to DIR. With segments, `segments` lists each window's frames and notes instead of `video`.
"""
from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from vl2cli.constants import AUDIO_SAMPLE_RATE
from vl2cli.media.audio import (
    INT16_SCALE,
    AudioReport,
    decode_audio_track_16k_mono,
    fft_resample,
    read_audio_channel0,
)
from vl2cli.media.image import load_image_rgb
from vl2cli.media.probe import MediaInfo, probe_media
from vl2cli.media.sampling import sample_frame_indices
from vl2cli.media.segments import Segment
from vl2cli.media.video import VideoBackend, decode_video_frames

INSPECT_FILE = "inspect.json"
FRAMES_FOLDER = "frames"
AUDIO_FILE = "audio_16k.wav"
#: zlib level of the frame PNGs: fast, still lossless.
_PNG_COMPRESS_LEVEL = 1
_INT16_BYTES = 2
_INT16_MAX = 2 ** 15 - 1


@dataclass(frozen=True)
class InspectRequest:
    """What to inspect: the file, where to write, the frames per video, the decoder rule, the windows."""

    path: Path
    out_dir: Path
    num_frames: int
    video_backend: VideoBackend = "decord"
    segments: list[Segment] | None = None


def inspect_media(request: InspectRequest) -> dict[str, Any]:
    """Decode `request.path` as vl2 would for the model and write DIR/inspect.json (+ PNGs, WAV); returns the json.

    Raises the `vl2cli.errors.MediaError` subclasses as a run would record them.
    """
    path = str(request.path)
    out = request.out_dir
    (out / FRAMES_FOLDER).mkdir(parents=True, exist_ok=True)
    info = probe_media(path)
    result: dict[str, Any] = {"path": str(Path(path).resolve()), "media": info.to_dict(), "video": None,
                              "audio": None, "notes": []}
    if info.kind == "image":
        result["video"] = _image(path, out, result["notes"])
    elif info.kind == "video" and request.segments is None:
        result["video"], notes = _video(path, out, request, None)
        result["notes"] += notes
    elif info.kind == "video":
        result["segments"] = []
        for segment in request.segments:
            video, notes = _video(path, out, request, segment)
            result["segments"].append({**segment.to_dict(), "video": video, "notes": notes})
    if info.has_audio:
        result["audio"], notes = _audio(path, out, info)
        result["notes"] += notes
    (out / INSPECT_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _png(out: Path, name: str, rgb: np.ndarray) -> str:
    from PIL import Image

    relative = f"{FRAMES_FOLDER}/{name}.png"
    Image.fromarray(np.ascontiguousarray(rgb)).save(out / relative, compress_level=_PNG_COMPRESS_LEVEL)
    return relative


def _image(path: str, out: Path, notes: list[str]) -> dict[str, Any]:
    rgb = load_image_rgb(path, notes)[0]
    return {"backend": "pillow", "rotation": 0, "frames": [{"index": 0, "time_s": None, "png": _png(out, "image", rgb)}]}


def _video(path: str, out: Path, request: InspectRequest, segment: Segment | None) -> tuple[dict[str, Any], list[str]]:
    start_s, end_s = (segment.start_s, segment.end_s) if segment is not None else (None, None)
    decoded = decode_video_frames(
        path, lambda total, fps: sample_frame_indices(total, fps, request.num_frames, start_s, end_s),
        request.video_backend)
    prefix = f"segment{segment.index:03d}_" if segment is not None else ""
    frames = []
    for k, (index, rgb) in enumerate(zip(decoded.indices, decoded.frames)):
        frames.append({"index": index, "time_s": round(index / decoded.avg_fps, 6) if decoded.avg_fps > 0 else None,
                       "png": _png(out, f"{prefix}frame{k:02d}_{index:06d}", rgb)})
    video = {"backend": decoded.backend, "rotation": decoded.rotation, "total_frames": decoded.total_frames,
             "avg_fps": decoded.avg_fps, "frames": frames}
    return video, list(decoded.notes)


def _audio(path: str, out: Path, info: MediaInfo) -> tuple[dict[str, Any] | None, list[str]]:
    report = AudioReport()
    if info.kind == "audio":  # upstream's audio-file read: channel 0 at its own rate, FFT-resampled
        samples, rate = read_audio_channel0(path, report=report)
        if rate != AUDIO_SAMPLE_RATE and samples.shape[0]:
            samples = fft_resample(samples, int(np.ceil(samples.shape[0] * AUDIO_SAMPLE_RATE / rate)))
        pcm = np.clip(np.round(samples * INT16_SCALE), -INT16_SCALE, _INT16_MAX).astype(np.int16)
    else:
        pcm = decode_audio_track_16k_mono(path, report=report)
    notes = []
    if report.damaged_packets:
        notes.append(f"{report.damaged_packets} damaged audio packet(s) could not be decoded and were skipped, "
                     "as the ffmpeg CLI skips them")
    with av.open(path) as container:
        tracks = len(container.streams.audio)
    if tracks > 1:
        notes.append(f"the file has {tracks} audio tracks: stream #{report.stream_index} was used, the one the "
                     "ffmpeg CLI (upstream) picks")
    with wave.open(str(out / AUDIO_FILE), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(_INT16_BYTES)
        handle.setframerate(AUDIO_SAMPLE_RATE)
        handle.writeframes(pcm.astype("<i2").tobytes())
    return {"stream_index": report.stream_index, "sample_rate": AUDIO_SAMPLE_RATE, "samples": int(pcm.shape[0]),
            "wav": AUDIO_FILE}, notes

