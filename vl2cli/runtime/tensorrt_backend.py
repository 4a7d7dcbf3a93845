"""The `tensorrt` encoder backend: engines from `vl2 export` (full TensorRT or TensorRT-RTX), run on this GPU.

All TensorRT calls live in `vl2cli.exporting.tensorrt_build`; this module only wires engines into
the encoder interface. A component without a matching engine stays on torch (logged), and an input
whose per-item shape differs from the engine's (another frame count) goes to torch for that call.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from .backend import TorchEncoders
from .routed_backend import RoutedEncoders

log = logging.getLogger(__name__)

BACKEND_NAME = "tensorrt"


class ShapeGuardedRunner:
    """An engine for one per-item shape; other shapes fall back to the torch path."""

    def __init__(self, runner, item_shape: tuple[int, ...], fallback) -> None:
        self.runner = runner
        self.item_shape = tuple(item_shape)
        self.fallback = fallback
        self._warned = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) == self.item_shape:
            return self.runner(x)
        if not self._warned:
            log.info("input shape %s is not the engine's %s; running this call with torch", tuple(x.shape[1:]), self.item_shape)
            self._warned = True
        return self.fallback(x)


class TensorRTEncoders(RoutedEncoders):
    """Components with a matching engine run in TensorRT; the others stay on torch."""

    @classmethod
    def from_runners(
        cls,
        torch_encoders: TorchEncoders,
        runners: dict[str, tuple[object, tuple[int, ...]]],
        *,
        details: dict[str, str],
        torch_components: Iterable[tuple[str, str]] = (),
    ) -> "TensorRTEncoders":
        """`runners`: component -> (deserialized engine runner, per-item input shape)."""
        from ..exporting.names import AUDIO_ENCODER, CONNECTOR, VISION_TOWER

        fallbacks = {
            VISION_TOWER: torch_encoders.encode_frames,
            CONNECTOR: torch_encoders.connect,
            AUDIO_ENCODER: torch_encoders.encode_audio,
        }
        guarded = {
            name: ShapeGuardedRunner(runner, item_shape, fallbacks[name]) for name, (runner, item_shape) in runners.items()
        }
        return cls(BACKEND_NAME, torch_encoders, guarded, {**dict(torch_components), **details})
