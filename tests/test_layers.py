"""The layers of velocity_pg and the imports between them (pure: the source is read with ast).

The layers, lowest first. A module may import only from its own layer or below:

0. **the base**: ``velocity_pg`` itself (its version), ``errors``, and ``postgres/``
   (connecting, pg_dump and pg_restore, and the values they take: ``Connection`` and
   ``Endpoint`` in ``postgres/connection.py``, which the settings build and hand down);
1. **the settings**: ``settings`` (command line > environment > .env > defaults), which
   holds postgres/'s values and re-exports ``Connection``;
2. **the machinery**: ``store/``, ``restore/``, ``scheduling/``;
3. **the verbs**: ``verbs/``, each verb's orchestration and result;
   and ``report``, the verbs' output helpers;
4. **the command line**: ``cli`` and ``__main__``.

Every import counts: at module level, inside a function, under ``TYPE_CHECKING`` (a
circle of type-only imports is still a circle for a reader, and for mypy). A package's
``__init__`` is the module named after the package. Checked:

(a) no import circle among velocity_pg's modules;
(b) ``postgres/`` imports nothing above the base (settings, the machinery, the verbs, cli);
(c) the machinery imports no verb: nothing from ``velocity_pg.verbs`` or ``velocity_pg.cli``;
(d) in general, no module imports from a layer above its own.

There is no allow-list but :data:`ALLOWED_UPWARD`, one named import that is meant to stay.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "velocity_pg"
SOURCE = Path(__file__).resolve().parent.parent / PACKAGE

BASE, SETTINGS, MACHINERY, VERBS, COMMAND_LINE = range(5)
LAYER_NAMES = ("the base", "the settings", "the machinery", "the verbs", "the command line")

#: Modules named exactly, then packages (a package and every module under it).
MODULE_LAYERS: dict[str, int] = {
    PACKAGE: BASE,
    f"{PACKAGE}.errors": BASE,
    f"{PACKAGE}.settings": SETTINGS,
    f"{PACKAGE}.report": VERBS,
    f"{PACKAGE}.cli": COMMAND_LINE,
    f"{PACKAGE}.__main__": COMMAND_LINE,
}
PACKAGE_LAYERS: dict[str, int] = {
    f"{PACKAGE}.postgres": BASE,
    f"{PACKAGE}.store": MACHINERY,
    f"{PACKAGE}.restore": MACHINERY,
    f"{PACKAGE}.scheduling": MACHINERY,
    f"{PACKAGE}.verbs": VERBS,
}

#: Imports from a layer above that are meant to stay: the settings build the retention
#: tiers (``Tiers``, ``TIERS``) of ``store/retention.py``, a pure module with nothing of
#: the settings', the verbs' or the command line's below it.
ALLOWED_UPWARD = frozenset({"settings -> store.retention"})


def short(module: str) -> str:
    """``velocity_pg.restore.verb`` as ``restore.verb``, for messages and the lists above."""
    return module.removeprefix(f"{PACKAGE}.")


def module_names(source: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package, by its dotted name (``__init__.py`` named as its package)."""
    modules: dict[str, Path] = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, text: str, modules: Iterable[str], is_package: bool = False) -> set[str]:
    """The package's modules that the module ``name`` (source ``text``) imports, anywhere.

    ``from velocity_pg.postgres import db`` imports the module ``velocity_pg.postgres.db``;
    ``from velocity_pg.settings import Connection`` the module ``velocity_pg.settings``.
    """
    known = set(modules)
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    modules = module_names(source)
    return {
        name: imports_of(name, path.read_text(), modules, path.name == "__init__.py")
        for name, path in modules.items()
    }


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import circles: each strongly connected set of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            members = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                members.append(other)
                if other == module:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def layer_of(module: str) -> int | None:
    if module in MODULE_LAYERS:
        return MODULE_LAYERS[module]
    for package, layer in PACKAGE_LAYERS.items():
        if module == package or module.startswith(f"{package}."):
            return layer
    return None


def cycle_violations(graph: Mapping[str, Iterable[str]]) -> set[str]:
    return {"cycle: " + ", ".join(short(m) for m in members) for members in cycles(graph)}


def postgres_violations(graph: Mapping[str, Iterable[str]]) -> set[str]:
    """(b): a module of postgres/ that imports anything above the base."""
    return {
        f"{short(module)} -> {short(other)}"
        for module, others in graph.items()
        if module.startswith(f"{PACKAGE}.postgres")
        for other in others
        if layer_of(other) != BASE
    }


def verb_module(module: str) -> bool:
    """A module of the verbs' or the command line's: ``verbs/`` or ``cli``."""
    return module in (f"{PACKAGE}.cli", f"{PACKAGE}.verbs") or module.startswith(
        f"{PACKAGE}.verbs."
    )


def machinery_violations(graph: Mapping[str, Iterable[str]]) -> set[str]:
    """(c): a module of store/, restore/ or scheduling/ that imports a verb or cli."""
    machinery = tuple(f"{PACKAGE}.{name}" for name in ("store", "restore", "scheduling"))
    return {
        f"{short(module)} -> {short(other)}"
        for module, others in graph.items()
        if module in machinery or module.startswith(tuple(f"{m}." for m in machinery))
        for other in others
        if verb_module(other)
    }


