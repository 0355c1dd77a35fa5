"""Test-only pause points, so a test can kill a worker at the exact moment it chooses.

Inert unless ``$STYLE_TEST_HOLD_DIR`` names a folder (only the reliability tests and
``python -m bench.load --mode kills`` set it), and even then a point pauses only while its
hold file ``hold.<model>.<phase>`` exists in that folder. A paused worker writes
``at.<model>.<phase>.<pid>`` (its PID is in the name) and waits until the hold file is
removed, so the test reads which process to kill at that phase instead of guessing by time.

Phases: ``loading`` (the handler's ``initialize``, before the model is ready) and
``admitted`` (a request has its admission slot and is about to run: mid-inference from
TorchServe's point of view).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "STYLE_TEST_HOLD_DIR"
#: A forgotten hold file must not wedge a worker for ever.
MAX_PAUSE_S = 120.0


def reached(phase: str, model: str) -> None:
    """Pauses here while ``hold.<model>.<phase>`` exists (test runs only; see module doc)."""
    folder = os.environ.get(HOLD_ENV)
    if not folder:
        return
    hold = Path(folder) / f"hold.{model}.{phase}"
    if not hold.exists():
        return
    marker = Path(folder) / f"at.{model}.{phase}.{os.getpid()}"
    marker.write_text(str(os.getpid()))
    give_up = time.monotonic() + MAX_PAUSE_S
    while hold.exists() and time.monotonic() < give_up:
        time.sleep(0.02)
    marker.unlink(missing_ok=True)


def hold(folder: Path, model: str, phase: str) -> Path:
    """Arms the pause point (test side); ``release`` disarms it."""
    path = Path(folder) / f"hold.{model}.{phase}"
    path.write_text("")
    return path


def release(folder: Path, model: str, phase: str) -> None:
    """Disarms the pause point and forgets its markers, including a killed worker's (test side)."""
    (Path(folder) / f"hold.{model}.{phase}").unlink(missing_ok=True)
    for marker in Path(folder).glob(f"at.{model}.{phase}.*"):
        marker.unlink(missing_ok=True)


def wait_paused(folder: Path, model: str, phase: str, timeout: float = 60.0) -> int:
    """Waits until a worker of ``model`` is paused at ``phase``; returns its PID (test side)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(Path(folder).glob(f"at.{model}.{phase}.*"))
        if found:
            return int(found[0].name.rsplit(".", 1)[1])
        time.sleep(0.02)
    raise TimeoutError(f"no worker of {model} reached phase {phase!r} within {timeout:.0f}s")
