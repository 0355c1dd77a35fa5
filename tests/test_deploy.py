"""Kubernetes and KServe manifests, checked offline: every built-in kind against the
Kubernetes JSON schema (kubernetes-validate ships them), the KServe resources against the
fields KServe documents (their embedded Kubernetes types against the same schema), and the
wiring between them: probes, ports, labels, volumes and model names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from server.launch import ROOT

from .conftest import DEFAULT_STYLES

K8S = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
#: Oldest Kubernetes still supported upstream when this was written, and the newest schema shipped.
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())


def _documents(folder: Path, exclude: tuple[str, ...] = ()) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name not in exclude:
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict]:
    return _by_kind(_documents(K8S, exclude=("kustomization.yaml",)))


@pytest.fixture(scope="module")
def pod(k8s) -> dict:
    return k8s["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["spec"]["containers"]
    return only


def _env(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def _port(container: dict, name_or_number: str | int) -> int:
    if isinstance(name_or_number, int):
        return name_or_number
    return next(p["containerPort"] for p in container["ports"] if p["name"] == name_or_number)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(k8s, version):
    assert set(k8s) == {"Namespace", "PersistentVolumeClaim", "Deployment", "Service",
                        "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}
    for doc in k8s.values():
        try:  # strict: unknown fields (typos) fail too
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(map(str, error.path))
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {path}: {error.message}")


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert [image["name"] for image in kustomization["images"]] == ["style-transfer"]


def test_kustomize_renders_valid_manifests():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the kustomization was checked structurally only")
    rendered = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert len(docs) == 7
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "style-transfer"
    deployment = _by_kind(docs)["Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "style-transfer:latest"


def test_liveness_hits_ping_and_readiness_waits_for_the_models(container):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^EXPOSE 8080\b", dockerfile, re.MULTILINE)
    for probe in ("startupProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/ping", probe
        assert _port(container, http["port"]) == 8080, probe  # the entrypoint's inference port
    assert "STYLE_INFERENCE_PORT" not in _env(container), "probes assume the default port"
    # /ping says Healthy before any model is loaded: readiness is the image's own health
    # check (every configured model has a READY worker), the HEALTHCHECK's command.
    command = container["readinessProbe"]["exec"]["command"]
    assert command == ["python", "/app/docker/healthcheck.py"]
    assert re.search(r'^\s*CMD \["python", "/app/docker/healthcheck.py"\]$', dockerfile, re.MULTILINE)
    assert container["readinessProbe"]["timeoutSeconds"] >= 5


def test_pods_run_non_root_read_only(pod, container):
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    uid = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert security["runAsUser"] == int(uid) != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/home/model-server/runtime", "/tmp"} <= mounts, "writable dirs for a read-only root"
    assert _env(container)["STYLE_RUNTIME_DIR"] == "/home/model-server/runtime", "the image's default is under /tmp"


def test_token_auth_off_is_covered_by_a_network_policy(k8s, pod, container):
    assert _env(container)["STYLE_TOKEN_AUTH"] == "false"
    policy = k8s["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    assert {port["port"] for rule in policy["ingress"] for port in rule["ports"]} == {"http", "metrics"}


def test_service_hpa_and_pdb_point_at_the_deployment(k8s, pod, container):
    labels = pod["metadata"]["labels"]
    deployment = k8s["Deployment"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = k8s["Service"]["spec"]
    assert service["selector"].items() <= labels.items()
    for port in service["ports"]:
        _port(container, port["targetPort"])  # a named port the container has
    target = k8s["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment",
                                                                       deployment["metadata"]["name"])
    assert k8s["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] > k8s["PodDisruptionBudget"]["spec"]["minAvailable"], "a drain must be possible"
    assert "cpu" in container["resources"]["requests"], "the HPA's CPU utilization needs a CPU request"


def test_prometheus_annotations_name_the_metrics_port(pod, container):
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == _port(container, "metrics") == 8082


def test_model_store_volume_and_models(k8s, pod, container):
    mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == "/home/model-server/model-store" and mount["readOnly"] is True
    assert "STYLE_MODEL_STORE=/home/model-server/model-store" in (ROOT / "Dockerfile").read_text()
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"]["claimName"] == k8s["PersistentVolumeClaim"]["metadata"]["name"]
    assert tuple(_env(container)["STYLE_MODELS"].split(",")) == DEFAULT_STYLES


def test_grace_period_outlasts_the_stop_timeout(pod, container):
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(_env(container)["STYLE_STOP_TIMEOUT"]) + 5


# --------------------------------------------------------------------------------------
# KServe
# --------------------------------------------------------------------------------------


def _properties(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_kserve_config_uses_the_v2_envelope_and_our_archives(built_store):
    config = _properties(KSERVE / "config.properties")
    assert config["service_envelope"] == "kservev2"
    assert config["inference_address"] == "http://0.0.0.0:8085"  # the KServe wrapper's upstream
    assert config["model_store"] == "/mnt/models/model-store"
    assert config["disable_token_authorization"] == "true"
    assert config["enable_model_api"] == "false"
    snapshot = json.loads(config["model_snapshot"])
    assert snapshot["modelCount"] == len(snapshot["models"])
    assert tuple(sorted(snapshot["models"])) == tuple(sorted(DEFAULT_STYLES))
    for name, versions in snapshot["models"].items():
        (version,) = versions.values()
        assert version["marName"] == f"{name}.mar" and (built_store / version["marName"]).exists()
        assert version["batchSize"] == 1, "the kservev2 envelope reads one request per batch"
    repo = _properties(ROOT / "config.properties")
    for key in ("max_request_size", "max_response_size", "default_response_timeout", "metrics_mode"):
        assert config[key] == repo[key], key


def _k8s_definitions() -> Registry:
    folder = Path(kubernetes_validate.__file__).with_name("kubernetes-json-schema")
    version = kubernetes_validate.latest_version()
    definitions = json.loads((folder / f"v{version}-local-strict" / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


def _k8s(name: str) -> dict:
    return {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.core.v1.{name}"}


_NAME = {"type": "string", "pattern": r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"}  # DNS-1035, as KServe requires
_METADATA = {"type": "object", "required": ["name"], "properties": {"name": _NAME, "annotations": {"type": "object"}}}
#: InferenceService fields used here, as KServe v1beta1 documents them (predictor.model form).
INFERENCE_SERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": _METADATA,
        "spec": {
            "type": "object", "required": ["predictor"], "additionalProperties": False,
            "properties": {"predictor": {
                "type": "object", "required": ["model"], "additionalProperties": False,
                "properties": {
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 1},
                    "securityContext": _k8s("PodSecurityContext"),
                    "model": {
                        "type": "object", "required": ["modelFormat", "storageUri"], "additionalProperties": False,
                        "properties": {
                            "modelFormat": {
                                "type": "object", "required": ["name"], "additionalProperties": False,
                                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
                            },
                            "runtime": _NAME,
                            "protocolVersion": {"enum": ["v1", "v2", "grpc-v2"]},
                            "storageUri": {"type": "string", "pattern": r"^(pvc|gs|s3|https?|hdfs|webhdfs|oci)://\S+$"},
                            "resources": _k8s("ResourceRequirements"),
                        },
                    },
                },
            }},
        },
    },
}
#: ServingRuntime fields used here (KServe v1alpha1).
SERVING_RUNTIME = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"const": "ServingRuntime"},
        "metadata": _METADATA,
        "spec": {
            "type": "object", "required": ["supportedModelFormats", "containers"], "additionalProperties": False,
            "properties": {
                "supportedModelFormats": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["name"], "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                   "autoSelect": {"type": "boolean"}},
                }},
                "protocolVersions": {"type": "array", "items": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}},
                "containers": {"type": "array", "minItems": 1, "items": _k8s("Container")},
            },
        },
    },
}


@pytest.fixture(scope="module")
def kserve() -> dict[str, dict]:
    return _by_kind(_documents(KSERVE))


@pytest.mark.parametrize("kind, schema", [("InferenceService", INFERENCE_SERVICE), ("ServingRuntime", SERVING_RUNTIME)])
def test_kserve_resources_match_the_documented_fields(kserve, kind, schema):
    jsonschema.Draft202012Validator(schema, registry=_k8s_definitions()).validate(kserve[kind])


def test_inference_service_uses_the_runtime_and_its_storage_layout(kserve, k8s):
    model = kserve["InferenceService"]["spec"]["predictor"]["model"]
    runtime = kserve["ServingRuntime"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["protocolVersion"] == "v2"
    claim = re.match(r"pvc://([^/]+)/", model["storageUri"]).group(1)
    assert claim == k8s["PersistentVolumeClaim"]["metadata"]["name"]
    (container,) = runtime["spec"]["containers"]
    assert "--ts-config=/mnt/models/config/config.properties" in container["args"]
    assert "--model-store=/mnt/models/model-store" in container["args"]
    assert runtime["metadata"]["annotations"]["prometheus.kserve.io/port"] == "8082"


def test_kserve_image_pins_match_requirements():
    requirements = (ROOT / "requirements.txt").read_text()
    dockerfile = (ROOT / "docker" / "kserve.Dockerfile").read_text()
    torchserve = re.search(r"^torchserve==(\S+)", requirements, re.MULTILINE).group(1)
    onnxruntime = re.search(r"^onnxruntime==(\S+)", requirements, re.MULTILINE).group(1)
    assert f"torchserve-kfs:{torchserve}" in dockerfile
    assert f"onnxruntime=={onnxruntime}" in dockerfile


def test_the_checks_catch_mistakes(k8s, kserve):
    """The validators are not vacuous: a misspelt field and an unknown protocol fail."""
    broken = json.loads(json.dumps(k8s["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/ping"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    service = json.loads(json.dumps(kserve["InferenceService"]))
    service["spec"]["predictor"]["model"]["protocolVersion"] = "v3"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(INFERENCE_SERVICE, registry=_k8s_definitions()).validate(service)
    service["spec"]["predictor"]["model"]["protocolVersion"] = "v2"
    service["spec"]["predictor"]["model"]["resources"] = {"requests": {"cpu": "2"}, "limitz": {}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(INFERENCE_SERVICE, registry=_k8s_definitions()).validate(service)
