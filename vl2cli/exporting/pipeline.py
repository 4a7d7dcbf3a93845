"""`export_model`: every component to ONNX (and to a TensorRT engine where possible), each kept only
after its parity gate passed, then one manifest per folder.

Graphs are exported in fp32 from fp32 copies of the modules (the released weights are bf16, so the
upcast is exact); the requested precision applies to engines. Full TensorRT builds them from those
graphs with precision flags, on the GPU that will run them; TensorRT-RTX, strongly typed, builds
from a graph in the requested dtype (rewritten from the fp32 one and checked against PyTorch in
onnxruntime first), ahead of time for its target GPUs, on a machine with or without a GPU. An
engine is checked against PyTorch where a GPU it runs on is here; otherwise its manifest says it
was built and not run. A component that fails to export or to validate is reported and its file removed.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__ as vl2_version
from ..errors import ExportError, Vl2Error
from ..settings import DEFAULT_EXPORT_MAX_BATCH, DEFAULT_EXPORT_PRECISION
from ..model.encoders import DEFAULT_FRAMES_PER_TOWER_CALL
from ..model.videollama2 import VideoLlama2
from .components import VISION_TOWER, BATCH_AXIS, ComponentSpec, component_specs, export_module, validation_inputs
from .locations import default_engine_dir, default_export_dir, engine_folder_name, model_slug
from .manifest import KIND_ONNX, KIND_TENSORRT, BatchProfile, ComponentEntry, Manifest, RuntimeTarget, component_mismatch, sha256_file, weights_sha256
from .onnx_export import EXPORTER, ONNX_OPSET, export_onnx
from .tensorrt_build import BuildChoice, choose_builder, gpu_compute_capability, gpu_name, precision_plan, timing_cache_path
from .validate import VALIDATION_BATCH_SIZES, ParityResult, check_parity

log = logging.getLogger(__name__)

#: Videos (connector) or audio clips per engine call; the tower's frame batch scales with frames. The
#: defaults are the `precision` and `max_batch` settings' (declared once, in vl2cli.settings).
DEFAULT_PRECISION = DEFAULT_EXPORT_PRECISION
DEFAULT_MAX_BATCH = DEFAULT_EXPORT_MAX_BATCH
#: Seed of the fixed validation inputs (same inputs at export and in the manifest's figures).
VALIDATION_SEED = 0
#: Example batch the graphs are traced with (not 1, so no size-1 broadcast gets baked in).
TRACE_BATCH = 2
PARTIAL_SUFFIX = ".partial"


@dataclass
class ComponentOutcome:
    """What happened to one component: files kept, parity figures, or the error."""

    name: str
    onnx_path: Path | None = None
    onnx_parity: ParityResult | None = None
    engine_path: Path | None = None
    engine_parity: ParityResult | None = None
    #: What is known of an engine that could not be run here (built ahead of time for other GPUs).
    engine_check: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ExportReport:
    model_id: str
    export_folder: Path
    engine_folder: Path | None = None
    engine_note: str | None = None
    components: list[ComponentOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.components) and all(c.ok for c in self.components)

    @property
    def failed(self) -> list[ComponentOutcome]:
        return [c for c in self.components if not c.ok]

    def lines(self) -> list[str]:
        """Human summary, one line per file written or component failed."""
        out = [f"model {self.model_id}: ONNX in {self.export_folder}"]
        for c in self.components:
            if c.onnx_path is not None and c.onnx_parity is not None:
                out.append(f"  {c.name}: {c.onnx_path.name} {c.onnx_parity.describe()}")
            if c.engine_path is not None and c.engine_parity is not None:
                out.append(f"  {c.name}: {c.engine_path.name} {c.engine_parity.describe()}")
            elif c.engine_path is not None:
                out.append(f"  {c.name}: {c.engine_path.name} {c.engine_check}")
            if c.error:
                out.append(f"  {c.name}: NOT EXPORTED: {c.error}")
        if self.engine_folder is not None:
            out.append(f"engines in {self.engine_folder}")
        if self.engine_note:
            out.append(f"engines: {self.engine_note}")
        return out


def export_model(
    model_or_id: VideoLlama2 | str,
    out_dir: Path | str | None = None,
    *,
    engine_dir: Path | str | None = None,
    precision: str = DEFAULT_PRECISION,
    components: Sequence[str] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    build_engines: bool | None = None,
    revision: str | None = None,
    device: str | None = None,
    targets: Sequence[str] | None = None,
) -> ExportReport:
    """Export (and validate) the encoders of a model; `build_engines=None` builds engines where a
    TensorRT product can (full TensorRT with a GPU; TensorRT-RTX anywhere).

    `out_dir` / `engine_dir` are the roots (`export/`, `engines/`); each model gets its own folder.
    `targets`: compute capabilities ("8.9", ...) to build TensorRT-RTX engines for (default: all
    it supports; full TensorRT always builds for the GPU here).
    """
    precision_plan(precision)  # rejects an unknown precision before any work
    if max_batch < 1:
        raise Vl2Error(f"max_batch {max_batch}: it must be at least 1.")
    model = model_or_id if isinstance(model_or_id, VideoLlama2) else VideoLlama2.from_pretrained(
        model_or_id, revision=revision, device=device
    )
    choice, engine_reason = _engine_builder(model, precision, targets)
    if build_engines and engine_reason is not None:  # before any file is (re)written
        raise ExportError(f"cannot build TensorRT engines: {engine_reason}; nothing was exported.")
    specs = component_specs(model)
    selected = _select_components(specs, components)
    export_root = Path(out_dir) if out_dir else default_export_dir()
    folder = export_root / model_slug(model.model_id)
    report = ExportReport(model.model_id, folder)
    weights = {name: weights_sha256(model.folder, specs[name].weight_prefixes) for name in specs}
    manifest = _onnx_manifest(model, folder, weights)
    for name in selected:
        outcome = ComponentOutcome(name)
        report.components.append(outcome)
        try:
            outcome.onnx_path, outcome.onnx_parity, manifest.components[name] = _export_one(model, specs[name], folder, weights[name])
        except ExportError as exc:
            manifest.components.pop(name, None)
            outcome.error = str(exc)
            log.error("%s", exc)
        gc.collect()
    if not manifest.components:  # every component failed and no earlier export is left to describe
        failures = "; ".join(f"{o.name}: {o.error}" for o in report.components)
        raise ExportError(f"no component could be exported, so no manifest was written ({failures}).")
    manifest.save(folder)
    if build_engines is False:
        report.engine_note = "not requested"
    elif engine_reason is not None:
        report.engine_note = f"skipped ({engine_reason}); the ONNX graphs run with the onnxruntime encoder backend"
    else:
        good = [o for o in report.components if o.ok]
        report.engine_folder = _build_engines(model, specs, good, manifest, folder, weights, engine_dir, precision, max_batch, choice)
        report.engine_note = _engine_note(model, choice)
    return report


def engines_from_export(
    model_or_id: VideoLlama2 | str,
    out_dir: Path | str | None = None,
    *,
    engine_dir: Path | str | None = None,
    precision: str = DEFAULT_PRECISION,
    components: Sequence[str] | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    targets: Sequence[str] | None = None,
    revision: str | None = None,
    device: str | None = None,
) -> ExportReport:
    """Engines from the ONNX graphs an earlier `export_model` left in `out_dir`, without exporting again.

    Only graphs whose manifest entry still matches the loaded weights and file are used; the others
    are reported as failed. Raises ExportError when no TensorRT product can build here.
    """
    precision_plan(precision)
    if max_batch < 1:
        raise Vl2Error(f"max_batch {max_batch}: it must be at least 1.")
    model = model_or_id if isinstance(model_or_id, VideoLlama2) else VideoLlama2.from_pretrained(
        model_or_id, revision=revision, device=device
    )
    choice, engine_reason = _engine_builder(model, precision, targets)
    if engine_reason is not None:
        raise ExportError(f"cannot build TensorRT engines: {engine_reason}.")
    specs = component_specs(model)
    selected = _select_components(specs, components)
    folder = (Path(out_dir) if out_dir else default_export_dir()) / model_slug(model.model_id)
    report = ExportReport(model.model_id, folder)
    if not (folder / "manifest.json").is_file():
        raise ExportError(f"no ONNX export in {folder}: export the model first.")
    onnx_manifest = Manifest.load(folder)
    weights = {name: weights_sha256(model.folder, specs[name].weight_prefixes) for name in specs}
    target = RuntimeTarget(model.model_id, weights)
    for name in selected:
        outcome = ComponentOutcome(name)
        report.components.append(outcome)
        reason = component_mismatch(onnx_manifest, folder, name, target) if onnx_manifest.kind == KIND_ONNX else "not an ONNX export"
        if reason is None:
            outcome.onnx_path = folder / onnx_manifest.components[name].file
        else:
            outcome.error = f"{name}: no usable ONNX graph ({reason})"
    good = [o for o in report.components if o.ok]
    report.engine_folder = _build_engines(model, specs, good, onnx_manifest, folder, weights, engine_dir, precision, max_batch, choice)
    report.engine_note = _engine_note(model, choice)
    return report


def _select_components(specs: dict[str, ComponentSpec], requested: Sequence[str] | None) -> list[str]:
    if not requested:
        return list(specs)
    unknown = [c for c in requested if c not in specs]
    if unknown:
        raise Vl2Error(f"components {', '.join(unknown)}: this model has {', '.join(specs)}.")
    return [c for c in specs if c in requested]


def _onnx_manifest(model: VideoLlama2, folder: Path, weights: dict[str, str]) -> Manifest:
    """A fresh manifest keeping earlier components that still match these weights unedited."""
    fresh = Manifest(
        KIND_ONNX, model.model_id, model.revision, {}, precision="fp32", opset=ONNX_OPSET, exporter=EXPORTER,
        torch_version=torch.__version__, vl2_version=vl2_version,
    )
    try:
        previous = Manifest.load(folder) if (folder / "manifest.json").is_file() else None
    except Vl2Error:
        previous = None
    if previous is not None and previous.kind == KIND_ONNX:
        target = RuntimeTarget(model.model_id, weights)
        for name, entry in previous.components.items():
            if component_mismatch(previous, folder, name, target) is None:
                fresh.components[name] = entry
    return fresh


def _reference(module: torch.nn.Module, device: torch.device):
    """The fp32 PyTorch output the parity gate compares against."""
    def run(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(device))
    return run


def _export_one(model: VideoLlama2, spec: ComponentSpec, folder: Path, weights: str) -> tuple[Path, ParityResult, ComponentEntry]:
    from .onnx_session import OnnxSessionRunner, create_session

    module = export_module(model, spec.name, device="cpu")
    inputs = validation_inputs(model, spec, VALIDATION_BATCH_SIZES, seed=VALIDATION_SEED)
    example = validation_inputs(model, spec, (TRACE_BATCH,), seed=VALIDATION_SEED)[0]
    path = folder / f"{spec.name}.onnx"
    partial = folder / f"{spec.name}{PARTIAL_SUFFIX}.onnx"
    export_onnx(module, spec, example, partial)
    try:
        module.to(model.device)
        session = create_session(partial, model.device)
        parity = check_parity(_reference(module, model.device), OnnxSessionRunner(session), inputs, "fp32")
        if not parity.passed:
            raise ExportError(f"{spec.name}: onnxruntime does not reproduce PyTorch: {parity.describe()}")
        with torch.inference_mode():
            output = module(inputs[0].to(model.device))
        del session
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    log.info("%s: %s %s", spec.name, path.name, parity.describe())
    output_shape: list[int | str] = [BATCH_AXIS, *output.shape[1:]]
    for axis, axis_name in spec.output_dynamic.items():
        output_shape[axis] = axis_name
    entry = ComponentEntry(
        file=path.name, sha256=sha256_file(path), weights_sha256=weights, input_name=spec.input_name,
        output_name=spec.output_name, input_shape=spec.symbolic_input_shape(), output_shape=output_shape,
        parity=parity.to_dict(),
    )
    return path, parity, entry


# -------------------------------------------------------------------- engines
def _engine_builder(model: VideoLlama2, precision: str, targets: Sequence[str] | None) -> tuple[BuildChoice | None, str | None]:
    """Which TensorRT product builds here and for which GPUs, or why none can."""
    cc = gpu_compute_capability(model.device) if torch.device(model.device).type == "cuda" else None
    return choose_builder(cc, precision, tuple(targets) if targets else None)


def _engine_note(model: VideoLlama2, choice: BuildChoice) -> str:
    """What was built, and plainly so where the GPU here runs none of it (an H100 with TensorRT-RTX)."""
    from .tensorrt_build import FULL_TENSORRT_HINT

    note = f"{choice.product.describe()} for compute capability {', '.join(choice.targets)}"
    cc = gpu_compute_capability(model.device) if torch.device(model.device).type == "cuda" else None
    if cc is not None and choice.local_gpu is None:
        note += f"; this GPU (compute capability {cc}) runs none of these engines: {FULL_TENSORRT_HINT}"
    return note


def engine_profile(spec: ComponentSpec, max_batch: int, num_frames: int) -> BatchProfile:
    """Batch profile per component: the tower sees frames (bounded per call), the others items.

    The tower engine's largest batch stays the CPU chunk size (64 frames), whatever the torch
    encoders use on this GPU: larger profiles cost engine build time and memory, and the engine
    runner splits bigger calls itself.
    """
    if spec.name == VISION_TOWER:
        return BatchProfile.up_to(min(DEFAULT_FRAMES_PER_TOWER_CALL, max_batch * num_frames))
    return BatchProfile.up_to(max_batch)


def check_engine_here(model: VideoLlama2, component: str, runner, precision: str) -> ParityResult:
    """An engine against the fp32 PyTorch module on this GPU, with the export's own gate and inputs.

    For engines built ahead of time (TensorRT-RTX without a GPU of a target capability), which were
    never run when they were written: the runtime checks them here before it uses them.
    """
    spec = component_specs(model)[component]
    module = export_module(model, component, device=model.device)
    sizes = tuple(b for b in VALIDATION_BATCH_SIZES if b <= runner.max_batch)
    inputs = validation_inputs(model, spec, sizes, seed=VALIDATION_SEED, device=model.device)
    parity = check_parity(_reference(module, model.device), runner, inputs, precision)
    del module
    gc.collect()
    return parity


def _check_graph(model: VideoLlama2, spec: ComponentSpec, graph: Path, precision: str) -> ParityResult:
    """A reduced-precision graph in onnxruntime against the fp32 PyTorch module, with that precision's gate."""
    from .onnx_session import OnnxSessionRunner, create_session

    module = export_module(model, spec.name, device=model.device)
    inputs = validation_inputs(model, spec, VALIDATION_BATCH_SIZES, seed=VALIDATION_SEED)
    session = create_session(graph, model.device)
    parity = check_parity(_reference(module, model.device), OnnxSessionRunner(session), inputs, precision)
    del session, module
    if not parity.passed:
        raise ExportError(f"{spec.name}: the {precision} graph built for TensorRT-RTX does not reproduce PyTorch: {parity.describe()}")
    return parity


