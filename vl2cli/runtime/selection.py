"""Choosing the encoder backend for a loaded model (`--encoder-backend`)."""
from __future__ import annotations

import logging

from ..errors import Vl2Error
from .backend import EncoderBackend, TorchEncoders

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "torch")


def choose_encoder_backend(torch_encoders: TorchEncoders, requested: str, **_context) -> EncoderBackend:
    """The backend to run the encoders with; `auto` falls back to torch when nothing faster exists."""
    if requested not in BACKEND_CHOICES:
        raise Vl2Error(f"--encoder-backend {requested!r}: choose one of {', '.join(BACKEND_CHOICES)}.")
    log.info("encoder backend: torch (%s)", "requested" if requested == "torch" else "no exported encoders")
    return torch_encoders
