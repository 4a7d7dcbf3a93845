"""The encoders of a loaded model: one interface, and the PyTorch modules behind it.

The LLM always runs through transformers; only the vision tower, the video connector and the audio
encoder+projector are swappable, because those are what `vl2 export` turns into ONNX/TensorRT. The
interface and its torch implementation live in the model core, so a model always has working
encoders; choosing a faster backend (`vl2cli.runtime.selection`) is a step above it.

How the torch encoders are made fast on a GPU (issue 9; figures in docs/benchmarks.md):
* attention through `scaled_dot_product_attention` (the modules' own default, see vision_tower.py and
  beats.py);
* `torch.compile` of each component's forward, on by default on CUDA and off on the CPU
  (`compile_encoders`). The batch axis is marked dynamic, so one compilation serves every batch size;
  the first call pays the compilation (logged with its duration), later calls reuse it. A component
  whose compilation fails runs eagerly from then on, with a warning;
* the STC connector's convolutions in channels-last layout on CUDA (its LayerNorm2d then permutes
  for free, and cuDNN runs 1x1 convolutions as plain matrix products);
* tower calls of `frames_per_tower_call` frames: 64 on the CPU; on a GPU as many as a quarter of the
  memory left after loading the weights holds (a multiple of 64, at most 1024). It is derived from
  the device's total memory and the weights, not from momentary free memory, so the same model on
  the same GPU always chunks alike (chunk sizes can change low-order bits of the results).
* cuDNN's autotuner (`cudnn_benchmark`) is off by default: it may pick different algorithms from
  run to run, and vl2 promises the same output for the same input and settings.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn

from .connector import STCConnector

log = logging.getLogger(__name__)

#: Frames per vision-tower call on the CPU, and the fewest on a GPU: bounds activation memory for
#: long batches of videos.
DEFAULT_FRAMES_PER_TOWER_CALL = 64
#: The most frames per tower call on a GPU. A call of 64 SigLIP frames already holds 46k tokens,
#: enough to fill an H100; larger calls only save per-call launch overhead, which stops mattering
#: long before this.
MAX_FRAMES_PER_TOWER_CALL = 1024
#: Share of the GPU memory left after loading the weights that one tower call's activations may
#: take; the rest is for the connector's and the LLM's activations, the KV cache and allocator slack.
TOWER_MEMORY_SHARE = 0.25
#: Tensor dimension that varies from call to call (frames, videos or clips); marked dynamic so one
#: compiled graph serves every batch size.
BATCH_DIM = 0


class EncoderBackend(Protocol):
    """Encoders of one loaded model. All methods take and return tensors on the model's device."""

    name: str

    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels -> (N, P, D) vision features (selected layer, CLS handled)."""

    def connect(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T, P, D) vision features -> (B, M, C) LLM tokens (the video connector)."""

    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, 2998, 128) raw kaldi fbank -> (B, 1496, C) LLM tokens (BEATs, then the audio projector)."""


# ----------------------------------------------------------------------------- settings


def resolve_compile(compile_encoders: bool | None, device: torch.device) -> bool:
    """`None` means: compile on CUDA (where it pays), not on the CPU (slow to compile, little gain)."""
    if compile_encoders is None:
        return device.type == "cuda"
    return bool(compile_encoders)


def frames_for_budget(budget_bytes: float, bytes_per_frame: int) -> int:
    """Frames per tower call whose activations fit `budget_bytes`: a multiple of the CPU default,
    between it and MAX_FRAMES_PER_TOWER_CALL."""
    if bytes_per_frame <= 0:
        raise ValueError("bytes_per_frame must be positive")
    fitting = int(max(budget_bytes, 0) // bytes_per_frame)
    rounded = fitting // DEFAULT_FRAMES_PER_TOWER_CALL * DEFAULT_FRAMES_PER_TOWER_CALL
    return max(DEFAULT_FRAMES_PER_TOWER_CALL, min(MAX_FRAMES_PER_TOWER_CALL, rounded))


def derive_frames_per_tower_call(vision_tower: nn.Module, device: torch.device, dtype: torch.dtype) -> int:
    """The default chunk for tower calls on `device` (see the module docstring); call it after the
    weights are on the device, since what they occupy is not available to activations."""
    if device.type != "cuda":
        return DEFAULT_FRAMES_PER_TOWER_CALL
    total = torch.cuda.get_device_properties(device).total_memory
    left = total - torch.cuda.memory_allocated(device)
    return frames_for_budget(left * TOWER_MEMORY_SHARE, vision_tower.activation_bytes_per_frame(dtype))


@contextmanager
def cudnn_autotuner(enabled: bool) -> Iterator[None]:
    """cuDNN's autotuner on for the duration only, so the process-wide setting is left as it was."""
    if not enabled:
        yield
        return
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


# ----------------------------------------------------------------------------- one component


Compiler = Callable[[Callable[[torch.Tensor], torch.Tensor]], Callable[[torch.Tensor], torch.Tensor]]


