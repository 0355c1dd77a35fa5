"""Packages a served model into a TorchServe ``.mar`` with torch-model-archiver: the one
archiver every builder uses (``export``, ``optimize.archive``, ``train.export``).

An archive is self-contained: handler, the ``core`` modules it runs, model file and model
config travel inside it, so a stock TorchServe with the pinned Python packages serves it
without this project installed. Only the ``core`` modules the handler (and the packages
shipped with it) import, directly or through each other, are packed: an archive carries
the code its worker runs and nothing else.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.paths import ROOT
from core.tiling_program import bundle_path

CORE = ROOT / "core"


def served_core_modules(sources: list[Path]) -> list[Path]:
    """The ``core`` modules that the Python files in ``sources`` (files or package folders)
    import, followed through ``core`` itself; ``core/__init__.py`` always. Imports inside
    functions count too, so a lazily imported module is packed."""
    needed = {CORE / "__init__.py"}
    files = [f for s in sources for f in ([s] if s.is_file() else sorted(s.rglob("*.py")))]
    pending = [*needed, *(f for f in files if f.suffix == ".py")]
    while pending:
        for module in _core_imports(pending.pop()):
            if module not in needed:
                needed.add(module)
                pending.append(module)
    return sorted(needed)


def _core_imports(source: Path) -> set[Path]:
    """``core/<name>.py`` for every ``import core.<name>``, ``from core.<name> import ...``
    and ``from core import <name>`` in ``source`` that names a module of ``core``."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "core":
                names |= {f"core.{alias.name}" for alias in node.names}
    parts = [name.split(".") for name in names]
    files = {CORE / f"{p[1]}.py" for p in parts if len(p) >= 2 and p[0] == "core"}
    return {f for f in files if f.is_file()}


def package(
    name: str,
    handler: Path,
    model_file: Path | None,
    extra: list[Path],
    config: Path,
    out_dir: Path,
    version: str = "1.0",
) -> Path:
    """Builds ``out_dir/<name>.mar``; ``extra`` files and package folders land beside the
    handler inside the archive (folders keep their name, so ``import core`` works). A
    model's tiling bundle (``core.tiling_program.bundle_path``), when the export wrote one, goes
    along with it: without it, serving would need the ``onnx`` package to tile."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if model_file is not None and bundle_path(model_file).is_file():
        extra = [*extra, bundle_path(model_file)]
    with tempfile.TemporaryDirectory() as staging:
        # The archiver copies a folder's *contents*; staging everything in one folder keeps
        # package folders (core/, ...) intact inside the archive.
        (Path(staging) / CORE.name).mkdir()
        for module in served_core_modules([handler, *extra]):
            shutil.copy(module, Path(staging) / CORE.name / module.name)
        for item in extra:
            target = Path(staging) / item.name
            if item.is_dir():
                shutil.copytree(item, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(item, target)
        command = [
            str(Path(sys.executable).with_name("torch-model-archiver")),
            "--model-name", name,
            "--version", version,
            "--handler", str(handler),
            "--config-file", str(config),
            "--extra-files", staging,
            "--export-path", str(out_dir),
            "--force",
        ]
        if model_file is not None:
            command += ["--serialized-file", str(model_file)]
        subprocess.run(command, check=True)
    return out_dir / f"{name}.mar"
