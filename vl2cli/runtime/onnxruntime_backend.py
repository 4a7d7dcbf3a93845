"""The `onnxruntime` encoder backend: exported ONNX graphs run in onnxruntime, CUDA or CPU provider.

The sessions themselves (providers asked for and really got) are `vl2cli.exporting.onnx_session`'s.
Graphs are fp32 (see docs/export.md); inputs are cast to fp32 and outputs back to the caller's dtype.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from ..exporting.onnx_session import OnnxSessionRunner, active_provider, create_session
from .backend import TorchEncoders
from .routed_backend import RoutedEncoders

BACKEND_NAME = "onnxruntime"


class OnnxRuntimeEncoders(RoutedEncoders):
    """Components with an export run in onnxruntime; the others stay on torch."""

    def __init__(self, torch_encoders: TorchEncoders, sessions: dict[str, object], details: dict[str, str]) -> None:
        runners = {name: OnnxSessionRunner(session) for name, session in sessions.items()}
        details = {**details, **{name: active_provider(s) for name, s in sessions.items()}}
        super().__init__(BACKEND_NAME, torch_encoders, runners, details)

    @classmethod
    def from_files(
        cls,
        torch_encoders: TorchEncoders,
        files: dict[str, Path],
        device: torch.device | str,
        *,
        torch_components: Iterable[tuple[str, str]] = (),
    ) -> "OnnxRuntimeEncoders":
        """Open one session per (already validated) graph; `torch_components` are (name, why) pairs."""
        sessions = {name: create_session(path, device) for name, path in files.items()}
        return cls(torch_encoders, sessions, dict(torch_components))
