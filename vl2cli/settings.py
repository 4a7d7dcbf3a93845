"""Every run setting in one dataclass, filled from defaults, a YAML file, `VL2_*` variables and flags.

Precedence (highest first): command-line flags > environment variables > the `--config` YAML file >
built-in defaults. Each setting has the same name everywhere: flag `--batch-size`, YAML key
`batch_size`, variable `VL2_BATCH_SIZE`. The YAML file is named by `--config` or `VL2_CONFIG`.
Keeping the resolution here (pure, no torch) lets `vl2 config show` print the effective values and
where each came from, and keeps `vl2 --help` fast.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .constants import FRAMES_LIMIT
from .discover import MEDIA_KINDS, WalkOptions
from .errors import ConfigFileError, Vl2Error

#: The audio-visual checkpoint: it answers about sound as well as pictures.
DEFAULT_MODEL = "DAMO-NLP-SG/VideoLLaMA2.1-7B-AV"
#: Upstream mm_infer's default answer budget.
DEFAULT_MAX_NEW_TOKENS = 2048
DEFAULT_TOP_K = 5
DEFAULT_DECODE_TIMEOUT_S = 120.0
#: Upstream mm_infer's top_p when sampling (its temperature default, 0.2, applies only with do_sample).
DEFAULT_TOP_P = 0.9
#: Batches and decode workers when --batch-size/--workers are not given: the CPU runs one file at a
#: time (batching buys nothing there but memory); a GPU takes as many files per forward pass as its
#: free memory holds (see `vl2cli.tasks.budget`), up to GPU_MAX_BATCH_SIZE.
CPU_BATCH_SIZE = 1
GPU_MAX_BATCH_SIZE = 64
#: Decode workers: the cores less the ones the model process needs (its generate loop is CPU-bound:
#: on a 16-core GPU machine the model ran 1.5x slower sharing every core with decoders), capped.
MODEL_PROCESS_CORES = 1
CPU_WORKERS = 2
GPU_WORKERS = 12

ENV_PREFIX = "VL2_"
CONFIG_ENV_VAR = "VL2_CONFIG"
MODALITIES = ("auto", "video", "audio", "av")
ENGINES = ("local", "ray")
#: `log_level` values: auto (info; error with quiet), then Python's logging level names, most to least talkative.
LOG_LEVELS = ("auto", "debug", "info", "warning", "error")
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})

SettingSource = Literal["default", "config", "env", "flag"]


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts: low..high, inclusive unless `low_open` (docs/cli.md lists them)."""

    low: float
    high: float
    low_open: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def short(self) -> str:
        """The range as --help shows it: `1..512`, `>0..86400`."""
        return f"{'>' if self.low_open else ''}{_number(self.low)}..{_number(self.high)}"

    def text(self) -> str:
        low = f"above {_number(self.low)}" if self.low_open else f"at least {_number(self.low)}"
        return f"{low} and at most {_number(self.high)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


#: Labels a classify run takes at most (each is scored by its own forward pass).
MAX_LABELS = 10000
#: `vl2 export`: engine precisions, the default one, the largest batch an engine takes by default, the
#: encoders it can export and its `engines` answers (auto: where a TensorRT product can build them).
EXPORT_PRECISIONS = ("fp32", "fp16", "bf16")
DEFAULT_EXPORT_PRECISION = "fp16"
DEFAULT_EXPORT_MAX_BATCH = 8
EXPORT_COMPONENTS = ("vision_tower", "connector", "audio_encoder")
ENGINE_BUILD_CHOICES = ("auto", "yes", "no")
#: `vl2 report`: rows that get a contact sheet (each decodes its frames again), and the page written.
DEFAULT_MAX_SHEETS = 2000
#: More rows than any report page holds sheets for: the bound only refuses nonsense.
MAX_SHEETS_LIMIT = 10**6
DEFAULT_REPORT_OUT = "report.html"
#: `vl2 merge`: the merged file's formats (parquet needs pyarrow).
MERGE_FORMATS = ("jsonl", "parquet")