def _build_engines(model, specs, good, onnx_manifest, export_folder, weights, engine_dir, precision, max_batch,
                   choice: BuildChoice) -> Path:
    from .onnx_precision import external_data_path, reduce_precision
    from .tensorrt_build import EngineRunner, build_engine

    product, targets = choice.product, choice.targets
    engine_root = Path(engine_dir) if engine_dir else default_engine_dir()
    folder = engine_root / model_slug(model.model_id) / engine_folder_name(targets, product.version, precision, product.name)
    manifest = Manifest(
        KIND_TENSORRT, model.model_id, model.revision, {}, precision=precision, opset=ONNX_OPSET, exporter=EXPORTER,
        tensorrt_product=product.name, tensorrt_version=product.version, compute_capabilities=list(targets),
        gpu_name=gpu_name(model.device) if choice.local_gpu else None,
        torch_version=torch.__version__, vl2_version=vl2_version,
    )
    attempted = {o.name for o in good}
    manifest.components.update(_earlier_engines(folder, model, weights, skip=attempted))
    cache = None if product.builds_ahead_of_time else timing_cache_path(engine_root, targets[0], product.version)
    for outcome in good:
        spec = specs[outcome.name]
        onnx_entry = onnx_manifest.components[outcome.name]
        profile = engine_profile(spec, max_batch, model.num_frames)
        plan = folder / f"{spec.name}.plan"
        partial = folder / f"{spec.name}{PARTIAL_SUFFIX}.plan"
        # strongly typed builders read the precision from the graph: build from a rewritten copy
        reduced = folder / f"{spec.name}.{precision}{PARTIAL_SUFFIX}.onnx"
        graph, graph_precision, graph_parity, parity = export_folder / onnx_entry.file, "fp32", None, None
        try:
            if product.strongly_typed and precision != "fp32":
                graph = reduce_precision(graph, reduced, precision)
                graph_precision, graph_parity = precision, _check_graph(model, spec, graph, precision)
            built = build_engine(
                graph, partial, input_name=spec.input_name, item_shape=spec.item_shape,
                profile=profile, precision=precision, timing_cache=cache, product=product, targets=targets,
            )
            if choice.local_gpu is not None:
                module = export_module(model, spec.name, device=model.device)
                sizes = tuple(b for b in VALIDATION_BATCH_SIZES if b <= profile.max)
                inputs = validation_inputs(model, spec, sizes, seed=VALIDATION_SEED, device=model.device)
                runner = EngineRunner(partial, max_batch=profile.max, device=model.device, product=product.name)
                if not built.layer_listing:  # the builder did not print it: ask the engine inspector
                    built = dataclasses.replace(built, layer_listing=runner.layer_listing())
                parity = check_parity(_reference(module, model.device), runner, inputs, precision)
                del runner, module
                if not parity.passed:
                    raise ExportError(f"{spec.name}: the {precision} engine does not reproduce PyTorch: {parity.describe()}")
                checked = f"built and checked against PyTorch on {gpu_name(model.device)} (compute capability {choice.local_gpu})"
            else:
                checked = (f"built ahead of time for compute capability {', '.join(targets)}, {built.size_bytes} bytes, "
                           f"{sum(built.layer_types.values())} engine layers; not run: no GPU of those here")
            if graph_parity is not None:
                checked += f" (built from the {precision} graph, which passed in onnxruntime: {graph_parity.describe()})"
        except Vl2Error as exc:
            partial.unlink(missing_ok=True)
            outcome.error = str(exc)
            log.error("%s", exc)
            continue
        finally:
            reduced.unlink(missing_ok=True)
            external_data_path(reduced).unlink(missing_ok=True)
        partial.replace(plan)
        (folder / f"{spec.name}.layers.txt").write_text(built.layer_listing + "\n", encoding="utf-8")
        outcome.engine_path, outcome.engine_parity, outcome.engine_check = plan, parity, checked
        manifest.components[spec.name] = ComponentEntry(
            file=plan.name, sha256=sha256_file(plan), weights_sha256=weights[spec.name], input_name=spec.input_name,
            output_name=spec.output_name, input_shape=[BATCH_AXIS, *spec.item_shape], output_shape=onnx_entry.output_shape,
            parity=parity.to_dict() if parity else {}, onnx_sha256=onnx_entry.sha256, profile=profile,
            graph_precision=graph_precision, graph_parity=graph_parity.to_dict() if graph_parity else {},
            size_bytes=built.size_bytes, layer_types=built.layer_types, checked=checked,
        )
        gc.collect()
    if manifest.components:
        manifest.save(folder)
    else:  # nothing built: an earlier manifest (if any) stays as it was
        log.warning("no engine was built; %s is left as it was", folder)
    return folder


def _earlier_engines(folder: Path, model: VideoLlama2, weights: dict[str, str], *, skip: set[str]) -> dict[str, ComponentEntry]:
    """Entries of this folder's earlier manifest to keep: components not rebuilt now whose plan is
    unedited and was built from the same weights (an export of one component keeps the others)."""
    try:
        previous = Manifest.load(folder) if (folder / "manifest.json").is_file() else None
    except Vl2Error:
        return {}
    if previous is None or previous.kind != KIND_TENSORRT:
        return {}
    kept = {}
    for name, entry in previous.components.items():
        if name in skip or entry.weights_sha256 != weights.get(name):
            continue
        path = folder / entry.file
        if path.is_file() and sha256_file(path) == entry.sha256:
            kept[name] = entry
    return kept
