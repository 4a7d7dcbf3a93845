"""`vl2`: the command line over the library API (typer).

Flags only gather settings; `settings.resolve_settings` layers them over the environment and the
YAML file, `discover` finds the files, `tasks.pipeline` does the work and `output` writes, resumes and
locks. Heavy imports (torch, the model) happen inside the commands so `vl2 --help` stays fast.
"""
from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from . import __version__
from .errors import Vl2Error
from .commands.exit_codes import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED
from .commands.guard import install_signal_handlers, run_guarded
from .settings import (COMMAND_SETTINGS, MODEL, RUN, SETTING_NAMES, ResolvedSettings, default_text, env_var_name,
                       resolve_settings, setting_flags, setting_metadata, setting_type)

APP_HELP = f"""Captions, answers and labels for folders of videos, images and audio, as JSONL (VideoLLaMA 2).

[bold]Examples[/bold]

  [cyan]vl2 caption ./videos --out captions.jsonl[/cyan]
  [cyan]vl2 ask clip.mp4 "what sound is heard?"[/cyan]
  [cyan]vl2 ask ./videos "is there a dog?" --out answers.jsonl[/cyan]
  [cyan]vl2 classify ./videos --labels "cooking,sports,music" --out labels.jsonl[/cyan]
  [cyan]vl2 caption ./videos --shard 0/4 --out parts/[/cyan]   (then [cyan]vl2 shards parts/[/cyan], [cyan]vl2 merge parts/ --out all.jsonl[/cyan])
  [cyan]vl2 caption long.mp4 --segment 60s[/cyan]   (one caption per minute; --format srt writes subtitles)
  [cyan]vl2 report captions.jsonl --out report.html[/cyan]
  [cyan]vl2 ask a.mp4 b.mp4 -q "who speaks?" -q "where is it?" --out qa.jsonl[/cyan]
  [cyan]vl2 chat clip.mp4[/cyan]   (the model loads once; type questions, Ctrl-D ends)
  [cyan]find /archive -name '*.mp4' | vl2 caption - --out captions.jsonl --dry-run[/cyan]
  [cyan]vl2 config show[/cyan]

Settings: flags > VL2_* environment variables > --config YAML file > defaults.
Exit codes: {EXIT_OK} all files good, {EXIT_SOME_FAILED} some files failed, {EXIT_FATAL} fatal (nothing run).
Docs: docs/cli.md, docs/output-schema.md.
"""

class _FlagHelpOption:
    """Switches (--help, --install-completion...) are shown without a value placeholder: typer would
    print `<bool>` for them, as if they took a value."""

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagHelpOption, TyperCommand):
    """A command whose unknown option names the commands that take it: click would suggest the nearest
    spelling, e.g. `--frames` for `vl2 caption --labels`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:  # click's NoSuchOption: typer >= 0.29 vendors click and does not export it
            elsewhere = commands_taking(exc.option_name) if type(exc).__name__ == "NoSuchOption" else []
            if not elsewhere:
                raise
            where = ", ".join(f"vl2 {command}" for command in elsewhere)
            raise type(exc)(exc.option_name, message=f"No such option: {exc.option_name} "  # type: ignore[attr-defined]
                            f"(it is an option of {where})", ctx=ctx) from None


class _Group(_FlagHelpOption, TyperGroup):
    pass


app = typer.Typer(name="vl2", help=APP_HELP, rich_markup_mode="rich", no_args_is_help=True, cls=_Group, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True, cls=_Group)
app.add_typer(config_app, name="config")

#: Value placeholders by setting type (typer's own would print `<bool>` for switches).
_METAVARS = {bool: "", int: "INTEGER", float: "NUMBER", str: "TEXT"}
#: Said once under each command's options instead of on every one of them.
SETTINGS_EPILOG = ("Each option is also a VL2_<NAME> variable and a key of the --config file, e.g. --batch-size = "
                   "VL2_BATCH_SIZE = batch_size (flags > VL2_* > config > defaults; docs/cli.md).")


def setting_option_help(name: str) -> str:
    """A setting's --help row: its one-line help, value hint, range and default (from its declaration)."""
    meta = setting_metadata(name)
    allowed = meta["range"]
    span = f" ({allowed.short()})" if allowed is not None else ""
    return f"{meta['help']}{meta['hint']}{span} [dim]\\[default: {default_text(name)}][/dim]"


