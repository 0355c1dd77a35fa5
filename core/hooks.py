"""Named points in a worker's life, and the plugins that may watch them.

Serving code announces a few moments with ``reached(point, model)``; nothing happens there
unless a listener was registered for that point, and only plugins register listeners. A
plugin is a module named in ``$STYLE_WORKER_PLUGINS`` (comma-separated module names; their
folder must be on the worker's ``PYTHONPATH``, which TorchServe passes on to its workers).
Each is imported once, when the worker starts (``worker_starting``), and its ``install()``
function registers its listeners. No shipped configuration names a plugin: the test suite
uses one to pause a worker exactly where a test wants to kill it
(``tests/support/fault_points.py``), so that code never travels in an archive.

Points, each given the model's name:

- ``loading``: a worker is starting (the handler's ``initialize``), its model not ready yet;
- ``admitted``: a request holds its admission slot and is about to run (mid-inference, as
  TorchServe sees it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from core import settings

POINTS = ("loading", "admitted")
Listener = Callable[[str], None]

_listeners: dict[str, list[Listener]] = {point: [] for point in POINTS}
_installed: set[str] = set()


def listen(point: str, listener: Listener) -> None:
    """Calls ``listener(model)`` whenever ``point`` is reached in this process."""
    if point not in POINTS:
        raise ValueError(f"no hook point {point!r}; points: {', '.join(POINTS)}")
    _listeners[point].append(listener)


def reached(point: str, model: str) -> None:
    """Announces ``point`` for ``model`` to its listeners (none, unless a plugin registered one)."""
    for listener in _listeners[point]:
        listener(model)


def load_plugins(environ: Mapping[str, str] | None = None) -> None:
    """Imports the modules ``$STYLE_WORKER_PLUGINS`` names (once each) and runs their
    ``install()``. One that cannot be imported stops the worker with a message naming it."""
    names = [name.strip() for name in settings.env("STYLE_WORKER_PLUGINS", environ).split(",") if name.strip()]
    for name in names:
        if name in _installed:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise settings.SettingError(f"$STYLE_WORKER_PLUGINS names {name!r}, which does not import here "
                                        f"({error}); put its folder on PYTHONPATH") from None
        install = getattr(module, "install", None)
        if not callable(install):
            raise settings.SettingError(f"$STYLE_WORKER_PLUGINS names {name!r}, which has no install() function")
        install()
        _installed.add(name)


def worker_starting(model: str, environ: Mapping[str, str] | None = None) -> None:
    """A worker of ``model`` is starting: loads the plugins, then announces ``loading``."""
    load_plugins(environ)
    reached("loading", model)
