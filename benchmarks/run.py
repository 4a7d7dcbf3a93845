"""`make bench`: run every `benchmarks/bench_*.py` module and print one table per benchmark.

A benchmark module exposes `run() -> BenchResult` (or a list of them, printed in order). Modules are
discovered, so a new benchmark is a new file; `python -m benchmarks.run ingest` runs only the named ones.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

BENCH_PREFIX = "bench_"


@dataclass
class BenchResult:
    """A titled table (header + rows of cells) and free-form notes printed under it."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def format_table(result: BenchResult) -> str:
    """Markdown table, so the output can be pasted into docs/benchmarks.md as is."""
    lines = [f"### {result.title}", "", "| " + " | ".join(result.header) + " |",
             "|" + "|".join("---" for _ in result.header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in result.rows]
    lines += [""] + [f"- {note}" for note in result.notes]
    return "\n".join(lines)


def discover() -> list[str]:
    folder = Path(__file__).parent
    return sorted(m.name[len(BENCH_PREFIX):] for m in pkgutil.iter_modules([str(folder)])
                  if m.name.startswith(BENCH_PREFIX))


def main(argv: list[str]) -> int:
    names = argv or discover()
    for name in names:
        module = importlib.import_module(f"benchmarks.{BENCH_PREFIX}{name}")
        results = module.run()
        for result in results if isinstance(results, list) else [results]:
            print(format_table(result), flush=True)
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
