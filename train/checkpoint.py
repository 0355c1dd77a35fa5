"""Resumable training state, and the plain weights file the export step loads.

Two files per save, both written by rank 0 and atomically (temp file + rename, so a job
killed mid-save leaves the previous pair intact):

* ``checkpoint.pt`` -- model, optimizer, loss scaler, step and settings: ``--resume``
  continues from it exactly where it stopped.
* ``<name>.pth`` -- the bare ``TransformerNet`` state_dict, the pytorch/examples format
  ``networks.load_pytorch_examples`` reads: always the latest weights, exportable
  while training is still running.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from core.files import atomic_write

FORMAT = "style-transfer/train-checkpoint/1"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` through ``core.files.atomic_write``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buffer.getvalue())


def save(
    path: Path,
    weights_path: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    settings: dict,
    world_size: int,
) -> None:
    state = model.state_dict()
    atomic_save(
        {
            "format": FORMAT,
            "step": step,
            "world_size": world_size,
            "settings": settings,
            "model": state,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
        },
        path,
    )
    atomic_save(state, weights_path)


def load(path: Path) -> dict:
    """Reads a checkpoint on the CPU (tensors only, no pickled code)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a training checkpoint ({FORMAT}); plain weights cannot resume")
    return state


def digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and exact bytes of every tensor: equal digests = identical weights."""
    sha = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        sha.update(name.encode())
        sha.update(tensor.numpy().tobytes())
    return sha.hexdigest()
