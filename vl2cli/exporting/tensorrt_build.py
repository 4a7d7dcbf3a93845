"""Every TensorRT call vl2 makes, over both NVIDIA products: engine building, precision, execution.

Two products share one Python API (TensorRT 10 style: explicit batch, named I/O tensors,
`execute_async_v3`) and differ where it matters here:

* **full TensorRT** (`import tensorrt`; NVIDIA's package index or an NGC container): builds on the
  GPU that will run the engine, for that GPU's compute capability only, from fp32 graphs with
  precision builder flags (FP16/BF16) and fp32 pins on the layers that drift;
* **TensorRT-RTX** (`import tensorrt_rtx`; wheels on PyPI, the `tensorrt-rtx` extra): builds ahead
  of time, with or without a GPU, for a list of target compute capabilities (RTX-class GPUs:
  Turing to Blackwell, no Hopper), and is strongly typed: no precision flags, every tensor has the
  dtype the ONNX graph gives it, so an fp16 engine is built from an fp16 graph
  (`onnx_precision.reduce_precision`).

Both are imported only inside functions, so this module imports (and its pure parts are tested)
where neither is installed.
"""
from __future__ import annotations

import importlib
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import EngineMismatchError, ExportError
from .manifest import BatchProfile

log = logging.getLogger(__name__)

#: Builder scratch memory; large enough for so400m attention tactics at batch 64.
WORKSPACE_BYTES = 8 << 30
TIMING_CACHE_SUFFIX = ".timing-cache"
#: Layers computed in fp32 inside fp16/bf16 engines of full TensorRT: LayerNorm and softmax overflow
#: or lose the small differences that matter (TensorRT #2781, #3657; TensorRT-Model-Connect #812).
PINNED_FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX")
#: Unary ops pinned likewise: exact GELU's Erf (STC MLP, BEATs) drifts in fp16.
PINNED_FP32_UNARY_OPS = ("ERF",)
PRECISIONS = ("fp32", "fp16", "bf16")

TENSORRT = "tensorrt"
TENSORRT_RTX = "tensorrt-rtx"
#: Import names per product, first found wins. The `tensorrt-rtx` extra installs only the two
#: wheels (`tensorrt_rtx_bindings` + its libraries); `tensorrt_rtx` is the name NVIDIA's own
#: source meta-package adds on top (a re-export of the bindings).
PRODUCT_MODULES = {TENSORRT: ("tensorrt",), TENSORRT_RTX: ("tensorrt_rtx", "tensorrt_rtx_bindings")}
PRODUCT_TITLES = {TENSORRT: "TensorRT", TENSORRT_RTX: "TensorRT-RTX"}
#: Precisions TensorRT-RTX engines can be built in by vl2: the graph carries the dtype, and ONNX
#: opset 17 (what vl2 exports, see onnx_export.py) has no bf16 Conv, so no bf16 graph of these encoders.
RTX_PRECISIONS = ("fp32", "fp16")
#: Targets TensorRT-RTX cannot build fp32 engines of these encoders for. Its own build error for
#: Turing (SM75): "FP32 GEMM is not supported", "FP32 3D convolution is not supported".
RTX_NO_FP32 = ("7.5",)
#: What to tell a user whose GPU no TensorRT-RTX engine can run on (Hopper: H100/H200 are 9.0).
FULL_TENSORRT_HINT = (
    "use full TensorRT (pip install tensorrt from NVIDIA's index, pypi.nvidia.com, or an NGC container) "
    "to build engines on this GPU, or run the encoders with onnxruntime or torch"
)
_SM = re.compile(r"^SM(\d+)$")
#: The builder's own listing of the engine's layers, printed at verbose level with detailed profiling.
_LAYER_LISTING_PREFIX = "Layers:"
_LAYER_LINE = re.compile(r"^Name: (?P<name>.*?), LayerType: (?P<type>[^,]*),")
#: Messages the builder logs as errors on a machine without a CUDA driver although the build goes on.
_NO_DRIVER_NOISE = ("cudaError 35", "CUDA driver version is insufficient")


