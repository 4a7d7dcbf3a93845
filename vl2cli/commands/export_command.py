"""The `vl2 export` command: its options and help, for the CLI to register as `app.command("export")`.

Kept here, beside the pipeline it calls, so the CLI file stays a thin list of commands.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import Vl2Error
from .exit_codes import EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED
from ..exporting.names import ALL_COMPONENTS
from ..exporting.pipeline import DEFAULT_MAX_BATCH, DEFAULT_PRECISION
from ..exporting.tensorrt_build import PRECISIONS

ENGINE_CHOICES = {"auto": None, "yes": True, "no": False}

EXPORT_HELP = """Export the encoders (vision tower, STC connector, BEATs + audio projector) to ONNX, and to
TensorRT engines where a TensorRT product can build them: full TensorRT on its GPU, or TensorRT-RTX
(vl2\\[tensorrt-rtx]) ahead of time for RTX-class GPUs, with or without a GPU here (never for
H100/H200). Every graph is checked against PyTorch before it is kept, engines too where a GPU they
run on is here (see docs/export.md); run commands then pick them up with --encoder-backend auto.

[bold]Examples[/bold]

  [cyan]vl2 export --model DAMO-NLP-SG/VideoLLaMA2.1-7B-AV[/cyan]
  [cyan]vl2 export --model ./my-checkpoint --precision fp32 --max-batch 4 --gpu-target 8.9[/cyan]
  [cyan]vl2 export --model DAMO-NLP-SG/VideoLLaMA2.1-7B-16F --engines no --component vision_tower[/cyan]
"""


def export_command(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="hub id or local checkpoint folder [dim]\\[env VL2_MODEL, config `model`; default the run commands' model][/dim]",
        show_default=False)] = None,
    revision: Annotated[Optional[str], typer.Option("--revision", help="hub revision (branch, tag or commit)")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML settings file (as for the run commands; env VL2_CONFIG): model, revision, device, export_dir, engine_dir",
        show_default=False)] = None,
    export_dir: Annotated[Optional[Path], typer.Option(
        "--export-dir", help="root for ONNX graphs [dim]\\[env VL2_EXPORT_DIR; default $VL2_HOME/export, the checkout's export/ or ~/.cache/vl2/export][/dim]",
        show_default=False)] = None,
    engine_dir: Annotated[Optional[Path], typer.Option(
        "--engine-dir", help="root for TensorRT engines [dim]\\[env VL2_ENGINE_DIR; default beside the export root][/dim]",
        show_default=False)] = None,
    precision: Annotated[str, typer.Option("--precision", help=(
        f"engine precision: {', '.join(PRECISIONS)} (exported ONNX graphs are fp32; TensorRT-RTX builds fp16 "
        "from an fp16 copy of the graph and has no bf16)"))] = DEFAULT_PRECISION,
    component: Annotated[Optional[list[str]], typer.Option(
        "--component", help=f"only these components: {', '.join(ALL_COMPONENTS)} (repeatable; default all the model has)",
        show_default=False)] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="largest batch of videos / audio clips an engine takes")] = DEFAULT_MAX_BATCH,
    engines: Annotated[str, typer.Option("--engines", help="build TensorRT engines: auto (where possible), yes (fail if not), no")] = "auto",
    gpu_target: Annotated[Optional[list[str]], typer.Option(
        "--gpu-target", help="compute capability to build TensorRT-RTX engines for, e.g. 8.9 (repeatable; default all it supports)",
        show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cuda, cuda:1 or cpu (default: cuda when available)", show_default=False)] = None,
) -> None:
    """Export the encoders to ONNX (and TensorRT), validated against PyTorch."""
    raise typer.Exit(run_export(
        model=model, revision=revision, export_dir=export_dir, engine_dir=engine_dir, precision=precision,
        components=component, max_batch=max_batch, engines=engines, device=device, config=config, targets=gpu_target,
    ))


export_command.__doc__ = EXPORT_HELP


def run_export(*, model: str | None, revision: str | None, export_dir: Path | None, engine_dir: Path | None,
               precision: str, components: list[str] | None, max_batch: int, engines: str, device: str | None,
               config: Path | None = None, targets: list[str] | None = None) -> int:
    """The command body; returns the exit code (0 all kept, 1 some component failed, 2 nothing done).

    The model, revision, device and folders resolve as for the run commands (flag > VL2_* > config file
    > default), so `vl2 export` exports the model that `vl2 caption` would load.
    """
    from ..settings import resolve_settings
    from ..exporting.pipeline import export_model

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        if engines not in ENGINE_CHOICES:
            raise Vl2Error(f"--engines {engines!r}: choose one of {', '.join(ENGINE_CHOICES)}.")
        flags = {"model": model, "revision": revision, "device": device,
                 "export_dir": str(export_dir) if export_dir else None, "engine_dir": str(engine_dir) if engine_dir else None}
        settings = resolve_settings(flags, config_path=config).settings
        report = export_model(
            settings.model, settings.export_dir, engine_dir=settings.engine_dir, precision=precision,
            components=components, max_batch=max_batch, build_engines=ENGINE_CHOICES[engines],
            revision=settings.revision, device=None if settings.device == "auto" else settings.device, targets=targets,
        )
    except Vl2Error as exc:
        typer.echo(f"vl2: error: {exc}", err=True)
        return EXIT_FATAL
    for line in report.lines():
        typer.echo(line)
    return EXIT_OK if report.ok else EXIT_SOME_FAILED