#: Help panels: the groups settings are shown in by `--help` and listed by in docs/cli.md.
MODEL, INPUTS, RUN, OUTPUT, SEGMENTS, EXPORT, REPORT = "Model", "Inputs", "Run", "Output", "Segments", "Export", "Report"
V1 = "Video-LLaMA v1"
GROUPS = (MODEL, V1, INPUTS, RUN, OUTPUT, SEGMENTS, EXPORT, REPORT)
#: Attention heads an encoder of another width than the released ones may declare (they are not in its files).
MAX_ENCODER_HEADS = 1024
#: The metadata keys every setting declares (`_setting`); tests/test_settings.py checks they are complete.
METADATA_KEYS = ("help", "flags", "group", "choices", "unset", "range", "hint")


def _setting(default: Any, help: str, *flags: str, group: str, choices: tuple[str, ...] | None = None,
             unset: str | None = None, range: Range | None = None, hint: str = "") -> Any:
    """One setting, declared once: its default and type (the field), its flags (the first long one names
    it in --help; `--x/--no-x` for switches), help panel, one-line help, choices, how an unset (None)
    default reads, numeric range and a hint after the help (value syntax). The CLI's options, `vl2
    config show`, the YAML keys and the `VL2_*` variables all come from this."""
    metadata = {"help": help, "flags": flags, "group": group, "choices": choices, "unset": unset,
                "range": range, "hint": hint}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)

#: The walk's defaults, which the input settings take (one declaration for the CLI and the library).
_WALK = WalkOptions()