def setting_parameter(name: str) -> inspect.Parameter:
    """The one way a setting becomes a typer option: a keyword parameter of Optional[the setting's type],
    None meaning "not given", with the flags, panel and help its declaration in `Settings` names."""
    base = setting_type(name)
    option = typer.Option(*setting_flags(name), help=setting_option_help(name),
                          rich_help_panel=setting_metadata(name)["group"], show_default=False,
                          metavar=_METAVARS.get(base, "TEXT"))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[base], option])


def examples(*commands: str, settings: bool = False) -> str:
    """An epilog of example command lines, one per line (in one line they ran together), and with
    `settings` the line on VL2_* variables and the config file."""
    lines = ["Examples:" if len(commands) > 1 else "Example:", *(f"  [cyan]{c}[/cyan]" for c in commands)]
    return "\n".join(lines) + (f"\n\n{SETTINGS_EPILOG}" if settings else "")


def commands_taking(flag: str) -> list[str]:
    """The commands that offer `flag` (for the hint when another command is given it)."""
    names = {name for name in SETTING_NAMES if flag in {f for spec in setting_flags(name) for f in spec.split("/")}}
    return [command for command, taken in COMMAND_SETTINGS.items()
            if command != "config show" and names & set(taken)]


_CONFIG_PARAMETER = inspect.Parameter(
    "config", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file [dim]\\[default: none] \\[env VL2_CONFIG][/dim]",
                                                      rich_help_panel=RUN, show_default=False, metavar="FILE")])
_INPUTS_PARAMETER = inspect.Parameter(
    "inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
    annotation=Annotated[Optional[list[Path]], typer.Argument(
        help="media files and/or folders; - reads paths from stdin, one per line", show_default=False,
        metavar="INPUTS")])
_CHAT_INPUTS_PARAMETER = inspect.Parameter(
    "inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
    annotation=Annotated[Optional[list[Path]], typer.Argument(
        help="media files and/or folders (not -: stdin carries the questions)", show_default=False,
        metavar="INPUTS")])
_DRY_RUN_PARAMETER = inspect.Parameter(
    "dry_run", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option(
        "--dry-run", help="print what would be processed and what resume would skip; load no model "
                          "[dim]\\[default: off][/dim]", rich_help_panel=RUN, show_default=False, metavar="")])


