"""The encoder interface as the runtime backends see it.

`EncoderBackend` and the torch reference `TorchEncoders` belong to the model core
(`vl2cli.model.encoders`), which must not import the runtime; they are re-exported here so the
onnxruntime and TensorRT backends, which wrap the torch encoders, keep one import path.
"""
from __future__ import annotations

from ..model.encoders import EncoderBackend, TorchEncoders

__all__ = ["EncoderBackend", "TorchEncoders"]