@dataclass
class Settings:
    """Everything a run can be told. `None` means "decide from the model/device" where noted."""

    model: str = _setting(DEFAULT_MODEL, "hub id or local checkpoint folder", "--model", "-m", group=MODEL)
    revision: str | None = _setting(None, "hub revision (branch, tag or commit)", "--revision", group=MODEL,
                                    unset="the default branch")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:N", "--device", group=MODEL)
    dtype: str = _setting("auto", "auto (fp32 on CPU, bf16 on GPU), fp32, bf16, fp16", "--dtype", group=MODEL)
    encoder_backend: str = _setting("auto", "auto, tensorrt, onnxruntime, torch", "--encoder-backend", group=MODEL)
    device_map: str | None = _setting(None, "spread the LLM over GPUs (e.g. auto; for 72B)", "--device-map",
                                      group=MODEL, unset="one device")
    export_dir: str | None = _setting(None, "where `vl2 export` writes ONNX graphs", "--export-dir", group=MODEL,
                                      unset="export/ under $VL2_HOME, the checkout or ~/.cache/vl2")
    engine_dir: str | None = _setting(None, "where `vl2 export` writes TensorRT engines", "--engine-dir", group=MODEL,
                                      unset="engines/ beside export/")
    home: str | None = _setting(None, "root of export/, engines/ and Video-LLaMA's lavis/ folders", "--home",
                                group=MODEL, unset="the source checkout, else ~/.cache/vl2")
    v1_llm: str | None = _setting(None, "the LLaMA/Vicuna folder of a checkpoint folder that holds none", "--v1-llm",
                                  group=V1, unset="the LLaMA folder inside the checkpoint folder")
    v1_lavis_dir: str | None = _setting(None, "a folder holding eva_vit_g.pth and blip2_pretrained_flant5xxl.pth",
                                        "--v1-lavis-dir", group=V1,
                                        unset="beside the checkpoints, then lavis/ under the home folder")
    v1_eva_heads: int | None = _setting(None, "attention heads of an EVA ViT of another width than the released",
                                        "--v1-eva-heads", group=V1, unset="the released width's",
                                        range=Range(1, MAX_ENCODER_HEADS))
    v1_imagebind_heads: int | None = _setting(None, "attention heads of an ImageBind audio encoder of another width",
                                              "--v1-imagebind-heads", group=V1, unset="the released width's",
                                              range=Range(1, MAX_ENCODER_HEADS))
    frames: int | None = _setting(None, "frames per video", "--frames", group=MODEL, unset="the model's num_frames",
                                  range=Range(1, FRAMES_LIMIT))
    modality: str = _setting("auto", "what of each file the model sees", "--modality", group=MODEL,
                             choices=MODALITIES, hint=": auto|video|audio|av")
    batch_size: int | None = _setting(None, "files per model call", "--batch-size", "-b", group=RUN,
                                      unset=f"{CPU_BATCH_SIZE} on CPU, up to {GPU_MAX_BATCH_SIZE} on GPU",
                                      range=Range(1, 1024))
    workers: int | None = _setting(None, "decode worker processes", "--workers", "-j", group=RUN,
                                   unset=f"cores-{MODEL_PROCESS_CORES}, at most {CPU_WORKERS} CPU / "
                                         f"{GPU_WORKERS} GPU",
                                   range=Range(1, 256))
    decode_timeout: float = _setting(DEFAULT_DECODE_TIMEOUT_S, "seconds before a stuck decoder is killed",
                                     "--decode-timeout", group=RUN, range=Range(0, 86400, low_open=True))
    video_backend: str = _setting("decord", "decord or pyav (for files decord misreads)", "--video-backend",
                                  group=RUN, choices=("decord", "pyav"))
    shard: str | None = _setting(None, "K/N: only shard K of N (0-based), into --out DIR/", "--shard", group=RUN,
                                 unset="SLURM_ARRAY_* when --out is a folder")
    engine: str = _setting("local", "local, or ray: a Ray Data actor pool (pip install 'vl2\\[ray]')",
                           "--engine", group=RUN, choices=ENGINES)
    ray_address: str | None = _setting(None, "engine ray: the cluster to join (auto, head:6379)", "--ray-address",
                                       group=RUN, unset="a local one")
    actors: int | None = _setting(None, "engine ray: model actors in the pool", "--actors", group=RUN,
                                  unset="one per GPU, else per node", range=Range(1, 4096))
    max_new_tokens: int = _setting(DEFAULT_MAX_NEW_TOKENS, "longest answer, in tokens", "--max-new-tokens",
                                   group=MODEL, range=Range(1, 65536))
    prompt: str | None = _setting(None, "caption instruction", "--prompt", "-p", group=MODEL, unset="by modality")
    labels: list[str] = _setting([], "classify: candidate labels", "--labels", "-l", group=MODEL,
                                 hint=': "a,b,c" or @file; repeatable')
    top_k: int = _setting(DEFAULT_TOP_K, "classify: labels kept in `top_k`", "--top-k", "-k", group=MODEL,
                          range=Range(1, 10000))
    segment: str | None = _setting(None, "a record per segment: a length (30s, 1m30s) or scenes", "--segment",
                                   group=SEGMENTS, unset="whole files")
    segment_overlap: str | None = _setting(None, "time a fixed segment shares with the next",
                                           "--segment-overlap", group=SEGMENTS, unset="none")
    segment_min: str = _setting("2s", "shortest scene (shorter ones join a neighbour)", "--segment-min",
                                group=SEGMENTS)
    segment_max: str = _setting("60s", "longest scene (longer ones are split)", "--segment-max",
                                group=SEGMENTS)
    format: str = _setting("jsonl", "jsonl, or srt|vtt: also a subtitle file per input", "--format",
                           group=OUTPUT, choices=("jsonl", "srt", "vtt"))
    out_dir: str | None = _setting(None, "folder for subtitle files", "--out-dir", group=OUTPUT,
                                   unset="beside each input")
    # the walk's settings: their defaults are the library's (discover.WalkOptions), declared there
    include: list[str] = _setting(list(_WALK.include), "globs a file in a folder must match", "--include", group=INPUTS,
                                  hint=" (repeatable)")
    exclude: list[str] = _setting(list(_WALK.exclude), "globs that drop a file in a folder", "--exclude", group=INPUTS,
                                  hint=" (repeatable)")
    kinds: list[str] = _setting(list(_WALK.kinds), "media kinds picked up in folders", "--kind",
                                group=INPUTS, hint=": video|image|audio (repeatable)")
    recursive: bool = _setting(_WALK.recursive, "walk sub-folders", "--recursive/--no-recursive", group=INPUTS)
    out: str = _setting("-", "JSONL file; - for stdout; DIR/: a part per shard", "--out", "-o",
                        group=OUTPUT)
    overwrite: bool = _setting(False, "redo files already in the output",
                               "--overwrite/--no-overwrite", group=OUTPUT)
    retry_failed: bool = _setting(False, "redo files whose last record is an error",
                                  "--retry-failed/--no-retry-failed", group=OUTPUT)
    quiet: bool = _setting(False, "silent unless a file failed", "--quiet/--no-quiet", group=RUN)
    log_level: str = _setting("auto", "lowest stderr level shown", "--log-level", group=RUN,
                              choices=LOG_LEVELS)
    json: bool = _setting(False, "JSON records on a terminal too", "--json/--no-json", group=OUTPUT)
    files_from: str | None = _setting(None, "a file listing inputs, one per line; - reads stdin", "--files-from",
                                      group=INPUTS, unset="none")
    temperature: float | None = _setting(None, "sample with this temperature; unset or 0: greedy", "--temperature",
                                         group=MODEL, unset="greedy", range=Range(0, 100))
    top_p: float | None = _setting(None, "nucleus sampling mass when sampling", "--top-p", group=MODEL,
                                   unset=f"{DEFAULT_TOP_P} when sampling", range=Range(0, 1, low_open=True))
    seed: int | None = _setting(None, "sampling seed (same seed and batch size: same answers)", "--seed",
                                group=MODEL, unset="none", range=Range(0, 2**32 - 1))
    log_files: bool = _setting(False, "a stderr line per finished file",
                               "--log-files/--no-log-files", "-v", group=RUN)
    precision: str = _setting(DEFAULT_EXPORT_PRECISION, "engine precision (ONNX graphs are fp32; TensorRT-RTX has no "
                              "bf16)", "--precision", group=EXPORT, choices=EXPORT_PRECISIONS)
    components: list[str] = _setting([], "only these components", "--component", group=EXPORT,
                                     hint=f": {'|'.join(EXPORT_COMPONENTS)} (repeatable; none: all the model has)")
    max_batch: int = _setting(DEFAULT_EXPORT_MAX_BATCH, "largest batch of videos / audio clips an engine takes",
                              "--max-batch", group=EXPORT, range=Range(1, 1024))
    engines: str = _setting("auto", "build TensorRT engines: auto (where possible), yes (fail if not), no",
                            "--engines", group=EXPORT, choices=ENGINE_BUILD_CHOICES)
    gpu_targets: list[str] = _setting([], "compute capabilities to build TensorRT-RTX engines for, e.g. 8.9",
                                      "--gpu-target", group=EXPORT, hint=" (repeatable; none: all it supports)")
    report_out: str = _setting(DEFAULT_REPORT_OUT, "the HTML file to write", "--out", "-o", group=REPORT)
    max_sheets: int = _setting(DEFAULT_MAX_SHEETS, "rows that get a contact sheet (each decodes its frames again)",
                               "--max-sheets", group=REPORT, range=Range(0, MAX_SHEETS_LIMIT))
    # the helper commands' own settings: their --out (and inspect's --model) mean another thing, or have
    # another default, than the run commands' ones of the same flag
    merge_out: str | None = _setting(None, "merge: the merged file (written whole, then renamed into place)",
                                     "--out", "-o", group=OUTPUT, unset="required")
    merge_format: str = _setting("jsonl", "merge: jsonl or parquet (needs pyarrow)", "--format", group=OUTPUT,
                                 choices=MERGE_FORMATS)
    inspect_out: str | None = _setting(None, "inspect: folder for inspect.json, the frame PNGs and the WAV",
                                       "--out", "-o", group=OUTPUT, unset="required")
    inspect_model: str | None = _setting(None, "inspect: take the frame count from this checkpoint's config "
                                         "(no weights are loaded)", "--model", group=MODEL,
                                         unset="none: frames, else 8")
    convert_out: str | None = _setting(None, "convert: new folder for the safetensors copy", "--out", group=OUTPUT,
                                       unset="required")


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))
_METADATA: dict[str, Mapping[str, Any]] = {f.name: f.metadata for f in dataclasses.fields(Settings)}
#: Every numeric setting's range. A value outside it is refused before any work: a million frames or a
#: seed past 2**32 would otherwise fail deep inside torch (an abort, or every file a model_error).
RANGES: dict[str, Range] = {name: meta["range"] for name, meta in _METADATA.items() if meta["range"] is not None}