def _with_settings(command: str, *leading: inspect.Parameter,
                   trailing: tuple[inspect.Parameter, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give `fn(**values)` a signature of `leading` parameters + the command's setting flags + --config
    + `trailing` options that are not settings (e.g. --dry-run)."""
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command_fn(**values: Any) -> Any:
            return fn(**values)

        parameters = [*leading, *(setting_parameter(n) for n in COMMAND_SETTINGS[command]), _CONFIG_PARAMETER, *trailing]
        command_fn.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command_fn.__annotations__ = {p.name: p.annotation for p in parameters}
        return command_fn
    return decorate


def _version_callback(value: bool) -> None:
    if value:
        print(f"vl2 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version_callback, is_eager=True,
                                          help="print the version and exit", metavar="")] = False,
) -> None:
    """vl2 command group (the help text is APP_HELP)."""


def _resolve(values: dict[str, Any]) -> ResolvedSettings:
    return resolve_settings({k: v for k, v in values.items() if k in SETTING_NAMES}, config_path=values.get("config"))


def _run(task: str, values: dict[str, Any], questions: tuple[str, ...] = ()) -> int:
    """Shared body of caption/ask/classify; returns the exit code."""
    from .commands.run_command import execute

    return execute(task, list(values["inputs"] or []), _resolve(values).settings, questions=questions,
                   dry_run=values.get("dry_run", False))


@app.command(cls=_Command, epilog=examples("vl2 caption ./videos --out captions.jsonl", settings=True))
@_with_settings("caption", _INPUTS_PARAMETER, trailing=(_DRY_RUN_PARAMETER,))
def caption(**values: Any) -> None:
    """Describe every file (one JSON record per file)."""
    raise typer.Exit(run_guarded(lambda: _run("caption", values)))


_QUESTION_PARAMETER = inspect.Parameter(
    "question", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
    annotation=Annotated[Optional[str], typer.Argument(
        help="the question, asked about every file (or give questions with -q)", show_default=False,
        metavar="QUESTION")])
_QUESTIONS_PARAMETER = inspect.Parameter(
    "questions", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[list[str]], typer.Option(
        "--question", "-q", help="a question (repeatable): each file is decoded and encoded once for all of "
                                 "them, one record per file and question; the last argument is then an input",
        rich_help_panel=MODEL, show_default=False, metavar="TEXT")])


@app.command(cls=_Command, epilog=examples('vl2 ask clip.mp4 "what sound is heard?"',
                                           'vl2 ask ./videos "is there a dog?" --out answers.jsonl',
                                           'vl2 ask a.mp4 b.mp4 -q "who speaks?" -q "where is it?" --out qa.jsonl',
                                           settings=True))
@_with_settings("ask", _INPUTS_PARAMETER, _QUESTION_PARAMETER, trailing=(_QUESTIONS_PARAMETER, _DRY_RUN_PARAMETER))
def ask(**values: Any) -> None:
    """Answer a question about every file. One file to stdout prints just the answer (--json: the record)."""
    def body() -> int:
        inputs, questions = ask_arguments(list(values["inputs"] or []), values["question"], values["questions"] or [],
                                          has_list=_resolve(values).settings.files_from is not None)
        return _run("ask", {**values, "inputs": inputs}, questions=questions)

    raise typer.Exit(run_guarded(body))


def ask_arguments(inputs: list[Path], question: str | None, questions: list[str], *,
                  has_list: bool) -> tuple[list[Path], tuple[str, ...]]:
    """Sort `vl2 ask`'s positionals: with -q every positional is an input; else the last one is the question.

    The command line parser hands the last positional to QUESTION whenever there is one, so
    `vl2 ask clip.mp4` arrives as no inputs and the question "clip.mp4", and `vl2 ask a.mp4 b.mp4` as the
    question "b.mp4": both are a missing question, refused rather than asked.
    """
    from .input_lists import looks_like_input

    if questions:
        return [*inputs, *([Path(question)] if question is not None else [])], tuple(questions)
    if question is None or (not inputs and not has_list):
        raise Vl2Error('ask: the question is missing: vl2 ask FILES... "QUESTION", or -q "QUESTION" (repeatable)')
    if looks_like_input(question):
        raise Vl2Error(f'ask: the question is missing: {question!r} is a file, not a question; give the question '
                       'last in quotes (vl2 ask FILES... "QUESTION") or with -q "QUESTION"')
    return inputs, (question,)


@app.command(cls=_Command, epilog=examples('vl2 classify ./videos --labels "cooking,sports,music" --out labels.jsonl',
                                           settings=True))
@_with_settings("classify", _INPUTS_PARAMETER, trailing=(_DRY_RUN_PARAMETER,))
def classify(**values: Any) -> None:
    """Score each label by the model's log-likelihood; the record has probabilities and the top-k."""
    raise typer.Exit(run_guarded(lambda: _run("classify", values)))


def _positional(name: str, kind: type, help: str, metavar: str) -> inspect.Parameter:
    """A command's one required positional argument (not a setting: what the command is about)."""
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[
        kind, typer.Argument(help=help, show_default=False, metavar=metavar)])


_SHARD_FOLDER_PARAMETER = _positional("folder", Path, "the --out folder of a sharded run", "FOLDER")


@app.command("shards", cls=_Command, epilog=examples("vl2 shards out/"))
def shards(folder: Annotated[Path, typer.Argument(help="the --out folder of a sharded run", show_default=False)]) -> None:
    """Which shards of a sharded run are complete, and the --array expression that reruns the others."""
    from .commands.shard_commands import shards_report

    raise typer.Exit(run_guarded(lambda: shards_report(folder)))


def _required(value: str | None, command: str, flag: str) -> str:
    """A setting a command cannot run without (its --out), refused by name when unset in every layer."""
    if value is None:
        raise Vl2Error(f"{command}: {flag} is required")
    return value


@app.command("merge", cls=_Command, epilog=examples("vl2 merge out/ --out captions.parquet --format parquet",
                                                    settings=True))
@_with_settings("merge", _SHARD_FOLDER_PARAMETER)
def merge(**values: Any) -> None:
    """Merge a sharded run's part files into one file: the last record per file and request, once."""
    def body() -> int:
        from .commands.shard_commands import merge_shards

        settings = _resolve(values).settings
        out = _required(settings.merge_out, "vl2 merge", "--out")
        return merge_shards(values["folder"], out, settings.merge_format)  # type: ignore[arg-type]

    raise typer.Exit(run_guarded(body))


_INSPECT_FILE_PARAMETER = _positional("file", Path, "the media file", "FILE")


@app.command("inspect", cls=_Command, epilog=examples("vl2 inspect clip.vob --out seen/ --frames 16", settings=True))
@_with_settings("inspect", _INSPECT_FILE_PARAMETER)
def inspect_file(**values: Any) -> None:
    """Write what the model is given from one file: the sampled frames as PNGs (decoded size, upright),
    the sound heard as a 16 kHz WAV, and inspect.json naming them with the probe and the notes."""
    def body() -> int:
        from .commands.inspect_command import run_inspect

        settings = _resolve(values).settings
        out = Path(_required(settings.inspect_out, "vl2 inspect", "--out"))
        return run_inspect(values["file"], out, model=settings.inspect_model, frames=settings.frames,
                           segment=settings.segment, overlap=settings.segment_overlap,
                           segment_min=settings.segment_min, segment_max=settings.segment_max,
                           video_backend=settings.video_backend)

    raise typer.Exit(run_guarded(body))


@app.command("models", cls=_Command, epilog=examples("vl2 models", "vl2 models --json"))
def models(as_json: Annotated[bool, typer.Option("--json", help="one JSON array, for scripts", metavar="")] = False) -> None:
    """The models in the Hugging Face cache vl2 runs: id, revision, size, and what each still lacks
    (its vision tower, Video-LLaMA's LAVIS files)."""
    from .commands.models_command import models_command

    raise typer.Exit(run_guarded(lambda: models_command(as_json=as_json, stdout=sys.stdout, stderr=sys.stderr)))


@app.command("pull", cls=_Command, epilog=examples("vl2 pull DAMO-NLP-SG/VideoLLaMA2.1-7B-AV",
                                                            "HF_HUB_OFFLINE=1 vl2 caption ./videos   (runs from the cache alone)"))
def pull(
    model: Annotated[str, typer.Argument(help="hub id (or a folder, for the repos it names)", show_default=False,
                                         metavar="MODEL")],
    revision: Annotated[Optional[str], typer.Option("--revision", help="branch, tag or commit of the model",
                                                    show_default=False, metavar="TEXT")] = None,
) -> None:
    """Download a model and everything it needs (its vision tower, BERT for Video-LLaMA) into the Hugging
    Face cache, with progress; with HF_HUB_OFFLINE set, say what is missing."""
    from .commands.models_command import pull_command

    raise typer.Exit(run_guarded(lambda: pull_command(model, revision=revision, stdout=sys.stdout, stderr=sys.stderr)))


@app.command(cls=_Command, epilog=examples("vl2 chat clip.mp4   (type questions; Ctrl-D ends)",
                                           "printf 'who speaks?\\nwhere is it?\\n' | vl2 chat clip.mp4", settings=True))
@_with_settings("chat", _CHAT_INPUTS_PARAMETER)
def chat(**values: Any) -> None:
    """Load the model once and answer questions, one per line from a terminal or a pipe, about the given
    files: one answer per line (--json: the record), streamed on a terminal. Each question follows the
    earlier questions and answers about the file; /help lists the commands (/file, /reset, /quit). Each
    file is encoded once, kept in memory (never on disk), so later questions cost only the language model."""
    def body() -> int:
        from .commands.chat import chat_command

        return chat_command(list(values["inputs"] or []), _resolve(values).settings, stdin=sys.stdin,
                            stdout=sys.stdout, stderr=sys.stderr)

    raise typer.Exit(run_guarded(body))


@config_app.command("show", cls=_Command)
@_with_settings("config show")
def config_show(**values: Any) -> None:
    """Print the effective settings as YAML, each with where it came from (flag, env, config, default)."""
    def show() -> int:
        import yaml

        resolved = _resolve(values)
        if resolved.config_path is not None:
            print(f"# config file: {resolved.config_path}")
        for name in SETTING_NAMES:
            line = yaml.safe_dump({name: getattr(resolved.settings, name)}, default_flow_style=True, width=10**6)
            print(f"{line.strip()[1:-1]}  # {resolved.sources[name]} ({env_var_name(name)})")
        return EXIT_OK

    raise typer.Exit(run_guarded(show))


EXPORT_HELP = """Export the encoders (vision tower, STC connector, BEATs + audio projector) to ONNX, and to
TensorRT engines where a TensorRT product can build them: full TensorRT on its GPU, or TensorRT-RTX
(vl2\\[tensorrt-rtx]) ahead of time for RTX-class GPUs, with or without a GPU here (never for
H100/H200). Every graph is checked against PyTorch before it is kept, engines too where a GPU they
run on is here (see docs/export.md); run commands then pick them up with --encoder-backend auto."""


@app.command("export", cls=_Command, help=EXPORT_HELP, epilog=examples(
    "vl2 export --model DAMO-NLP-SG/VideoLLaMA2.1-7B-AV",
    "vl2 export --model ./my-checkpoint --precision fp32 --max-batch 4 --gpu-target 8.9",
    "vl2 export --model DAMO-NLP-SG/VideoLLaMA2.1-7B-16F --engines no --component vision_tower", settings=True))
@_with_settings("export")
def export(**values: Any) -> None:
    """Export the encoders to ONNX (and TensorRT), validated against PyTorch (the help is EXPORT_HELP)."""
    def body() -> int:
        from .commands.export_command import run_export  # loads torch: only now, `vl2 --help` must stay fast

        return run_export(_resolve(values).settings)

    raise typer.Exit(run_guarded(body))


_CONVERT_MODEL_PARAMETER = _positional("model", str, "Video-LLaMA (v1) hub id, folder or upstream eval YAML", "MODEL")


@app.command("convert", cls=_Command, epilog=examples(
    "vl2 convert DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned --out ./video-llama-2-7b", settings=True))
@_with_settings("convert", _CONVERT_MODEL_PARAMETER)
def convert(**values: Any) -> None:
    """Write a safetensors copy of a Video-LLaMA (v1) model, which then loads without unpickling."""
    def body() -> int:
        from .api import convert_model

        settings = _resolve(values).settings
        out = Path(_required(settings.convert_out, "vl2 convert", "--out"))
        written = convert_model(values["model"], out, home=settings.home, v1_llm=settings.v1_llm,
                                v1_lavis_dir=settings.v1_lavis_dir)
        print(f"wrote {len(written)} files to {out}; use --model {out}")
        return EXIT_OK

    raise typer.Exit(run_guarded(body))


_RESULTS_PARAMETER = _positional("results", Path, "a vl2 JSONL output", "RESULTS")


@app.command("report", cls=_Command, epilog=examples("vl2 report captions.jsonl --out report.html", settings=True))
@_with_settings("report", _RESULTS_PARAMETER)
def report(**values: Any) -> None:
    """One self-contained HTML page of a JSONL output: summary, filters, search, a row per file or segment
    with the frames the model saw."""
    def body() -> int:
        from .commands.report_command import run_report

        return run_report(values["results"], _resolve(values).settings)

    raise typer.Exit(run_guarded(body))


def main() -> None:
    """Console-script entry point (`vl2`)."""
    install_signal_handlers()  # one message and the shell's 128+N code, no traceback
    app(prog_name="vl2")


if __name__ == "__main__":
    main()
