"""The package's shape: imports go one way and files stay small.

Every ``import`` statement of every module under ``egoexo_jax/`` (function-local ones included) is
read with :mod:`ast`; an import of ``egoexo_jax.a.b`` is an edge to the deepest module that exists.
A module's edge to its own package's ``__init__`` is a package re-export, not a layer, and is left out.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Set

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "egoexo_jax"
MAX_LINES = 450

# What the low layers may import, besides themselves. Entry points (``__main__``) are exempt.
BASE = {"egoexo_jax", "egoexo_jax.cli", "egoexo_jax.storage", "egoexo_jax.slow_frames"}
ALLOWED = {
    "egoexo_jax.ops": BASE,
    "egoexo_jax.models": BASE | {"egoexo_jax.ops"},
    "egoexo_jax.data": BASE | {"egoexo_jax.labels", "egoexo_jax.class_names"},
    "egoexo_jax.convert": BASE | {"egoexo_jax.models", "egoexo_jax.ops"},
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> Dict[str, pathlib.Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(name: str, known: Set[str]) -> str:
    """The deepest module of ``known`` that ``name`` (a module or a module attribute) lies in."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name


def imports_of(name: str, path: pathlib.Path, known: Set[str]) -> Set[str]:
    """The ``egoexo_jax`` modules that module ``name`` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    out: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            if t.split(".")[0] == "egoexo_jax":
                dep = _resolve(t, known)
                if dep and dep != name and not name.startswith(dep + "."):
                    out.add(dep)
    return out


def import_graph() -> Dict[str, Set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]``."""
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def layer_of(name: str) -> str:
    for layer in ALLOWED:
        if name == layer or name.startswith(layer + "."):
            return layer
    return ""


def test_the_graph_walker_sees_function_local_imports():
    graph = import_graph()
    # models/__init__.py imports models.mvit inside build() only (it is an optional heavy import).
    assert "egoexo_jax.models.mvit" in graph["egoexo_jax.models"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_low_layers_do_not_import_upwards():
    upward = []
    for name, deps in import_graph().items():
        layer = layer_of(name)
        if not layer or name.endswith(".__main__"):
            continue
        for dep in sorted(deps):
            allowed = ALLOWED[layer] | {layer}
            if not any(dep == a or dep.startswith(a + ".") for a in allowed):
                upward.append(f"{name} imports {dep}")
    assert not upward, "\n".join(upward)


def test_no_python_file_over_the_size_limit():
    long = [
        f"{p.relative_to(REPO)}: {n} lines"
        for p in sorted(PACKAGE.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"over {MAX_LINES} lines (split by concept): " + ", ".join(long)
