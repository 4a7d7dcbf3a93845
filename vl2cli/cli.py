"""`vl2`: the command line over the library API (typer).

Flags only gather settings; `settings.resolve_settings` layers them over the environment and the
YAML file, `discover` finds the files, `tasks.pipeline` does the work and `output` writes, resumes and
locks. Heavy imports (torch, the model) happen inside the commands so `vl2 --help` stays fast.
"""
from __future__ import annotations

import functools
import inspect
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from . import __version__
from .errors import Vl2Error
from .settings import (CPU_BATCH_SIZE, CPU_WORKERS, DEFAULT_TOP_P, GPU_MAX_BATCH_SIZE, GPU_WORKERS,
                       MODEL_PROCESS_CORES, SETTING_NAMES, ResolvedSettings, Settings, env_var_name, resolve_settings, setting_help,
                       setting_type)
from .commands.exit_codes import EXIT_FATAL, EXIT_OK, EXIT_SIGNAL_BASE, EXIT_SOME_FAILED

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
    pass


class _Group(_FlagHelpOption, TyperGroup):
    pass


app = typer.Typer(name="vl2", help=APP_HELP, rich_markup_mode="rich", no_args_is_help=True, cls=_Group,
                  context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True, cls=_Group)
app.add_typer(config_app, name="config")

MODEL_PANEL, INPUT_PANEL, RUN_PANEL, OUTPUT_PANEL = "Model", "Inputs", "Run", "Output"
SEGMENT_PANEL = "Segments"

#: Every setting's flags and help panel: the one place the options are declared. Types, defaults and
#: help text come from `vl2cli.settings.Settings`; each command takes the settings listed for it below.
SETTING_FLAGS: dict[str, tuple[tuple[str, ...], str]] = {
    "model": (("--model", "-m"), MODEL_PANEL),
    "revision": (("--revision",), MODEL_PANEL),
    "device": (("--device",), MODEL_PANEL),
    "dtype": (("--dtype",), MODEL_PANEL),
    "encoder_backend": (("--encoder-backend",), MODEL_PANEL),
    "device_map": (("--device-map",), MODEL_PANEL),
    "export_dir": (("--export-dir",), MODEL_PANEL),
    "engine_dir": (("--engine-dir",), MODEL_PANEL),
    "frames": (("--frames",), MODEL_PANEL),
    "modality": (("--modality",), MODEL_PANEL),
    "max_new_tokens": (("--max-new-tokens",), MODEL_PANEL),
    "prompt": (("--prompt", "-p"), MODEL_PANEL),
    "labels": (("--labels", "-l"), MODEL_PANEL),
    "top_k": (("--top-k", "-k"), MODEL_PANEL),
    "temperature": (("--temperature",), MODEL_PANEL),
    "top_p": (("--top-p",), MODEL_PANEL),
    "seed": (("--seed",), MODEL_PANEL),
    "include": (("--include",), INPUT_PANEL),
    "exclude": (("--exclude",), INPUT_PANEL),
    "kinds": (("--kind",), INPUT_PANEL),
    "recursive": (("--recursive/--no-recursive",), INPUT_PANEL),
    "files_from": (("--files-from",), INPUT_PANEL),
    "batch_size": (("--batch-size", "-b"), RUN_PANEL),
    "workers": (("--workers", "-j"), RUN_PANEL),
    "decode_timeout": (("--decode-timeout",), RUN_PANEL),
    "video_backend": (("--video-backend",), RUN_PANEL),
    "shard": (("--shard",), RUN_PANEL),
    "engine": (("--engine",), RUN_PANEL),
    "ray_address": (("--ray-address",), RUN_PANEL),
    "actors": (("--actors",), RUN_PANEL),
    "quiet": (("--quiet/--no-quiet",), RUN_PANEL),
    "log_files": (("--log-files/--no-log-files", "-v"), RUN_PANEL),
    "out": (("--out", "-o"), OUTPUT_PANEL),
    "overwrite": (("--overwrite/--no-overwrite",), OUTPUT_PANEL),
    "retry_failed": (("--retry-failed/--no-retry-failed",), OUTPUT_PANEL),
    "json": (("--json/--no-json",), OUTPUT_PANEL),
    "segment": (("--segment",), SEGMENT_PANEL),
    "segment_overlap": (("--segment-overlap",), SEGMENT_PANEL),
    "segment_min": (("--segment-min",), SEGMENT_PANEL),
    "segment_max": (("--segment-max",), SEGMENT_PANEL),
    "format": (("--format",), OUTPUT_PANEL),
    "out_dir": (("--out-dir",), OUTPUT_PANEL),
}
#: Extra help after a setting's own description.
_HELP_EXTRA = {
    "modality": ": auto|video|audio|av",
    "labels": ': "a,b,c" or @file (one per line); repeatable', "include": " (repeatable)",
    "exclude": " (repeatable)", "kinds": ": video|image|audio (repeatable; by extension, every one FFmpeg or Pillow decodes: docs/cli.md)", "format": ": jsonl|srt|vtt",
}
_MODEL_SETTINGS = ("model", "revision", "device", "dtype", "encoder_backend", "frames", "modality", "device_map",
                   "export_dir", "engine_dir")
