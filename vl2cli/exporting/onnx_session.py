"""onnxruntime sessions for exported graphs: the provider asked for, the one really got, one-tensor calls.

Below both users: the export validates its graphs through these sessions, and the onnxruntime encoder
backend (`vl2cli.runtime.onnxruntime_backend`) runs them, as `tensorrt_build.EngineRunner` serves engines.
onnxruntime-gpu lists the CUDA provider even where CUDA cannot start and then silently runs on the CPU,
so the provider a session really got is read back from `session.get_providers()` and logged.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def requested_providers(device: torch.device | str) -> list[str]:
    """CUDA first for a model on a GPU (CPU as onnxruntime's own fallback), else the CPU only."""
    return [CUDA_PROVIDER, CPU_PROVIDER] if torch.device(device).type == "cuda" else [CPU_PROVIDER]


def create_session(path: Path, device: torch.device | str):
    """An InferenceSession for `path`, warning when a GPU was asked for but the CPU is what runs."""
    import onnxruntime as ort

    providers = requested_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if active_provider(session) != providers[0]:
        log.warning(
            "onnxruntime runs %s on %s although %s was requested (is onnxruntime-gpu installed and CUDA usable?)",
            path.name, active_provider(session), providers[0],
        )
    return session


def active_provider(session) -> str:
    """The provider that really runs the session's nodes first."""
    return session.get_providers()[0]


def cuda_provider_usable() -> bool:
    """Whether this onnxruntime build has the CUDA provider at all (not yet whether CUDA starts)."""
    import onnxruntime as ort

    return CUDA_PROVIDER in ort.get_available_providers() and torch.cuda.is_available()


class OnnxSessionRunner:
    """Calls one single-input, single-output session with torch tensors."""

    def __init__(self, session) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (output,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(output)
