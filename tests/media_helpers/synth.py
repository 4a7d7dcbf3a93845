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
                with_audio: bool = False, container_format: str | None = None, audio_layout: str = "mono") -> Path:
    """A short clip of a moving gradient (and optionally a 440 Hz tone, the same on every channel)."""
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(codec, rate=FRAME_RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout=audio_layout) if with_audio else None
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
    rate = stream.rate
    layout = stream.layout.name
    channels = len(stream.layout.channels)
    t = np.arange(int(seconds * rate)) / rate
    signal = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], channels, axis=0)
    for start in range(0, signal.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal[:, start:start + chunk]), format="fltp",
                                           layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_pcm_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """A mono 16-bit PCM WAV of a 440 Hz tone (what a speech recording looks like to the prober)."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        for start in range(0, samples.shape[0], 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_png(path: Path, width: int = 120, height: int = 80) -> Path:
    """A still image (one gradient frame) written as PNG."""
    from PIL import Image

    Image.fromarray(_moving_gradient(3, width, height)).save(path, format="PNG")
    return path


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


#: WAVE_FORMAT_IEEE_FLOAT: the format tag of a float32 WAV.
_WAV_FLOAT_FORMAT = 3


def write_float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """A mono 32-bit float WAV holding exactly `samples` (NaN and infinities included, which encoders refuse)."""
    import struct

    data = np.asarray(samples, dtype="<f4").tobytes()
    block_align, bits = 4, 32
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    fmt = b"fmt " + struct.pack("<IHHIIHH", 16, _WAV_FLOAT_FORMAT, 1, rate, rate * block_align, block_align, bits)
    path.write_bytes(header + fmt + b"data" + struct.pack("<I", len(data)) + data)
    return path


def write_avi_claiming_more_frames(path: Path, *, frames: int = 60, claimed: int = 62) -> Path:
    """An MPEG-4 Part 2 AVI whose headers (avih total frames, strh length) promise `claimed` frames
    while `frames` are stored: what some capture tools write when they drop frames."""
    import struct

    out = av.open(str(path), "w")
    stream = out.add_stream("mpeg4", rate=FRAME_RATE)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for index in range(frames):
        frame = av.VideoFrame.from_ndarray(_moving_gradient(index, 64, 48), format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    data = bytearray(path.read_bytes())
    total_frames_at = data.find(b"avih") + 8 + 16  # MainAVIHeader.dwTotalFrames
    length_at = data.find(b"strh") + 8 + 32  # AVIStreamHeader.dwLength
    for offset in (total_frames_at, length_at):
        assert struct.unpack("<I", data[offset:offset + 4]) == (frames,), "unexpected AVI header layout"
        data[offset:offset + 4] = struct.pack("<I", claimed)
    path.write_bytes(bytes(data))
    return path


def damage_video_packet(source: Path, target: Path, packet: int) -> Path:
    """Copy with one video packet's payload (after its first NAL length field) overwritten by 0xFF bytes:
    a damaged frame in the middle of an otherwise good file, which the decoder rejects outright."""
    with av.open(str(source)) as container:
        located = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    position, size = located[packet]
    data = bytearray(source.read_bytes())
    data[position + 4:position + size] = b"\xff" * (size - 4)
    target.write_bytes(bytes(data))
    return target


#: RGB colours for the scenes of `write_scene_video`: each differs from the next in hue, saturation and
#: brightness (a cut a content detector must see, as between two camera shots).
SCENE_COLOURS = ((230, 30, 30), (20, 70, 20), (190, 190, 255), (60, 20, 110), (250, 210, 0), (0, 50, 70),
                 (255, 140, 200), (10, 10, 10))


#: Scenes of equal brightness and saturation whose hue alone changes (pure red, green, blue): the
#: cuts ContentDetector's default threshold misses (issue 20).
EQUAL_BRIGHTNESS_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))


#: The long videos' sound is made at the model's rate: a third of the encoding time of 48 kHz.
SCENE_AUDIO_RATE = 16000


def scene_of_frame(frame: int, scene_frames: int) -> int:
    return frame // scene_frames


def write_scene_video(path: Path, *, seconds: float = 300.0, fps: int = 4, scene_seconds: float = 40.0,
                      width: int = 64, height: int = 48, with_audio: bool = False,
                      colours: tuple[tuple[int, int, int], ...] = SCENE_COLOURS) -> Path:
    """A long video at tiny size and low frame rate: a new scene every `scene_seconds`.

    Scene k is a flat colours[k % len(colours)] field (default SCENE_COLOURS) with a small grey square drifting across it (so frames
    within a scene differ a little); the cut falls exactly at frame k * scene_seconds * fps. With
    audio, scene k's sound is a tone of 200 + 100·k Hz.
    """
    scene_frames = int(round(scene_seconds * fps))
    total = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"g": str(fps * 10)}  # some GOPs span a cut: the decoder, not the keyframes, finds it
        audio = out.add_stream("aac", rate=SCENE_AUDIO_RATE, layout="mono") if with_audio else None
        for i in range(total):
            colour = colours[scene_of_frame(i, scene_frames) % len(colours)]
            rgb = np.empty((height, width, 3), dtype=np.uint8)
            rgb[:] = colour
            x = (i * 2) % (width - 8)
            rgb[height // 2 - 4:height // 2 + 4, x:x + 8] = 128
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            chunk = 1024
            t = np.arange(int(seconds * SCENE_AUDIO_RATE)) / SCENE_AUDIO_RATE
            scene = (t // scene_seconds).astype(int)
            signal = (0.3 * np.sin(2 * np.pi * (200 + 100 * scene) * t)).astype(np.float32)
            for start in range(0, signal.shape[0], chunk):
                frame = av.AudioFrame.from_ndarray(signal[None, start:start + chunk], format="fltp", layout="mono")
                frame.sample_rate = SCENE_AUDIO_RATE
                frame.pts = start
                frame.time_base = Fraction(1, SCENE_AUDIO_RATE)
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


def write_gop_video(path: Path, codec: str, container_format: str | None = None, *, frames: int = 75,
                    options: dict[str, str] | None = None, width: int = 96, height: int = 64) -> Path:
    """A moving gradient encoded with `codec` and encoder `options` (GOP size, B-frames, open GOP) into
    `container_format`: the archive formats whose seeking decord gets wrong (issue 20)."""
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(codec, rate=FRAME_RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = dict(options or {})
        for index in range(frames):
            out.mux(video.encode(av.VideoFrame.from_ndarray(_moving_gradient(index, width, height), format="rgb24")))
        out.mux(video.encode(None))
    return path


def remux_shifted(source: Path, target: Path, shift_s: float, container_format: str | None = None,
                  container_options: dict[str, str] | None = None) -> Path:
    """Copy the video packets with every timestamp moved `shift_s` earlier (no re-encode).

    Into MP4 the packets before 0 s become an edit list that hides them (what a trimming remux
    writes); into Matroska with avoid_negative_ts disabled, a file whose first frames lie before 0 s.
    """
    with av.open(str(source)) as inp, av.open(str(target), "w", format=container_format,
                                                 container_options=container_options or {}) as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream, opaque=True)  # opaque: codecs PyAV decodes via a library (dav1d)
        shift = int(round(shift_s / stream.time_base))
        for packet in inp.demux(stream):
            if packet.pts is None and packet.dts is None:
                continue  # the demuxer's flush packet
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            out.mux(packet)
    return target


#: The display matrix of a phone held upright (ffprobe "rotation: -90": shown turned 90° clockwise),
#: 16.16 / 2.30 fixed point as a tkhd stores it.
_ROTATE_CLOCKWISE_MATRIX = (0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
#: Bytes from the "tkhd" tag to its matrix (version 0 box: flags, times, track id, duration, layer...).
_TKHD_MATRIX_OFFSET = 44


def rotate_mp4(source: Path, target: Path) -> Path:
    """Copy with the first track's tkhd matrix set to a 90° clockwise display rotation."""
    import struct

    data = bytearray(source.read_bytes())
    at = data.find(b"tkhd") + _TKHD_MATRIX_OFFSET
    assert data[at - _TKHD_MATRIX_OFFSET + 4] == 0, "expected a version 0 tkhd"
    data[at:at + 36] = struct.pack(">9i", *_ROTATE_CLOCKWISE_MATRIX)
    target.write_bytes(bytes(data))
    return target


