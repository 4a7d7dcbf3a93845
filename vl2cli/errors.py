"""Typed errors. Every error a user can cause has a class here and a message that says what to do.

The CLI catches `Vl2Error` and prints its message without a traceback; anything else is a bug.
"""
from __future__ import annotations


class Vl2Error(Exception):
    """Base of every error vl2 reports to a user (no traceback at the CLI level)."""


class CheckpointError(Vl2Error):
    """A checkpoint folder or hub id cannot be used: missing files, corrupt shards, bad config."""


class UnsupportedModelError(CheckpointError):
    """The config names a model_type or projector type vl2 does not know."""


class HubResolutionError(CheckpointError):
    """A hub id could not be resolved (not cached while offline, no such repo)."""


class MediaError(Vl2Error):
    """A media file cannot be decoded into model inputs. `code` is a stable machine-readable tag."""

    code = "media_error"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class EmptyFileError(MediaError):
    code = "empty_file"


class UnsupportedMediaError(MediaError):
    """Not a video, image or audio file (junk, text renamed .mp4, unknown container)."""

    code = "unsupported_media"


class CorruptMediaError(MediaError):
    """The container opens but cannot be read: truncated, missing moov atom, broken streams."""

    code = "corrupt_media"


class ModalityError(MediaError):
    """The file is fine but this model cannot take it (an audio file on a vision-only checkpoint)."""

    code = "unsupported_modality"


class NoVideoStreamError(MediaError):
    code = "no_video_stream"


class NoAudioStreamError(MediaError):
    code = "no_audio_stream"


class UnreadableFileError(MediaError):
    """The file vanished after it was listed, or this user may not read it."""

    code = "unreadable_file"


class DecodeTimeoutError(MediaError):
    """The decoder worker did not finish in time and was killed."""

    code = "decode_timeout"


class DecoderCrashError(MediaError):
    """The decoder worker process died (segfault, abort, out of memory)."""

    code = "decoder_crash"


class InputError(Vl2Error):
    """A path given on the command line does not exist or cannot be used as input."""


class ExportError(Vl2Error):
    """An ONNX or TensorRT export failed or did not pass its parity gate."""


class EngineMismatchError(Vl2Error):
    """A TensorRT engine's manifest does not match this model, GPU or TensorRT version."""


class OutputLockedError(Vl2Error):
    """Another vl2 run holds the lock on this output file."""


class OutputReplacedError(Vl2Error):
    """The output's path no longer names the file the run is appending to (replaced or removed)."""


class ConfigFileError(Vl2Error):
    """The YAML settings file is unreadable or has unknown keys."""
