#!/usr/bin/env python3
"""Container entrypoint: render the container's TorchServe config, start it, supervise java.

Why not ``torchserve --foreground``: its Python launcher does not pass SIGTERM on to the
java frontend, so ``docker stop`` or a Kubernetes pod deletion kills the launcher and leaves
java (and its workers) to be SIGKILLed at the end of the grace period. Here the launcher
starts java detached, this process becomes java's parent (a child subreaper, so also
outside a container), and a SIGTERM or SIGINT is sent on to java itself, whose shutdown
hook stops the workers; the entrypoint exits once java has gone.

Settings (environment, defaults for the image; declared in core/settings.py):
  STYLE_MODEL_STORE      archives to serve (/home/model-server/model-store)
  STYLE_MODELS           comma-separated model names to load, or "all" (all)
  STYLE_RUNTIME_DIR      config, logs, key_file.json, temp files (/home/model-server/runtime)
  STYLE_BIND_ADDRESS     address of the inference and metrics listeners (0.0.0.0); the
                         management and gRPC listeners stay on 127.0.0.1
  STYLE_TOKEN_AUTH       "true" (default) or "false": TorchServe's API tokens
  STYLE_INFERENCE_PORT / STYLE_MANAGEMENT_PORT / STYLE_METRICS_PORT   (8080 / 8081 / 8082)
  STYLE_GRPC_INFERENCE_PORT / STYLE_GRPC_MANAGEMENT_PORT              (7070 / 7071)
  STYLE_WORKER_PORT      first worker socket number (9000)
  STYLE_STOP_TIMEOUT     seconds java gets after SIGTERM before SIGKILL (25)
Pass --print-config to print the rendered config.properties and exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The checkout, so that `server` and `core` import when this file is run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import settings as registry  # noqa: E402
from server.launch import (  # noqa: E402
    Ports,
    override_properties,
    pid_file,
    render_config,
    start_torchserve,
    torchserve_env,
)

HOME = Path("/home/model-server")
#: ``STYLE_<NAME>_PORT`` for each field of ``Ports``, in its order.
PORTS = ("INFERENCE", "MANAGEMENT", "METRICS", "GRPC_INFERENCE", "GRPC_MANAGEMENT", "WORKER")
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Settings:
    model_store: Path
    models: tuple[str, ...] | None  # None: every archive in the store
    runtime_dir: Path
    bind_address: str
    token_auth: bool
    ports: Ports
    stop_timeout: float

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        """The container's settings from ``env``; a malformed or unknown ``STYLE_*`` variable
        stops the container with a message naming it."""
        names = ["STYLE_MODEL_STORE", "STYLE_MODELS", "STYLE_RUNTIME_DIR", "STYLE_BIND_ADDRESS", "STYLE_TOKEN_AUTH",
                 "STYLE_STOP_TIMEOUT", *(f"STYLE_{port}_PORT" for port in PORTS)]
        try:
            value = {name: registry.env(name, env) for name in names}
        except registry.SettingError as error:
            raise SystemExit(f"entrypoint: {error}") from None
        models = value["STYLE_MODELS"].strip()
        return cls(
            model_store=value["STYLE_MODEL_STORE"].resolve(),
            models=None if models.lower() in ("", "all") else tuple(m.strip() for m in models.split(",") if m.strip()),
            runtime_dir=(value["STYLE_RUNTIME_DIR"] or HOME / "runtime").resolve(),
            bind_address=value["STYLE_BIND_ADDRESS"],
            token_auth=value["STYLE_TOKEN_AUTH"],
            ports=Ports(*(value[f"STYLE_{port}_PORT"] for port in PORTS)),
            stop_timeout=value["STYLE_STOP_TIMEOUT"],
        )


def container_config(settings: Settings) -> str:
    """The repo's config.properties as the local launcher renders it, with only what a
    container needs changed: inference and metrics reachable from outside the container
    (the port mapping or the pod network decides who gets there), the chosen models."""
    base = render_config(settings.model_store, settings.ports, settings.token_auth)
    bind = settings.bind_address
    return override_properties(base, {
        "inference_address": f"http://{bind}:{settings.ports.inference}",
        "metrics_address": f"http://{bind}:{settings.ports.metrics}",
        "load_models": ",".join(f"{m}.mar" for m in settings.models) if settings.models else "all",
    })


def start(settings: Settings) -> int:
    """Starts TorchServe detached; returns the java frontend's PID."""
    archives = sorted(p.stem for p in settings.model_store.glob("*.mar"))
    if not archives:
        raise SystemExit(
            f"entrypoint: no .mar archives in {settings.model_store}: run scripts/build.sh before "
            "`docker build`, or mount a model store there (STYLE_MODEL_STORE)"
        )
    missing = sorted(set(settings.models or ()) - set(archives))
    if missing:
        raise SystemExit(f"entrypoint: STYLE_MODELS names {missing}, not in {settings.model_store}: {archives}")
    # The same environment and command as ``python -m server start``; output stays on our
    # stdout and stderr, which are the container's log.
    java_pid = pid_file(settings.runtime_dir)
    java_pid.unlink(missing_ok=True)
    start_torchserve(settings.runtime_dir, settings.model_store, container_config(settings), settings.token_auth,
                     torchserve_env(settings.runtime_dir))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if java_pid.exists() and java_pid.read_text().strip():
            return int(java_pid.read_text().strip())
        time.sleep(0.1)
    raise SystemExit(f"entrypoint: TorchServe wrote no PID file ({java_pid}); see {settings.runtime_dir}/logs")


