"""Layering (design.md, "Layers"): the model core imports nothing from the layers above or beside it.

`vl2cli/model/` may use `vl2cli.constants`, `vl2cli.errors` and itself; choosing an encoder backend,
exporting, media decoding, tasks and the CLI are composed on top of it (`vl2cli.api.load_model`).
Two checks: every import statement in the package's source (lazy ones inside functions included),
and what importing every model module really pulls in, transitively, in a fresh interpreter.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vl2cli"
MODEL_DIR = REPO_ROOT / PACKAGE / "model"
#: Packages and modules of vl2cli the model core must never import.
FORBIDDEN = tuple(f"{PACKAGE}.{name}" for name in ("runtime", "exporting", "tasks", "media", "cli", "api", "output"))


def module_name(path: Path) -> str:
    """Dotted name of a source file under the repository root."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, importer: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module an import statement in `source` may load (relative ones resolved)."""
    package = importer if is_package else importer.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            # `from .. import tasks` loads the submodule vl2cli.tasks
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def is_forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def model_sources() -> list[Path]:
    """Every module of the model package, the family folders (e.g. `model/videollama/`) included."""
    return sorted(MODEL_DIR.rglob("*.py"))


def test_the_import_scanner_sees_relative_absolute_and_lazy_imports() -> None:
    source = (
        "from ..runtime.backend import TorchEncoders\n"
        "from .. import tasks\n"
        "import vl2cli.exporting.names\n"
        "def later():\n"
        "    from ..media import loader\n"
        "from .config import Vl2Config\n"
        "from ..errors import Vl2Error\n"
    )
    found = imported_modules(source, "vl2cli.model.videollama2")
    flagged = {n for n in found if is_forbidden(n)}
    assert {"vl2cli.runtime.backend", "vl2cli.tasks", "vl2cli.exporting.names", "vl2cli.media.loader"} <= flagged
    assert {"vl2cli.model.config", "vl2cli.errors"} <= found - flagged
    assert imported_modules("from . import config\n", "vl2cli.model", is_package=True) >= {"vl2cli.model.config"}


def test_model_sources_import_nothing_from_the_layers_above() -> None:
    sources = model_sources()
    assert sources, f"no sources under {MODEL_DIR}"
    violations = []
    for path in sources:
        name = module_name(path)
        for imported in imported_modules(path.read_text(encoding="utf-8"), name, is_package=path.name == "__init__.py"):
            if is_forbidden(imported):
                violations.append(f"{path.relative_to(REPO_ROOT)} imports {imported}")
    assert not violations, "\n".join(violations)


def test_importing_the_model_core_loads_no_layer_above_it() -> None:
    """Transitive check: a fresh interpreter imports every model module, then lists what got loaded."""
    modules = [module_name(path) for path in model_sources()]
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({PACKAGE!r}))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    if result.returncode != 0:
        pytest.fail(f"importing the model modules failed:\n{result.stderr[-4000:]}")
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(modules) <= set(loaded)
    assert [m for m in loaded if is_forbidden(m)] == []


#: The layers below the library API: none of them may import `vl2cli.api` or `vl2cli.cli` (the API wraps
#: them; an import the other way is a circle, e.g. tasks reaching into the API for a helper).
BELOW_THE_API = ("tasks", "media", "output", "model", "runtime", "exporting", "runners")
ABOVE = tuple(f"{PACKAGE}.{name}" for name in ("api", "cli"))


#: Modules that sit in those folders but are command bodies the CLI calls (they run the API for it), and the
#: Ray actor, which loads its model through `vl2cli.load_model` in its own process.
COMMAND_BODIES = {"runners/ray_engine.py", "runners/engines.py"}


def test_no_layer_below_the_api_imports_the_api_or_the_cli() -> None:
    offenders = []
    for layer in BELOW_THE_API:
        for path in sorted((REPO_ROOT / PACKAGE / layer).rglob("*.py")):
            if path.relative_to(REPO_ROOT / PACKAGE).as_posix() in COMMAND_BODIES:
                continue
            for name in imported_modules(path.read_text(), module_name(path), is_package=path.name == "__init__.py"):
                if any(name == above or name.startswith(above + ".") for above in ABOVE):
                    offenders.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)