@dataclass(frozen=True)
class PrecisionPlan:
    """Builder flags and fp32 pins for one requested precision (names of TensorRT enums)."""

    precision: str
    builder_flags: tuple[str, ...]
    pinned_layer_types: tuple[str, ...]
    pinned_unary_ops: tuple[str, ...]


def precision_plan(precision: str, product: str = TENSORRT) -> PrecisionPlan:
    """fp32: no flags. fp16/bf16: enable the type, obey per-layer constraints, pin norms/softmax/Erf.

    TensorRT-RTX: never any flag or pin (strongly typed; the graph's dtypes decide and the fp32
    islands are casts in the graph); bf16 is refused because no bf16 graph of these encoders exists.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if product == TENSORRT_RTX:
        if precision not in RTX_PRECISIONS:
            raise ExportError(
                f"precision {precision!r} cannot be built with TensorRT-RTX: it takes precision from the ONNX graph's "
                f"dtypes, and an opset-17 graph cannot hold bf16 convolutions; choose {' or '.join(RTX_PRECISIONS)}, "
                "or build bf16 engines with full TensorRT."
            )
        return PrecisionPlan(precision, (), (), ())
    if precision == "fp32":
        return PrecisionPlan("fp32", (), (), ())
    return PrecisionPlan(precision, (precision.upper(), "OBEY_PRECISION_CONSTRAINTS"), PINNED_FP32_LAYER_TYPES, PINNED_FP32_UNARY_OPS)


# ------------------------------------------------------------------ products
@dataclass(frozen=True)
class EngineProduct:
    """One installed TensorRT product: its name (`tensorrt` / `tensorrt-rtx`) and version."""

    name: str
    version: str

    @property
    def title(self) -> str:
        return PRODUCT_TITLES[self.name]

    @property
    def strongly_typed(self) -> bool:
        return self.name == TENSORRT_RTX

    @property
    def builds_ahead_of_time(self) -> bool:
        """Builds for listed target GPUs without one (RTX); full TensorRT builds on its own GPU."""
        return self.name == TENSORRT_RTX

    def module(self):
        return import_product(self.name)

    def describe(self) -> str:
        return f"{self.title} {self.version}"


def import_product(name: str):
    """The Python module of one product; ExportError when it is not installed."""
    for module_name in PRODUCT_MODULES[name]:
        try:
            return importlib.import_module(module_name)
        except ImportError:
            continue
    extra = " (pip extra vl2[tensorrt-rtx])" if name == TENSORRT_RTX else " (from NVIDIA's package index)"
    raise ExportError(f"{PRODUCT_TITLES[name]} is not installed here{extra}.")


def installed_product(name: str) -> EngineProduct | None:
    try:
        module = import_product(name)
    except ExportError:
        return None
    return EngineProduct(name, str(module.__version__))


def installed_products() -> dict[str, EngineProduct]:
    """Every importable product by name, full TensorRT first."""
    found = {}
    for name in PRODUCT_MODULES:
        product = installed_product(name)
        if product is not None:
            found[name] = product
    return found


def tensorrt_version() -> str | None:
    """The importable full TensorRT's version, or None where it is not installed."""
    product = installed_product(TENSORRT)
    return product.version if product else None


def rtx_compute_capabilities(module=None) -> tuple[str, ...]:
    """Compute capabilities TensorRT-RTX can build for ('7.5', '8.9', '12.0', ...), from its own enum."""
    module = module or import_product(TENSORRT_RTX)
    found = []
    for name in module.ComputeCapability.__members__:
        match = _SM.match(name)
        if match:
            digits = match.group(1)
            found.append(f"{digits[:-1]}.{digits[-1]}")
    return tuple(sorted(found, key=lambda cc: tuple(int(p) for p in cc.split("."))))


def _rtx_enum(module, compute_capability: str):
    return getattr(module.ComputeCapability, "SM" + compute_capability.replace(".", ""))


@dataclass(frozen=True)
class BuildChoice:
    """Which product builds the engines here, and for which GPUs."""

    product: EngineProduct
    targets: tuple[str, ...]
    #: The GPU here, where it is one of the targets (the engines can be checked against PyTorch).
    local_gpu: str | None