class EncoderCall:
    """One component's forward, run eagerly or through `torch.compile` (compiled on its first call).

    A compiled call that raises while the eager forward succeeds on the same input is a compiler
    failure: it is logged and the component runs eagerly from then on. An error the eager forward
    raises too (a bad input) is the caller's, and is raised as such; compilation stays on.
    """

    def __init__(
        self,
        what: str,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        use_compile: bool,
        cudnn_benchmark: bool = False,
        compiler: Compiler | None = None,
    ) -> None:
        self.what = what
        self.forward = forward
        self.use_compile = use_compile
        self.cudnn_benchmark = cudnn_benchmark
        self._compiler: Compiler = compiler if compiler is not None else torch.compile
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.compile_failed = False
        #: Wall time of the first compiled call (compilation included), once it has happened.
        self.first_call_seconds: float | None = None

    @property
    def compiled(self) -> bool:
        """Whether calls now go through the compiled forward."""
        return self.use_compile and not self.compile_failed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with cudnn_autotuner(self.cudnn_benchmark and x.is_cuda):
            if not self.compiled:
                return self.forward(x)
            return self._call_compiled(x)

    def _call_compiled(self, x: torch.Tensor) -> torch.Tensor:
        import torch._dynamo  # only where something is compiled: it is slow to import

        first = self._compiled is None
        if first:
            log.info("compiling the %s with torch.compile (its first call takes longer)", self.what)
            self._compiled = self._compiler(self.forward)
            start = time.perf_counter()
        torch._dynamo.maybe_mark_dynamic(x, BATCH_DIM)
        try:
            out = self._compiled(x)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # compilers raise many unrelated types; tell them from input errors below
            out = self.forward(x)  # raises for errors that are the input's, not the compiler's
            self.compile_failed = True
            log.warning("torch.compile failed for the %s (%s: %s); it runs eagerly from now on",
                        self.what, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return out
        if first:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            self.first_call_seconds = time.perf_counter() - start
            log.info("%s: first compiled call took %.1f s", self.what, self.first_call_seconds)
        return out


# ----------------------------------------------------------------------------- the backend


def _device_of(*modules: nn.Module | None) -> tuple[torch.device, torch.dtype]:
    for module in modules:
        if module is None:
            continue
        for parameter in module.parameters():
            return parameter.device, parameter.dtype
    return torch.device("cpu"), torch.float32


class TorchEncoders:
    """The reference backend: the PyTorch modules themselves, compiled and chunked where that pays.

    `compile_encoders`: None (default) compiles on CUDA only; True/False force it. `frames_per_tower_call`:
    None derives it from the device (see the module docstring). Build it after the modules are on
    their device and in their dtype: the settings are derived from where the weights are.
    """

    name = "torch"

    def __init__(
        self,
        vision_tower: nn.Module | None,
        connector: nn.Module | None,
        audio_tower: nn.Module | None,
        audio_projector: nn.Module | None,
        *,
        pool_frames: bool,
        compile_encoders: bool | None = None,
        frames_per_tower_call: int | None = None,
        cudnn_benchmark: bool = False,
        compiler: Compiler | None = None,
    ) -> None:
        self.vision_tower = vision_tower
        self.connector = connector
        self.audio_tower = audio_tower
        self.audio_projector = audio_projector
        self.pool_frames = pool_frames
        self.device, self.dtype = _device_of(vision_tower, connector, audio_tower, audio_projector)
        if frames_per_tower_call is None:
            frames_per_tower_call = (
                derive_frames_per_tower_call(vision_tower, self.device, self.dtype)
                if vision_tower is not None else DEFAULT_FRAMES_PER_TOWER_CALL
            )
        if frames_per_tower_call < 1:
            raise ValueError(f"frames_per_tower_call must be at least 1, got {frames_per_tower_call}")
        self.frames_per_tower_call = int(frames_per_tower_call)
        if isinstance(connector, STCConnector) and self.device.type == "cuda":
            connector.set_channels_last(True)
        self._compiler = compiler
        self._cudnn_benchmark = cudnn_benchmark
        self._compile = resolve_compile(compile_encoders, self.device)
        self._build_calls()

    def _build_calls(self) -> None:
        settings = {"use_compile": self._compile, "cudnn_benchmark": self._cudnn_benchmark, "compiler": self._compiler}
        self._tower_call = EncoderCall("vision tower", self._tower_forward, **settings)
        self._connect_call = EncoderCall("video connector", self._connect_forward, **settings)
        self._audio_call = EncoderCall("audio encoder", self._audio_forward, **settings)

    @property
    def compile_encoders(self) -> bool:
        """Whether the components run through torch.compile. Settable (before or between calls)."""
        return self._compile

    @compile_encoders.setter
    def compile_encoders(self, enabled: bool | None) -> None:
        self._compile = resolve_compile(enabled, self.device)
        self._build_calls()

    def calls(self) -> dict[str, EncoderCall]:
        """Each component's call wrapper (compile state, first-call time), by component name."""
        return {"vision_tower": self._tower_call, "connector": self._connect_call, "audio_encoder": self._audio_call}

    def describe(self) -> str:
        """One line for the log: how the torch encoders run."""
        compiled = "torch.compile" if self._compile else "eager"
        return f"{compiled}, {self.frames_per_tower_call} frames per tower call, on {self.device}"

    # The three forwards below are what gets compiled: plain module calls, nothing chunked.
    def _tower_forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_tower(pixel_values)

    def _connect_forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.pool_frames:
            features = features.mean(dim=1)
        return self.connector(features)

    def _audio_forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.audio_projector(self.audio_tower(fbank))

    @torch.inference_mode()
    def encode_frames(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Tower features for any number of frames, `frames_per_tower_call` at a time."""
        chunks = pixel_values.split(self.frames_per_tower_call)
        if len(chunks) == 1:
            return self._tower_call(pixel_values)
        return torch.cat([self._tower_call(chunk) for chunk in chunks])

    @torch.inference_mode()
    def connect(self, features: torch.Tensor) -> torch.Tensor:
        return self._connect_call(features)

    @torch.inference_mode()
    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        return self._audio_call(fbank)
