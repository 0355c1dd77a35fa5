"""Test-only pause points, so a test can kill a worker at the exact moment it chooses.

A worker plugin (``core.hooks``): a test server whose environment includes
``worker_env(folder)`` imports this module in every worker (as ``fault_points``, from this
folder on ``PYTHONPATH``), and ``install`` listens at each hook point. A point pauses only
while its hold file ``hold.<model>.<phase>`` exists in that folder. A paused worker writes
``at.<model>.<phase>.<pid>`` (its PID is in the name) and waits until the hold file is
removed, so the test reads which process to kill at that phase instead of guessing by time.

Phases are the hook points: ``loading`` (the handler's ``initialize``, before the model is
ready) and ``admitted`` (a request has its admission slot and is about to run:
mid-inference from TorchServe's point of view). Used by tests/test_reliability_kills.py
and ``python -m bench.load --mode kills``.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

from core import hooks, settings

HOLD_ENV = "STYLE_TEST_HOLD_DIR"
#: This folder, and this module's name inside a worker that has it on ``PYTHONPATH``.
SUPPORT_DIR = Path(__file__).resolve().parent
PLUGIN = "fault_points"
#: A forgotten hold file must not wedge a worker for ever.
MAX_PAUSE_S = 120.0


def worker_env(folder: Path) -> dict[str, str]:
    """The environment a test server needs for its workers to pause at the points held in ``folder``."""
    python_path = [str(SUPPORT_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {HOLD_ENV: str(folder), "STYLE_WORKER_PLUGINS": PLUGIN, "PYTHONPATH": os.pathsep.join(python_path)}


def install() -> None:
    """Called by ``core.hooks`` when a worker starts: pause at every hook point when held."""
    for phase in hooks.POINTS:
        hooks.listen(phase, functools.partial(reached, phase))


def reached(phase: str, model: str) -> None:
    """Pauses here while ``hold.<model>.<phase>`` exists (worker side; see module doc)."""
    folder = settings.env(HOLD_ENV)
    if folder is None:
        return
    hold_file = folder / f"hold.{model}.{phase}"
    if not hold_file.exists():
        return
    marker = folder / f"at.{model}.{phase}.{os.getpid()}"
    marker.write_text(str(os.getpid()))
    give_up = time.monotonic() + MAX_PAUSE_S
    while hold_file.exists() and time.monotonic() < give_up:
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
