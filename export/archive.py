"""Packages a served model into a TorchServe ``.mar`` with torch-model-archiver.

An archive is self-contained: handler, the shared ``core`` package, model file and model
config travel inside it, so a stock TorchServe with the pinned Python packages serves it
without this project installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.tiling import bundle_path

ROOT = Path(__file__).resolve().parents[1]


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
    model's tiling bundle (``core.tiling.bundle_path``), when the export wrote one, goes
    along with it: without it, serving would need the ``onnx`` package to tile."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if model_file is not None and bundle_path(model_file).is_file():
        extra = [*extra, bundle_path(model_file)]
    with tempfile.TemporaryDirectory() as staging:
        # The archiver copies a folder's *contents*; staging everything in one folder keeps
        # package folders (core/, ...) intact inside the archive.
        for item in [ROOT / "core", *extra]:
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
