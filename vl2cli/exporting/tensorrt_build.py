"""Every TensorRT call vl2 makes: engine building, precision pinning, timing cache, execution.

`tensorrt` is imported only inside functions, so this module imports (and its pure parts are
tested) where TensorRT is absent. Written against the TensorRT 10 Python API (explicit batch
networks, `execute_async_v3`, named I/O tensors).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import EngineMismatchError, ExportError
from .manifest import BatchProfile

log = logging.getLogger(__name__)

#: Builder scratch memory; large enough for so400m attention tactics at batch 64.
WORKSPACE_BYTES = 8 << 30
TIMING_CACHE_SUFFIX = ".timing-cache"
#: Layers computed in fp32 inside fp16/bf16 engines: LayerNorm and softmax overflow or lose the
#: small differences that matter (TensorRT #2781, #3657; TensorRT-Model-Connect #812).
PINNED_FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX")
#: Unary ops pinned likewise: exact GELU's Erf (STC MLP, BEATs) drifts in fp16.
PINNED_FP32_UNARY_OPS = ("ERF",)
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class PrecisionPlan:
    """Builder flags and fp32 pins for one requested precision (names of TensorRT enums)."""

    precision: str
    builder_flags: tuple[str, ...]
    pinned_layer_types: tuple[str, ...]
    pinned_unary_ops: tuple[str, ...]


def precision_plan(precision: str) -> PrecisionPlan:
    """fp32: no flags. fp16/bf16: enable the type, obey per-layer constraints, pin norms/softmax/Erf."""
    if precision == "fp32":
        return PrecisionPlan("fp32", (), (), ())
    if precision in ("fp16", "bf16"):
        flag = precision.upper()
        return PrecisionPlan(precision, (flag, "OBEY_PRECISION_CONSTRAINTS"), PINNED_FP32_LAYER_TYPES, PINNED_FP32_UNARY_OPS)
    raise ExportError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")


def tensorrt_version() -> str | None:
    """The importable TensorRT's version, or None where it is not installed."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


def gpu_compute_capability(device: torch.device | str | None = None) -> str | None:
    """'9.0' style compute capability of the GPU, or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def gpu_name(device: torch.device | str | None = None) -> str | None:
    return torch.cuda.get_device_name(device) if torch.cuda.is_available() else None


def timing_cache_path(engine_root: Path, compute_capability: str, trt_version: str) -> Path:
    """One timing cache per GPU architecture and TensorRT version, shared by all models."""
    return engine_root / f"sm{compute_capability.replace('.', '')}-trt{trt_version}{TIMING_CACHE_SUFFIX}"


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ExportError("TensorRT is not installed here; only ONNX graphs can be exported.") from exc
    return trt


def _pin_layers(trt, network, plan: PrecisionPlan) -> int:
    """Force pinned layer kinds to compute and output fp32; returns how many were pinned."""
    layer_types = {getattr(trt.LayerType, name) for name in plan.pinned_layer_types}
    unary_ops = {getattr(trt.UnaryOperation, name) for name in plan.pinned_unary_ops}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        wanted = layer.type in layer_types
        if not wanted and layer.type == trt.LayerType.UNARY and unary_ops:
            layer.__class__ = trt.IUnaryLayer  # the Python binding's way to reach the subclass API
            wanted = layer.op in unary_ops
        if wanted:
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            pinned += 1
    return pinned


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    *,
    input_name: str,
    item_shape: tuple[int, ...],
    profile: BatchProfile,
    precision: str,
    timing_cache: Path,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> Path:
    """Parse the ONNX graph, build a plan with a batch profile and precision, write plan and cache."""
    trt = _import_tensorrt()
    plan = precision_plan(precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path.name}: TensorRT cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    pinned = _pin_layers(trt, network, plan)
    log.info("%s: %s engine, %d layers pinned to fp32", onnx_path.stem, precision, pinned)
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(
        input_name, (profile.min, *item_shape), (profile.opt, *item_shape), (profile.max, *item_shape)
    )
    config.add_optimization_profile(optimization_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path.name}: TensorRT failed to build the engine (see the log above).")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(memoryview(serialized)))
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return plan_path


def _torch_dtype(trt, dtype) -> torch.dtype:
    mapping = {trt.float32: torch.float32, trt.float16: torch.float16}
    if hasattr(trt, "bfloat16"):
        mapping[trt.bfloat16] = torch.bfloat16
    return mapping[dtype]


class EngineRunner:
    """One deserialized plan with its execution context; calls it on CUDA tensors in chunks of max batch."""

    def __init__(self, plan_path: Path, *, max_batch: int, device: torch.device | str = "cuda") -> None:
        trt = _import_tensorrt()
        self.device = torch.device(device)
        self.max_batch = max_batch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(
                f"{plan_path}: TensorRT could not load this engine (another TensorRT version or GPU?); "
                "run `vl2 export` again."
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineMismatchError(f"{plan_path}: expected one input and one output, found {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        results = []
        stream = torch.cuda.current_stream(self.device)
        for chunk in x.split(self.max_batch):
            chunk = chunk.to(self.device, self.input_dtype).contiguous()
            self.context.set_input_shape(self.input_name, tuple(chunk.shape))
            output = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype, device=self.device)
            self.context.set_tensor_address(self.input_name, chunk.data_ptr())
            self.context.set_tensor_address(self.output_name, output.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for input shape {tuple(chunk.shape)}")
            results.append(output)
        stream.synchronize()
        return torch.cat(results)