_MODEL_SETTINGS = ("model", "revision", "device", "dtype", "encoder_backend", "frames", "modality", "device_map",
                   "export_dir", "engine_dir")
#: Where a model's files are found: the home folder and Video-LLaMA v1's LLM and LAVIS files.
_LOCATION_SETTINGS = ("home", "v1_llm", "v1_lavis_dir")
#: Settings no command takes as a flag (set once per machine or model: their VL2_* variable or the config
#: file; `config show` lists every setting). The home folder and v1 files are flags of `vl2 convert`
#: only: a run's --help stays short (tests/test_cli_help.py).
UNFLAGGED_SETTINGS = ("v1_eva_heads", "v1_imagebind_heads")
_GENERATE_SETTINGS = ("max_new_tokens", "temperature", "top_p", "seed")
_INPUT_SETTINGS = ("include", "exclude", "kinds", "recursive", "files_from")
_RUN_SETTINGS = ("out", "overwrite", "retry_failed", *_MODEL_SETTINGS, *_INPUT_SETTINGS, "batch_size", "workers",
                 "decode_timeout", "video_backend", "quiet", "log_level", "log_files", "shard", "engine", "ray_address",
                 "actors",
                 "segment", "segment_overlap", "segment_min", "segment_max", "format", "out_dir")
