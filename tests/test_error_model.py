"""The one error model (vl2cli/errors.py): record codes, transience, and messages that name settings.

The codes a record can carry are defined once, by the FileError classes; the shipped schema, the
documentation and resume must agree with them, and no error raised below the command layer may name a
command-line flag (the library has no flags)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from vl2cli import errors
from vl2cli.errors import (RECORD_ERROR_CODES, TRANSIENT_ERROR_CODES, CorruptMediaError, DecodeTimeoutError,
                           FileError, ModelError, Vl2Error, is_transient, record_error)
from vl2cli.output import FileStamp, Request, ResumeIndex, build_record, resume_key
from vl2cli.output.resume import MAX_ATTEMPTS
from vl2cli.output.schema import load_schema, record_problem

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vl2cli"
#: Modules that are the command layer: they speak to a shell user, so they may name flags.
COMMAND_LAYER = {"cli.py"}
COMMAND_PACKAGES = ("commands/",)
#: A long flag in a message: `--name` not inside a word; Slurm's own `--array=` is sbatch's flag, not vl2's.
FLAG = re.compile(r"(?<![\w-])--(?!array=)[a-z][a-z-]*")


def _classes() -> list[type[Vl2Error]]:
    return [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Vl2Error)]


def test_every_file_error_has_its_own_code_and_run_errors_have_none() -> None:
    file_errors = [cls for cls in _classes() if issubclass(cls, FileError) and cls is not FileError]
    assert len({cls.code for cls in file_errors}) == len(file_errors), "two classes share a record code"
    assert {cls.code for cls in file_errors} == RECORD_ERROR_CODES
    assert all(cls.code is None and not cls.transient for cls in _classes() if not issubclass(cls, FileError))
    assert TRANSIENT_ERROR_CODES == {"decode_timeout", "decoder_crash", "model_error", "worker_lost"}
    assert is_transient(DecodeTimeoutError.code) and not is_transient(CorruptMediaError.code) and not is_transient(None)


def test_the_schema_enum_is_the_codes_errors_defines() -> None:
    code = load_schema()["properties"]["error"]["properties"]["code"]
    assert set(code["enum"]) == RECORD_ERROR_CODES and len(code["enum"]) == len(RECORD_ERROR_CODES)


def test_the_documented_codes_are_the_codes_errors_defines() -> None:
    text = (REPO / "docs" / "output-schema.md").read_text(encoding="utf-8")
    table = text.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert documented == RECORD_ERROR_CODES
    transient_rows = {code for code in documented if re.search(rf"^\| `{code}` \|.*transient", table, re.MULTILINE)}
    assert transient_rows == TRANSIENT_ERROR_CODES


def test_the_cli_guide_lists_the_transient_codes() -> None:
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    sentence = " ".join(text.split("except transient ones", 1)[1].split(":", 1)[0].split())
    assert set(re.findall(r"`([a-z_]+)`", sentence)) == TRANSIENT_ERROR_CODES, sentence


def test_record_error_refuses_a_code_errors_does_not_define() -> None:
    assert ModelError("x.mp4: out of memory").as_record_error() == {"code": "model_error", "message": "x.mp4: out of memory"}
    with pytest.raises(ValueError, match="unknown record error code 'modle_error'"):
        record_error("modle_error", "typo")


def _error_record(path: Path, code: str, attempt: int) -> dict:
    request = Request("caption", None, None, "m", None, 8, "auto")
    error = {**record_error(code, "failed"), "attempt": attempt}
    return build_record(request, path=str(path), stamp=FileStamp.of(path), vl2_version="0", error=error)


@pytest.mark.parametrize("code", sorted(RECORD_ERROR_CODES))
def test_resume_retries_exactly_the_transient_codes(tmp_path: Path, code: str) -> None:
    path = tmp_path / "a.mp4"
    path.write_bytes(b"x")
    record = _error_record(path, code, attempt=1)
    assert record_problem(record) is None
    index = ResumeIndex()
    index.add(record)
    key = resume_key(FileStamp.of(path), Request("caption", None, None, "m", None, 8, "auto"))
    assert index.is_done(key) is (code not in TRANSIENT_ERROR_CODES)
    index.add(_error_record(path, code, attempt=MAX_ATTEMPTS))
    assert index.is_done(key), "a transient failure is final after its last attempt"


def _raised_messages(source: str) -> list[tuple[int, str]]:
    """The string pieces of every `raise X(...)` in a module, with their line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for piece in ast.walk(node.exc):
                if isinstance(piece, ast.Constant) and isinstance(piece.value, str):
                    found.append((node.lineno, piece.value))
    return found


def test_no_error_below_the_command_layer_names_a_flag() -> None:
    offenders = []
    for module in sorted(PACKAGE.rglob("*.py")):
        name = module.relative_to(PACKAGE).as_posix()
        if name in COMMAND_LAYER or name.startswith(COMMAND_PACKAGES):
            continue
        for line, text in _raised_messages(module.read_text(encoding="utf-8")):
            if FLAG.search(text):
                offenders.append(f"vl2cli/{name}:{line}: {text!r}")
    assert not offenders, "errors that name CLI flags instead of settings:\n" + "\n".join(offenders)


def test_the_flag_check_can_fail() -> None:
    assert _raised_messages('raise Vl2Error(f"--device {d}: no GPU")') == [(1, "--device "), (1, ": no GPU")]
    assert FLAG.search("--device ") and not FLAG.search("device 'cuda'") and not FLAG.search("--array=1-3")
