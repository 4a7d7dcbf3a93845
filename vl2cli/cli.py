"""`vl2`: the command line over the library API (typer).

Flags only gather settings; `settings.resolve_settings` layers them over the environment and the
YAML file, `discover` finds the files, `tasks.pipeline` does the work and `output` writes, resumes and
locks. Heavy imports (torch, the model) happen inside the commands so `vl2 --help` stays fast.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from . import __version__
from .errors import Vl2Error
from .settings import DEFAULT_MODEL, SETTING_NAMES, ResolvedSettings, env_var_name, resolve_settings, setting_help
from .tasks.exit_codes import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED

APP_HELP = f"""Captions, answers and labels for folders of videos, images and audio, as JSONL (VideoLLaMA 2).

[bold]Examples[/bold]

  [cyan]vl2 caption ./videos --out captions.jsonl[/cyan]
  [cyan]vl2 ask clip.mp4 "what sound is heard?"[/cyan]
  [cyan]vl2 ask ./videos "is there a dog?" --out answers.jsonl[/cyan]
  [cyan]vl2 classify ./videos --labels "cooking,sports,music" --out labels.jsonl[/cyan]
  [cyan]vl2 config show[/cyan]

Settings: flags > VL2_* environment variables > --config YAML file > defaults.
Exit codes: {EXIT_OK} all files good, {EXIT_SOME_FAILED} some files failed, {EXIT_FATAL} fatal (nothing run).
Docs: docs/cli.md, docs/output-schema.md.
"""

app = typer.Typer(name="vl2", help=APP_HELP, rich_markup_mode="rich", no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]}, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect the effective settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")

MODEL_PANEL, INPUT_PANEL, RUN_PANEL, OUTPUT_PANEL = "Model", "Inputs", "Run", "Output"


def _opt(name: str, *flags: str, panel: str, extra: str = "") -> Any:
    """An option whose help comes from the setting's own description, plus its variable name."""
    text = f"{setting_help(name)}{extra} [dim]\\[env {env_var_name(name)}][/dim]"
    return typer.Option(*flags, help=text, rich_help_panel=panel, show_default=False)


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file [dim]\\[env VL2_CONFIG][/dim]",
                                                   rich_help_panel=RUN_PANEL, show_default=False)]
