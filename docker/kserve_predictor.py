#!/usr/bin/env python3
"""Container command for the KServe predictor: ``python -m server kserve`` with the pod's settings.

The same image as ``docker/entrypoint.py`` (TorchServe), another command:
``python /app/docker/kserve_predictor.py``. It replaces itself with the predictor
(``exec``), so the predictor is the process Docker or the kubelet signals: SIGTERM stops it
cleanly within ``STYLE_STOP_TIMEOUT`` seconds (in-flight requests get that long to finish).

Settings (environment, defaults for the image; the ports are KServe's defaults):
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


def command(env: dict[str, str]) -> list[str]:
    runtime_dir = Path(env.get("STYLE_RUNTIME_DIR", HOME / "runtime"))
    return [
        sys.executable, "-m", "server", "kserve",
        "--host", env.get("STYLE_BIND_ADDRESS", "0.0.0.0"),
        "--http-port", str(int(env.get("STYLE_KSERVE_HTTP_PORT", 8080))),
        "--grpc-port", str(int(env.get("STYLE_KSERVE_GRPC_PORT", 8081))),
        "--model-store", env.get("STYLE_MODEL_STORE", str(HOME / "model-store")),
        "--runtime-dir", str(runtime_dir / "kserve"),
        "--models", env.get("STYLE_MODELS", "all"),
        "--grace-period", str(int(float(env.get("STYLE_STOP_TIMEOUT", 25)))),
    ]


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    line = command(env)
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