_GENERATE_SETTINGS = ("max_new_tokens", "temperature", "top_p", "seed")
_RUN_SETTINGS = ("out", "overwrite", "retry_failed", *_MODEL_SETTINGS, "include", "exclude", "kinds", "recursive",
                 "files_from", "batch_size", "workers", "decode_timeout", "video_backend", "quiet", "log_files",
                 "shard", "engine", "ray_address", "actors",
                 "segment", "segment_overlap", "segment_min", "segment_max", "format", "out_dir")
#: Which settings each command takes as flags (the rest still come from the environment and config file);
#: a command never offers a flag that would do nothing for it (`--json` is for ask and chat only).
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "caption": ("prompt", *_GENERATE_SETTINGS, *_RUN_SETTINGS),
    "ask": (*_GENERATE_SETTINGS, *_RUN_SETTINGS, "json"),
    "classify": ("labels", "top_k", *_RUN_SETTINGS),
    "chat": (*_GENERATE_SETTINGS, *_MODEL_SETTINGS, "include", "exclude", "kinds", "recursive", "files_from",
             "video_backend", "json"),
    "config show": SETTING_NAMES,
}
assert set(SETTING_FLAGS) == set(SETTING_NAMES), "every setting needs its flags declared"


#: Value placeholders by setting type (typer's own would print `<bool>` for switches).
_METAVARS = {bool: "", int: "INTEGER", float: "NUMBER", str: "TEXT"}
#: How a default of None reads in --help, where "none" would not say what happens.
_UNSET_DEFAULTS = {
    "revision": "the default branch", "device_map": "one device",
    "export_dir": "export/ under $VL2_HOME, the checkout or ~/.cache/vl2",
    "engine_dir": "engines/ under $VL2_HOME, the checkout or ~/.cache/vl2", "frames": "the model's num_frames",
    "batch_size": f"{CPU_BATCH_SIZE} on CPU; on a GPU what its free memory holds, up to {GPU_MAX_BATCH_SIZE}",
    "workers": f"the cores less {MODEL_PROCESS_CORES}, at most {CPU_WORKERS} on CPU, {GPU_WORKERS} on GPU",
    "prompt": "by modality", "files_from": "none", "temperature": "greedy", "top_p": f"{DEFAULT_TOP_P} when sampling",
    "seed": "none",
}


def default_text(name: str) -> str:
    """A setting's built-in default as --help shows it."""
    value = getattr(Settings(), name)
    if value is None:
        return _UNSET_DEFAULTS.get(name, "none")
    if isinstance(value, bool):
        on, _, off = SETTING_FLAGS[name][0][0].partition("/")
        return (on if value else off).lstrip("-")
    if isinstance(value, list):
        return ",".join(value) if value else "none"
    return str(value)


