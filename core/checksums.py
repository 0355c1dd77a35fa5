"""File checksums: the one SHA-256 helper for downloads (``export.weights``) and for the
tiling bundle's check that it was made from the very model beside it (``core.tiling``)."""

from __future__ import annotations

import hashlib
import os


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (weights and models can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