def choose_builder(gpu_capability: str | None, precision: str, targets: tuple[str, ...] | None = None) -> tuple[BuildChoice | None, str | None]:
    """(choice, None), or (None, why no engine can be built here).

    Full TensorRT where it is installed and a GPU is here (it builds for that GPU); else TensorRT-RTX
    ahead of time for `targets` (default: every compute capability it supports), GPU or not.
    """
    products = installed_products()
    full = products.get(TENSORRT)
    if full is not None and gpu_capability is not None and (not targets or tuple(targets) == (gpu_capability,)):
        precision_plan(precision, TENSORRT)
        return BuildChoice(full, (gpu_capability,), gpu_capability), None
    rtx = products.get(TENSORRT_RTX)
    if rtx is None:
        if full is not None and gpu_capability is not None:
            return None, (f"full TensorRT builds only for the GPU here (compute capability {gpu_capability}), not for "
                          f"{', '.join(targets or ())}; TensorRT-RTX (vl2[tensorrt-rtx]) builds for other GPUs")
        if full is not None:
            return None, ("TensorRT is installed but no CUDA GPU is usable (full TensorRT builds on the GPU that "
                          "will run the engine); TensorRT-RTX (vl2[tensorrt-rtx]) builds ahead of time without one")
        return None, "neither TensorRT nor TensorRT-RTX is installed (TensorRT-RTX: pip extra vl2[tensorrt-rtx])"
    try:
        precision_plan(precision, TENSORRT_RTX)
    except ExportError as exc:
        return None, str(exc).rstrip(".")
    supported = rtx_compute_capabilities()
    wanted = tuple(targets) if targets else rtx_default_targets(precision, supported)
    unsupported = [cc for cc in wanted if cc not in supported]
    if unsupported:
        return None, (f"TensorRT-RTX {rtx.version} cannot build for compute capability {', '.join(unsupported)} "
                      f"(it supports {', '.join(supported)}); there, {FULL_TENSORRT_HINT}")
    no_fp32 = [cc for cc in wanted if cc in RTX_NO_FP32] if precision == "fp32" else []
    if no_fp32:
        return None, (f"TensorRT-RTX cannot build fp32 engines for compute capability {', '.join(no_fp32)} "
                      "(Turing: no fp32 GEMM or 3D convolution); build fp16 for it")
    return BuildChoice(rtx, wanted, gpu_capability if gpu_capability in wanted else None), None


