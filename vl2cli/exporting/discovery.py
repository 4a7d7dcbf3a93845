"""Finding exports that may be used for a loaded model, and saying why the others may not.

The checks (see `manifest.component_mismatch`) read hashes of the weights and files, so nothing is
hashed unless a manifest exists; results are cached per locator.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import EngineMismatchError
from ..model.videollama2 import VideoLlama2
from .components import ComponentSpec, component_specs
from .locations import default_engine_dir, default_export_dir, model_slug
from .manifest import MANIFEST_FILE, KIND_ONNX, KIND_TENSORRT, Manifest, RuntimeTarget, component_mismatch, sha256_file, weights_sha256
from .tensorrt_build import gpu_compute_capability, installed_products

log = logging.getLogger(__name__)

_DTYPE_PRECISION = {"torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float32": "fp32"}


@dataclass
class UsableExport:
    """Per component: the file to load, or why there is none."""

    folder: Path | None
    manifest: Manifest | None
    files: dict[str, Path] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


class ExportLocator:
    """Looks up `export/<model>/` and `engines/<model>/*/` for one loaded model."""

    def __init__(self, model: VideoLlama2, export_dir: Path | None = None, engine_dir: Path | None = None) -> None:
        self.model = model
        self.export_root = Path(export_dir) if export_dir else default_export_dir()
        self.engine_root = Path(engine_dir) if engine_dir else default_engine_dir()
        self.slug = model_slug(model.model_id)
        self._weights: dict[str, str] = {}
        self._file_hashes: dict[Path, str] = {}

    @cached_property
    def specs(self) -> dict[str, ComponentSpec]:
        return component_specs(self.model)

    @property
    def export_folder(self) -> Path:
        return self.export_root / self.slug

    @property
    def engine_model_folder(self) -> Path:
        return self.engine_root / self.slug

    def weights_hash(self, component: str) -> str:
        if component not in self._weights:
            self._weights[component] = weights_sha256(self.model.folder, self.specs[component].weight_prefixes)
        return self._weights[component]

    def file_hash(self, path: Path) -> str:
        if path not in self._file_hashes:
            self._file_hashes[path] = sha256_file(path)
        return self._file_hashes[path]

    def target(self, manifest: Manifest, *, compute_capability: str | None = None,
               products: dict[str, str] | None = None) -> RuntimeTarget:
        weights = {name: self.weights_hash(name) for name in self.specs if name in manifest.components}
        return RuntimeTarget(self.model.model_id, weights, compute_capability, dict(products or {}))

    # ------------------------------------------------------------------ onnx
    def onnx_export(self) -> UsableExport:
        """The ONNX graphs in this model's export folder that match the loaded weights unedited."""
        folder = self.export_folder
        if not (folder / MANIFEST_FILE).is_file():
            return UsableExport(None, None, refused={n: f"no export in {folder}" for n in self.specs})
        manifest = Manifest.load(folder)
        usable = UsableExport(folder, manifest)
        if manifest.kind != KIND_ONNX:
            usable.refused = {n: f"{folder / MANIFEST_FILE} is not an ONNX manifest" for n in self.specs}
            return usable
        target = self.target(manifest)
        for name in self.specs:
            reason = component_mismatch(manifest, folder, name, target)
            if reason is None:
                usable.files[name] = folder / manifest.components[name].file
            else:
                usable.refused[name] = reason
        return usable

    # ------------------------------------------------------------- tensorrt
    def current_onnx_hash(self, component: str) -> str | None:
        """sha256 of the ONNX graph now in the export folder (None when there is none)."""
        try:
            manifest = Manifest.load(self.export_folder)
        except EngineMismatchError:
            return None
        entry = manifest.components.get(component)
        path = self.export_folder / entry.file if entry else None
        return self.file_hash(path) if path and path.is_file() else None

    def engine_exports(self) -> list[UsableExport]:
        """Every engine folder of this model, each with its usable plans and refusals, best first."""
        on_gpu = str(self.model.device).startswith("cuda")
        cc = gpu_compute_capability(self.model.device) if on_gpu else None
        products = {name: product.version for name, product in installed_products().items()}
        found = []
        root = self.engine_model_folder
        folders = sorted(p for p in root.iterdir() if (p / MANIFEST_FILE).is_file()) if root.is_dir() else []
        for folder in folders:
            try:
                manifest = Manifest.load(folder)
            except EngineMismatchError as exc:
                found.append(UsableExport(folder, None, refused={n: str(exc) for n in self.specs}))
                continue
            usable = UsableExport(folder, manifest)
            if manifest.kind != KIND_TENSORRT:
                usable.refused = {n: "not a TensorRT manifest" for n in self.specs}
                found.append(usable)
                continue
            target = self.target(manifest, compute_capability=cc, products=products)
            for name in self.specs:
                reason = component_mismatch(manifest, folder, name, target, current_onnx_sha256=self.current_onnx_hash(name))
                if reason is None:
                    usable.files[name] = folder / manifest.components[name].file
                else:
                    usable.refused[name] = reason
            found.append(usable)
        preferred = _DTYPE_PRECISION.get(str(self.model.dtype))
        found.sort(key=lambda u: (-len(u.files), (u.manifest.precision if u.manifest else None) != preferred))
        return found
