"""The package's shape, as a newcomer meets it: few top-level entries, small modules and
functions, no import cycle (imports inside functions counted), parsers only in lensing/cli/."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lensing"
MAX_TOP_LEVEL, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 10, 400, 80


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(tree: ast.AST, name: str, known: set[str]) -> set[str]:
    """The package's modules that ``name``'s source imports, anywhere in it."""
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets.add(node.module)
            targets |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {t for t in targets if t in known and t != name}


def test_at_most_ten_top_level_entries():
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    entries -= {"__init__.py", "__main__.py"}
    assert len(entries) <= MAX_TOP_LEVEL, sorted(entries)


def test_modules_and_functions_are_small():
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long


def test_no_import_cycle():
    found = modules()
    graph = {n: imported(ast.parse(p.read_text()), n, set(found)) for n, p in found.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt) :]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def test_parsers_live_under_cli_only():
    outside = [
        name
        for name, path in modules().items()
        if "argparse.ArgumentParser(" in path.read_text() and not name.startswith("lensing.cli")
    ]
    assert not outside


def test_every_public_name_of_a_subpackage_resolves():
    import importlib

    lazy = [name for name, path in modules().items() if "lazy_exports(" in path.read_text()]
    assert len(lazy) >= 5  # data, data.readers, training, evaluation, evaluation.figures
    for name in lazy:
        package = importlib.import_module(name)
        for public in package.__all__:
            assert getattr(package, public) is not None, f"{name}.{public}"
