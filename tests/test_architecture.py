"""The shape of the code that ARCHITECTURE.md promises and import-linter cannot state: no import
cycle anywhere in the package, and functions and classes short enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "dlcli"
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 300


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module (iterative: the graph has ~100 nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_cycle_finder_finds_a_cycle_and_nothing_else():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_no_import_cycle_in_the_package():
    """Imports inside functions count, and a package's __init__ is a module of its own; imports
    made only for type checking do not (they never run)."""
    grimp = pytest.importorskip("grimp")  # installed with import-linter, the test extra
    graph = grimp.build_graph("dlcli", exclude_type_checking_imports=True)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    cycles = strongly_connected(edges)
    assert cycles == [], f"import cycles: {cycles}"


def _lengths(kind: type) -> list[tuple[int, str]]:
    lengths = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, kind):
                name = f"{path.relative_to(SRC)}:{node.lineno} {node.name}"  # type: ignore[attr-defined]
                lengths.append((node.end_lineno - node.lineno + 1, name))  # type: ignore[attr-defined]
    return sorted(lengths, reverse=True)


def test_no_function_longer_than_a_screen_or_two():
    functions = _lengths((ast.FunctionDef, ast.AsyncFunctionDef))  # type: ignore[arg-type]
    assert functions and [f for f in functions if f[0] > MAX_FUNCTION_LINES] == []


def test_no_class_longer_than_it_can_be_read_whole():
    classes = _lengths(ast.ClassDef)
    assert classes and [c for c in classes if c[0] > MAX_CLASS_LINES] == []
