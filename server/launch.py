"""Start, wait for, and stop one TorchServe instance with the project's config.

Each instance gets its own runtime folder: TorchServe keeps its PID file in ``$TMPDIR``
and its worker sockets in Java's temp dir (``$TEMP``), so two instances (a developer's and
the tests') must not share them. Stopping uses ``torchserve --stop`` with that same
environment, which only ever signals the PID this instance wrote.

The environment, command and PID file are functions here so that the container entrypoint
(``docker/entrypoint.py``) starts TorchServe the same way; it adds only what a container
needs (settings from the environment, signal forwarding, reaping).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from core import settings
from core.paths import ROOT

TORCHSERVE = Path(sys.executable).with_name("torchserve")


@dataclass(frozen=True)
class Ports:
    inference: int
    management: int
    metrics: int
    grpc_inference: int
    grpc_management: int
    first_worker: int


def default_ports() -> Ports:
    return Ports(8080, 8081, 8082, 7070, 7071, 9000)


def free_ports() -> Ports:
    """Loopback ports free right now (the OS picks them), for servers started by tests."""
    sockets = [socket.socket() for _ in range(5)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    # Worker sockets are Unix sockets named after their port: any unused range will do.
    return Ports(*ports, first_worker=20000 + os.getpid() % 20000)


def render_config(model_store: Path, ports: Ports, token_auth: bool) -> str:
    """The repo's config.properties with this instance's ports and model store filled in."""
    overrides = {
        "inference_address": f"http://127.0.0.1:{ports.inference}",
        "management_address": f"http://127.0.0.1:{ports.management}",
        "metrics_address": f"http://127.0.0.1:{ports.metrics}",
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        "initial_worker_port": str(ports.first_worker),
        "model_store": str(model_store),
        "load_models": "all",
        # Only archives in this store, named plainly: no URLs, no paths out of it.
        "allowed_urls": _properties_escape("file://" + re.escape(str(model_store)) + r"/[A-Za-z0-9_-]+\.mar"),
        "disable_token_authorization": "false" if token_auth else "true",
    }
    return override_properties((ROOT / "config.properties").read_text(), overrides)


def override_properties(config: str, values: dict[str, str]) -> str:
    """Sets ``key=value`` lines in a properties text, replacing the key's line if present."""
    pending = dict(values)
    lines = []
    for line in config.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in pending and not line.lstrip().startswith("#"):
            line = f"{key}={pending.pop(key)}"
        lines.append(line)
    lines += [f"{key}={value}" for key, value in pending.items()]
    return "\n".join(lines) + "\n"


def _properties_escape(value: str) -> str:
    """Java .properties files treat a backslash as an escape: double it to keep a regex."""
    return value.replace("\\", "\\\\")


