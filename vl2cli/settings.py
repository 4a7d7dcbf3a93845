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
#: `log_level` values, most to least talkative (Python's logging level names, lower case).
LOG_LEVELS = ("debug", "info", "warning", "error")
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

    def text(self) -> str:
        low = f"above {_number(self.low)}" if self.low_open else f"at least {_number(self.low)}"
        return f"{low} and at most {_number(self.high)}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


#: Every numeric setting's range. A value outside it is refused before any work: a million frames or a
#: seed past 2**32 would otherwise fail deep inside torch (an abort, or every file a model_error).
RANGES: dict[str, Range] = {
    "frames": Range(1, FRAMES_LIMIT),
    "batch_size": Range(1, 1024),
    "workers": Range(1, 256),
    "max_new_tokens": Range(1, 65536),
    "top_k": Range(1, 10000),
    "decode_timeout": Range(0, 86400, low_open=True),
    "temperature": Range(0, 100),
    "top_p": Range(0, 1, low_open=True),
    "seed": Range(0, 2**32 - 1),
    "actors": Range(1, 4096),
}
#: Labels a classify run takes at most (each is scored by its own forward pass).
MAX_LABELS = 10000


def _setting(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "choices": choices})
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Settings:
    """Everything a run can be told. `None` means "decide from the model/device" where noted."""

    model: str = _setting(DEFAULT_MODEL, "hub id or local checkpoint folder")
    revision: str | None = _setting(None, "hub revision (branch, tag or commit)")
    device: str = _setting("auto", "auto, cpu, cuda, cuda:N")
    dtype: str = _setting("auto", "auto (fp32 on CPU, bf16 on GPU), fp32, bf16, fp16")
    encoder_backend: str = _setting("auto", "auto, tensorrt, onnxruntime, torch")
    device_map: str | None = _setting(None, "spread the LLM over several GPUs (e.g. auto; for the 72B model)")
    export_dir: str | None = _setting(None, "where `vl2 export` wrote ONNX graphs (see docs/export.md)")
    engine_dir: str | None = _setting(None, "where `vl2 export` wrote TensorRT engines (see docs/export.md)")
    frames: int | None = _setting(None, "frames per video")
    modality: str = _setting("auto", "what of each file the model sees", MODALITIES)
    batch_size: int | None = _setting(None, "files per model call")
    workers: int | None = _setting(None, "decode worker processes (the model process keeps a core)")
    decode_timeout: float = _setting(DEFAULT_DECODE_TIMEOUT_S, "seconds before a stuck decoder is killed")
    video_backend: str = _setting("decord", "decord (upstream's reader; PyAV where decord misreads the file) or pyav", ("decord", "pyav"))
    shard: str | None = _setting(None, "K/N: run only shard K of N (0-based) into --out FOLDER/ (default: from the "
                                       "SLURM_ARRAY_* variables when --out is a folder)")
    engine: str = _setting("local", "local (this process) or ray (a Ray Data actor pool; pip install 'vl2[ray]')",
                           ENGINES)
    ray_address: str | None = _setting(None, "engine ray: the cluster to join (e.g. auto, head:6379); "
                                             "default: start a local one")
    actors: int | None = _setting(None, "engine ray: model actors in the pool (default: one per GPU of the "
                                        "cluster, else one per node; never more than the batches)")
    max_new_tokens: int = _setting(DEFAULT_MAX_NEW_TOKENS, "longest answer, in tokens")
    prompt: str | None = _setting(None, "caption instruction")
    labels: list[str] = _setting([], "classify: candidate labels")
    top_k: int = _setting(DEFAULT_TOP_K, "classify: labels kept in `top_k`")
    segment: str | None = _setting(None, "cut long files into segments, one record each: a length (30s, 2m, 1m30s) "
                                         "or scenes")
    segment_overlap: str | None = _setting(None, "fixed segments: time each shares with the next (e.g. 5s)")
    segment_min: str = _setting("2s", "scene segments: shortest (shorter scenes join a neighbour)")
    segment_max: str = _setting("60s", "scene segments: longest (longer scenes are split)")
    format: str = _setting("jsonl", "jsonl: records only; srt, vtt: also a subtitle file per input",
                           ("jsonl", "srt", "vtt"))
    out_dir: str | None = _setting(None, "folder for subtitle files (default: beside each input)")
    include: list[str] = _setting([], "globs a file in a folder must match (any)")
    exclude: list[str] = _setting([], "globs that drop a file in a folder")
    kinds: list[str] = _setting(["video", "image", "audio"], "media kinds picked up in folders")
    recursive: bool = _setting(True, "walk sub-folders")
    out: str = _setting("-", "JSONL output file; - for stdout; a folder (DIR/) for one part file per shard")
    overwrite: bool = _setting(False, "redo files already in the output (appends new records)")
    retry_failed: bool = _setting(False, "redo files whose last record is an error")
    quiet: bool = _setting(False, "no progress bar and nothing on stderr unless something failed (for cron)")
    log_level: str | None = _setting(None, "stderr lines kept, the libraries' warnings included: debug, info, "
                                           "warning or error (None: info, error with quiet)", LOG_LEVELS)
    json: bool = _setting(False, "print JSON records on a terminal too (piped output always is JSON lines)")
    files_from: str | None = _setting(None, "a file listing inputs, one path per line; - reads them from stdin")
    temperature: float | None = _setting(None, "sample with this temperature (> 0); unset or 0: greedy decoding")
    top_p: float | None = _setting(None, "nucleus sampling mass when sampling (the default is upstream's)")
    seed: int | None = _setting(None, "seed for sampling: the same seed and batch size give the same answers")
    log_files: bool = _setting(False, "one timestamped stderr line per finished file: time, status, seconds, path")


SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))


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
        return int(value)
    if base is float:
        if isinstance(value, bool) or not (isinstance(value, (int, float)) or from_text):
            raise ValueError("must be a number")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _validate(settings: Settings) -> None:
    """Range and choice checks shared by every layer (raised as Vl2Error naming the setting)."""
    for f in dataclasses.fields(Settings):
        choices = f.metadata.get("choices")
        if choices and getattr(settings, f.name) not in (*choices, *((None,) if f.default is None else ())):
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
    bad_kinds = set(settings.kinds) - {"video", "image", "audio"}
    if bad_kinds:
        raise Vl2Error(f"kinds: unknown {sorted(bad_kinds)}; choose from video, image, audio")


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
    text = next(f.metadata["help"] for f in dataclasses.fields(Settings) if f.name == name)
    allowed = RANGES.get(name)
    return f"{text} ({allowed.text()})" if allowed is not None else text


def setting_type(name: str) -> Any:
    """The setting's value type without None (`int` for `batch_size: int | None`): what a flag parses."""
    return _base_type(_field_types()[name])[0]
