"""The package's import graph: no cycles, and no project module imported inside a function.

The graph is read from the source with `ast` (nothing is imported): every `import debug...` and
`from debug... import ...` of every module under src/debug, at module level or inside a function, except those
under `if TYPE_CHECKING:` (they never run). `from package import name` counts as an import of the submodule
`package.name` when that module exists, else of the package itself. A package's implicit import of its parents
is not an edge (every submodule would otherwise form a cycle with its package).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "debug"

#: Third-party packages worth deferring: each costs a noticeable part of a second (or is optional).
HEAVY = {"torch", "transformers", "tokenizers", "matplotlib", "scipy", "nnsight", "xdist"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "embedded" not in p.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_project(name: str | None) -> bool:
    return name is not None and (name == "debug" or name.startswith("debug."))


def _imports(tree: ast.AST, module: str, in_function: bool = False):
    """Yield (imported module, line, inside a function) for the project imports below `tree`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        nested = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_project(alias.name):
                    yield alias.name, node.lineno, in_function
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_project(node.module):
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                yield (target if target in MODULES else node.module), node.lineno, in_function
        yield from _imports(node, module, nested)


def _third_party_at_top(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _heavy_modules() -> set[str]:
    """Project modules that import a HEAVY package at module level, directly or through project modules."""
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}
    top = {
        name: {t for t, _, inside in _imports(tree, name) if not inside and t in MODULES}
        for name, tree in trees.items()
    }
    heavy = {name for name, tree in trees.items() if _third_party_at_top(tree) & HEAVY}
    grew = True
    while grew:
        more = {name for name, deps in top.items() if deps & heavy} - heavy
        heavy |= more
        grew = bool(more)
    return heavy


HEAVY_MODULES = _heavy_modules()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _, _ in _imports(ast.parse(path.read_text(encoding="utf-8")), name):
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "debug.plugin.hooks" in graph and "debug.plugin.session" in graph["debug.plugin.hooks"]
    assert "debug.programs" in graph["debug.scoring"]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_project_import_inside_a_function(name: str) -> None:
    """A function may import a project module only when that buys start-up time: the module is heavy (imports
    torch, transformers, ... at load) and the importing module is not heavy already."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    inside = [
        f"{name}:{line} imports {target}"
        for target, line, in_function in _imports(tree, name)
        if in_function and (target not in HEAVY_MODULES or name in HEAVY_MODULES)
    ]
    assert inside == [], "import light project modules at module level; defer heavy ones, from light modules"


def test_heavy_modules_are_found() -> None:
    assert "debug.tokenizer" in HEAVY_MODULES and "debug.programs" not in HEAVY_MODULES
