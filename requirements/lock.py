"""Write the lock files `make install` installs: every distribution vl2 needs, at one exact version.

Why: pyproject.toml declares ranges (what vl2 is tested on); an install from ranges takes whatever is
newest that day, so two installs a month apart differ and a new release can break a fresh install
(transformers 5.24 did). The lock pins the resolution of one day; `make lock` refreshes it on purpose.

How: pip resolves `.[extras]` from scratch (`--dry-run --ignore-installed --report`), nothing is
installed, and the report's name==version pairs are written sorted. One lock per onnxruntime build
(they cannot share an environment). The resolution is for this Python and platform (written in the
header); `make install` uses the lock only where those match and says so otherwise.

Usage: python requirements/lock.py [--check]   (--check: exit 1 when a lock is not what pip resolves now)
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: extras of every lock, then the onnxruntime build that names the lock file
COMMON_EXTRAS = ("dev", "ray", "tensorrt-rtx")
FLAVOURS = ("cpu", "gpu")
PROJECT = "vl2"


def lock_path(flavour: str) -> Path:
    return HERE / f"lock-{flavour}.txt"


def platform_tag() -> str:
    """What a lock was resolved for: `make install` compares it with the Python that installs."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}-{sys.platform}-{platform.machine()}"


def resolve(flavour: str) -> list[str]:
    extras = ",".join((*COMMON_EXTRAS, flavour))
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         f"{ROOT}[{extras}]"],
        check=True, capture_output=True, text=True,
    ).stdout
    pins = []
    for item in json.loads(report)["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if name.lower() != PROJECT:
            pins.append(f"{name.lower().replace('_', '-')}=={version}")
    return sorted(pins)


def render(flavour: str, pins: list[str]) -> str:
    header = [
        f"# vl2 lock ({flavour}): written by `make lock` (requirements/lock.py); do not edit by hand.",
        f"# resolved-for: {platform_tag()}",
        f"# extras: {','.join((*COMMON_EXTRAS, flavour))}",
    ]
    return "\n".join(header + pins) + "\n"


def body(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with what pip resolves now; write nothing")
    args = parser.parse_args()
    stale = []
    for flavour in FLAVOURS:
        text = render(flavour, resolve(flavour))
        path = lock_path(flavour)
        if args.check:
            if not path.is_file() or body(path.read_text()) != body(text):
                stale.append(path.name)
            continue
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)} ({len(body(text))} pins)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run make lock)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
