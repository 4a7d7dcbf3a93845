"""Manifests: what an exported graph or engine was made from, and whether it may be used now.

Every export folder (`export/<model>/`) and engine folder (`engines/<model>/<targets>-<product><v>-<prec>/`)
holds one `manifest.json`. The run commands trust a file only when its manifest matches the loaded
weights (hash of the component's checkpoint tensors); for engines, an installed TensorRT product of
the version that built them and a GPU whose compute capability is one the engine was built for;
and the file's own sha256 (so an edited or swapped file is refused, never loaded).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..atomic_files import write_atomically
from ..errors import EngineMismatchError
from ..model.checkpoint import ShardedSafetensors

MANIFEST_FILE = "manifest.json"
#: Bumped when the manifest layout changes; older manifests are refused (re-export).
#: 2: engines name their product (TensorRT or TensorRT-RTX) and a list of target compute capabilities.
MANIFEST_FORMAT = 2
KIND_ONNX = "onnx"
KIND_TENSORRT = "tensorrt"
#: Bytes read per step when hashing files (keeps memory flat for multi-GB graphs).
HASH_CHUNK_BYTES = 1 << 24


def _known_fields(cls, data: Mapping) -> dict:
    """The keys of `data` that `cls` has: a manifest of another format still loads, so that its
    `format` can be reported as the reason to re-export instead of an unreadable file."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in dict(data).items() if k in names}


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile on the batch axis (the only dynamic axis of an engine)."""

    min: int
    opt: int
    max: int

    @classmethod
    def up_to(cls, max_batch: int) -> "BatchProfile":
        """(1, max/2, max): the TensorRT-LLM convention for vision engines."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        return cls(1, max(1, max_batch // 2), max_batch)


@dataclass
class ComponentEntry:
    """One exported component: its file, what it was made from, its I/O and measured parity."""

    file: str
    sha256: str
    weights_sha256: str
    input_name: str
    output_name: str
    input_shape: list[int | str]
    output_shape: list[int | str]
    parity: dict = field(default_factory=dict)
    #: Engines only: the ONNX graph the plan was built from, and the batch profile.
    onnx_sha256: str | None = None
    profile: BatchProfile | None = None
    #: Engines only: dtype of the graph the builder read (strongly typed builders take precision
    #: from it), that graph's parity against PyTorch where it is not the fp32 export itself, the
    #: plan's size, the engine's layer types as the builder listed them, and what was checked.
    graph_precision: str | None = None
    graph_parity: dict = field(default_factory=dict)
    size_bytes: int | None = None
    layer_types: dict[str, int] = field(default_factory=dict)
    checked: str | None = None

    @property
    def engine_parity_checked(self) -> bool:
        return bool(self.parity)

    @classmethod
    def from_dict(cls, data: Mapping) -> "ComponentEntry":
        values = _known_fields(cls, data)
        if values.get("profile") is not None:
            values["profile"] = BatchProfile(**values["profile"])
        return cls(**values)


