"""The body of `vl2 export`: its options are settings (`COMMAND_SETTINGS["export"]`), declared once in
`vl2cli.settings` and turned into flags by the CLI like every other command's.

The model, revision, device and folders resolve as for the run commands (flag > VL2_* > config file
> default), so `vl2 export` exports the model that `vl2 caption` would load.
"""
from __future__ import annotations

import logging
import sys

import typer

from ..settings import Settings
from .exit_codes import EXIT_OK, EXIT_SOME_FAILED

#: The `engines` setting's answers as `export_model`'s build_engines (None: where a product can).
ENGINE_CHOICES = {"auto": None, "yes": True, "no": False}


def run_export(settings: Settings) -> int:
    """Export what the settings name; returns the exit code (0 all kept, 1 some component failed).
    Errors (nothing done) end it through the command guard, as for every command."""
    from ..exporting.pipeline import export_model  # loads torch

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    report = export_model(
        settings.model, settings.export_dir, engine_dir=settings.engine_dir, precision=settings.precision,
        components=settings.components or None, max_batch=settings.max_batch,
        build_engines=ENGINE_CHOICES[settings.engines], revision=settings.revision,
        device=None if settings.device == "auto" else settings.device, targets=settings.gpu_targets or None,
    )
    for line in report.lines():
        typer.echo(line)
    return EXIT_OK if report.ok else EXIT_SOME_FAILED
