#!/usr/bin/env python3
"""Container command for the KServe predictor: ``python -m server kserve`` with the pod's settings.

The same image as ``docker/entrypoint.py`` (TorchServe), another command:
``python /app/docker/kserve_predictor.py``. It replaces itself with the predictor
(``exec``), so the predictor is the process Docker or the kubelet signals: SIGTERM stops it
cleanly within ``STYLE_STOP_TIMEOUT`` seconds (in-flight requests get that long to finish).

Settings (environment, defaults for the image; the ports are KServe's defaults; declared in
core/settings.py):
  STYLE_MODEL_STORE        archives to serve (/home/model-server/model-store)
  STYLE_MODELS             comma-separated model names, or "all" (all)
  STYLE_RUNTIME_DIR        writable: unpacked model files, the measured engine choice
                           (/home/model-server/runtime)
  STYLE_BIND_ADDRESS       address of both listeners (0.0.0.0: the pod network decides who connects)
  STYLE_KSERVE_HTTP_PORT   REST, where KServe routes the InferenceService's URL (8080)
  STYLE_KSERVE_GRPC_PORT   gRPC (8081)
  STYLE_STOP_TIMEOUT       seconds in-flight requests get after SIGTERM (25)
Pass --print-command to print the predictor's command line and exit.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = Path("/home/model-server")
# The checkout, so that `core` imports when this file is run as a script.
sys.path.insert(0, str(ROOT))

from core import settings as registry  # noqa: E402


def command(env: dict[str, str]) -> list[str]:
    """The predictor's command line for the settings in ``env`` (a bad one: ``SettingError``)."""

    def value(name: str):
        return registry.env(name, env)

    runtime_dir = value("STYLE_RUNTIME_DIR") or HOME / "runtime"
    return [
        sys.executable, "-m", "server", "kserve",
        "--host", value("STYLE_BIND_ADDRESS"),
        "--http-port", str(value("STYLE_KSERVE_HTTP_PORT")),
        "--grpc-port", str(value("STYLE_KSERVE_GRPC_PORT")),
        "--model-store", str(value("STYLE_MODEL_STORE")),
        "--runtime-dir", str(runtime_dir / "kserve"),
        "--models", value("STYLE_MODELS"),
        "--grace-period", str(int(value("STYLE_STOP_TIMEOUT"))),
    ]


def main(argv: list[str]) -> int:
    env = registry.process_environment()
    try:
        line = command(env)
    except registry.SettingError as error:
        raise SystemExit(f"kserve_predictor: {error}") from None
    if "--print-command" in argv:
        print(shlex.join(line))
        return 0
    # The engine choice is cached in $STYLE_RUNTIME_DIR, as in the TorchServe workers.
    env.setdefault("STYLE_RUNTIME_DIR", str(HOME / "runtime"))
    os.chdir(ROOT)  # `-m server` is imported from the application folder
    os.execve(sys.executable, line, env)
    return 1  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
