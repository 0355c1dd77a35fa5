"""The packages' layering, read from the source with ``ast`` (nothing is imported, so no
import-time side effect can hide a dependency): the runtime packages never reach the build
tools or training, and no module or package imports itself back through others.

Every import counts, wherever it is: at the top of a module, inside a function (a lazy import
is still a dependency, taken the first time that function runs), under ``TYPE_CHECKING``, and
``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Run while serving or by the user-facing tools: they must work without the build
#: toolchain (``export``) and training (``train``), which bring torch and the archiver.
RUNTIME_PACKAGES = ("app", "stylize", "core", "handlers", "predictor", "optimize", "lossnet")
BUILD_AND_TRAINING = ("export", "train")
#: Not the project's source: environments and generated output (hidden folders are skipped too).
NOT_SOURCE = {".venv", "venv", "build", "model_store", "node_modules", "__pycache__"}


def _modules(root: Path) -> dict[str, Path]:
    """Every Python file of the tree at ``root``, by its module name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if not any(part in NOT_SOURCE or part.startswith(".") for part in parts[:-1]):
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported_names(path: Path, module: str) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, name)`` for every import in ``path``: ``name`` is what a ``from``
    import takes from the module (a submodule or an attribute), else None. Relative imports
    come back absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield node.lineno, base, alias.name
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value, None


MODULES = _modules(ROOT)


def _targets(module: str, imported: str, name: str | None, modules: dict[str, Path] = MODULES) -> set[str]:
    """The project modules an import runs: the deepest module it names (``from a import b``
    runs ``a.b`` when that is a module), and the ``__init__`` of each package on the way that
    the importer is not itself inside (those are already running when it is)."""
    full = f"{imported}.{name}" if name and f"{imported}.{name}" in modules else imported
    parts = full.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    targets = set()
    for depth in range(1, len(parts) + 1):
        target = ".".join(parts[:depth])
        inside = module == target or module.startswith(target + ".")
        if target in modules and (depth == len(parts) or not inside):
            targets.add(target)
    targets.discard(module)
    return targets


def _graph(modules: dict[str, Path] = MODULES) -> dict[str, set[str]]:
    return {
        module: {
            target
            for _, imported, name in _imported_names(path, module)
            for target in _targets(module, imported, name, modules)
        }
        for module, path in modules.items()
    }


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Top-level packages, tests left out: they import everything and nothing imports them."""
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        top = module.split(".")[0]
        if top != "tests":
            others = {target.split(".")[0] for target in targets} - {top, "tests"}
            packages.setdefault(top, set()).update(others)
    return packages


def _offences(root: Path, modules: dict[str, Path], packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """``file:line: imports X`` for every import of ``forbidden`` inside ``packages``."""
    return [
        f"{path.relative_to(root)}:{line}: imports {imported}{'.' + name if name else ''}"
        for module, path in modules.items() if module.split(".")[0] in packages
        for line, imported, name in _imported_names(path, module)
        if imported.split(".")[0] in forbidden or (not imported and name in forbidden)
    ]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (``[a, b, ..., a]``) per strongly connected component of more than one
    node (Tarjan's algorithm, iterative: the graph is the whole project)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
    return [_path_through(component, graph) for component in components]


def _path_through(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle from the component's first node back to itself (breadth first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_the_source_tree_is_found():
    assert {"core.stylizer", "export.weights", "networks.transformer_net", "build_tools.archive"} <= MODULES.keys()


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_runtime_packages_never_import_the_build_tools_or_training(package):
    offences = _offences(ROOT, MODULES, (package,), BUILD_AND_TRAINING)
    assert not offences, "\n".join(offences)


def test_no_module_imports_itself_back():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_no_package_imports_itself_back():
    """The same at package level: ``export`` -> ``optimize`` -> ``export`` is a cycle even when
    no single module closes it."""
    cycles = _cycles(_package_graph(_graph()))
    assert not cycles, "package import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_finder_reports_the_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c", "a"], ["e", "e2", "e"]]


def test_imports_are_resolved_like_python_does():
    assert _targets("export.__main__", "optimize", "archive") == {"optimize", "optimize.archive"}
    assert _targets("lossnet.weights", "lossnet.architecture", "ARCHITECTURES") == {"lossnet.architecture"}
    assert _targets("tests.test_cli", "tests.conftest", "ONNX_DIR") == {"tests.conftest"}
    assert _targets("core.tiling", "numpy", None) == set()


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A small tree with the kinds of import these tests exist to stop: lazy ones included."""
    files = {
        "core/__init__.py": "",
        "core/tiling.py": "def load():\n    from core.tiling_graphs import compile_file\n",
        "core/tiling_graphs.py": "from core.tiling import Program\n",
        "app/__init__.py": "",
        "app/styles.py": "def styles():\n    from export.weights import STYLES\n",
        "optimize/__init__.py": "",
        "optimize/archive.py": "import importlib\narchiver = importlib.import_module('export.archive')\n",
        "export/__init__.py": "",
        "export/archive.py": "",
        "export/__main__.py": "from optimize import archive\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = _modules(tmp_path)
    assert _offences(tmp_path, modules, RUNTIME_PACKAGES, BUILD_AND_TRAINING) == [
        "app/styles.py:2: imports export.weights.STYLES", "optimize/archive.py:2: imports export.archive"]
    graph = _graph(modules)
    assert _cycles(graph) == [["core.tiling", "core.tiling_graphs", "core.tiling"]]
    assert _cycles(_package_graph(graph)) == [["export", "optimize", "export"]]
