"""The package's shape, as a newcomer meets it: few top-level entries, small modules and
functions, layers that import downwards only and no import cycle (imports inside functions
counted), parsers only in lensing/cli/."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lensing"
MAX_TOP_LEVEL, MAX_MODULE_LINES, MAX_FUNCTION_LINES = 10, 400, 80
# Each subpackage's layer (docs/design.md, Layers): a module may import its own subpackage and
# lower layers only. training and evaluation share a layer and so may not import each other.
# The package's own __init__ re-exports constants only and counts as core; __main__ is the
# command line.
LAYERS = {
    "core": 1,
    "data": 2,
    "simulate": 3,
    "model": 4,
    "training": 5,
    "evaluation": 5,
    "search": 6,
    "cli": 7,
}


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


def layer_of(module: str) -> str:
    """The subpackage whose layer a module belongs to (see LAYERS)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    return "cli" if parts[1] == "__main__" else parts[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of ``graph`` (module -> the package modules it imports) that does not run
    downwards, as "a.b imports c.d: <layer> may not import <layer>"."""
    found = []
    for name, targets in sorted(graph.items()):
        here = layer_of(name)
        for target in sorted(targets):
            there = layer_of(target)
            if there != here and LAYERS[there] >= LAYERS[here]:
                found.append(
                    f"{name} imports {target}: lensing.{here} (layer {LAYERS[here]}) may not "
                    f"import lensing.{there} (layer {LAYERS[there]})"
                )
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {n: imported(ast.parse(p.read_text()), n, set(found)) for n, p in found.items()}


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS)


def test_imports_run_down_the_layers():
    assert not upward_imports(import_graph())


def test_an_upward_import_is_named_with_both_subpackages():
    source = "from lensing.training.fit import fit\n\ndef f():\n    import lensing.search.grid\n"
    known = {"lensing.data.batches", "lensing.training.fit", "lensing.search.grid"}
    graph = {"lensing.data.batches": imported(ast.parse(source), "lensing.data.batches", known)}
    problems = upward_imports(graph)
    assert len(problems) == 2
    assert "lensing.data (layer 2) may not import lensing.training (layer 5)" in problems[1]
    assert "lensing.data (layer 2) may not import lensing.search (layer 6)" in problems[0]
    side_by_side = {"lensing.training.steps": {"lensing.evaluation.evaluate"}}
    assert (
        "lensing.training (layer 5) may not import lensing.evaluation"
        in (upward_imports(side_by_side)[0])
    )


def test_no_import_cycle():
    graph = import_graph()
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

    lazy = [
        name
        for name, path in modules().items()
        if "lazy_exports(" in path.read_text() and name != "lensing.core.lazy"
    ]
    assert len(lazy) >= 5  # data, data.readers, training, evaluation, evaluation.figures
    for name in lazy:
        package = importlib.import_module(name)
        for public in package.__all__:
            assert getattr(package, public) is not None, f"{name}.{public}"
