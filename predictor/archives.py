"""The models the KServe predictor serves, read from the TorchServe archives (``model_store/*.mar``).

Why the archives and not ``build/onnx``: they are what is deployed. The image ships
``model_store/`` and a KServe ``storageUri`` points at one, so reading them means both engines
serve the same model bytes under the same names (the manifest's ``modelName``) with the same
settings (the archive's model config: size limits, runtime settings, ``responseTimeout``).
The manifest's handler names the model family. Only data files are unpacked (model graphs,
tiling bundles, the config); the archive's copy of the Python code is not: the predictor runs
this checkout's ``core``, the code TorchServe's archives are built from.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from core.files import atomic_write

MANIFEST = "MAR-INF/MANIFEST.json"
#: Archive members not unpacked: code (the predictor imports its own) and folders.
SKIPPED_SUFFIXES = (".py", "/")


class ArchiveError(ValueError):
    """An archive is missing, malformed or not one the predictor can serve; the message says which."""


@dataclass(frozen=True)
class Archive:
    """One unpacked archive: its model name, family (the TorchServe handler's module name),
    the folder its files are in, its serialized model file (if any) and its model config."""

    name: str
    family: str
    folder: Path
    model_file: Path | None
    config: dict = field(default_factory=dict)


def unpack(mar: Path, runtime_dir: Path) -> Archive:
    """Unpacks ``mar``'s data files into ``runtime_dir/<name>/`` (again only when the archive
    changed) and reads its manifest and model config."""
    try:
        with zipfile.ZipFile(mar) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            model = manifest["model"]
            name, handler = model["modelName"], Path(model["handler"]).stem
            folder = runtime_dir / name
            stamp = folder / ".unpacked-from"
            source = f"{mar.resolve()} {mar.stat().st_size} {mar.stat().st_mtime_ns}"
            if not (stamp.is_file() and stamp.read_text() == source):
                folder.mkdir(parents=True, exist_ok=True)
                for member in archive.namelist():
                    if member.endswith(SKIPPED_SUFFIXES):
                        continue
                    target = (folder / member).resolve()
                    if not target.is_relative_to(folder.resolve()):
                        raise ArchiveError(f"{mar}: member {member!r} points outside the archive folder")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write(target, archive.read(member))
                stamp.write_text(source)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError) as error:
        if isinstance(error, ArchiveError):
            raise
        raise ArchiveError(f"{mar} is not a readable model archive ({type(error).__name__}: {error})") from None
    config_name = model.get("configFile")
    config = yaml.safe_load((folder / config_name).read_text()) if config_name else {}
    serialized = model.get("serializedFile")
    return Archive(name, handler, folder, folder / serialized if serialized else None, config or {})


def available(store: Path) -> list[str]:
    """Names of the archives in ``store`` (their file names, which ``export`` makes the model names)."""
    return sorted(path.stem for path in store.glob("*.mar"))


def load_store(store: Path, runtime_dir: Path, names: Sequence[str] | None = None) -> list[Archive]:
    """Unpacks the named archives (all when ``names`` is None), in the order given."""
    found = available(store)
    if not found:
        raise ArchiveError(f"no .mar archives in {store}: run scripts/build.sh first, or pass --model-store")
    wanted = list(names) if names else found
    missing = [name for name in wanted if name not in found]
    if missing:
        raise ArchiveError(f"no archive for {', '.join(missing)} in {store}; available: {', '.join(found)}")
    return [unpack(store / f"{name}.mar", runtime_dir) for name in wanted]