ModelOpt = Annotated[Optional[str], _opt("model", "--model", "-m", panel=MODEL_PANEL, extra=f" (default {DEFAULT_MODEL})")]
RevisionOpt = Annotated[Optional[str], _opt("revision", "--revision", panel=MODEL_PANEL)]
DeviceOpt = Annotated[Optional[str], _opt("device", "--device", panel=MODEL_PANEL)]
DtypeOpt = Annotated[Optional[str], _opt("dtype", "--dtype", panel=MODEL_PANEL)]
BackendOpt = Annotated[Optional[str], _opt("encoder_backend", "--encoder-backend", panel=MODEL_PANEL)]
DeviceMapOpt = Annotated[Optional[str], _opt("device_map", "--device-map", panel=MODEL_PANEL)]
ExportDirOpt = Annotated[Optional[str], _opt("export_dir", "--export-dir", panel=MODEL_PANEL)]
EngineDirOpt = Annotated[Optional[str], _opt("engine_dir", "--engine-dir", panel=MODEL_PANEL)]
FramesOpt = Annotated[Optional[int], _opt("frames", "--frames", panel=MODEL_PANEL)]
ModalityOpt = Annotated[Optional[str], _opt("modality", "--modality", panel=MODEL_PANEL, extra=": auto|video|audio|av")]
MaxTokensOpt = Annotated[Optional[int], _opt("max_new_tokens", "--max-new-tokens", panel=MODEL_PANEL)]
IncludeOpt = Annotated[Optional[list[str]], _opt("include", "--include", panel=INPUT_PANEL, extra=" (repeatable)")]
ExcludeOpt = Annotated[Optional[list[str]], _opt("exclude", "--exclude", panel=INPUT_PANEL, extra=" (repeatable)")]
KindOpt = Annotated[Optional[list[str]], _opt("kinds", "--kind", panel=INPUT_PANEL, extra=": video|image|audio (repeatable)")]
RecursiveOpt = Annotated[Optional[bool], _opt("recursive", "--recursive/--no-recursive", panel=INPUT_PANEL)]
BatchOpt = Annotated[Optional[int], _opt("batch_size", "--batch-size", "-b", panel=RUN_PANEL)]
WorkersOpt = Annotated[Optional[int], _opt("workers", "--workers", "-j", panel=RUN_PANEL)]
TimeoutOpt = Annotated[Optional[float], _opt("decode_timeout", "--decode-timeout", panel=RUN_PANEL)]
VideoBackendOpt = Annotated[Optional[str], _opt("video_backend", "--video-backend", panel=RUN_PANEL)]
QuietOpt = Annotated[Optional[bool], _opt("quiet", "--quiet/--no-quiet", "-q", panel=RUN_PANEL)]
OutOpt = Annotated[Optional[str], _opt("out", "--out", "-o", panel=OUTPUT_PANEL)]
OverwriteOpt = Annotated[Optional[bool], _opt("overwrite", "--overwrite/--no-overwrite", panel=OUTPUT_PANEL)]
RetryOpt = Annotated[Optional[bool], _opt("retry_failed", "--retry-failed/--no-retry-failed", panel=OUTPUT_PANEL)]
JsonOpt = Annotated[Optional[bool], _opt("json", "--json/--no-json", panel=OUTPUT_PANEL)]
InputsArg = Annotated[list[Path], typer.Argument(help="media files and/or folders", show_default=False)]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _version_callback(value: bool) -> None:
    if value:
        print(f"vl2 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version_callback, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """vl2 command group (the help text is APP_HELP)."""


def _resolve(flags: dict[str, Any], config: Path | None) -> ResolvedSettings:
    return resolve_settings({k: v for k, v in flags.items() if k in SETTING_NAMES}, config_path=config)


def _run(task: str, inputs: list[Path], flags: dict[str, Any], config: Path | None,
         prompt: str | None = None) -> int:
    """Shared body of caption/ask/classify; returns the exit code."""
    from .tasks.command import execute

    resolved = _resolve(flags, config)
    return execute(task, inputs, resolved.settings, prompt=prompt)


@app.command(epilog="Example: [cyan]vl2 caption ./videos --out captions.jsonl[/cyan]")
def caption(
    inputs: InputsArg,
    prompt: Annotated[Optional[str], _opt("prompt", "--prompt", "-p", panel=MODEL_PANEL)] = None,
    out: OutOpt = None, overwrite: OverwriteOpt = None, retry_failed: RetryOpt = None, json: JsonOpt = None,
    model: ModelOpt = None, revision: RevisionOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
    encoder_backend: BackendOpt = None, frames: FramesOpt = None, modality: ModalityOpt = None,
    device_map: DeviceMapOpt = None, export_dir: ExportDirOpt = None, engine_dir: EngineDirOpt = None,
    max_new_tokens: MaxTokensOpt = None, include: IncludeOpt = None, exclude: ExcludeOpt = None,
    kinds: KindOpt = None, recursive: RecursiveOpt = None, batch_size: BatchOpt = None, workers: WorkersOpt = None,
    decode_timeout: TimeoutOpt = None, video_backend: VideoBackendOpt = None, quiet: QuietOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Describe every file (one JSON record per file)."""
    flags = dict(locals())
    raise typer.Exit(_guarded(lambda: _run("caption", inputs, flags, config)))


@app.command(epilog='Examples: [cyan]vl2 ask clip.mp4 "what sound is heard?"[/cyan]   '
                    '[cyan]vl2 ask ./videos "is there a dog?" --out answers.jsonl[/cyan]')
def ask(
    inputs: InputsArg,
    question: Annotated[str, typer.Argument(help="the question, asked about every file", show_default=False)],
    out: OutOpt = None, overwrite: OverwriteOpt = None, retry_failed: RetryOpt = None, json: JsonOpt = None,
    model: ModelOpt = None, revision: RevisionOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
    encoder_backend: BackendOpt = None, frames: FramesOpt = None, modality: ModalityOpt = None,
    device_map: DeviceMapOpt = None, export_dir: ExportDirOpt = None, engine_dir: EngineDirOpt = None,
    max_new_tokens: MaxTokensOpt = None, include: IncludeOpt = None, exclude: ExcludeOpt = None,
    kinds: KindOpt = None, recursive: RecursiveOpt = None, batch_size: BatchOpt = None, workers: WorkersOpt = None,
    decode_timeout: TimeoutOpt = None, video_backend: VideoBackendOpt = None, quiet: QuietOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Answer a question about every file. One file to stdout prints just the answer (--json: the record)."""
    flags = dict(locals())
    raise typer.Exit(_guarded(lambda: _run("ask", inputs, flags, config, prompt=question)))


@app.command(epilog='Example: [cyan]vl2 classify ./videos --labels "cooking,sports,music" --out labels.jsonl[/cyan]')
def classify(
    inputs: InputsArg,
    labels: Annotated[Optional[list[str]], _opt("labels", "--labels", "-l", panel=MODEL_PANEL,
                                                extra=': "a,b,c" or @file (one per line); repeatable')] = None,
    top_k: Annotated[Optional[int], _opt("top_k", "--top-k", "-k", panel=MODEL_PANEL)] = None,
    out: OutOpt = None, overwrite: OverwriteOpt = None, retry_failed: RetryOpt = None, json: JsonOpt = None,
    model: ModelOpt = None, revision: RevisionOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None,
    encoder_backend: BackendOpt = None, frames: FramesOpt = None, modality: ModalityOpt = None,
    device_map: DeviceMapOpt = None, export_dir: ExportDirOpt = None, engine_dir: EngineDirOpt = None,
    include: IncludeOpt = None, exclude: ExcludeOpt = None,
    kinds: KindOpt = None, recursive: RecursiveOpt = None, batch_size: BatchOpt = None, workers: WorkersOpt = None,
    decode_timeout: TimeoutOpt = None, video_backend: VideoBackendOpt = None, quiet: QuietOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Score each label by the model's log-likelihood; the record has probabilities and the top-k."""
    flags = dict(locals())
    raise typer.Exit(_guarded(lambda: _run("classify", inputs, flags, config)))


@config_app.command("show")
def config_show(
    config: ConfigOpt = None,
    model: ModelOpt = None, device: DeviceOpt = None, batch_size: BatchOpt = None, workers: WorkersOpt = None,
    out: OutOpt = None,
) -> None:
    """Print the effective settings as YAML, each with where it came from (flag, env, config, default)."""
    flags = dict(locals())

    def show() -> int:
        import yaml

        resolved = _resolve(flags, config)
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
    from .exporting.command import export_command

    sub = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    sub.command()(export_command)
    typer.main.get_command(sub).main(args=list(ctx.args), prog_name="vl2 export")


def _guarded(body: Any) -> int:
    """User errors become one stderr line and exit 2, without a traceback."""
    try:
        return body()
    except Vl2Error as exc:
        _stderr(f"vl2: error: {exc}")
        return EXIT_FATAL
    except KeyboardInterrupt:
        _stderr("vl2: interrupted")
        return EXIT_FATAL


def main() -> None:
    """Console-script entry point (`vl2`)."""
    app(prog_name="vl2")


if __name__ == "__main__":
    main()