def rtx_default_targets(precision: str, supported: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Every compute capability TensorRT-RTX supports, less those it cannot build `precision` for."""
    supported = supported or rtx_compute_capabilities()
    return tuple(cc for cc in supported if not (precision == "fp32" and cc in RTX_NO_FP32))


def gpu_compute_capability(device: torch.device | str | None = None) -> str | None:
    """'9.0' style compute capability of the GPU, or None without CUDA."""
    if not torch.cuda.is_available():
        return None
    if device is not None and torch.device(device).type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def gpu_name(device: torch.device | str | None = None) -> str | None:
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return None
    return torch.cuda.get_device_name(device)


def timing_cache_path(engine_root: Path, compute_capability: str, trt_version: str) -> Path:
    """One timing cache per GPU architecture and TensorRT version, shared by all models (full TensorRT)."""
    return engine_root / f"sm{compute_capability.replace('.', '')}-trt{trt_version}{TIMING_CACHE_SUFFIX}"


# ------------------------------------------------------------------ building
def _make_logger(trt, *, gpu_here: bool):
    """A TensorRT logger that forwards warnings and errors to `logging` and keeps the layer listing."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            super().__init__()
            self.layer_listing: str | None = None
            self.errors: list[str] = []

        def log(self, severity, message):  # called by TensorRT, from its own threads too
            if message.startswith(_LAYER_LISTING_PREFIX):
                self.layer_listing = message
                return
            if severity <= trt.ILogger.Severity.ERROR:
                if not gpu_here and any(noise in message for noise in _NO_DRIVER_NOISE):
                    log.debug("TensorRT (no CUDA driver here, expected while building ahead of time): %s", message)
                    return
                self.errors.append(message)
                log.error("TensorRT: %s", message)
            elif severity <= trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", message)
            else:
                log.debug("TensorRT: %s", message)

    return _Logger()  # receives every severity; filtered above


def parse_layer_listing(text: str | None) -> list[tuple[str, str]]:
    """(name, layer type) of every engine layer in the builder's or inspector's one-line listing."""
    layers = []
    for line in (text or "").splitlines():
        match = _LAYER_LINE.match(line.strip())
        if match:
            layers.append((match.group("name"), match.group("type")))
    return layers


@dataclass(frozen=True)
class BuiltEngine:
    """What one build wrote, and what is known about it without running it."""

    plan_path: Path
    size_bytes: int
    network_layers: int
    #: The builder's listing of the engine's layers (one line each, TensorRT's own format).
    layer_listing: str

    @property
    def layer_types(self) -> dict[str, int]:
        return dict(sorted(Counter(kind for _, kind in parse_layer_listing(self.layer_listing)).items()))


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
    timing_cache: Path | None = None,
    product: EngineProduct | None = None,
    targets: tuple[str, ...] = (),
    workspace_bytes: int = WORKSPACE_BYTES,
) -> BuiltEngine:
    """Parse the ONNX graph, build a plan with a batch profile, write the plan (and timing cache).

    Full TensorRT (the default product): precision by builder flags and fp32 pins, for the GPU here.
    TensorRT-RTX: a strongly typed network (the graph must already be in `precision`), built for the
    compute capabilities in `targets`, no GPU needed.
    """
    if product is None:
        product = installed_product(TENSORRT)
        if product is None:
            raise ExportError("TensorRT is not installed here; only ONNX graphs can be exported.")
    trt = product.module()
    plan = precision_plan(precision, product.name)
    logger = _make_logger(trt, gpu_here=torch.cuda.is_available())
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if product.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path.name}: {product.title} cannot parse the graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the layer listing names layers and types
    if product.builds_ahead_of_time:
        if not targets:
            raise ExportError(f"{product.title} needs target compute capabilities to build for.")
        config.num_compute_capabilities = len(targets)
        for index, cc in enumerate(targets):
            if not config.set_compute_capability(_rtx_enum(trt, cc), index):
                raise ExportError(f"{product.title} refuses target compute capability {cc}.")
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    pinned = _pin_layers(trt, network, plan) if plan.pinned_layer_types or plan.pinned_unary_ops else 0
    how = "strongly typed: dtypes from the graph" if product.strongly_typed else f"{pinned} layers pinned to fp32"
    log.info("%s: %s %s engine for %s (%s)", onnx_path.name.split(".")[0], product.describe(), precision,
             ", ".join(f"sm{cc.replace('.', '')}" for cc in targets) or "this GPU", how)
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(
        input_name, (profile.min, *item_shape), (profile.opt, *item_shape), (profile.max, *item_shape)
    )
    config.add_optimization_profile(optimization_profile)
    use_cache = timing_cache is not None and not product.builds_ahead_of_time
    if use_cache:
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = f": {'; '.join(logger.errors)}" if logger.errors else " (see the log above)"
        raise ExportError(f"{onnx_path.name}: {product.title} failed to build the engine{detail}")
    data = bytes(memoryview(serialized))
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(data)
    if use_cache:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return BuiltEngine(plan_path, len(data), network.num_layers, logger.layer_listing or "")


# ------------------------------------------------------------------ running
def _torch_dtype(trt, dtype) -> torch.dtype:
    mapping = {trt.float32: torch.float32, trt.float16: torch.float16}
    if hasattr(trt, "bfloat16"):
        mapping[trt.bfloat16] = torch.bfloat16
    return mapping[dtype]


class EngineRunner:
    """One deserialized plan with its execution context; calls it on CUDA tensors in chunks of max batch."""

    def __init__(self, plan_path: Path, *, max_batch: int, device: torch.device | str = "cuda", product: str = TENSORRT) -> None:
        trt = import_product(product)
        self.trt = trt
        self.device = torch.device(device)
        self.max_batch = max_batch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(
                f"{plan_path}: {PRODUCT_TITLES[product]} could not load this engine (another version or GPU?); "
                "export it again."
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

    def layer_listing(self) -> str:
        """The engine inspector's one-line listing of the deserialized engine's layers."""
        inspector = self.engine.create_engine_inspector()
        return inspector.get_engine_information(self.trt.LayerInformationFormat.ONELINE)

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