def player_frames(path: Path) -> list[np.ndarray]:
    """The reference player: every frame PyAV's decoder outputs, in order (presentation order), as RGB
    the way the FFmpeg CLI converts it (bicubic swscale), display rotation not applied."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24", interpolation="BICUBIC") for frame in container.decode(video=0)]


def write_av_tracks(path: Path, *, container_format: str | None = None, video_codec: str = "libx264",
                    audio_codec: str = "aac", seconds: float = 4.0, tracks=((440.0, True, 0.0),),
                    audio_rate: int = AUDIO_RATE, video_options: dict[str, str] | None = None,
                    video_seconds: float | None = None) -> Path:
    """A moving gradient (`video_seconds`, default `seconds`) plus one audio stream per `tracks` entry
    (tone Hz, default flag, start s) lasting to `seconds`.

    A track starting at s > 0 has its first sample at s on the file's timeline (a late-starting sound);
    the default flags are written as given (e.g. a commentary track first, the main one flagged default).
    """
    with av.open(str(path), "w", format=container_format) as out:
        video = out.add_stream(video_codec, rate=FRAME_RATE)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.options = dict(video_options or {})
        streams = []
        for _, default, _ in tracks:
            stream = out.add_stream(audio_codec, rate=audio_rate, layout="mono")
            stream.disposition = av.stream.Disposition.default if default else av.stream.Disposition(0)
            streams.append(stream)
        for index in range(int((video_seconds or seconds) * FRAME_RATE)):
            out.mux(video.encode(av.VideoFrame.from_ndarray(_moving_gradient(index, 96, 64), format="rgb24")))
        out.mux(video.encode(None))
        for stream, (hertz, _, start_s) in zip(streams, tracks):
            _write_tone_from(out, stream, hertz, start_s, seconds - start_s, audio_rate)
    return path


def _write_tone_from(out, stream, hertz: float, start_s: float, seconds: float, rate: int) -> None:
    chunk = stream.codec_context.frame_size or 1024
    offset = int(round(start_s * rate))
    t = np.arange(int(seconds * rate)) / rate
    signal = (0.3 * np.sin(2 * np.pi * hertz * t)).astype(np.float32)
    for start in range(0, signal.shape[0] - chunk + 1, chunk):
        frame = av.AudioFrame.from_ndarray(signal[None, start:start + chunk], format=stream.codec_context.format.name
                                           if stream.codec_context.format.is_planar else "fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = offset + start
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def damage_audio_packet(source: Path, target: Path, packet: int = 0) -> Path:
    """Copy with one audio packet's payload overwritten by zero bytes (no sync word: the decoder
    rejects it), as a partial first AC-3 frame in a captured AVI."""
    with av.open(str(source)) as container:
        located = [(p.pos, p.size) for p in container.demux(audio=0) if p.size]
    position, size = located[packet]
    data = bytearray(source.read_bytes())
    data[position:position + size] = b"\x00" * size
    target.write_bytes(bytes(data))
    return target


def dominant_hertz(pcm: np.ndarray, rate: int = 16000) -> float:
    """The strongest frequency of a stretch of sound."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.shape[0])))
    return float(np.argmax(spectrum) * rate / pcm.shape[0])


def write_vfr_mkv(path: Path, *, fast: int = 60, slow: int = 40) -> Path:
    """Matroska VFR like media fixture (6): `fast` frames 1/30 s apart, then `slow` frames 1/10 s apart."""
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=30)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.time_base = Fraction(1, 1000)
        video.codec_context.time_base = Fraction(1, 1000)
        for index in range(fast + slow):
            frame = av.VideoFrame.from_ndarray(_moving_gradient(index, 96, 64), format="rgb24")
            seconds = index / 30 if index < fast else fast / 30 + (index - fast) / 10
            frame.pts = int(round(seconds * 1000))
            frame.time_base = Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path
