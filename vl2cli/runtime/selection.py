"""Choosing the encoder backend for a loaded model (the `encoder_backend` setting).

`attach_encoder_backend(model, requested)` is the composition step `vl2cli.api.load_model` runs
after `VideoLlama2.from_pretrained`: the model core always comes with its torch encoders, and this
module (above it in the layers) swaps `model.encoders` for an exported backend where one fits.

`auto`: TensorRT when an engine folder's manifest matches this model, an installed TensorRT product
(full TensorRT or TensorRT-RTX) of the version that built it, and a GPU of one of the compute
capabilities it was built for, else onnxruntime when a matching ONNX export exists (and its provider suits the model's device),
else torch; the log says which and why. `tensorrt` / `onnxruntime` asked for explicitly but not
possible raise an error saying what to do. A stale or foreign file is refused, never loaded.
Exports are looked up in `export_dir` / `engine_dir` (default: see `vl2cli.exporting.locations`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import EngineMismatchError, Vl2Error
from .backend import EncoderBackend, TorchEncoders

if TYPE_CHECKING:
    from ..model.videollama2 import VideoLlama2

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "tensorrt")


def check_backend_name(requested: str) -> None:
    """Raise a user error for a name that is no backend, before minutes are spent loading weights."""
    if requested not in BACKEND_CHOICES:
        raise Vl2Error(f"encoder_backend {requested!r}: choose one of {', '.join(BACKEND_CHOICES)}.")


def attach_encoder_backend(
    model: "VideoLlama2",
    requested: str = "auto",
    *,
    export_dir: Path | str | None = None,
    engine_dir: Path | str | None = None,
) -> EncoderBackend:
    """Choose the backend for `model`'s encoders, set it as `model.encoders` and return it.

    The torch encoders stay on `model.torch_encoders` (the fallback of every exported backend and
    the reference of `vl2 export`), so `model.encoders = model.torch_encoders` undoes this.
    """
    backend = choose_encoder_backend(
        model.torch_encoders, requested, model=model, export_dir=export_dir, engine_dir=engine_dir
    )
    model.encoders = backend
    return backend


def choose_encoder_backend(
    torch_encoders: TorchEncoders,
    requested: str,
    *,
    model=None,
    export_dir: Path | str | None = None,
    engine_dir: Path | str | None = None,
) -> EncoderBackend:
    """The backend to run the encoders with (see the module docstring for the rules)."""
    check_backend_name(requested)
    if requested == "torch":
        log.info("encoder backend: torch (requested)")
        return torch_encoders
    if model is None:  # nothing to look exports up for (library use without a model object)
        if requested != "auto":
            raise Vl2Error(f"encoder_backend {requested!r}: needs the loaded model to find its exports.")
        log.info("encoder backend: torch (no model to look up exports for)")
        return torch_encoders
    from ..exporting.discovery import ExportLocator

    locator = ExportLocator(model, Path(export_dir) if export_dir else None, Path(engine_dir) if engine_dir else None)
    why_not: list[str] = []
    if requested in ("auto", "tensorrt"):
        backend, reason = _try_tensorrt(torch_encoders, model, locator)
        if backend is not None:
            log.info("encoder backend: tensorrt (%s)", backend.describe())
            return backend
        if requested == "tensorrt":
            raise EngineMismatchError(f"encoder_backend 'tensorrt': {reason}.")
        why_not.append(f"not tensorrt: {reason}")
    if requested in ("auto", "onnxruntime"):
        backend, reason = _try_onnxruntime(torch_encoders, model, locator, strict_device=requested == "auto")
        if backend is not None:
            log.info("encoder backend: onnxruntime (%s)", backend.describe())
            return backend
        if requested == "onnxruntime":
            raise EngineMismatchError(f"encoder_backend 'onnxruntime': {reason}.")
        why_not.append(f"not onnxruntime: {reason}")
    log.info("encoder backend: torch (%s)", "; ".join(why_not))
    return torch_encoders


def _refusals(refused: dict[str, str]) -> str:
    return ", ".join(f"{name}: {why}" for name, why in refused.items())


def _try_tensorrt(torch_encoders: TorchEncoders, model, locator):
    """(backend, None) with the best matching engine folder, else (None, why)."""
    from ..exporting.manifest import HOPPER
    from ..exporting.tensorrt_build import FULL_TENSORRT_HINT, TENSORRT, gpu_compute_capability, installed_products

    products = installed_products()
    if not products:
        return None, "neither TensorRT nor TensorRT-RTX is installed"
    if not torch.cuda.is_available() or torch.device(model.device).type != "cuda":
        return None, "TensorRT engines need the model on a CUDA GPU"
    cc = gpu_compute_capability(model.device)
    only_rtx = TENSORRT not in products
    exports = locator.engine_exports()
    if not exports:
        reason = f"no engines in {locator.engine_model_folder} (export them with vl2 export)"
        if only_rtx and cc == HOPPER:
            reason += f"; only TensorRT-RTX is installed, and its engines never run on compute capability {cc} (H100/H200): {FULL_TENSORRT_HINT}"
        return None, reason
    for usable in exports:
        if usable.refused:
            log.warning("refusing engines in %s: %s", usable.folder, _refusals(usable.refused))
    best = exports[0]
    if not best.files:
        return None, (f"no engine in {locator.engine_model_folder} can run here "
                      f"(this GPU: compute capability {cc}; {_refusals(best.refused)})")
    from ..exporting.tensorrt_build import EngineRunner
    from .tensorrt_backend import TensorRTEncoders

    product = best.manifest.tensorrt_product or TENSORRT
    refused = dict(best.refused)
    runners, details = {}, {}
    for name, path in best.files.items():
        entry = best.manifest.components[name]
        runner = EngineRunner(path, max_batch=entry.profile.max, device=model.device, product=product)
        detail = f"{best.manifest.precision}, {best.folder.name}"
        if not entry.engine_parity_checked:
            # built ahead of time and never run: the export's parity gate, here, before it is used (every
            # load: nothing is written back to a manifest that may be read-only or shared by many workers)
            from ..exporting.pipeline import check_engine_here

            parity = check_engine_here(model, name, runner, best.manifest.precision)
            if not parity.passed:
                refused[name] = f"engine built ahead of time does not reproduce PyTorch on this GPU: {parity.describe()}"
                log.warning("%s: %s", name, refused[name])
                continue
            detail += f", built ahead of time, checked on this GPU: {parity.describe()}"
        runners[name] = (runner, locator.specs[name].item_shape)
        details[name] = detail
    if not runners:
        return None, f"no engine in {best.folder} passed its check on this GPU ({_refusals(refused)})"
    backend = TensorRTEncoders.from_runners(torch_encoders, runners, details=details, torch_components=refused.items())
    return backend, None


def _try_onnxruntime(torch_encoders: TorchEncoders, model, locator, *, strict_device: bool):
    """(backend, None) when at least one component has a matching ONNX graph, else (None, why)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:  # an install without the cpu/gpu extra
        return None, "onnxruntime is not installed (pip extra cpu or gpu)"
    from ..exporting.onnx_session import cuda_provider_usable
    from .onnxruntime_backend import OnnxRuntimeEncoders

    on_gpu = torch.device(model.device).type == "cuda"
    if on_gpu and strict_device and not cuda_provider_usable():
        return None, "onnxruntime has no usable CUDA provider, and torch on the GPU beats onnxruntime on the CPU"
    usable = locator.onnx_export()
    if not usable.files:
        if usable.manifest is not None:
            log.warning("refusing ONNX graphs in %s: %s", usable.folder, _refusals(usable.refused))
            return None, f"no graph in {usable.folder} matches the loaded model ({_refusals(usable.refused)})"
        return None, f"no export in {locator.export_folder} (run `vl2 export --model {model.model_id}`)"
    if usable.refused:
        log.warning("these components stay on torch: %s", _refusals(usable.refused))
    return OnnxRuntimeEncoders.from_files(torch_encoders, usable.files, model.device, torch_components=usable.refused.items()), None
