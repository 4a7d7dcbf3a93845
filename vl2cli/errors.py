"""Typed errors: the one error model. Every error a user can cause has a class here, and each class says
what becomes of it.

Two kinds:
- a `FileError` fails one file (or segment): the run goes on and the file's record carries the class's
  `code` and message. `transient` says whether a later run tries the file again (resume,
  output/resume.py): a loaded machine or a shared GPU may not fail it twice; a corrupt file always will.
  `RECORD_ERROR_CODES` are all the codes a record can carry; the record schema's enum is checked against
  them (tests/test_error_model.py).
- any other `Vl2Error` ends the run (its `code` is None: it is never written to a record). Messages name
  library settings (`encoder_backend`), never command-line flags: the CLI is one caller among several.

The CLI's guard (one for every command) prints a `Vl2Error`'s message without a traceback; anything else
is a bug and is reported as one.
"""
from __future__ import annotations

from typing import ClassVar


class Vl2Error(Exception):
    """Base of every error vl2 reports to a user (no traceback at the CLI level)."""

    #: the record's error code; None for an error that ends the run instead of failing one file
    code: ClassVar[str | None] = None
    #: whether a later run may succeed where this one failed (retried on resume)
    transient: ClassVar[bool] = False


class FileError(Vl2Error):
    """One file (or segment) failed; it becomes that file's error record and the run goes on."""

    code: ClassVar[str | None] = "media_error"

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def as_record_error(self) -> dict[str, str]:
        """The record's `error` object (`attempt` is added by the writer's caller on resume)."""
        return record_error(str(self.code), str(self))


class MediaError(FileError):
    """A media file cannot be decoded into model inputs (any decoding failure without its own class)."""

    code = "media_error"


class EmptyFileError(MediaError):
    """The file has 0 bytes, or its audio stream holds no samples."""

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
    """Pictures were required but the file has none."""

    code = "no_video_stream"


class NoAudioStreamError(MediaError):
    """Sound was required but the file has none."""

    code = "no_audio_stream"


class UnreadableFileError(MediaError):
    """The file vanished after it was listed, or this user may not read it."""

    code = "unreadable_file"


class DecodeTimeoutError(MediaError):
    """The decoder worker did not finish in time and was killed."""

    code = "decode_timeout"
    transient = True


class DecoderCrashError(MediaError):
    """The decoder worker process died (segfault, abort, out of memory)."""

    code = "decoder_crash"
    transient = True


class ModelError(FileError):
    """The model failed on this file (e.g. out of GPU memory at batch size 1)."""

    code = "model_error"
    transient = True


class WorkerLostError(FileError):
    """The Ray actor working on this file's batch died every time the batch was tried."""

    code = "worker_lost"
    transient = True


def _file_error_classes() -> list[type[FileError]]:
    found, todo = [], [FileError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


#: Every code a record's `error.code` can hold (the record schema's enum is this set).
RECORD_ERROR_CODES: frozenset[str] = frozenset(cls.code for cls in _file_error_classes() if cls.code)
#: Failures that may not happen again on another run (a loaded machine, a GPU shared at the time).
TRANSIENT_ERROR_CODES: frozenset[str] = frozenset(cls.code for cls in _file_error_classes()
                                                  if cls.code and cls.transient)


def record_error(code: str, message: str) -> dict[str, str]:
    """A record's `error` object. `code` must be one of RECORD_ERROR_CODES (a typo would otherwise
    reach users' files and the schema would reject it)."""
    if code not in RECORD_ERROR_CODES:
        raise ValueError(f"unknown record error code {code!r}; errors.py defines {sorted(RECORD_ERROR_CODES)}")
    return {"code": code, "message": message}


def is_transient(code: str | None) -> bool:
    """Whether a record's error code is retried by a later run."""
    return code in TRANSIENT_ERROR_CODES


class CheckpointError(Vl2Error):
    """A checkpoint folder or hub id cannot be used: missing files, corrupt shards, bad config."""


class UnsupportedModelError(CheckpointError):
    """The config names a model_type or projector type vl2 does not know."""


class HubResolutionError(CheckpointError):
    """A hub id could not be resolved (not cached while offline, no such repo)."""


class TransformersApiError(Vl2Error):
    """The installed transformers names something differently from every release vl2 knows."""


class InputError(Vl2Error):
    """A path given as input does not exist or cannot be used as input."""


class ExportError(Vl2Error):
    """An ONNX or TensorRT export failed or did not pass its parity gate."""


class EngineMismatchError(Vl2Error):
    """A TensorRT engine's manifest does not match this model, GPU or TensorRT version."""


class EngineUnavailableError(Vl2Error):
    """The run engine asked for is not installed here."""


class ShardError(Vl2Error):
    """A shard setting, the Slurm array variables or a shard folder that cannot be used."""


class OutputLockedError(Vl2Error):
    """Another vl2 run holds the lock on this output file."""


class OutputReplacedError(Vl2Error):
    """The output's path no longer names the file the run is appending to (replaced or removed)."""


class ConfigFileError(Vl2Error):
    """The YAML settings file is unreadable or has unknown keys."""