def _become_subreaper() -> None:
    """Orphans (java, once its launcher exits) are re-parented to us, not to init, so we
    can wait for them and reap them. Best effort: Linux only; PID 1 gets them anyway."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap() -> None:
    """Collects every exited child, so none lingers as a zombie (we may be PID 1)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _alive(pid: int) -> bool:
    _reap()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def stop(java: int, timeout: float) -> None:
    """SIGTERM to java (its shutdown hook stops the workers), SIGKILL after ``timeout``,
    then any process still descended from us (a worker java could not stop)."""
    import psutil  # a TorchServe dependency

    with contextlib.suppress(ProcessLookupError):
        os.kill(java, signal.SIGTERM)
    if not _wait_gone(java, timeout):
        print(f"entrypoint: java {java} ignored SIGTERM for {timeout:.0f}s; killing it", flush=True)
        os.kill(java, signal.SIGKILL)
        _wait_gone(java, 5)
    leftovers = psutil.Process().children(recursive=True)
    for child in leftovers:
        child.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=5)
    for child in alive:
        child.kill()
    _reap()


def supervise(java: int, timeout: float) -> int:
    """Waits until java exits (1: it died by itself) or a stop signal arrives (0)."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping:
        if not _alive(java):
            print(f"entrypoint: TorchServe (java {java}) exited by itself", flush=True)
            stop(java, 0)
            return 1
        time.sleep(0.5)
    print(f"entrypoint: {signal.Signals(stopping[0]).name}: stopping TorchServe (java {java})", flush=True)
    stop(java, timeout)
    return 0


def main(argv: list[str]) -> int:
    settings = Settings.from_env(registry.process_environment())
    if "--print-config" in argv:
        sys.stdout.write(container_config(settings))
        return 0
    _become_subreaper()
    java = start(settings)
    auth = f"tokens in {settings.runtime_dir / 'key_file.json'}" if settings.token_auth else "token auth OFF"
    print(f"entrypoint: TorchServe java {java}, inference {settings.bind_address}:{settings.ports.inference}, "
          f"metrics {settings.bind_address}:{settings.ports.metrics}, {auth}", flush=True)
    return supervise(java, settings.stop_timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
