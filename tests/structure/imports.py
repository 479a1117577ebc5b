"""Read wattwise's own import graph from its source with `ast` (lazy imports included)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "src"


@dataclass(frozen=True)
class ImportEdge:
    """`importer` imports `imported` (both dotted module names) at `line`; `names` it takes."""

    importer: str
    imported: str
    line: int
    names: tuple[str, ...]


def module_files(package: str = "wattwise") -> dict[str, Path]:
    """Dotted module name → file, for every module of `package` under src/."""
    modules: dict[str, Path] = {}
    for path in sorted((SOURCE_ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _absolute(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_edges(package: str = "wattwise") -> list[ImportEdge]:
    """Every import between modules of `package`, at any depth of the file (functions too)."""
    modules = module_files(package)
    edges: list[ImportEdge] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in modules:
                        edges.append(ImportEdge(name, alias.name, node.lineno, ()))
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(name, is_package, node)
                if target not in modules:
                    continue
                plain: list[str] = []
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:
                        edges.append(ImportEdge(name, submodule, node.lineno, ()))
                    else:
                        plain.append(alias.name)
                if plain:
                    edges.append(ImportEdge(name, target, node.lineno, tuple(plain)))
    return _with_parent_packages(edges, modules)


def _with_parent_packages(edges: list[ImportEdge], modules: dict[str, Path]) -> list[ImportEdge]:
    """Importing `a.b.c` first runs package `a.b`'s __init__: that is an import too, and the one
    that makes a package's members and an outside module that imports from it a cycle. The root
    package (lazy) and the importer's own ancestors (already initializing) are left out."""
    implied = []
    for edge in edges:
        parts = edge.imported.split(".")
        for depth in range(2, len(parts)):
            package = ".".join(parts[:depth])
            own_ancestor = edge.importer == package or edge.importer.startswith(package + ".")
            if package in modules and not own_ancestor:
                implied.append(ImportEdge(edge.importer, package, edge.line, ()))
    return edges + implied


def import_cycles(edges: list[ImportEdge]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), plus self-imports."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups
