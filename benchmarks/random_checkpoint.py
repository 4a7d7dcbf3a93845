"""Write a random-weight VideoLLaMA 2 AV checkpoint in the released on-disk layout, at any size.

No released checkpoint can be downloaded where the GPU benchmark runs, and speed does not depend on
the weights' values: a random checkpoint with the released shapes (VideoLLaMA2.1-7B-AV: Qwen2-7B,
SigLIP so400m-384, STC v35, BEATs, an mlp2x_gelu audio projector) measures vl2 faithfully, and its
random LLM practically never emits eos, so every answer runs to max_new_tokens (a fixed output length
for free; the benchmark checks it).

What is written, beside a local tower folder that the checkpoint's `mm_vision_tower` names:

    <out>/checkpoint/  config.json, generation_config.json, tokenizer files,
                       model-0000K-of-0000N.safetensors shards, model.safetensors.index.json,
                       vl2-bench-writer.json (written last: the checkpoint is complete)
    <out>/tower/       config.json (SigLIP, full text+vision config), preprocessor_config.json

The tokenizer, chat template and generation config come from the tiny `siglip-qwen2-av` reference
fixture (a real Qwen2 ChatML prompt format); its tokenizer decodes ids above its 463 entries to "".
Config key sets come from that fixture too, so only sizes are set here. Tensor names and shapes come
from the modules vl2 loads (transformers' Qwen2 and SigLIP, vl2's STC connector and BEATs), built on
the meta device; a test checks that at the fixture's sizes they equal the fixture's own tensors.
"""
from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The reference fixture whose tokenizer, templates and config key sets the writer reuses.
TEMPLATE_FIXTURE = "siglip-qwen2-av"
TEMPLATE_CHECKPOINT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                             "special_tokens_map.json")
#: Copied unchanged into the written checkpoint.
COPIED_FILES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOWER_FILES = ("config.json", "preprocessor_config.json")
TOWER_HUB_FOLDER = "hub/models--google--siglip-so400m-patch14-384/snapshots"

CHECKPOINT_DIR = "checkpoint"
TOWER_DIR = "tower"
#: Written last; its presence (and equal content) means a finished checkpoint of this spec.
MARKER_FILE = "vl2-bench-writer.json"
INDEX_FILE = "model.safetensors.index.json"
SHARD_NAME = "model-{index:05d}-of-{count:05d}.safetensors"
#: Released shards are just under 5 GB each.
MAX_SHARD_BYTES = 5 * 10**9
#: Weight init: normal(0, INIT_STD) like transformers' initializer_range; biases 0; norm scales 1.
INIT_STD = 0.02
#: Tensors set to one whatever their rank: BEATs' GRU gate scale and pos_conv weight-norm magnitude.
ONES_SUFFIXES = ("grep_a", "weight_g")
DEFAULT_SEED = 0
#: Bump when the written content changes, so --workdir reuse never picks up an older layout.
WRITER_VERSION = 1

#: Prefixes of the released checkpoints' tensor names (reference-facts.md §7). The LLM's are
#: transformers' own Qwen2ForCausalLM names (model.layers.*, lm_head.*).
LLM_PREFIX = ""
#: Tower names are `model.vision_tower.vision_tower.vision_model.<SigLIP vision key>`; some transformers
#: versions put `vision_model.` into SiglipVisionModel's own keys, others do not.
SIGLIP_INNER_PREFIX = "vision_model."
TOWER_PREFIX = "model.vision_tower.vision_tower." + SIGLIP_INNER_PREFIX
CONNECTOR_PREFIX = "model.mm_projector."
AUDIO_TOWER_PREFIX = "model.audio_tower."
AUDIO_PROJECTOR_PREFIX = "model.mm_projector_a."
VIDEO_CONNECTOR = "stc_connector_v35"
AUDIO_PROJECTOR = "mlp2x_gelu"
NAME_OR_PATH = "vl2-bench/random-weights-VideoLLaMA2.1-AV"
DTYPE_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


