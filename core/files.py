"""Writing a file so that readers see the old version or the new one, never half of either."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``
    (atomic on POSIX within one file system): a crash or Ctrl-C mid-write leaves the previous
    file intact under the final name. The temporary is opened normally, so the result gets
    the user's umask."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with temporary.open("wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
