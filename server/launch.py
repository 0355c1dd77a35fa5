"""Start, wait for, and stop one TorchServe instance with the project's config.

Each instance gets its own runtime folder: TorchServe keeps its PID file in ``$TMPDIR``
and its worker sockets in Java's temp dir (``$TEMP``), so two instances (a developer's and
the tests') must not share them. Stopping uses ``torchserve --stop`` with that same
environment, which only ever signals the PID this instance wrote.
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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
        tmp = self.runtime_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {
            # Where each worker caches its measured engine choice (core.runtime_choice), so a
            # restarted worker opens the chosen engine at once; an explicit setting wins.
            "STYLE_RUNTIME_DIR": str(self.runtime_dir / "runtime-choice"),
            **os.environ,
            **self.extra_env,
            "TMPDIR": str(tmp),
            "TEMP": str(tmp),
            "LOG_LOCATION": str(self.log_dir),
            "METRICS_LOCATION": str(self.log_dir),
        }

    def start(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        config = self.runtime_dir / "config.properties"
        config.write_text(render_config(self.model_store, self.ports, self.token_auth))
        command = [
            str(TORCHSERVE), "--start", "--ncs",
            "--model-store", str(self.model_store),
            "--ts-config", str(config),
        ]
        if not self.token_auth:
            command.append("--disable-token-auth")
        # cwd = runtime dir: TorchServe writes key_file.json (token auth) into its cwd.
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "launcher.log").open("ab") as log:  # Java inherits these
            subprocess.run(command, cwd=self.runtime_dir, env=self._env(), check=True,
                           stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def stop(self) -> bool:
        result = subprocess.run([str(TORCHSERVE), "--stop"], cwd=self.runtime_dir, env=self._env(),
                                capture_output=True, text=True)
        return "stopped" in result.stdout.lower() and "not running" not in result.stdout.lower()

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

    def wait_ready(self, timeout: float = 300) -> list[str]:
        """Waits until every model in the store has a READY worker; returns their names."""
        expected = sorted(p.stem for p in self.model_store.glob("*.mar"))
        deadline = time.monotonic() + timeout
        pending = list(expected)
        while time.monotonic() < deadline:
            try:
                key = self.management_key()
                pending = [name for name in expected if not self._ready(name, key)]
                if not pending:
                    return expected
            except (OSError, ValueError):
                pass
            time.sleep(1)
        raise TimeoutError(f"TorchServe models not ready after {timeout:.0f}s: {pending}; see {self.log_dir}")

    def _ready(self, name: str, key: str | None) -> bool:
        try:
            described = self.get_json(f"{self.management_url}/models/{name}", key)
        except urllib.error.HTTPError:
            return False
        return any(w.get("status") == "READY" for w in described[0].get("workers", []))