def _first_to_claim_their_flags(names: tuple[str, ...]) -> tuple[str, ...]:
    """The settings none of whose flags an earlier one declares: `config show --model` must set `model`,
    not `inspect_model` (click lets the option declared last take a flag two options declare)."""
    claimed: set[str] = set()
    kept = []
    for name in names:
        flags = {flag for spec in _METADATA[name]["flags"] for flag in spec.split("/")}
        if not flags & claimed:
            kept.append(name)
        claimed |= flags
    return tuple(kept)


#: Which settings each command takes as flags (the rest still come from the environment and config file);
#: a command never offers a flag that would do nothing for it (`--json` is for the commands that print records).
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "caption": ("prompt", *_GENERATE_SETTINGS, *_RUN_SETTINGS, "json"),
    "ask": (*_GENERATE_SETTINGS, *_RUN_SETTINGS, "json"),
    "classify": ("labels", "top_k", *_RUN_SETTINGS, "json"),
    "chat": (*_GENERATE_SETTINGS, *_MODEL_SETTINGS, *_INPUT_SETTINGS, "video_backend", "json"),
    "export": ("model", "revision", "device", "export_dir", "engine_dir", "precision", "components", "max_batch",
               "engines", "gpu_targets"),
    "report": ("report_out", "max_sheets", "video_backend"),
    "merge": ("merge_out", "merge_format"),
    "inspect": ("inspect_out", "inspect_model", "frames", "segment", "segment_overlap", "segment_min", "segment_max",
                "video_backend"),
    "convert": ("convert_out", *_LOCATION_SETTINGS),
    "shards": (),
    "config show": _first_to_claim_their_flags(SETTING_NAMES),
}


def setting_metadata(name: str) -> Mapping[str, Any]:
    """A setting's declaration (`_setting`'s keywords: help, flags, group, choices, unset, range, hint)."""
    return _METADATA[name]


def setting_flags(name: str) -> tuple[str, ...]:
    """The setting's flags as declared (`--recursive/--no-recursive`, `-b`...)."""
    return _METADATA[name]["flags"]


def setting_flag(name: str) -> str:
    """The setting's long flag as a user types it to turn it on or give a value: `--batch-size`."""
    return _METADATA[name]["flags"][0].partition("/")[0]


def default_text(name: str) -> str:
    """A setting's built-in default as --help and docs/cli.md show it."""
    value = getattr(Settings(), name)
    if value is None:
        return _METADATA[name]["unset"] or "none"
    if isinstance(value, bool):
        on, _, off = _METADATA[name]["flags"][0].partition("/")
        return (on if value else off).lstrip("-")
    if isinstance(value, list):
        return ",".join(value) if value else "none"
    return str(value)