def torchserve_env(runtime_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment one instance runs in: its PID file (``$TMPDIR``), worker sockets
    (``$TEMP``) and logs inside ``runtime_dir``, so instances never share them. An unknown
    ``STYLE_*`` variable in it is refused here (``SettingError``), not in every worker."""
    tmp = runtime_dir / "tmp"
    logs = runtime_dir / "logs"
    for folder in (tmp, logs):
        folder.mkdir(parents=True, exist_ok=True)
    env = {
        # Where each worker caches its measured engine choice (core.runtime_choice), so a
        # restarted worker opens the chosen engine at once; an explicit setting wins.
        "STYLE_RUNTIME_DIR": str(runtime_dir / "runtime-choice"),
        **settings.process_environment(),
        **(extra or {}),
        "TMPDIR": str(tmp),
        "TEMP": str(tmp),
        "LOG_LOCATION": str(logs),
        "METRICS_LOCATION": str(logs),
    }
    settings.check_environment(env)
    return env


def pid_file(runtime_dir: Path) -> Path:
    """Where TorchServe writes the java frontend's PID (``$TMPDIR`` of ``torchserve_env``)."""
    return runtime_dir / "tmp" / ".model_server.pid"


def start_torchserve(runtime_dir: Path, model_store: Path, config: str, token_auth: bool, env: dict[str, str],
                     output: IO[bytes] | None = None) -> None:
    """Writes ``config`` as the instance's config.properties and starts TorchServe detached;
    ``output`` gets the launcher's (and java's) stdout and stderr, default: ours."""
    runtime_dir.mkdir(parents=True, exist_ok=True)
    config_path = runtime_dir / "config.properties"
    config_path.write_text(config)
    command = [str(TORCHSERVE), "--start", "--ncs", "--model-store", str(model_store), "--ts-config", str(config_path)]
    if not token_auth:
        command.append("--disable-token-auth")
    # cwd = runtime dir: TorchServe writes key_file.json (token auth) into its cwd.
    subprocess.run(command, cwd=runtime_dir, env=env, check=True, stdout=output, stderr=output,
                   stdin=subprocess.DEVNULL)


def stop_torchserve(runtime_dir: Path, env: dict[str, str]) -> bool:
    """``torchserve --stop`` in the instance's environment: it signals only the PID in that
    instance's PID file. True when something was stopped."""
    result = subprocess.run([str(TORCHSERVE), "--stop"], cwd=runtime_dir, env=env, capture_output=True, text=True)
    return "stopped" in result.stdout.lower() and "not running" not in result.stdout.lower()


class Server:
    def __init__(self, runtime_dir: Path, model_store: Path, ports: Ports, token_auth: bool = False,
                 env: dict[str, str] | None = None):
        self.runtime_dir = runtime_dir.resolve()
        self.model_store = model_store.resolve()
        self.ports = ports
        self.token_auth = token_auth
        self.log_dir = self.runtime_dir / "logs"
        self.extra_env = env or {}
        self.inference_url = f"http://127.0.0.1:{ports.inference}"
        self.management_url = f"http://127.0.0.1:{ports.management}"
        self.metrics_url = f"http://127.0.0.1:{ports.metrics}"

    def _env(self) -> dict[str, str]:
        return torchserve_env(self.runtime_dir, self.extra_env)

    def start(self) -> None:
        config = render_config(self.model_store, self.ports, self.token_auth)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "launcher.log").open("ab") as log:  # Java inherits these
            start_torchserve(self.runtime_dir, self.model_store, config, self.token_auth, self._env(), output=log)

    def stop(self) -> bool:
        return stop_torchserve(self.runtime_dir, self._env())

    def _keys(self) -> dict:
        key_file = self.runtime_dir / "key_file.json"
        return json.loads(key_file.read_text()) if key_file.exists() else {}

    def inference_key(self) -> str | None:
        return self._keys().get("inference", {}).get("key") if self.token_auth else None

    def management_key(self) -> str | None:
        return self._keys().get("management", {}).get("key") if self.token_auth else None

    def get_json(self, url: str, key: str | None = None) -> object:
        request = urllib.request.Request(url)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def status(self) -> str:
        try:
            return json.dumps(self.get_json(f"{self.inference_url}/ping"))
        except OSError as error:
            return f"not reachable at {self.inference_url} ({error})"

    def wait_ready(self, timeout: float = 300, on_ready: Callable[[str], None] | None = None,
                   poll_s: float = 1.0) -> list[str]:
        """Waits until every model in the store has a READY worker; returns their names.
        ``on_ready(name)`` is called as each model is first seen ready (cold-start timings)."""
        expected = sorted(p.stem for p in self.model_store.glob("*.mar"))
        deadline = time.monotonic() + timeout
        pending = list(expected)
        while time.monotonic() < deadline:
            try:
                key = self.management_key()
                for name in [name for name in pending if self._ready(name, key)]:
                    pending.remove(name)
                    if on_ready is not None:
                        on_ready(name)
                if not pending:
                    return expected
            except (OSError, ValueError):
                pass
            time.sleep(poll_s)
        raise TimeoutError(f"TorchServe models not ready after {timeout:.0f}s: {pending}; see {self.log_dir}")

    def _ready(self, name: str, key: str | None) -> bool:
        try:
            described = self.get_json(f"{self.management_url}/models/{name}", key)
        except urllib.error.HTTPError:
            return False
        return any(w.get("status") == "READY" for w in described[0].get("workers", []))
