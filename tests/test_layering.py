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


def import_target(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a `from ... import` names (a relative one resolved against `package`)."""
    if not node.level:
        return node.module or ""
    base_parts = package.split(".")
    base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def imported_modules(source: str, importer: str, *, is_package: bool = False) -> set[str]:
    """Absolute names of every module an import statement in `source` may load (relative ones resolved)."""
    package = importer if is_package else importer.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = import_target(node, package)
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
BELOW_THE_API = ("tasks", "media", "output", "model", "runtime", "exporting", "runners", "report")
ABOVE = tuple(f"{PACKAGE}.{name}" for name in ("api", "run", "cli", "commands"))


def test_no_layer_below_the_api_imports_the_api_or_the_cli() -> None:
    offenders = []
    for layer in BELOW_THE_API:
        for path in sorted((REPO_ROOT / PACKAGE / layer).rglob("*.py")):
            for name in imported_modules(path.read_text(), module_name(path), is_package=path.name == "__init__.py"):
                if any(name == above or name.startswith(above + ".") for above in ABOVE):
                    offenders.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


# --- the whole package: no cycles, no private names across modules, no UI below the commands layer ---

#: The only modules allowed to import typer or rich: the CLI and its command bodies.
UI_LIBRARIES = ("typer", "rich")
UI_LAYERS = (f"{PACKAGE}.cli", f"{PACKAGE}.commands")
#: Private names imported across modules that another change removes; the lead drops each at merge.
PRIVATE_ALLOWED: set[tuple[str, str]] = set()  # eva_vit._load_exact went with the one strict loader


def package_modules() -> dict[str, Path]:
    """Every module of vl2cli by dotted name."""
    return {module_name(path): path for path in sorted((REPO_ROOT / PACKAGE).rglob("*.py"))}


def lazy_registry_targets(source: str) -> set[str]:
    """`vl2cli/__init__`'s `_LAZY` table names modules as strings: they are imports too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            if isinstance(node.value, ast.Dict):
                found.update(v.value for v in node.value.values if isinstance(v, ast.Constant))
    return found


def import_graph(*, lazy_registry: bool = False) -> dict[str, set[str]]:
    """module -> the vl2cli modules it imports (lazy and TYPE_CHECKING imports included). With
    `lazy_registry`, `vl2cli/__init__`'s `_LAZY` targets too: they load when `vl2cli.caption` & co are
    first touched, never when a module imports `vl2cli` (e.g. for `__version__`), so the cycle checks
    leave them out and the reach check counts them."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        found = imported_modules(source, name, is_package=path.name == "__init__.py")
        if lazy_registry:
            found |= lazy_registry_targets(source)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def package_of(module: str) -> str:
    """`vl2cli.tasks.plan` -> `vl2cli.tasks`; a top-level module (`vl2cli.api`) is its own package."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(package_of(module), set()).update(
            package_of(t) for t in targets if package_of(t) != package_of(module))
    return packages


def private_imports(source: str, importer: str, *, is_package: bool = False) -> list[tuple[str, str]]:
    """(module, name) for each `from module import _name` naming another module's private name."""
    package = importer if is_package else importer.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            target = import_target(node, package)
            found += [(target, a.name) for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__") and target != importer]
    return found


def test_the_cycle_finder_finds_module_and_package_cycles() -> None:
    graph = {"vl2cli.a.x": {"vl2cli.b.y"}, "vl2cli.b.y": {"vl2cli.a.z"}, "vl2cli.a.z": set(), "vl2cli.c": {"vl2cli.a.x"}}
    assert cycles(graph) == []
    assert cycles(package_graph(graph)) == [["vl2cli.a", "vl2cli.b"]]
    graph["vl2cli.a.z"] = {"vl2cli.a.x"}
    assert cycles(graph) == [["vl2cli.a.x", "vl2cli.a.z", "vl2cli.b.y"]]


def test_no_module_cycle_in_the_package_lazy_imports_counted() -> None:
    assert cycles(import_graph()) == []


def test_no_package_cycle_in_the_package() -> None:
    assert cycles(package_graph(import_graph())) == []


def test_the_private_name_finder_sees_relative_and_absolute_imports() -> None:
    source = "from .pipeline import _Runner, run_planned\nfrom vl2cli.model import _x\nfrom . import __version__\n"
    assert private_imports(source, "vl2cli.tasks.chat") == [("vl2cli.tasks.pipeline", "_Runner"), ("vl2cli.model", "_x")]


def test_no_private_name_is_imported_from_another_module() -> None:
    """In vl2cli/, benchmarks/ and tests/ alike: tests use public names too (a test's own conftest
    helpers are public names of that conftest)."""
    offenders = []
    for folder in (PACKAGE, "benchmarks", "tests"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            name = module_name(path)
            for imported in private_imports(path.read_text(encoding="utf-8"), name, is_package=path.name == "__init__.py"):
                if imported not in PRIVATE_ALLOWED:
                    offenders.append(f"{path.relative_to(REPO_ROOT)} imports {imported[1]} from {imported[0]}")
    assert not offenders, "\n".join(offenders)


def ui_imports(path: Path) -> set[str]:
    name = module_name(path)
    return {m for m in imported_modules(path.read_text(encoding="utf-8"), name, is_package=path.name == "__init__.py")
            if m.split(".")[0] in UI_LIBRARIES}


def reachable(graph: dict[str, set[str]], roots: tuple[str, ...]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def test_the_reach_check_follows_lazy_imports() -> None:
    graph = {"vl2cli.api": {"vl2cli.run"}, "vl2cli.run": {"vl2cli.commands.console"}, "vl2cli.commands.console": set()}
    assert "vl2cli.commands.console" in reachable(graph, ("vl2cli.api",))
    assert {"rich.console", "rich.progress"} <= ui_imports(REPO_ROOT / PACKAGE / "commands" / "console.py")


def test_nothing_the_api_reaches_imports_typer_or_rich() -> None:
    graph = import_graph(lazy_registry=True)
    modules = package_modules()
    assert f"{PACKAGE}.api" in graph[PACKAGE], "the lazy registry of vl2cli/__init__ was not read"
    reached = reachable(graph, (PACKAGE, f"{PACKAGE}.api"))
    ui_reached = sorted(m for m in reached if any(m == layer or m.startswith(layer + ".") for layer in UI_LAYERS))
    assert ui_reached == [], f"the API reaches the CLI layer: {ui_reached}"
    offenders = [f"{m} imports {sorted(ui_imports(modules[m]))}" for m in sorted(reached) if ui_imports(modules[m])]
    assert not offenders, "\n".join(offenders)


def test_only_the_cli_and_the_commands_import_typer_or_rich() -> None:
    offenders = []
    for name, path in package_modules().items():
        if any(name == layer or name.startswith(layer + ".") for layer in UI_LAYERS):
            continue
        if ui_imports(path):
            offenders.append(f"{name} imports {sorted(ui_imports(path))}")
    assert not offenders, "\n".join(offenders)