@dataclass
class ResolvedSettings:
    """The effective settings and, per name, which layer supplied the value."""

    settings: Settings
    sources: dict[str, SettingSource]
    config_path: Path | None


def env_var_name(name: str) -> str:
    """`batch_size` -> `VL2_BATCH_SIZE`."""
    return ENV_PREFIX + name.upper()


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0], True
    return annotation, False


def _coerce(name: str, value: Any, *, from_text: bool) -> Any:
    """Check (YAML, flags) or parse (environment text) one value against the field's type."""
    base, optional = _base_type(_field_types()[name])
    if value is None or (from_text and optional and value == ""):
        if optional:
            return None
        raise ValueError("must not be empty")
    if typing.get_origin(base) is list:
        if from_text or isinstance(value, str):
            return [part.strip() for part in str(value).split(",") if part.strip()]
        if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
            return [str(v) for v in value]
        raise ValueError("must be a list of strings")
    if base is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return str(value).strip().lower() in _TRUE_WORDS
        raise ValueError("must be true or false")
    if base is int:
        if isinstance(value, bool) or not (isinstance(value, int) or from_text):
            raise ValueError("must be an integer")
        return _parsed(int, value, "must be an integer")
    if base is float:
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or from_text):
            raise ValueError("must be a number")
        return _parsed(float, value, "must be a number")
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _parsed(kind: type, value: Any, expected: str) -> Any:
    """`kind(value)`, its failure said as the setting's expectation (not Python's `invalid literal` text)."""
    try:
        return kind(value)
    except ValueError:
        raise ValueError(expected) from None


def _validate(settings: Settings) -> None:
    """Range and choice checks shared by every layer (raised as Vl2Error naming the setting)."""
    for f in dataclasses.fields(Settings):
        choices = f.metadata["choices"]
        if choices and getattr(settings, f.name) not in choices:
            raise Vl2Error(f"{f.name}: {getattr(settings, f.name)!r} is not one of {', '.join(choices)}")
    for name, allowed in RANGES.items():
        value = getattr(settings, name)
        if value is not None and not allowed.holds(value):
            raise Vl2Error(f"{name}: must be {allowed.text()} (got {value})")
    if not _DEVICE_PATTERN.fullmatch(settings.device):
        raise Vl2Error(f"device: {settings.device!r} is not one of auto, cpu, cuda, cuda:N")
    if not settings.out:
        raise Vl2Error("out: must name a file, or - for stdout")
    _validate_sampling(settings)
    _validate_combinations(settings)
    bad_kinds = set(settings.kinds) - set(MEDIA_KINDS)
    if bad_kinds:
        raise Vl2Error(f"kinds: unknown {sorted(bad_kinds)}; choose from {', '.join(MEDIA_KINDS)}")
    bad_components = set(settings.components) - set(EXPORT_COMPONENTS)
    if bad_components:
        raise Vl2Error(f"components: unknown {sorted(bad_components)}; choose from {', '.join(EXPORT_COMPONENTS)}")


def _validate_combinations(settings: Settings) -> None:
    """Settings that do nothing without another one are refused, not silently ignored."""
    if settings.out_dir is not None and settings.format == "jsonl":
        raise Vl2Error("out_dir: only used for subtitle files; set format to srt or vtt too (or leave out_dir unset)")
    if settings.segment_overlap not in (None, "", "0") and (not settings.segment
                                                            or settings.segment.strip().lower() == "scenes"):
        raise Vl2Error("segment_overlap: only used with fixed-length segments; set segment to a length (e.g. 60s)")
    if settings.ray_address is not None and settings.engine != "ray":
        raise Vl2Error("ray_address: only used with engine ray")


