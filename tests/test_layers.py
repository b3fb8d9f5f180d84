"""The package layout is the architecture: imports run downward only, and the core has no cycles.

Every ``import`` of a project module, at module level or inside a function, is checked against the
layer order in docs/architecture.md. A function-local import of a project module is allowed only
where it keeps an optional dependency optional (or is the entry point's guarded import), and is listed here with
that reason. The package's own lazily loaded API names (``vhdtool.__getattr__``) are a table, not an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "vhdtool"

# Lowest first; a module may import its own layer or any layer below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("vhdtool.errors", "vhdtool.extents", "vhdtool.startup", "vhdtool.units"),
    ("vhdtool.blockio",),
    ("vhdtool.disk",),
    ("vhdtool.formats",),
    ("vhdtool.stream",),
    ("vhdtool.inspect",),
    ("vhdtool.readiness",),
    ("vhdtool.azure",),
    ("vhdtool.jobs",),
    ("vhdtool.cli",),
)

# Function-local imports of project modules that keep an optional extra optional, and the entry point's.
_ENTRY = ("the command's entry point imports the CLI inside its Ctrl-C guard, so an interrupt during the "
          "0.1 s of imports is one line, not a traceback")
LOCAL_IMPORTS_ALLOWED: dict[str, str] = {
    "vhdtool.__main__->vhdtool.cli": _ENTRY,
    "vhdtool.__main__->vhdtool.cli.run": _ENTRY,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None


def _typing_only(node: ast.AST) -> bool:
    """An ``if TYPE_CHECKING:`` block: its imports never run."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _project_imports(tree: ast.AST, runtime_only: bool = False) -> list[tuple[str, int, bool]]:
    """(imported module, line, whether at module level) for every import of a vhdtool module."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, at_top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if runtime_only and _typing_only(child):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.startswith("vhdtool"):
                    found.append((child.module, child.lineno, at_top))
                    # "from vhdtool.pkg import mod" imports the module vhdtool.pkg.mod too
                    found.extend((f"{child.module}.{a.name}", child.lineno, at_top) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, at_top) for a in child.names if a.name.startswith("vhdtool"))
            visit(child, at_top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def test_every_module_belongs_to_a_layer() -> None:
    loose = [m for m in _modules() if m != "vhdtool" and _layer(m) is None and m != "vhdtool.__main__"]
    assert not loose, f"modules outside every layer (add them to LAYERS and docs/architecture.md): {loose}"


def test_imports_run_downward_only() -> None:
    upward: list[str] = []
    for module, path in _modules().items():
        own = _layer(module)
        if own is None:
            continue
        for imported, line, _top in _project_imports(ast.parse(path.read_text())):
            target = _layer(imported)
            if target is not None and target > own:
                upward.append(f"{path.relative_to(ROOT.parent)}:{line} ({module}) imports {imported}")
    assert not upward, "\n".join(upward)


def test_no_function_local_imports_of_the_project_but_the_listed_ones() -> None:
    local: list[str] = []
    for module, path in _modules().items():
        for imported, line, top in _project_imports(ast.parse(path.read_text())):
            if not top and f"{module}->{imported}" not in LOCAL_IMPORTS_ALLOWED:
                local.append(f"{path.relative_to(ROOT.parent)}:{line} {module}->{imported}")
    assert not local, "\n".join(local)


def test_no_import_cycles_at_module_level() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for imported, _line, top in _project_imports(ast.parse(path.read_text()), runtime_only=True):
            if top and imported in modules:
                edges.add(imported)
        graph[module] = {e for e in edges if e in modules and e != module}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def walk(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "vhdtool":
                continue
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and walk(nxt, [*stack, nxt]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if module != "vhdtool" and state.get(module) is None and walk(module, [module]):
            break
    assert not cycle, " -> ".join(cycle)