@dataclass
class Manifest:
    """The folder-level record written next to the graphs or engines of one model."""

    kind: str
    model_id: str
    revision: str | None
    components: dict[str, ComponentEntry]
    precision: str = "fp32"
    opset: int | None = None
    exporter: str | None = None
    #: Engines: "tensorrt" or "tensorrt-rtx", its version, and the compute capabilities the plans
    #: run on (one for full TensorRT: the GPU that built them; RTX: every target built ahead of time).
    tensorrt_product: str | None = None
    tensorrt_version: str | None = None
    compute_capabilities: list[str] = field(default_factory=list)
    #: The GPU the engines were built (and checked) on; None for an ahead-of-time build without one.
    gpu_name: str | None = None
    torch_version: str | None = None
    vl2_version: str | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format: int = MANIFEST_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = _known_fields(cls, json.loads(text))
        data["components"] = {k: ComponentEntry.from_dict(v) for k, v in data.get("components", {}).items()}
        return cls(**data)

    def save(self, folder: Path) -> Path:
        """Write atomically, so a reader never sees half a manifest."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / MANIFEST_FILE
        write_atomically(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST_FILE
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise EngineMismatchError(f"{path}: unreadable manifest ({exc}); run `vl2 export` again.") from exc


@dataclass(frozen=True)
class RuntimeTarget:
    """What a manifest must match: the loaded weights and, for engines, this GPU and the installed
    TensorRT products (name -> version)."""

    model_id: str
    weights_sha256: Mapping[str, str]
    compute_capability: str | None = None
    products: Mapping[str, str] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(folder: Path, prefixes: Iterable[str]) -> str:
    """Hash of one component's checkpoint tensors (names, dtypes, shapes, bytes), in key order.

    Read from the safetensors shards rather than the loaded modules, so the hash does not depend
    on the dtype or device a model was loaded with.
    """
    shards = ShardedSafetensors(folder)
    keys = sorted(k for prefix in prefixes for k in shards.keys_with_prefix(prefix))
    digest = hashlib.sha256()
    for key in keys:
        tensor = shards.load([key])[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def component_mismatch(
    manifest: Manifest,
    folder: Path,
    component: str,
    target: RuntimeTarget,
    *,
    current_onnx_sha256: str | None = None,
) -> str | None:
    """Why `component` of this manifest must not be used for `target`; None when it matches.

    `current_onnx_sha256` (engines): hash of the ONNX graph now in the export folder; a plan built
    from another graph is stale.
    """
    if manifest.format != MANIFEST_FORMAT:
        return f"manifest format {manifest.format}, this vl2 reads format {MANIFEST_FORMAT}; re-export"
    entry = manifest.components.get(component)
    if entry is None:
        return f"no {component} in this export"
    expected_weights = target.weights_sha256.get(component)
    if expected_weights is None or entry.weights_sha256 != expected_weights:
        return (
            f"{component} was exported from other weights ({manifest.model_id}"
            f"{'@' + manifest.revision if manifest.revision else ''}), not from the loaded {target.model_id}"
        )
    if manifest.kind == KIND_TENSORRT:
        reason = engine_mismatch(manifest, target)
        if reason is not None:
            return reason
        if current_onnx_sha256 is not None and entry.onnx_sha256 != current_onnx_sha256:
            return f"{component} engine was built from another ONNX graph than the one now in the export folder"
    path = folder / entry.file
    if not path.is_file():
        return f"{path} is missing"
    if sha256_file(path) != entry.sha256:
        return f"{path} was modified after export (sha256 differs from the manifest)"
    return None


#: Display names and install hints of the products (kept here, beside the matching rule, so the
#: manifest module needs no TensorRT import).
_TITLES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}
_INSTALL = {"tensorrt": "from NVIDIA's package index", "tensorrt-rtx": "pip extra vl2[tensorrt-rtx]"}
#: Hopper data-centre GPUs (H100, H200): no TensorRT-RTX engine runs on them.
HOPPER = "9.0"


def engine_mismatch(manifest: Manifest, target: RuntimeTarget) -> str | None:
    """Why the engines of this manifest cannot run here (product, version, GPU); None when they can."""
    product = manifest.tensorrt_product or "tensorrt"
    title = _TITLES.get(product, product)
    ccs = list(manifest.compute_capabilities)
    listed = ", ".join(ccs) or "none"
    installed = target.products.get(product)
    if installed is None:
        return f"engine built with {title} {manifest.tensorrt_version}, which is not installed here ({_INSTALL.get(product, '')})"
    if installed != manifest.tensorrt_version:
        return f"engine built with {title} {manifest.tensorrt_version}, this is {title} {installed}; export it again"
    if target.compute_capability is None:
        return f"engine runs on GPUs of compute capability {listed}; no CUDA GPU is usable here"
    if target.compute_capability not in ccs:
        reason = f"engine built for GPU compute capability {listed}, this GPU is {target.compute_capability}"
        if product == "tensorrt-rtx" and target.compute_capability == HOPPER:
            reason += (
                "; TensorRT-RTX engines never run on H100/H200 (compute capability 9.0): there, use full TensorRT "
                "(from NVIDIA's package index or an NGC container) or onnxruntime/torch"
            )
        return reason
    return None
