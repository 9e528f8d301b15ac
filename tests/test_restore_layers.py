"""The restore's machinery calls down, never up (issue 19), read from the source alone.

Every import counts, the lazy ones inside functions and the TYPE_CHECKING ones too:
no module under ``velocity_pg/restore/`` imports a verb or the command line, and no
import circle runs through one of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "velocity_pg"
MACHINERY = "velocity_pg.restore"
UPWARD = ("velocity_pg.verbs", "velocity_pg.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the velocity_pg modules it imports (``from pkg import mod`` names mod)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                wanted = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in wanted:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                # A module's own package (its __init__) is not an import of it.
                if target and target != name and not name.startswith(target + "."):
                    found.add(target)
        graph[name] = found
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_restore_machinery_imports_no_verb() -> None:
    graph = import_graph()
    upward = sorted(
        (name, target)
        for name, targets in graph.items()
        if name.startswith(MACHINERY)
        for target in targets
        if target.startswith(UPWARD)
    )
    assert upward == []


def test_no_import_circle_through_the_restore() -> None:
    through = [
        sorted(component)
        for component in circles(import_graph())
        if any(name.startswith(MACHINERY) for name in component)
    ]
    assert through == []


def test_the_graph_sees_a_circle() -> None:
    """The check itself: a circle among three modules is found, an acyclic chain is not."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