@dataclass(frozen=True)
class ModelShape:
    """The sizes that make a VideoLLaMA2.1-AV checkpoint (everything else is fixed by the layout).

    `beats` None means BEATs' defaults (released checkpoints carry no BEATs config); a dict is written
    as config.json's `audio_tower_config`, the fixtures' way to make BEATs small.
    """

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tower_hidden_size: int
    tower_intermediate_size: int
    tower_layers: int
    tower_heads: int
    image_size: int
    patch_size: int
    num_frames: int
    beats: dict[str, Any] | None = field(default=None, hash=False)


#: VideoLLaMA2.1-7B-AV (gpu-notes.md, reference-facts.md §1-3): 8.53 B parameters, 16 GB in bf16.
FULL_AV_SHAPE = ModelShape(
    hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4, vocab_size=152064,
    tower_hidden_size=1152, tower_intermediate_size=4304, tower_layers=27, tower_heads=16, image_size=384,
    patch_size=14, num_frames=16, beats=None,
)


def reference_root() -> Path:
    """The reference fixtures folder (`VL2_REFERENCE_FIXTURES`, else the set packed in tests/fixtures/)."""
    from tests.fixture_pack import reference_root as packed_or_overridden

    return packed_or_overridden()


def template_root() -> Path:
    return reference_root() / TEMPLATE_FIXTURE


def _tower_snapshot(template: Path) -> Path:
    snapshots = sorted((template / TOWER_HUB_FOLDER).glob("*"))
    if not snapshots:
        raise FileNotFoundError(f"{template / TOWER_HUB_FOLDER}: no tower snapshot in the template fixture")
    return snapshots[0]


def template_files(template: Path | None = None) -> list[Path]:
    """Every fixture file the writer reads (tests skip unless exactly these exist)."""
    template = template or template_root()
    files = [template / "checkpoint" / name for name in TEMPLATE_CHECKPOINT_FILES]
    snapshot_root = template / TOWER_HUB_FOLDER
    snapshots = sorted(snapshot_root.glob("*")) if snapshot_root.is_dir() else []
    tower = snapshots[0] if snapshots else snapshot_root / "<snapshot>"
    return files + [tower / name for name in TOWER_FILES]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def shape_of_template(template: Path | None = None) -> ModelShape:
    """The template fixture's own sizes (a tiny model: the CPU smoke run and the writer's tests)."""
    template = template or template_root()
    config = _read_json(template / "checkpoint" / "config.json")
    vision = _read_json(_tower_snapshot(template) / "config.json")["vision_config"]
    return ModelShape(
        hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
        num_layers=config["num_hidden_layers"], num_heads=config["num_attention_heads"],
        num_kv_heads=config["num_key_value_heads"], vocab_size=config["vocab_size"],
        tower_hidden_size=vision["hidden_size"], tower_intermediate_size=vision["intermediate_size"],
        tower_layers=vision["num_hidden_layers"], tower_heads=vision["num_attention_heads"],
        image_size=vision["image_size"], patch_size=vision["patch_size"], num_frames=config["num_frames"],
        beats=config.get("audio_tower_config"),
    )


# ----------------------------------------------------------------------------- configs


def checkpoint_config(shape: ModelShape, template: Path, tower_folder: Path, dtype: torch.dtype) -> dict[str, Any]:
    """config.json: the template's key set with this shape's sizes; the tower is a local folder."""
    from vl2cli.model.beats import BeatsConfig

    config = _read_json(template / "checkpoint" / "config.json")
    beats_width = (shape.beats or {}).get("encoder_embed_dim", BeatsConfig().encoder_embed_dim)
    config.update(
        _name_or_path=NAME_OR_PATH,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        vocab_size=shape.vocab_size,
        mm_vision_tower=str(tower_folder.resolve()),  # an absolute path: resolved the same from any cwd
        mm_hidden_size=shape.tower_hidden_size,
        mm_projector_type=VIDEO_CONNECTOR,
        mm_projector_a_type=AUDIO_PROJECTOR,
        mm_hidden_size_a=beats_width,
        hidden_size_a=shape.hidden_size,
        num_frames=shape.num_frames,
        torch_dtype=DTYPE_NAMES[dtype],
    )
    if shape.beats is None:
        config.pop("audio_tower_config", None)  # as released: BEATs is built from its defaults
    else:
        config["audio_tower_config"] = dict(shape.beats)
    return config


def tower_configs(shape: ModelShape, template: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tower's config.json (full SigLIP config, vision part resized) and preprocessor_config.json."""
    snapshot = _tower_snapshot(template)
    config = _read_json(snapshot / "config.json")
    config["vision_config"].update(
        hidden_size=shape.tower_hidden_size, intermediate_size=shape.tower_intermediate_size,
        num_hidden_layers=shape.tower_layers, num_attention_heads=shape.tower_heads,
        image_size=shape.image_size, patch_size=shape.patch_size,
    )
    processor = _read_json(snapshot / "preprocessor_config.json")
    processor["size"] = {"height": shape.image_size, "width": shape.image_size}
    return config, processor


# ----------------------------------------------------------------------------- tensor layout


def tensor_shapes(shape: ModelShape) -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> tensor shape, from the modules built on the meta device (no memory used)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from vl2cli.model.beats import BeatsConfig, BeatsModel
    from vl2cli.model.connector import build_projector, build_video_connector

    beats_config = BeatsConfig.from_dict(shape.beats) if shape.beats is not None else BeatsConfig()
    llm_config = Qwen2Config(
        hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads, vocab_size=shape.vocab_size, tie_word_embeddings=False,
    )
    tower_config = SiglipVisionConfig(
        hidden_size=shape.tower_hidden_size, intermediate_size=shape.tower_intermediate_size,
        num_hidden_layers=shape.tower_layers, num_attention_heads=shape.tower_heads,
        image_size=shape.image_size, patch_size=shape.patch_size,
    )
    with torch.device("meta"):
        parts = {
            LLM_PREFIX: Qwen2ForCausalLM(llm_config),
            TOWER_PREFIX: _TowerKeys(SiglipVisionModel(tower_config)),
            CONNECTOR_PREFIX: build_video_connector(VIDEO_CONNECTOR, shape.tower_hidden_size, shape.hidden_size),
            AUDIO_TOWER_PREFIX: BeatsModel(beats_config),
            AUDIO_PROJECTOR_PREFIX: build_projector(AUDIO_PROJECTOR, beats_config.encoder_embed_dim, shape.hidden_size),
        }
    # state_dict lists a shared module under every name that reaches it, as the released files do
    # (BEATs' relative bias table once per layer).
    return {prefix + key: tuple(t.shape) for prefix, module in parts.items() for key, t in module.state_dict().items()}


class _TowerKeys:
    """SigLIP's state dict with any `vision_model.` prefix removed (the released prefix holds it)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key.removeprefix(SIGLIP_INNER_PREFIX): t for key, t in self.module.state_dict().items()}


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(_numel(s) for s in shapes.values())


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _fill(key: str, shape: tuple[int, ...], *, dtype: torch.dtype, device: torch.device,
          generator: torch.Generator) -> torch.Tensor:
    """Zeros for biases, ones for norm scales and gate/magnitude parameters, small normals elsewhere."""
    if key.endswith("bias"):
        return torch.zeros(shape, dtype=dtype, device=device)
    if len(shape) == 1 or key.endswith(ONES_SUFFIXES):
        return torch.ones(shape, dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, INIT_STD, generator=generator)


def plan_shards(shapes: dict[str, tuple[int, ...]], element_bytes: int) -> list[list[str]]:
    """Keys grouped into shards of at most MAX_SHARD_BYTES, in key order."""
    shards: list[list[str]] = [[]]
    size = 0
    for key in sorted(shapes):
        tensor_bytes = _numel(shapes[key]) * element_bytes
        if shards[-1] and size + tensor_bytes > MAX_SHARD_BYTES:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += tensor_bytes
    return shards


# ----------------------------------------------------------------------------- writing


@dataclass
class WrittenCheckpoint:
    """Where the checkpoint is and what making it cost (reused: found complete, nothing written)."""

    folder: Path
    tower: Path
    parameters: int
    bytes: int
    shards: int
    seconds: float
    reused: bool


def _marker(shape: ModelShape, dtype: torch.dtype, seed: int) -> dict[str, Any]:
    return {"writer_version": WRITER_VERSION, "shape": asdict(shape), "dtype": DTYPE_NAMES[dtype], "seed": seed}


def find_written(out: Path, shape: ModelShape, dtype: torch.dtype, seed: int) -> WrittenCheckpoint | None:
    """A checkpoint already written under `out` with exactly this spec, else None."""
    folder = out / CHECKPOINT_DIR
    marker = folder / MARKER_FILE
    try:
        recorded = _read_json(marker)
    except (OSError, ValueError):
        return None
    if recorded.get("spec") != _marker(shape, dtype, seed):
        return None
    return WrittenCheckpoint(folder, out / TOWER_DIR, recorded["parameters"], recorded["bytes"], recorded["shards"],
                             0.0, reused=True)


def write_checkpoint(
    out: Path,
    shape: ModelShape,
    *,
    template: Path | None = None,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    seed: int = DEFAULT_SEED,
    reuse: bool = True,
) -> WrittenCheckpoint:
    """Write `out/checkpoint` and `out/tower` (random weights made on `device`, seeded); return where.

    With `reuse`, a complete checkpoint of the same shape, dtype and seed already under `out` is kept.
    Shards are written by a background thread while the next one is generated, so the GPU and the
    disk work at the same time.
    """
    template = template or template_root()
    if reuse and (found := find_written(out, shape, dtype, seed)) is not None:
        return found
    start = time.perf_counter()
    folder, tower = out / CHECKPOINT_DIR, out / TOWER_DIR
    for path in (folder, tower):
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)

    tower_config, processor = tower_configs(shape, template)
    (tower / "config.json").write_text(json.dumps(tower_config, indent=2), encoding="utf-8")
    (tower / "preprocessor_config.json").write_text(json.dumps(processor, indent=2), encoding="utf-8")
    config = checkpoint_config(shape, template, tower, dtype)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name in COPIED_FILES:
        shutil.copyfile(template / "checkpoint" / name, folder / name)

    shapes = tensor_shapes(shape)
    element_bytes = torch.empty((), dtype=dtype).element_size()
    shards = plan_shards(shapes, element_bytes)
    weight_map = _write_shards(folder, shards, shapes, dtype=dtype, device=torch.device(device), seed=seed)
    total_bytes = sum(_numel(s) for s in shapes.values()) * element_bytes
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
    written = WrittenCheckpoint(folder, tower, parameter_count(shapes), total_bytes, len(shards),
                                time.perf_counter() - start, reused=False)
    marker = {"spec": _marker(shape, dtype, seed), "parameters": written.parameters, "bytes": written.bytes,
              "shards": written.shards}
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
    return written


def _write_shards(folder: Path, shards: list[list[str]], shapes: dict[str, tuple[int, ...]], *, dtype: torch.dtype,
                  device: torch.device, seed: int) -> dict[str, str]:
    from safetensors.torch import save_file

    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    weight_map: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for number, keys in enumerate(shards, start=1):
            name = SHARD_NAME.format(index=number, count=len(shards))
            tensors = {key: _fill(key, shapes[key], dtype=dtype, device=device, generator=generator).cpu()
                       for key in keys}
            if pending is not None:
                pending.result()  # at most one shard waits in host memory besides the one being made
            pending = writer.submit(save_file, tensors, str(folder / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(keys, name))
        if pending is not None:
            pending.result()
    return weight_map


def check_high_ids_decode(folder: Path, vocab_size: int) -> str:
    """Decode ids beyond the template tokenizer (the model's vocabulary is larger); must not raise."""
    import transformers
    from transformers import AutoTokenizer

    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # it calls the videollama2_qwen2 model_type unknown, by design
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    finally:
        transformers.logging.set_verbosity(previous)
    text = tokenizer.decode([len(tokenizer), vocab_size - 1], skip_special_tokens=True)
    if not isinstance(text, str):
        raise TypeError(f"tokenizer decoded out-of-vocabulary ids to {type(text).__name__}, not str")
    return text