def _setting_parameter(name: str) -> inspect.Parameter:
    """A keyword parameter for typer: Optional[the setting's type], None meaning "not given"."""
    flags, panel = SETTING_FLAGS[name]
    text = (f"{setting_help(name)}{_HELP_EXTRA.get(name, '')} [dim]\\[default: {default_text(name)}] "
            f"\\[env {env_var_name(name)}][/dim]")
    base = setting_type(name)
    option = typer.Option(*flags, help=text, rich_help_panel=panel, show_default=False,
                          metavar=_METAVARS.get(base, "TEXT"))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[Optional[base], option])


_CONFIG_PARAMETER = inspect.Parameter(
    "config", inspect.Parameter.KEYWORD_ONLY, default=None,
    annotation=Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file [dim]\\[default: none] \\[env VL2_CONFIG][/dim]",
                                                      rich_help_panel=RUN_PANEL, show_default=False, metavar="FILE")])
_INPUTS_PARAMETER = inspect.Parameter(
    "inputs", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
    annotation=Annotated[Optional[list[Path]], typer.Argument(
        help="media files and/or folders; - reads paths from stdin, one per line", show_default=False,
        metavar="INPUTS")])
_DRY_RUN_PARAMETER = inspect.Parameter(
    "dry_run", inspect.Parameter.KEYWORD_ONLY, default=False,
    annotation=Annotated[bool, typer.Option(
        "--dry-run", help="print what would be processed and what resume would skip; load no model "
                          "[dim]\\[default: off][/dim]", rich_help_panel=RUN_PANEL, show_default=False, metavar="")])