def _validate_sampling(settings: Settings) -> None:
    """Sampling knobs in range, and none given while sampling is off (they would do nothing)."""
    temperature, top_p = settings.temperature, settings.top_p
    if not temperature and (top_p is not None or settings.seed is not None):
        given = "top_p" if top_p is not None else "seed"
        raise Vl2Error(f"{given}: only used when sampling; set temperature above 0 too (greedy is the default)")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of setting names (safe_load only); unknown keys are an error, not ignored."""
    import yaml

    from .bounded_files import read_small_file, reason

    path = Path(path)
    try:
        text = read_small_file(path).decode("utf-8")
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the config file ({reason(exc)})") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: the config file is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML ({exc})") from exc
    except RecursionError:
        raise ConfigFileError(f"{path}: not valid YAML (nested too deep)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: must be a mapping of setting names to values")
    normalised = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(normalised) - set(SETTING_NAMES))
    if unknown:
        raise ConfigFileError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTING_NAMES)}")
    checked = {}
    for key, value in normalised.items():
        try:
            checked[key] = _coerce(key, value, from_text=False)
        except ValueError as exc:
            raise ConfigFileError(f"{path}: {key} {exc}") from None
    return checked


def settings_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Values from `VL2_<NAME>` variables; other VL2_* variables (fixtures, VL2_CONFIG) are ignored."""
    values = {}
    for name in SETTING_NAMES:
        var = env_var_name(name)
        if var in env:
            try:
                values[name] = _coerce(name, env[var], from_text=True)
            except ValueError as exc:
                raise Vl2Error(f"{var}={env[var]!r}: {exc}") from None
    return values


def setting_from_env(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting from its `VL2_*` variable alone (its default when unset), range-checked: for library
    calls made without resolved settings, e.g. `vl2cli.load_model` honouring VL2_HOME and VL2_V1_LLM."""
    env = os.environ if env is None else env
    var = env_var_name(name)
    if var not in env:
        return getattr(Settings(), name)
    try:
        value = _coerce(name, env[var], from_text=True)
    except ValueError as exc:
        raise Vl2Error(f"{var}={env[var]!r}: {exc}") from None
    allowed = RANGES.get(name)
    if value is not None and allowed is not None and not allowed.holds(value):
        raise Vl2Error(f"{var}={env[var]!r}: must be {allowed.text()}")
    return value


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    config_path: str | Path | None = None,
) -> ResolvedSettings:
    """Layer defaults < config file < environment < flags. A flag whose value is None was not given."""
    env = os.environ if env is None else env
    if config_path is None and env.get(CONFIG_ENV_VAR):
        config_path = env[CONFIG_ENV_VAR]
    layers: list[tuple[SettingSource, dict[str, Any]]] = [
        ("config", load_config_file(config_path) if config_path is not None else {}),
        ("env", settings_from_env(env)),
    ]
    given_flags = {}
    for name, value in (flags or {}).items():
        if name not in SETTING_NAMES:
            raise KeyError(f"not a setting: {name}")
        if value is not None:
            given_flags[name] = _coerce(name, value, from_text=False)
    layers.append(("flag", given_flags))
    values: dict[str, Any] = {}
    sources: dict[str, SettingSource] = {name: "default" for name in SETTING_NAMES}
    for source, layer in layers:
        for name, value in layer.items():
            values[name] = value
            sources[name] = source
    settings = Settings(**values)
    _validate(settings)
    return ResolvedSettings(settings, sources, Path(config_path) if config_path is not None else None)


def default_workers(device_type: str, cores: int | None = None) -> int:
    """Decode workers for --workers auto: the cores less the model process's share, at least one."""
    cores = cores or os.cpu_count() or 1
    wanted = CPU_WORKERS if device_type == "cpu" else GPU_WORKERS
    return max(1, min(wanted, cores - MODEL_PROCESS_CORES))


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    """Plain dict in field order (for `vl2 config show` and records)."""
    return {name: getattr(settings, name) for name in SETTING_NAMES}


def setting_help(name: str) -> str:
    """One-line description of a setting (shared by the CLI help and the docs), with its range if it has one."""
    text = _METADATA[name]["help"]
    allowed = RANGES.get(name)
    return f"{text} ({allowed.text()})" if allowed is not None else text


def setting_type(name: str) -> Any:
    """The setting's value type without None (`int` for `batch_size: int | None`): what a flag parses."""
    return _base_type(_field_types()[name])[0]
