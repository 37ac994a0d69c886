"""The import graph of a source tree, read with :mod:`ast` (nothing is imported), and its cycles.

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a late import in a
function is still a dependency, only a hidden one); imports under ``if TYPE_CHECKING:`` do not. Edges go
from a module to the modules of the tree it names: ``from .flatmap import FlatMap`` -> ``pkg.flatmap``,
``from . import batch`` -> ``pkg.batch`` when that is a module, else the package itself. Parent packages
that Python runs on the way (``pkg/__init__.py``) are not edges of their own.

>>> graph = import_graph(Path(__file__).parents[1], ["surfmap"])  # doctest: +SKIP
>>> cycles(graph)  # doctest: +SKIP
[['surfmap.conformal', 'surfmap.flatmap', 'surfmap.transport']]
"""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["cycles", "import_graph", "module_names"]


def module_names(root: Path, packages) -> dict[str, Path]:
    """``{dotted name: file}`` of every module below ``root/<package>`` for each of ``packages``."""
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, path: Path, node, known) -> set[str]:
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        base = _resolve(module, path.name == "__init__.py", node)
        named = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = set()
    for name in named:
        while name and name not in known:  # ``import pkg.mod.attr`` style names: the longest known prefix
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def import_graph(root, packages) -> dict[str, set[str]]:
    """``{module: modules of the tree it imports}`` for the packages ``root/<package>``."""
    root = Path(root)
    known = module_names(root, packages)
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = set().union(*(_targets(module, path, n, known) for n in _imports(tree)))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (each sorted; sorted list), by Tarjan."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)