def _with_settings(command: str, *leading: inspect.Parameter,
                   trailing: tuple[inspect.Parameter, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give `fn(**values)` a signature of `leading` parameters + the command's setting flags + --config
    + `trailing` options that are not settings (e.g. --dry-run)."""
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def command_fn(**values: Any) -> Any:
            return fn(**values)

        parameters = [*leading, *(_setting_parameter(n) for n in COMMAND_SETTINGS[command]), _CONFIG_PARAMETER, *trailing]
        command_fn.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command_fn.__annotations__ = {p.name: p.annotation for p in parameters}
        return command_fn
    return decorate


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


@app.command(cls=_Command, epilog="Example: [cyan]vl2 caption ./videos --out captions.jsonl[/cyan]")
@_with_settings("caption", _INPUTS_PARAMETER, trailing=(_DRY_RUN_PARAMETER,))
def caption(**values: Any) -> None:
    """Describe every file (one JSON record per file)."""
    raise typer.Exit(_guarded(lambda: _run("caption", values)))


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
        rich_help_panel=MODEL_PANEL, show_default=False, metavar="TEXT")])


@app.command(cls=_Command, epilog='Examples: [cyan]vl2 ask clip.mp4 "what sound is heard?"[/cyan]   '
                    '[cyan]vl2 ask ./videos "is there a dog?" --out answers.jsonl[/cyan]   '
                    '[cyan]vl2 ask a.mp4 b.mp4 -q "who speaks?" -q "where is it?" --out qa.jsonl[/cyan]')
@_with_settings("ask", _INPUTS_PARAMETER, _QUESTION_PARAMETER, trailing=(_QUESTIONS_PARAMETER, _DRY_RUN_PARAMETER))
def ask(**values: Any) -> None:
    """Answer a question about every file. One file to stdout prints just the answer (--json: the record)."""
    def body() -> int:
        inputs, questions = ask_arguments(list(values["inputs"] or []), values["question"], values["questions"] or [],
                                          has_list=_resolve(values).settings.files_from is not None)
        return _run("ask", {**values, "inputs": inputs}, questions=questions)

    raise typer.Exit(_guarded(body))


def ask_arguments(inputs: list[Path], question: str | None, questions: list[str], *,
                  has_list: bool) -> tuple[list[Path], tuple[str, ...]]:
    """Sort `vl2 ask`'s positionals: with -q every positional is an input; else the last one is the question.

    The command line parser hands the last positional to QUESTION whenever there is one, so
    `vl2 ask clip.mp4` arrives as no inputs and the question "clip.mp4": that is a missing question.
    """
    if questions:
        return [*inputs, *([Path(question)] if question is not None else [])], tuple(questions)
    if question is None or (not inputs and not has_list):
        raise Vl2Error('ask: the question is missing: vl2 ask FILES... "QUESTION", or -q "QUESTION" (repeatable)')
    return inputs, (question,)


@app.command(cls=_Command, epilog='Example: [cyan]vl2 classify ./videos --labels "cooking,sports,music" --out labels.jsonl[/cyan]')
@_with_settings("classify", _INPUTS_PARAMETER, trailing=(_DRY_RUN_PARAMETER,))
def classify(**values: Any) -> None:
    """Score each label by the model's log-likelihood; the record has probabilities and the top-k."""
    raise typer.Exit(_guarded(lambda: _run("classify", values)))


@app.command("shards", cls=_Command, epilog="Example: [cyan]vl2 shards out/[/cyan]")
def shards(folder: Annotated[Path, typer.Argument(help="the --out folder of a sharded run", show_default=False)]) -> None:
    """Which shards of a sharded run are complete, and the --array expression that reruns the others."""
    from .commands.shard_commands import shards_report

    raise typer.Exit(_guarded(lambda: shards_report(folder)))


@app.command("merge", cls=_Command, epilog="Example: [cyan]vl2 merge out/ --out captions.parquet --format parquet[/cyan]")
def merge(
    folder: Annotated[Path, typer.Argument(help="the --out folder of a sharded run", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="the merged file (written whole, then renamed into place)",
                                      show_default=False)],
    format: Annotated[str, typer.Option("--format", help="jsonl or parquet (needs pyarrow)")] = "jsonl",
) -> None:
    """Merge a sharded run's part files into one file: the last record per file and request, once."""
    from .commands.shard_commands import merge_shards

    raise typer.Exit(_guarded(lambda: merge_shards(folder, out, format)))  # type: ignore[arg-type]



@app.command("inspect", cls=_Command, epilog="Example: [cyan]vl2 inspect clip.vob --out seen/ --frames 16[/cyan]")
def inspect_file(
    file: Annotated[Path, typer.Argument(help="the media file", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for inspect.json, the frame PNGs and the WAV",
                                      show_default=False)],
    model: Annotated[Optional[str], typer.Option("--model", help="take the frame count from this checkpoint's config "
                                                 "(no weights are loaded)", show_default=False)] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", help="frames per video (default: the model's, else 8)",
                                                  show_default=False)] = None,
    segment: Annotated[Optional[str], typer.Option("--segment", help="inspect each window: a length (30s, 2m) or "
                                                   "scenes", show_default=False)] = None,
    segment_overlap: Annotated[Optional[str], typer.Option("--segment-overlap", show_default=False)] = None,
    segment_min: Annotated[Optional[str], typer.Option("--segment-min", show_default=False)] = None,
    segment_max: Annotated[Optional[str], typer.Option("--segment-max", show_default=False)] = None,
    video_backend: Annotated[str, typer.Option("--video-backend", help="decord (upstream's reader, PyAV where it "
                                               "misreads) or pyav")] = "decord",
) -> None:
    """Write what the model is given from one file: the sampled frames as PNGs (decoded size, upright),
    the sound heard as a 16 kHz WAV, and inspect.json naming them with the probe and the notes."""
    from .commands.inspect_command import run_inspect

    raise typer.Exit(_guarded(lambda: run_inspect(file, out, model=model, frames=frames, segment=segment,
                                                  overlap=segment_overlap, segment_min=segment_min,
                                                  segment_max=segment_max, video_backend=video_backend)))


@app.command(cls=_Command, epilog="Examples: [cyan]vl2 chat clip.mp4[/cyan] (type questions; Ctrl-D ends)   "
                    "[cyan]printf 'who speaks?\\nwhere is it?\\n' | vl2 chat clip.mp4[/cyan]")
@_with_settings("chat", _INPUTS_PARAMETER)
def chat(**values: Any) -> None:
    """Load the model once and answer questions, one per line from a terminal or a pipe, about the given
    files: one answer per line (--json: the record), streamed on a terminal. Each question follows the
    earlier questions and answers about the file; /help lists the commands (/file, /reset, /quit). Each
    file is encoded once, kept in memory (never on disk), so later questions cost only the language model."""
    def body() -> int:
        from .commands.chat import chat_command

        return chat_command(list(values["inputs"] or []), _resolve(values).settings, stdin=sys.stdin,
                            stdout=sys.stdout, stderr=sys.stderr)

    raise typer.Exit(_guarded(body))


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

    raise typer.Exit(_guarded(show))


@app.command("export", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             help="Export the encoders to ONNX (and TensorRT engines where possible); see [cyan]vl2 export --help[/cyan].")
def export(ctx: typer.Context) -> None:
    """Forward to the export command, imported only now: its module loads torch, `vl2 --help` must not."""
    from .commands.export_command import export_command

    sub = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    sub.command(cls=_Command)(export_command)
    typer.main.get_command(sub).main(args=list(ctx.args), prog_name="vl2 export")


@app.command("convert", cls=_Command, epilog="Example: [cyan]vl2 convert DAMO-NLP-SG/Video-LLaMA-2-7B-Finetuned --out ./video-llama-2-7b[/cyan]")
def convert(
    model: Annotated[str, typer.Argument(help="Video-LLaMA (v1) hub id, folder or upstream eval YAML", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="new folder for the safetensors copy", show_default=False)],
) -> None:
    """Write a safetensors copy of a Video-LLaMA (v1) model, which then loads without unpickling."""
    def body() -> int:
        from .api import convert_model

        written = convert_model(model, out)
        print(f"wrote {len(written)} files to {out}; use --model {out}")
        return EXIT_OK

    raise typer.Exit(_guarded(body))


@app.command("report", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             help="One self-contained HTML page of a JSONL output: summary, filters, search, the frames each "
                  "file or segment was seen by; see [cyan]vl2 report --help[/cyan].")
def report(ctx: typer.Context) -> None:
    """Forward to the report command (its own options; imported only now)."""
    from .commands.report_command import report_command

    sub = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    sub.command()(report_command)
    typer.main.get_command(sub).main(args=list(ctx.args), prog_name="vl2 report")


def _guarded(body: Any) -> int:
    """User errors become one stderr line and exit 2, without a traceback."""
    try:
        return body()
    except Vl2Error as exc:
        _stderr(f"vl2: error: {exc}")
        return EXIT_FATAL
    except OSError as exc:  # the output or a folder vl2 must write: read-only, full disk, a folder, no access
        where = f"{exc.filename}: " if exc.filename else ""
        _stderr(f"vl2: error: {where}{exc.strerror or exc} (what was written so far is intact)")
        return EXIT_FATAL
    except Interrupted as exc:
        _stderr(f"vl2: interrupted by {exc.signal_name}; every record written so far is kept, rerun to go on")
        return EXIT_SIGNAL_BASE + exc.signal_number


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the run: it stops where it is (records are whole, the lock is freed)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
        self.signal_name = signal.Signals(signal_number).name


def _raise_interrupted(signal_number: int, frame: Any) -> None:
    raise Interrupted(signal_number)


def main() -> None:
    """Console-script entry point (`vl2`)."""
    for handled in (signal.SIGINT, signal.SIGTERM):  # one message and the shell's 128+N code, no traceback
        signal.signal(handled, _raise_interrupted)
    app(prog_name="vl2")


if __name__ == "__main__":
    main()
