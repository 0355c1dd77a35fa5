#!/usr/bin/env python3
"""The image's health checks; exit 0 when the check passes, 1 (and the reason) when not.

  healthcheck.py            readiness (Docker's HEALTHCHECK, Kubernetes' readinessProbe): TorchServe's
                            ``/ping`` answers ``Healthy`` AND every model the server was configured
                            to load (``load_models`` of its rendered config.properties: the
                            STYLE_MODELS names, or every archive of the store) has a READY worker
                            (management API ``GET /models/<name>``). ``/ping`` alone says Healthy
                            before any model is registered, so it is no readiness signal.
  healthcheck.py --live     liveness: the TorchServe frontend answers ``/ping`` at all (whatever
                            the models are doing: TorchServe restarts dead workers itself).
  healthcheck.py --kserve   readiness of the KServe predictor (docker/kserve_predictor.py): its
                            ``/v2/health/ready`` on STYLE_KSERVE_HTTP_PORT (8080).

Addresses and models are read from the config the entrypoint rendered into the runtime folder
(STYLE_RUNTIME_DIR), so the check follows whatever ports and models the container runs with.
With token authorization on (the image's default) TorchServe 0.12 refuses even ``/ping``
without the inference key, and the management API without the management key: the check
reads ``key_file.json`` from the runtime folder; when a key has expired it renews it through
the loopback management API with the file's API key, which is what a client must do too
(TorchServe rewrites the file). Python rather than curl because the slim image has no curl.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

# The checkout, so that `core` (its stdlib-only settings registry) imports when run as a script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import settings  # noqa: E402

DEFAULT_RUNTIME_DIR = "/home/model-server/runtime"  # docker/entrypoint.py's default; the image sets /tmp/model-server


def _keys(runtime_dir: Path) -> dict:
    try:
        return json.loads((runtime_dir / "key_file.json").read_text())
    except (OSError, ValueError):
        return {}


def _expired(entry: dict) -> bool:
    stamp = entry.get("expiration time", "")
    try:  # e.g. 2026-11-25T12:27:24.307547715Z: keep whole seconds
        expires = datetime.strptime(stamp.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return False
    return expires <= datetime.now(UTC)


def _request(url: str, key: str | None, method: str = "GET", timeout: float = 4.0) -> bytes:
    request = urllib.request.Request(url, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def api_key(runtime_dir: Path, management_port: int, kind: str) -> str | None:
    """The current ``inference`` or ``management`` key, renewed if it has expired; None when
    token authorization is off."""
    keys = _keys(runtime_dir)
    entry = keys.get(kind)
    if not entry:
        return None  # token authorization is off
    if _expired(entry) and keys.get("API", {}).get("key"):
        _request(f"http://127.0.0.1:{management_port}/token?type={kind}", keys["API"]["key"], "POST")
        entry = _keys(runtime_dir).get(kind, entry)
    return entry.get("key")


def inference_key(runtime_dir: Path, management_port: int) -> str | None:
    return api_key(runtime_dir, management_port, "inference")


def ping(port: int, runtime_dir: Path, management_port: int) -> str:
    """TorchServe's ``/ping`` status text ("Healthy", "Partial Healthy", "Unhealthy")."""
    key = inference_key(runtime_dir, management_port)
    try:
        body = _request(f"http://127.0.0.1:{port}/ping", key)
    except urllib.error.HTTPError as error:  # 500 with a JSON status when workers are missing
        body = error.read()
    return json.loads(body).get("status", "")


def healthy(port: int, runtime_dir: Path, management_port: int) -> bool:
    try:
        return ping(port, runtime_dir, management_port) == "Healthy"
    except (OSError, ValueError):
        return False


def _port(address: str) -> int:
    return urlsplit(address if "://" in address else f"http://{address}").port


def server_config(runtime_dir: Path) -> dict[str, str]:
    """The rendered config.properties the entrypoint started TorchServe with."""
    config = {}
    for line in (runtime_dir / "config.properties").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            config[key.strip()] = value.strip()
    return config


def configured_models(config: dict[str, str]) -> list[str]:
    load = config.get("load_models", "all").strip()
    if load.lower() in ("", "all"):
        return sorted(p.stem for p in Path(config["model_store"]).glob("*.mar"))
    return [Path(name.strip()).stem for name in load.split(",") if name.strip()]


def not_ready(runtime_dir: Path) -> list[str]:
    """Why the server is not ready (empty: it is)."""
    try:
        config = server_config(runtime_dir)
    except OSError as error:
        return [f"no rendered config in {runtime_dir} ({error}): the entrypoint has not started TorchServe"]
    inference, management = _port(config["inference_address"]), _port(config["management_address"])
    try:
        status = ping(inference, runtime_dir, management)
    except (OSError, ValueError) as error:
        return [f"/ping on port {inference} unreachable ({error})"]
    problems = [] if status == "Healthy" else [f"/ping says {status!r}"]
    models = configured_models(config)
    if not models:
        return [*problems, "no models configured"]
    key = api_key(runtime_dir, management, "management")
    for name in models:
        try:
            described = json.loads(_request(f"http://127.0.0.1:{management}/models/{name}", key))
        except urllib.error.HTTPError as error:
            problems.append(f"{name}: not registered (HTTP {error.code})")
            continue
        except (OSError, ValueError) as error:
            problems.append(f"{name}: management API unreachable ({error})")
            continue
        workers = [w.get("status") for version in described for w in version.get("workers", [])]
        if "READY" not in workers:
            problems.append(f"{name}: no READY worker ({', '.join(workers) or 'none started'})")
    return problems


def not_alive(port: int, runtime_dir: Path, management_port: int) -> list[str]:
    """Liveness: the frontend answers ``/ping`` with any HTTP status (even 500: workers down)."""
    try:
        _request(f"http://127.0.0.1:{port}/ping", inference_key(runtime_dir, management_port))
    except urllib.error.HTTPError:
        return []
    except OSError as error:
        return [f"/ping on port {port} unreachable ({error})"]
    return []


def kserve_ready(port: int) -> list[str]:
    try:
        _request(f"http://127.0.0.1:{port}/v2/health/ready", None)
    except urllib.error.HTTPError as error:
        return [f"/v2/health/ready on port {port}: HTTP {error.code}"]
    except OSError as error:
        return [f"/v2/health/ready on port {port} unreachable ({error})"]
    return []


def main(argv: list[str]) -> int:
    runtime_dir = settings.env("STYLE_RUNTIME_DIR") or Path(DEFAULT_RUNTIME_DIR)
    if "--kserve" in argv:
        problems = kserve_ready(settings.env("STYLE_KSERVE_HTTP_PORT"))
    elif "--live" in argv:
        problems = not_alive(settings.env("STYLE_INFERENCE_PORT"), runtime_dir, settings.env("STYLE_MANAGEMENT_PORT"))
    else:
        problems = not_ready(runtime_dir)
    if problems:
        print("not ready: " + "; ".join(problems))
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
