"""The KubeRay ``RayJob`` for bulk painting (deploy/ray/), checked offline.

KubeRay's CRDs are not in kubernetes-validate, so the RayJob's own fields are checked against
a small schema of the fields used here (as KubeRay's ray.io/v1 API documents them), and each
embedded pod template strictly against the Kubernetes schema, as tests/test_deploy.py does
for the other manifests. Then the wiring: the entrypoint is a command line the CLI accepts
(Ray engine, joining the cluster), its threads fit the workers' cores, the Ray release is the
pinned one, and the image is the project's.
"""

from __future__ import annotations

import copy
import re
import shlex

import jsonschema
import pytest
import yaml

from core.paths import ROOT
from stylize.__main__ import parser

from .test_deploy import K8S, _k8s_definitions

MANIFEST = ROOT / "deploy" / "ray" / "rayjob.yaml"
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}  # rayStartParams: strings only
_TEMPLATE = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.core.v1.PodTemplateSpec"}
#: RayJob fields used here (KubeRay ray.io/v1); anything else is a typo.
SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
            "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"},
            "labels": _STRINGS,
        }},
        "spec": {
            "type": "object", "required": ["entrypoint", "rayClusterSpec"], "additionalProperties": False,
            "properties": {
                "entrypoint": {"type": "string", "minLength": 1},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "rayClusterSpec": {
                    "type": "object", "required": ["rayVersion", "headGroupSpec", "workerGroupSpecs"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "headGroupSpec": {
                            "type": "object", "required": ["rayStartParams", "template"], "additionalProperties": False,
                            "properties": {"rayStartParams": _STRINGS, "template": _TEMPLATE},
                        },
                        "workerGroupSpecs": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["groupName", "rayStartParams", "template"],
                            "additionalProperties": False,
                            "properties": {
                                "groupName": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"},
                                "replicas": {"type": "integer", "minimum": 0},
                                "minReplicas": {"type": "integer", "minimum": 0},
                                "maxReplicas": {"type": "integer", "minimum": 1},
                                "rayStartParams": _STRINGS,
                                "template": _TEMPLATE,
                            },
                        }},
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def job() -> dict:
    (document,) = [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]
    return document


def _validate(job: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA, registry=_k8s_definitions()).validate(job)


def _groups(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def test_rayjob_is_valid_and_its_pods_match_the_kubernetes_schema(job):
    _validate(job)


def test_the_checks_catch_mistakes(job):
    broken = copy.deepcopy(job)
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resorces"] = {}
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)
    broken = copy.deepcopy(job)
    broken["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)
    broken = copy.deepcopy(job)
    broken["spec"]["shutdownAfterJobFinish"] = True
    with pytest.raises(jsonschema.ValidationError):
        _validate(broken)


def test_entrypoint_is_the_cli_on_the_ray_engine_joining_the_cluster(job):
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:3] == ["python", "-m", "stylize"]
    args = parser().parse_args(command[3:])
    assert args.engine == "ray" and args.address == "auto"
    assert all(str(place).startswith("s3://") for place in [*args.inputs, args.out_dir])
    for worker in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        cpus = int(worker["rayStartParams"]["num-cpus"])
        (container,) = worker["template"]["spec"]["containers"]
        assert int(container["resources"]["limits"]["cpu"]) == cpus, "Ray's CPUs are the pod's cores"
        assert args.threads and cpus % args.threads == 0, "whole actors per worker, no idle cores"
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_ray_release_and_image_are_the_projects(job):
    pinned = re.search(r"^ray\[data\]==(\S+)", (ROOT / "requirements-ray.txt").read_text(), re.MULTILINE)
    assert pinned and job["spec"]["rayClusterSpec"]["rayVersion"] == pinned.group(1)
    image = yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"][0]["name"]
    for group in _groups(job):
        for container in group["template"]["spec"]["containers"]:
            assert container["image"] == f"{image}:bulk", container["name"]


def test_pods_run_non_root_read_only_with_writable_tmp_and_shared_memory(job):
    for group in _groups(job):
        spec = group["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] and spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        assert set(mounts) == {"/tmp", "/dev/shm"}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env["STYLE_RUNTIME_DIR"].startswith("/tmp/") and env["HOME"] == "/tmp"
