"""Values and files vl2 accepts are bounded: a setting outside its documented range, a config or list
that is not a regular file, a NUL byte in a list, a model config.json with absurd sizes or a shard
layout claiming 10^12 shards are each one clear error before any work — never a hang or a traceback."""
from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest

from media_helpers.fixtures import needs_fixtures
from reference_fixtures import REPO_ROOT, reference_root
from vl2cli.errors import CheckpointError, ConfigFileError, InputError, Vl2Error
from vl2cli.settings import RANGES, resolve_settings

AV_FIXTURE = "siglip-qwen2-av"
OUT_OF_RANGE = {"frames": 1_000_000, "batch_size": 100_000, "workers": 10_000, "max_new_tokens": 10**9,
                "top_k": 10**7, "decode_timeout": 10**9, "temperature": 1e6, "top_p": 1.5, "seed": 2**64,
                "actors": 100_000, "max_batch": 100_000, "max_sheets": 10**7, "v1_eva_heads": 10**6,
                "v1_imagebind_heads": 10**6}


@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_numeric_setting_has_a_range_that_is_enforced(name: str) -> None:
    extra = {"temperature": 0.5} if name in ("top_p", "seed") else {}
    with pytest.raises(Vl2Error, match=rf"^{name}: must be .* \(got "):
        resolve_settings({name: OUT_OF_RANGE[name], **extra}, env={})
    with pytest.raises(Vl2Error, match=rf"^VL2_{name.upper()}=|^{name}: must be"):
        resolve_settings(env={f"VL2_{name.upper()}": str(OUT_OF_RANGE[name]), **(
            {"VL2_TEMPERATURE": "0.5"} if extra else {})})


def test_every_range_is_documented() -> None:
    docs = (REPO_ROOT / "docs" / "cli.md").read_text()
    for name, allowed in RANGES.items():
        assert f"| `{name}` | {allowed.text()} |" in docs, name


