"""Settings: defaults < YAML file < VL2_* environment < flags, with typed checking at every layer."""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from vl2cli.errors import ConfigFileError, Vl2Error
from vl2cli.settings import DEFAULT_MODEL, SETTING_NAMES, Settings, env_var_name, resolve_settings


def _config(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "vl2.yaml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_given() -> None:
    resolved = resolve_settings({}, env={})
    assert resolved.settings.model == DEFAULT_MODEL
    assert resolved.settings.batch_size is None and resolved.settings.modality == "auto"
    assert set(resolved.sources.values()) == {"default"}


def test_precedence_flag_over_env_over_config_over_default(tmp_path: Path) -> None:
    config = _config(tmp_path, "batch_size: 2\nframes: 4\nworkers: 3\nlabels: [cat, dog]\nmax-new-tokens: 7\n")
    env = {"VL2_FRAMES": "8", "VL2_WORKERS": "5", "VL2_REFERENCE_FIXTURES": "/ignored"}
    resolved = resolve_settings({"workers": 1, "quiet": None}, env=env, config_path=config)
    s = resolved.settings
    assert (s.batch_size, s.frames, s.workers, s.labels, s.max_new_tokens) == (2, 8, 1, ["cat", "dog"], 7)
    assert resolved.sources["batch_size"] == "config"
    assert resolved.sources["frames"] == "env"
    assert resolved.sources["workers"] == "flag"
    assert resolved.sources["quiet"] == "default"


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = _config(tmp_path, "model: /models/x\n")
    resolved = resolve_settings({}, env={"VL2_CONFIG": str(config)})
    assert resolved.settings.model == "/models/x" and resolved.config_path == config


def test_environment_text_is_parsed_by_type() -> None:
    env = {"VL2_QUIET": "yes", "VL2_OVERWRITE": "0", "VL2_INCLUDE": "*.mp4, *.mkv", "VL2_DECODE_TIMEOUT": "2.5",
           "VL2_REVISION": ""}
    s = resolve_settings({}, env=env).settings
    assert (s.quiet, s.overwrite, s.include, s.decode_timeout, s.revision) == (True, False, ["*.mp4", "*.mkv"], 2.5, None)
    with pytest.raises(Vl2Error, match="VL2_BATCH_SIZE"):
        resolve_settings({}, env={"VL2_BATCH_SIZE": "many"})


@pytest.mark.parametrize("text, match", [
    ("colour: red\n", "unknown setting"),
    ("batch_size: four\n", "batch_size must be an integer"),
    ("quiet: maybe\n", "quiet must be true or false"),
    ("- a\n- b\n", "must be a mapping"),
    ("model: [unclosed\n", "not valid YAML"),
    ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_bad_config_files_raise_config_file_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigFileError, match=match):
        resolve_settings({}, env={}, config_path=_config(tmp_path, text))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        resolve_settings({}, env={}, config_path=tmp_path / "absent.yaml")


def test_choices_and_ranges_are_checked() -> None:
    with pytest.raises(Vl2Error, match="modality"):
        resolve_settings({"modality": "smell"}, env={})
    with pytest.raises(Vl2Error, match="batch_size"):
        resolve_settings({"batch_size": 0}, env={})
    with pytest.raises(Vl2Error, match="kinds"):
        resolve_settings({}, env={"VL2_KINDS": "video,hologram"})


#: Values the settings module constrains beyond their type (checked in settings._validate).
_CONSTRAINED = {"device": "cuda:1", "kinds": ["audio", "image"], "decode_timeout": 7.5, "top_p": 0.5,
                "segment_overlap": "5s", "components": ["connector"]}
#: Settings refused without the one they work with (sampling knobs need a temperature; out_dir a
#: subtitle format; segment_overlap fixed-length segments; ray_address the Ray engine).
_COMPANIONS = {"top_p": {"temperature": 0.5}, "seed": {"temperature": 0.5}, "out_dir": {"format": "srt"},
               "segment_overlap": {"segment": "60s"}, "ray_address": {"engine": "ray"}}


def _other_value(field: dataclasses.Field) -> Any:
    """A valid value unlike the default, derived from the field's type (and choices)."""
    if field.name in _CONSTRAINED:
        return _CONSTRAINED[field.name]
    choices = field.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != field.default)
    base = typing.get_type_hints(Settings)[field.name]
    args = [a for a in typing.get_args(base) if a is not type(None)]
    base = args[0] if args and typing.get_origin(base) is not list else base
    if base is bool:
        return not field.default
    if base is int:
        return (field.default or 2) + 1
    if base is float:
        return (field.default or 0.25) * 2
    if typing.get_origin(base) is list:
        return ["first*", "second*"]
    assert base is str, (field.name, base)
    return f"{field.name}-value"


def _as_env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def test_every_setting_has_its_default_when_nothing_is_given() -> None:
    resolved = resolve_settings({}, env={})
    defaults = Settings()
    assert set(resolved.sources) == set(SETTING_NAMES) == {f.name for f in dataclasses.fields(Settings)}
    for name in SETTING_NAMES:
        assert getattr(resolved.settings, name) == getattr(defaults, name), name


@pytest.mark.parametrize("field", dataclasses.fields(Settings), ids=lambda f: f.name)
def test_every_setting_round_trips_through_each_layer(tmp_path: Path, field: dataclasses.Field) -> None:
    """Each of the settings, taken from Settings itself: its YAML key (underscores or dashes), its
    VL2_<NAME> variable and its flag each give the value, and say which layer it came from."""
    value = _other_value(field)
    assert value != getattr(Settings(), field.name), field.name
    companions = _COMPANIONS.get(field.name, {})
    variable = env_var_name(field.name)
    assert variable == "VL2_" + field.name.upper()
    layers = {
        "config": dict(config_path=_config(tmp_path, yaml.safe_dump({field.name: value, **companions}))),
        "config-dashes": dict(config_path=_config(Path(tmp_path / "dashes").resolve(), yaml.safe_dump(
            {field.name.replace("_", "-"): value, **companions}))),
        "env": dict(env={variable: _as_env_text(value), **{env_var_name(k): str(v) for k, v in companions.items()}}),
        "flag": dict(flags={field.name: value, **companions}),
    }
    for layer, given in layers.items():
        resolved = resolve_settings(given.get("flags", {}), env=given.get("env", {}), config_path=given.get("config_path"))
        assert getattr(resolved.settings, field.name) == value, (layer, field.name)
        assert resolved.sources[field.name] == layer.split("-")[0], (layer, field.name)


@pytest.mark.parametrize("flags", [{"decode_timeout": float("nan")}, {"decode_timeout": float("inf")},
                                   {"device": "tpu"}, {"out": ""}])
def test_impossible_values_are_refused_by_name(flags) -> None:
    with pytest.raises(Vl2Error, match=next(iter(flags))):
        resolve_settings(flags, env={})


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path) -> None:
    config = tmp_path / "vl2.yaml"
    config.write_bytes(b"model: \xff\xfe\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        resolve_settings({}, env={}, config_path=config)


def test_the_suite_runs_with_exports_outside_the_checkout() -> None:
    """conftest.py isolates exports: an export in the checkout must not change what tests run."""
    from vl2cli.exporting.locations import default_engine_dir, default_export_dir

    roots = [os.path.realpath(default_export_dir()), os.path.realpath(default_engine_dir())]
    checkout = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
    assert not any(root.startswith(checkout + os.sep) for root in roots)


def test_every_setting_declares_complete_metadata() -> None:
    """One declaration per setting: flags, a help panel, help, an unset-default text where the default
    is None, a range for every number, choices only as a tuple of strings that holds the default."""
    from vl2cli.settings import COMMAND_SETTINGS, GROUPS, METADATA_KEYS, RANGES, setting_type

    for f in dataclasses.fields(Settings):
        meta = f.metadata
        assert set(meta) == set(METADATA_KEYS), f.name
        assert meta["help"] and meta["flags"] and meta["group"] in GROUPS, f.name
        assert meta["flags"][0].startswith("--") and all(flag.startswith("-") for flag in meta["flags"]), f.name
        assert (setting_type(f.name) is bool) == ("/" in meta["flags"][0]), f"{f.name}: a switch is --x/--no-x"
        if f.default is None:
            assert meta["unset"], f"{f.name}: say what an unset value means"
        if setting_type(f.name) in (int, float):
            assert f.name in RANGES, f"{f.name}: every number has a range"
        if meta["choices"] is not None:
            assert isinstance(meta["choices"], tuple) and f.default in meta["choices"], f.name
        assert any(f.name in taken for command, taken in COMMAND_SETTINGS.items() if command != "config show"), \
            f"{f.name}: no command offers it"


def test_no_command_offers_one_flag_twice() -> None:
    from vl2cli.settings import COMMAND_SETTINGS, setting_flags

    for command, names in COMMAND_SETTINGS.items():
        if command == "config show":
            continue
        flags = [flag for name in names for spec in setting_flags(name) for flag in spec.split("/")]
        assert len(flags) == len(set(flags)), command


def test_the_docs_table_lists_every_setting_as_declared() -> None:
    from vl2cli.settings import setting_flags
    from vl2cli.settings_table import settings_table

    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert settings_table() in docs, "docs/cli.md: regenerate the settings table (python -m vl2cli.settings_table)"
    for name in SETTING_NAMES:
        row = next(line for line in docs.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{setting_flags(name)[0]}`" in row and f"`{env_var_name(name)}`" in row, name


def test_the_export_settings_choices_are_the_exporters() -> None:
    """The export settings' choices are declared in settings (no torch there); they must be what the
    exporter takes."""
    from vl2cli.exporting.names import ALL_COMPONENTS
    from vl2cli.exporting.tensorrt_build import PRECISIONS
    from vl2cli.settings import EXPORT_COMPONENTS, EXPORT_PRECISIONS

    assert EXPORT_COMPONENTS == ALL_COMPONENTS and EXPORT_PRECISIONS == PRECISIONS