def upward_violations(graph: Mapping[str, Iterable[str]]) -> set[str]:
    """(d): a module that imports from a layer above its own (unknown layers left to
    :func:`test_every_module_has_a_layer`)."""
    found = set()
    for module, others in graph.items():
        own = layer_of(module)
        for other in others:
            theirs = layer_of(other)
            if own is not None and theirs is not None and theirs > own:
                found.add(f"{short(module)} -> {short(other)}")
    return found - ALLOWED_UPWARD


def shortest_circle(members: set[str], graph: Mapping[str, Iterable[str]]) -> list[str]:
    """The shortest chain of imports among ``members`` that leads back to where it began."""
    best: list[str] = []
    for start in sorted(members):
        paths = {start: [start]}
        queue = [start]
        while queue:
            module = queue.pop(0)
            for other in sorted(graph.get(module, ())):
                if other == start and (not best or len(paths[module]) + 1 < len(best)):
                    best = [*paths[module], start]
                if other in members and other not in paths:
                    paths[other] = [*paths[module], other]
                    queue.append(other)
    return best


def explain(violations: set[str], what: str, graph: Mapping[str, Iterable[str]]) -> str:
    lines = [f"{what}:"]
    for violation in sorted(violations):
        lines.append(f"  {violation}")
        if violation.startswith("cycle: "):
            members = {f"{PACKAGE}.{m}" for m in violation.removeprefix("cycle: ").split(", ")}
            path = shortest_circle(members, graph)
            lines.append("      e.g. " + " -> ".join(short(module) for module in path))
        else:
            module, _, other = violation.partition(" -> ")
            layers = [layer_of(f"{PACKAGE}.{m}") for m in (module, other)]
            names = [LAYER_NAMES[n] if n is not None else "no layer" for n in layers]
            lines.append(f"      (a module of {names[0]} imports from {names[1]})")
    return "\n".join(lines)


GRAPH = import_graph()


def test_the_parser_sees_every_kind_of_import() -> None:
    modules = [
        PACKAGE,
        f"{PACKAGE}.errors",
        f"{PACKAGE}.settings",
        f"{PACKAGE}.postgres",
        f"{PACKAGE}.postgres.db",
        f"{PACKAGE}.postgres.endpoint",
        f"{PACKAGE}.postgres.pgtools",
        f"{PACKAGE}.store.catalog",
    ]
    text = """
from __future__ import annotations
import os
from typing import TYPE_CHECKING
from velocity_pg import __version__
from . import db
from .pgtools import run
if TYPE_CHECKING:
    from velocity_pg.settings import Settings
def resolve() -> None:
    import velocity_pg.store.catalog
    from velocity_pg.errors import ConfigError
"""
    assert imports_of(f"{PACKAGE}.postgres.endpoint", text, modules) == {
        PACKAGE,
        f"{PACKAGE}.postgres.db",
        f"{PACKAGE}.postgres.pgtools",
        f"{PACKAGE}.settings",
        f"{PACKAGE}.store.catalog",
        f"{PACKAGE}.errors",
    }
    package_text = "from . import db\nfrom ..errors import ConfigError\n"
    assert imports_of(f"{PACKAGE}.postgres", package_text, modules, is_package=True) == {
        f"{PACKAGE}.postgres.db",
        f"{PACKAGE}.errors",
    }


def test_the_graph_is_the_package() -> None:
    # The real source, read as expected: a function-level import is seen.
    assert f"{PACKAGE}.postgres.db" in GRAPH[f"{PACKAGE}.postgres.endpoint"]
    assert f"{PACKAGE}.postgres.connection" in GRAPH[f"{PACKAGE}.settings"]
    assert len(GRAPH) > 40


def test_cycles_finds_a_circle_and_only_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert shortest_circle({"a", "b", "c"}, {"a": {"b"}, "b": {"a", "c"}, "c": {"a"}}) == [
        "a",
        "b",
        "a",
    ]


def test_every_module_has_a_layer() -> None:
    homeless = sorted(short(module) for module in GRAPH if layer_of(module) is None)
    assert not homeless, (
        f"modules in no layer: {', '.join(homeless)}; "
        "place each in MODULE_LAYERS or PACKAGE_LAYERS of tests/test_layers.py"
    )


def test_no_import_cycle() -> None:
    found = cycle_violations(GRAPH)
    assert not found, explain(found, "import circles", GRAPH)


def test_postgres_imports_nothing_above_it() -> None:
    # No allow-list: the connection settings come in as postgres/connection.py's values.
    found = postgres_violations(GRAPH)
    assert not found, explain(found, "postgres/ imports from above it", GRAPH)


def test_the_machinery_imports_no_verb() -> None:
    found = machinery_violations(GRAPH)
    assert not found, explain(found, "store/, restore/ or scheduling/ import a verb", GRAPH)


def test_no_module_imports_from_a_layer_above() -> None:
    found = upward_violations(GRAPH)
    assert not found, explain(found, "imports from a layer above", GRAPH)


def test_the_allowed_upward_imports_are_still_there() -> None:
    edges = {f"{short(module)} -> {short(other)}" for module in GRAPH for other in GRAPH[module]}
    stale = ALLOWED_UPWARD - edges
    assert not stale, f"no longer imported, remove from ALLOWED_UPWARD: {'; '.join(sorted(stale))}"
