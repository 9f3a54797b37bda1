"""The modules of the dspex package import each other without a cycle.

A static check (``ast``, nothing is imported): every module of ``python/dspex`` (the bench
subpackage and the ``_native.pyi`` stub of the extension included) is read, and each import
of a dspex module becomes an edge of the module graph: at module level and inside functions
alike, ``import dspex.x``, ``from dspex.x import y``, ``from dspex import x`` (an edge to
``dspex.x`` when x is a submodule, else to the package, ``dspex/__init__.py``), ``import dspex``
(an edge to the package) and relative imports. Only imports under ``if TYPE_CHECKING:`` are
left out: they never run. The package's ``__init__.py`` importing its submodules is expected;
a submodule importing ``dspex`` itself to reach a sibling is an edge back to ``__init__`` and
so a cycle.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Optional, Set

import pytest

PACKAGE = "dspex"
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", PACKAGE)


def _modules(root: str) -> Dict[str, Optional[str]]:
    """Module name -> path of every module of the package: ``.py`` files, and extension
    modules (their ``.pyi`` stub, or None when they have none: they import nothing of dspex)."""
    out: Dict[str, Optional[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        pkg = os.path.relpath(dirpath, os.path.dirname(root)).replace(os.sep, ".")
        for f in sorted(filenames):
            if f.endswith((".so", ".pyd")):
                out.setdefault(f"{pkg}.{f.split('.')[0]}", None)
                continue
            stem, ext = os.path.splitext(f)
            if ext in (".py", ".pyi"):
                name = pkg if stem == "__init__" else f"{pkg}.{stem}"
                if ext == ".py" or out.get(name) is None:
                    out[name] = os.path.join(dirpath, f)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[ast.stmt]:
    """Every import statement of ``tree`` (in functions, classes, try blocks...), except
    those under ``if TYPE_CHECKING:``."""
    stack: List[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, known: Set[str]) -> Optional[str]:
    """The dspex module that importing ``name`` runs last: ``name`` itself when it is one,
    else its nearest enclosing package (``dspex.x.y`` where ``y`` is a function -> ``dspex.x``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def module_graph(root: str = ROOT) -> Dict[str, Set[str]]:
    """dspex module -> the dspex modules it imports."""
    files = _modules(root)
    known = set(files)
    graph: Dict[str, Set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        if path is None:
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        is_pkg = os.path.basename(path).startswith("__init__.")
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in _imports(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                if node.level:
                    base_parts = package.split(".")
                    if node.level > 1:
                        base_parts = base_parts[: -(node.level - 1)]
                    base = ".".join(base_parts)
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # `from pkg import x`: x is a submodule, or a name of pkg's __init__.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for t in targets:
                if t != PACKAGE and not t.startswith(PACKAGE + "."):
                    continue
                target = _resolve(t, known)
                if target is not None and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """A cycle of ``graph`` as [a, b, ..., a], or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in graph}
    path: List[str] = []

    def visit(n: str) -> Optional[List[str]]:
        color[n] = GREY
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if color.get(m, BLACK) == GREY:
                return path[path.index(m) :] + [m]
            if color.get(m) == WHITE:
                found = visit(m)
                if found:
                    return found
        path.pop()
        color[n] = BLACK
        return None

    for n in sorted(graph):
        if color[n] == WHITE:
            found = visit(n)
            if found:
                return found
    return None


def test_the_dspex_modules_import_each_other_without_a_cycle():
    graph = module_graph()
    assert {"dspex", "dspex.study", "dspex.trial", "dspex.remote", "dspex._optimize", "dspex._native"} <= set(graph)
    # The checker sees the edges it must see.
    assert {"dspex.study", "dspex.remote", "dspex.trial"} <= graph["dspex"]
    assert "dspex._optimize" in graph["dspex.remote"] and "dspex._optimize" in graph["dspex.study"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(
    "source, cycle",
    [
        ({"a": "from dspex import b", "b": "def f():\n    import dspex.a"}, ["dspex.a", "dspex.b", "dspex.a"]),
        ({"a": "from dspex.b import f", "b": "def f():\n    from . import a"}, ["dspex.a", "dspex.b", "dspex.a"]),
        ({"a": "import dspex"}, ["dspex", "dspex.a", "dspex"]),
        ({"a": "from dspex import attach"}, ["dspex", "dspex.a", "dspex"]),
        ({"a": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dspex import b", "b": "from dspex import a"}, None),
        ({"a": "from dspex import b", "b": "import os"}, None),
    ],
)
def test_the_checker_finds_cycles(tmp_path, source, cycle):
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from dspex import " + ", ".join(sorted(source)) + "\n")
    for name, text in source.items():
        (pkg / f"{name}.py").write_text(text + "\n")
    found = find_cycle(module_graph(str(pkg)))
    if cycle is None:
        assert found is None, found
    else:
        assert found is not None and set(found) == set(cycle) and len(found) == len(cycle), found
