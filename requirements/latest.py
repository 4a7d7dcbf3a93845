"""Print pyproject.toml's requirements (with the given extras) without their upper bounds, for `make test-latest`.

Why: the lock and the upper bounds keep installs reproducible; this is the deliberate way to see what the
newest releases break before a user does.

Usage: python requirements/latest.py '.[dev,ray,cpu]'   → one requirement per line, upper bounds dropped
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
#: `<X` and `<=X` clauses (and `==X` pins, which are upper bounds too) are dropped; lower bounds kept.
UPPER = re.compile(r"\s*(<=?|==)\s*[^,;]+")


def unbounded(requirement: str) -> str:
    spec, _, marker = requirement.partition(";")
    name_end = re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", spec.strip()).end()
    name, clauses = spec.strip()[:name_end], spec.strip()[name_end:]
    kept = [c for c in clauses.split(",") if c.strip() and not UPPER.fullmatch(c)]
    out = name + ",".join(c.strip() for c in kept)
    return f"{out}; {marker.strip()}" if marker else out


def main(argv: list[str]) -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = re.search(r"\[([^\]]*)\]", argv[0]).group(1).split(",") if argv and "[" in argv[0] else []
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra.strip()]
    print("\n".join(unbounded(r) for r in requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
