"""The package's layout rules, checked on its source: imports flow one way, the worker
side imports no anyio, nothing imports the package root, and importing asyncclf stays
light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asyncclf"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The modules ``name`` imports at its top level or in functions (absolute names,
    ``TYPE_CHECKING`` blocks left out)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = {f"{module}.{alias.name}" for alias in node.names}
            found.update(names)
            if not names <= set(_modules()):
                found.add(module)  # names from it, not only its modules
    modules = _modules()
    return {imported for imported in found if imported in modules or "." not in imported}


def test_the_worker_side_imports_no_anyio() -> None:
    """Nothing under asyncclf._work imports anyio (or asyncio, trio): it runs in worker
    threads, processes and Dask workers."""
    for name, path in _modules().items():
        if name.startswith("asyncclf._work"):
            imported = {module.split(".")[0] for module in _imports(name, path)}
            assert not imported & {"anyio", "asyncio", "trio", "sniffio"}, name


def test_no_module_imports_the_package_root() -> None:
    """No module of the package imports ``asyncclf`` itself (its __init__)."""
    for name, path in _modules().items():
        if name != "asyncclf":
            assert "asyncclf" not in _imports(name, path), name


def test_imports_have_no_circle() -> None:
    """The package's import graph has no circle."""
    modules = _modules()
    graph = {
        name: {m for m in _imports(name, path) if m in modules and m != "asyncclf"}
        for name, path in modules.items()
    }

    def parents(name: str) -> set[str]:
        # Importing a.b.c runs a and a.b first: those are edges too.
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(2, len(parts))}

    for name in graph:
        graph[name] |= {p for m in set(graph[name]) for p in parents(m) if p != name}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if nxt.startswith(name + "."):
                continue  # a package importing its own modules
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*trail, name, nxt]))
            if nxt not in state:
                visit(nxt, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_importing_asyncclf_imports_neither_torch_nor_dask() -> None:
    """``import asyncclf`` leaves the optional heavy packages (and skops) unimported."""
    code = (
        "import sys, asyncclf; "
        "print(sorted(m for m in ('torch', 'distributed', 'dask', 'skorch', 'skops') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_modules_stay_small() -> None:
    """No module passes about 400 lines except the batcher, one state machine best read
    whole (STYLE.md)."""
    exceptions = {"asyncclf._batching"}
    for name, path in _modules().items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert name in exceptions or lines <= 450, f"{name}: {lines} lines"
