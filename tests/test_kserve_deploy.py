"""The KServe predictor's InferenceService and container command, checked offline.

The predictor part of the InferenceService is a Kubernetes ``PodSpec`` plus KServe's
component fields (replicas), so the pod part is validated strictly against the Kubernetes
schema ``kubernetes-validate`` ships, as tests/test_deploy.py does for the other manifests;
then the wiring: the image's command, probes on the v2 health endpoints, non-root with a
read-only root and writable folders, resources, the models claim, metrics annotations.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import jsonschema
import pytest
import yaml

from core.paths import ROOT

from .conftest import DEFAULT_STYLES
from .test_deploy import K8S, KSERVE, _k8s, _k8s_definitions

MANIFEST = KSERVE / "predictor" / "inferenceservice.yaml"
COMMAND = ROOT / "docker" / "kserve_predictor.py"
#: KServe's component fields beside the pod's (v1beta1 ComponentExtensionSpec), as used here.
COMPONENT_FIELDS = {"minReplicas": {"type": "integer", "minimum": 0}, "maxReplicas": {"type": "integer", "minimum": 1}}
SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        }},
        "spec": {"type": "object", "required": ["predictor"], "additionalProperties": False,
                 "properties": {"predictor": {"type": "object", "required": ["containers"]}}},
    },
}


@pytest.fixture(scope="module")
def service() -> dict:
    (document,) = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    return document


@pytest.fixture(scope="module")
def predictor(service) -> dict:
    return service["spec"]["predictor"]


@pytest.fixture(scope="module")
def container(predictor) -> dict:
    (only,) = predictor["containers"]
    return only


def _validate(service: dict) -> None:
    """The resource's shape, KServe's component fields, and the rest as a strict PodSpec."""
    jsonschema.Draft202012Validator(SCHEMA).validate(service)
    predictor = dict(service["spec"]["predictor"])
    component = {name: predictor.pop(name) for name in list(predictor) if name in COMPONENT_FIELDS}
    jsonschema.Draft202012Validator({"type": "object", "properties": COMPONENT_FIELDS}).validate(component)
    jsonschema.Draft202012Validator(_k8s("PodSpec"), registry=_k8s_definitions()).validate(predictor)


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_inference_service_is_a_valid_custom_predictor(service):
    _validate(service)


def test_the_checks_catch_mistakes(service):
    broken = json.loads(json.dumps(service))
    broken["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/v2/health/ready"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)
    broken = json.loads(json.dumps(service))
    broken["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)


def test_container_runs_the_predictor_command_of_the_project_image(container):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    image = kustomization["images"][0]["name"]
    assert container["name"] == "kserve-container"
    assert container["image"].split(":")[0] == image, "the same image as the TorchServe deployment"
    assert container["command"] == ["python", "/app/docker/kserve_predictor.py"]
    assert re.search(r"^COPY docker/ docker/", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    for package in ("core", "predictor", "optimize", "lossnet"):
        assert re.search(rf"^COPY {package}/ {package}/", (ROOT / "Dockerfile").read_text(), re.MULTILINE), package


def _command(**env: str) -> list[str]:
    result = subprocess.run([sys.executable, str(COMMAND), "--print-command"], capture_output=True, text=True,
                            env=env, timeout=30, check=True)
    return shlex.split(result.stdout)


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_probes_and_port_match_the_command(container):
    command = _command(**_env(container))
    assert command[1:4] == ["-m", "server", "kserve"]
    (port,) = container["ports"]
    assert port["name"] == "http1" and port["containerPort"] == int(_option(command, "--http-port")) == 8080
    assert _option(command, "--host") == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    liveness = container["livenessProbe"]
    assert liveness["initialDelaySeconds"] + liveness["periodSeconds"] * liveness["failureThreshold"] >= 300, \
        "loading and measuring every model must not look like a dead container"


def test_non_root_read_only_with_writable_runtime_and_tmp(predictor, container):
    security = predictor["securityContext"]
    uid = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert security["runAsNonRoot"] is True and security["runAsUser"] == int(uid) != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    command = _command(**_env(container))
    runtime_dir = "/home/model-server/runtime"
    assert _option(command, "--runtime-dir").startswith(runtime_dir + "/") and runtime_dir in mounts
    assert "/tmp" in mounts, "the admission ledger and temporary files"
    volumes = {v["name"]: v for v in predictor["volumes"]}
    for path in (runtime_dir, "/tmp"):
        assert "emptyDir" in volumes[mounts[path]["name"]]


def test_models_come_from_the_claim_the_other_kserve_path_uses(predictor, container):
    env = _env(container)
    command = _command(**env)
    store = _option(command, "--model-store")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == store)
    assert mount["readOnly"] is True and mount["subPath"] == "kserve/model-store"
    volume = next(v for v in predictor["volumes"] if v["name"] == mount["name"])
    other = yaml.safe_load((KSERVE / "inferenceservice.yaml").read_text())
    claim = re.match(r"pvc://([^/]+)/(.*)", other["spec"]["predictor"]["model"]["storageUri"])
    assert volume["persistentVolumeClaim"]["claimName"] == claim.group(1)
    assert mount["subPath"].startswith(claim.group(2))
    assert tuple(_option(command, "--models").split(",")) == DEFAULT_STYLES


def test_resources_grace_and_metrics(service, predictor, container):
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    grace = float(_env(container)["STYLE_STOP_TIMEOUT"])
    assert int(_option(_command(**_env(container)), "--grace-period")) == grace
    assert predictor["terminationGracePeriodSeconds"] > grace + 5
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert int(annotations["prometheus.kserve.io/port"]) == container["ports"][0]["containerPort"]