def test_an_out_of_range_flag_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vl2cli.cli import app

    for args, said in ((["--frames", "1000000"], "frames: must be at least 1 and at most 512 (got 1000000)"),
                       (["--temperature", "0.5", "--seed", str(2**70)], "seed: must be at least 0")):
        result = CliRunner().invoke(app, ["caption", str(tmp_path), *args, "--dry-run"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"vl2: error: {said}"), result.output


@pytest.mark.timeout(120)
def test_configs_labels_and_lists_that_are_not_regular_files_are_refused_at_once(tmp_path: Path) -> None:
    from vl2cli.input_lists import read_path_list
    from vl2cli.tasks.prompts import parse_labels

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes it: reading it would wait forever
    for source in ("/dev/zero", fifo, tmp_path):
        with pytest.raises(ConfigFileError, match="not a regular file"):
            resolve_settings(env={}, config_path=source)
        with pytest.raises(InputError, match="not a regular file.*pipe it into - instead"):
            read_path_list(source)
        with pytest.raises(Vl2Error, match="not a regular file"):
            parse_labels(f"@{source}")
    endless = io.StringIO("x" * 20000)  # stdin that never ends a line (as /dev/zero would)
    with pytest.raises(InputError, match="line 1 of the list of files is longer than"):
        list(read_path_list("-", stdin=endless))


def test_a_nul_byte_in_a_list_skips_that_entry_with_a_warning(tmp_path: Path) -> None:
    from vl2cli.input_lists import iter_listed, read_path_list

    listing = tmp_path / "list.txt"
    listing.write_bytes(b"/a/one.mp4\n/a/t\x00wo.mp4\n/a/three.mp4\n")
    warnings = []
    found = list(iter_listed(read_path_list(listing), on_warning=warnings.append))
    assert found == [Path("/a/one.mp4"), Path("/a/three.mp4")]
    assert [w.reason for w in warnings] == ["bad_list_entry"] and "NUL byte" in warnings[0].message


def _checkpoint_copy(tmp_path: Path, **changes) -> Path:
    source = reference_root() / AV_FIXTURE / "checkpoint"
    folder = tmp_path / "checkpoint"
    folder.mkdir(parents=True)
    config = json.loads((source / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@needs_fixtures(reference=(AV_FIXTURE,))
def test_a_model_config_json_is_range_checked_too(tmp_path: Path) -> None:
    from vl2cli.model.config import Vl2Config
    from vl2cli.model.identity import CheckpointIdentity

    with pytest.raises(CheckpointError, match=r"num_frames 10000000 is not a frame count vl2 supports"):
        CheckpointIdentity.resolve(str(_checkpoint_copy(tmp_path / "a", num_frames=10**7)))
    raw = json.loads((reference_root() / AV_FIXTURE / "checkpoint" / "config.json").read_text())
    for name, value in (("hidden_size", -4), ("num_hidden_layers", 10**9), ("vocab_size", "many"),
                        ("num_frames", 10**7)):
        with pytest.raises(CheckpointError, match=re.escape(f"{name} {value!r}")):
            Vl2Config.from_dict({**raw, name: value})
    deep = _checkpoint_copy(tmp_path / "b")
    (deep / "config.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="nested too deep"):
        CheckpointIdentity.resolve(str(deep))


@pytest.mark.timeout(120)
def test_a_shard_layout_claiming_absurd_counts_is_refused(tmp_path: Path) -> None:
    from vl2cli.commands.shard_commands import shards_report
    from vl2cli.runners.shards import MAX_SHARDS, Shard, ShardError

    (tmp_path / "shards.json").write_text(json.dumps({"shards": 10**12, "array_min": 0}))
    with pytest.raises(ShardError, match=f"integer shards from 1 to {MAX_SHARDS}"):
        shards_report(tmp_path, stdout=io.StringIO())
    with pytest.raises(ShardError, match="at most"):
        Shard.parse(f"0/{10**12}")


def test_segment_lengths_have_a_lower_and_an_upper_bound() -> None:
    from vl2cli.tasks.segmenting import Segmenting

    for text in ("500ms", "0.2", "25h"):
        with pytest.raises(Vl2Error, match=r"^segment: .* a segment must be at least 1 s and at most 86400 s"):
            Segmenting.parse(text)
    with pytest.raises(Vl2Error, match="leave at least 1 s between window starts"):
        Segmenting.parse("10s", overlap="9.5s")
    with pytest.raises(Vl2Error, match="^segment_max"):
        Segmenting.parse("scenes", max_length="200ms", min_length="100ms")
    from vl2cli.media.segments import fixed_windows

    length = Segmenting.parse("2s500ms").length_s
    assert [s.end_s for s in fixed_windows(10.0, length)] == [2.5, 5.0, 7.5, 10.0]


def test_settings_that_do_nothing_without_another_are_refused() -> None:
    for flags, said in (({"out_dir": "subs"}, "out_dir: only used for subtitle files"),
                        ({"segment_overlap": "5s"}, "segment_overlap: only used with fixed-length segments"),
                        ({"segment": "scenes", "segment_overlap": "5s"}, "segment_overlap: only used"),
                        ({"ray_address": "auto"}, "ray_address: only used with engine ray")):
        with pytest.raises(Vl2Error, match=said):
            resolve_settings(flags, env={})
    resolve_settings({"out_dir": "subs", "format": "srt", "segment": "60s", "segment_overlap": "5s"}, env={})


@needs_fixtures(reference=(AV_FIXTURE,))
@pytest.mark.parametrize("junk", ['{"model": [1, {"b": "x"', "[" * 100000])
def test_a_junk_tokenizer_file_is_a_checkpoint_error(tmp_path: Path, junk: str) -> None:
    import shutil

    from vl2cli.model.videollama2 import load_tokenizer

    folder = tmp_path / "checkpoint"
    shutil.copytree(reference_root() / AV_FIXTURE / "checkpoint", folder,
                    ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "tokenizer.json").write_text(junk)
    with pytest.raises(CheckpointError, match="cannot load the tokenizer"):
        load_tokenizer(folder)


def test_a_labels_file_of_too_many_labels_is_refused(tmp_path: Path) -> None:
    from vl2cli.settings import MAX_LABELS
    from vl2cli.run import task_spec

    many = tmp_path / "labels.txt"
    many.write_text("".join(f"label {i}\n" for i in range(MAX_LABELS + 1)))
    with pytest.raises(InputError, match=f"labels: at most {MAX_LABELS} labels"):
        task_spec("classify", resolve_settings({"labels": [f"@{many}"]}, env={}).settings)
    assert (REPO_ROOT / "docs" / "cli.md").read_text().count(f"at most {MAX_LABELS} labels") == 1


def test_the_help_of_each_ranged_setting_states_its_range() -> None:
    from vl2cli.settings import setting_help

    for name, allowed in RANGES.items():
        assert setting_help(name).endswith(f"({allowed.text()})"), name
