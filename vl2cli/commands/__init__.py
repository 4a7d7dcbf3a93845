"""The command bodies the CLI calls: the only layer (with `vl2cli.cli`) that imports typer or rich.

Each module wraps the library (`vl2cli.api` and the layers below it) with what only a command line
needs: the console and progress bar, printing, the summary line, the file log and exit codes.
"""
