"""The package's structure: no import cycles, no library module importing the CLI, no
function too complex to review.

The import graph is read from the source with ``ast``, so it sees every import: at module
level, inside functions and under ``TYPE_CHECKING``; a cycle hidden in a function-level
import is still a cycle in the design. Importing ``monitor.a.b`` counts as an edge to
``monitor.a.b`` only, not to the package ``monitor.a`` whose ``__init__`` also runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from radon.complexity import add_inner_blocks, cc_visit
from radon.visitors import Function

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monitor"

# The CLI layer: only these modules may import it.
CLI_MODULES = ("monitor.cli", "monitor.commands")
CLI_IMPORTERS = ("monitor.cli", "monitor.__main__", "monitor.commands")

MAX_COMPLEXITY = 20

Graph = dict[str, set[str]]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in (``a.b.attr`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported(node: ast.AST, module: str, modules: dict[str, Path]) -> Iterator[str]:
    """Fully qualified names an import statement may refer to (module or module.attribute)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            is_package = modules[module].name == "__init__.py"
            anchor = module.split(".")[: len(module.split(".")) + is_package - node.level]
            base = ".".join([*anchor, *([base] if base else [])])
        yield base
        yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> Graph:
    """Module -> the package's modules it imports, anywhere in its source."""
    modules = package_modules()
    graph: Graph = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _imported(node, module, modules):
                target = _known(name, modules) if within(name, ("monitor",)) else None
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is None:
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
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


def _describe(component: list[str], graph: Graph) -> str:
    members = set(component)
    edges = (f"  {m} -> {', '.join(sorted(graph[m] & members))}" for m in component)
    return "\n".join(["cycle:", *edges])


def test_cycle_finder_sees_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(_describe(c, graph) for c in found)


def test_the_import_graph_sees_function_level_imports() -> None:
    """``evaluate`` imports its runner inside a function; the graph must still hold it."""
    assert "monitor.evaluation.runner" in import_graph()["monitor.commands.evaluate"]


def test_only_the_cli_layer_imports_the_cli_layer() -> None:
    offenders = [
        f"{module} imports {', '.join(sorted(t for t in targets if within(t, CLI_MODULES)))}"
        for module, targets in sorted(import_graph().items())
        if not within(module, CLI_IMPORTERS) and any(within(t, CLI_MODULES) for t in targets)
    ]
    assert not offenders, "\n".join(offenders)


def _functions(path: Path) -> Iterator[Function]:
    """Every function, method and nested function of a module, as radon measures it."""
    for block in add_inner_blocks(cc_visit(path.read_text(encoding="utf-8"))):
        if isinstance(block, Function):
            yield block


def test_no_function_is_too_complex() -> None:
    too_complex = [
        f"{path.relative_to(ROOT)}:{function.lineno} {function.fullname} has complexity "
        f"{function.complexity}"
        for path in package_modules().values()
        for function in _functions(path)
        if function.complexity > MAX_COMPLEXITY
    ]
    assert not too_complex, f"above {MAX_COMPLEXITY}:\n" + "\n".join(too_complex)
