"""The KServe predictor (``python -m server kserve``) through real Open Inference Protocol clients.

One predictor for the session (free loopback ports for REST and gRPC, stopped by its PID),
serving ``udnie`` beside the session's TorchServe on the engine TorchServe reports for it
(``X-Style-Runtime``; the predictor reads the choice TorchServe's worker cached), so both
must return the same pixels for the same photo. ``tritonclient.http`` and
``tritonclient.grpc`` send real photos as BYTES and as UINT8 tensors; bad requests must
get 4xx / ``INVALID_ARGUMENT`` naming the problem.
The other families (multistyle, arbitrary, Gatys) are served too and checked once each.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import psutil
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from core import codec
from core.admission import Ledger, Reservation, Settings
from core.paths import ROOT
from core.torchserve import RUNTIME_HEADER
from server.launch import free_ports
from tests.support import clips

from .conftest import SHARED, _gatys_env

SIDE = 192  # small photos keep this quick on 2 cores
MODELS = "udnie,multistyle,arbitrary,gatys"
CLIENTS = {"http": httpclient, "grpc": grpcclient}


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photo_jpeg(content_photos) -> bytes:
    """A real photo, re-encoded small (the predictor and TorchServe both read it)."""
    image = Image.open(content_photos[0]).convert("RGB")
    image.thumbnail((SIDE * 2, SIDE * 2))
    return _jpeg(image)


@pytest.fixture(scope="session")
def torchserve_udnie(server, photo_jpeg) -> tuple[str, np.ndarray]:
    """TorchServe's answer for the photo at ``max_side=SIDE``: its runtime and its pixels."""
    response = requests.post(f"{server.inference_url}/predictions/udnie", data=photo_jpeg, timeout=120,
                             headers={"Content-Type": "image/jpeg", "X-Max-Side": str(SIDE), "Accept": "image/png"})
    assert response.status_code == 200, response.text
    return response.headers[RUNTIME_HEADER], np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


class Predictor:
    def __init__(self, process: subprocess.Popen, http_port: int, grpc_port: int, ledger: Path, log: Path):
        self.process, self.ledger, self.log = process, ledger, log
        self.http_url, self.grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"

    def client(self, kind: str):
        return CLIENTS[kind].InferenceServerClient(self.http_url if kind == "http" else self.grpc_url)


def _start(tmp: Path, models: str, env: dict[str, str]) -> Predictor:
    ports = free_ports()
    log = tmp / "predictor.log"
    command = [sys.executable, "-m", "server", "kserve", "--models", models, "--http-port", str(ports.inference),
               "--grpc-port", str(ports.grpc_inference), "--runtime-dir", str(tmp / "runtime"), "--grace-period", "5"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    predictor = Predictor(process, ports.inference, ports.grpc_inference, Path(env.get("STYLE_ADMISSION_LEDGER", "")),
                          log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, f"predictor exited {process.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(f"http://{predictor.http_url}/v2/health/ready", timeout=2).ok:
                return predictor
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    _stop(process)
    pytest.fail(f"predictor not ready in 300 s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> int:
    """SIGTERM to the PID we started; SIGKILL only if it ignores that."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


@pytest.fixture(scope="session")
def predictor(torchserve_udnie, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kserve")
    # Our own ledger, and no waiting for room: an overload answers at once.
    env = {**_gatys_env(tmp), "STYLE_ADMISSION_LEDGER": str(tmp / "ledger.json"), "STYLE_ADMISSION_WAIT_S": "0"}
    instance = _start(tmp, MODELS, env)
    try:
        # Both engines read the session's engine-choice cache ($STYLE_RUNTIME_DIR), which the
        # TorchServe worker wrote for the same archive bytes: the predictor opens that engine.
        served = requests.get(f"http://{instance.http_url}/v2/models/udnie", timeout=10).json()["runtime"]
        assert served == torchserve_udnie[0], f"predictor chose {served}, TorchServe {torchserve_udnie[0]}"
        yield instance
    finally:
        _stop(instance.process)


def _bytes_input(module, name: str, items: list[bytes]):
    tensor = module.InferInput(name, [len(items)], "BYTES")
    tensor.set_data_from_numpy(np.array(items, dtype=np.object_))
    return tensor


def _pixels_input(module, pixels: np.ndarray):
    tensor = module.InferInput("image", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels)
    return tensor


def _parameters(kind: str, **values) -> dict:
    """gRPC parameters are bool, int64 or string in the protocol: numbers with a point go as text."""
    return {k: (str(v) if kind == "grpc" and isinstance(v, float) else v) for k, v in values.items()}


def _response_parameters(kind: str, result) -> dict:
    if kind == "http":
        return result.get_response()["parameters"]
    return {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in result.get_response().parameters.items()}


def _refused(call) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return str(caught.value)


# -- health, metadata ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_health_readiness_and_metadata(predictor, kind):
    client = predictor.client(kind)
    assert client.is_server_live() and client.is_server_ready()
    for name in MODELS.split(","):
        assert client.is_model_ready(name), name
    try:  # REST answers "not ready", gRPC NOT_FOUND
        assert not client.is_model_ready("no_such_style")
    except InferenceServerException as error:
        assert kind == "grpc" and "does not exist" in str(error)
    metadata = client.get_model_metadata("udnie")
    if kind == "grpc":
        metadata = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                               for t in metadata.inputs],
                    "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                                for t in metadata.outputs]}
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [1]}]
    assert metadata["outputs"] == [{"name": "stylized", "datatype": "BYTES", "shape": [1]}]


def test_both_listeners_bind_to_loopback_only(predictor):
    """Stock KServe binds REST to 0.0.0.0 and gRPC to [::]; ours listen where told (127.0.0.1)."""
    listening = [c.laddr for c in psutil.Process(predictor.process.pid).connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    ports = {int(url.rsplit(":", 1)[1]) for url in (predictor.http_url, predictor.grpc_url)}
    assert {address.port for address in listening} == ports
    assert {address.ip for address in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening


def test_rest_metadata_describes_parameters_pixels_and_runtime(predictor, torchserve_udnie):
    metadata = requests.get(f"http://{predictor.http_url}/v2/models/udnie", timeout=10).json()
    assert metadata["alternatives"]["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, 3]}]
    assert set(metadata["parameters"]) == {"format", "quality", "png_compression", "max_side", "strength",
                                           "preserve_colors", "tile", "stabilize", "stream"}
    assert metadata["parameters"]["strength"] == {"type": "float", "default": 1.0, "min": 0.0, "max": 1.0,
                                                  "help": "1 = fully stylized, 0 = the photo"}
    assert metadata["runtime"] == torchserve_udnie[0]
    multistyle = requests.get(f"http://{predictor.http_url}/v2/models/multistyle", timeout=10).json()
    assert {"style", "style_weights"} <= set(multistyle["parameters"])
    gatys = requests.get(f"http://{predictor.http_url}/v2/models/gatys", timeout=10).json()
    assert [t["name"] for t in gatys["inputs"]] == ["content", "style"] and "iterations" in gatys["parameters"]
    assert requests.get(f"http://{predictor.http_url}/v2/models/no_such_style", timeout=10).status_code == 404


# -- the same pixels as TorchServe -----------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_bytes_in_png_out_matches_torchserve(predictor, torchserve_udnie, photo_jpeg, kind):
    module = CLIENTS[kind]
    result = predictor.client(kind).infer("udnie", [_bytes_input(module, "image", [photo_jpeg])],
                                          parameters={"max_side": SIDE, "format": "png"})
    (encoded,) = result.as_numpy("stylized")
    assert encoded[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    runtime, expected = torchserve_udnie
    assert pixels.shape == expected.shape and np.array_equal(pixels, expected), "KServe != TorchServe pixels"
    assert _response_parameters(kind, result)["runtime"] == runtime
    assert np.abs(pixels.astype(int) - np.asarray(codec.decode(photo_jpeg, max_side=SIDE))).mean() > 15


@pytest.mark.parametrize("kind", CLIENTS)
def test_pixels_in_pixels_out_matches_torchserve(predictor, torchserve_udnie, photo_jpeg, kind):
    photo = np.asarray(codec.decode(photo_jpeg, max_side=SIDE))  # the pixels TorchServe painted
    result = predictor.client(kind).infer("udnie", [_pixels_input(CLIENTS[kind], photo)])
    pixels = result.as_numpy("stylized")
    assert pixels.dtype == np.uint8 and pixels.shape == photo.shape
    assert np.array_equal(pixels, torchserve_udnie[1]), "KServe pixels != TorchServe pixels"


def test_rest_json_without_binary_extension_carries_base64(predictor, photo_jpeg):
    """What curl sends: BYTES elements are text in JSON, so the image is base64 both ways."""
    import base64

    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "data": [base64.b64encode(photo_jpeg).decode()], "parameters": {"format": "webp"}}],
            "parameters": {"max_side": 64}}
    response = requests.post(f"http://{predictor.http_url}/v2/models/udnie/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers[RUNTIME_HEADER] == response.json()["parameters"]["runtime"]
    (output,) = response.json()["outputs"]
    assert output["parameters"] == {"content_type": "image/webp", "content_encoding": "base64"}
    image = Image.open(io.BytesIO(base64.b64decode(output["data"][0])))
    assert image.format == "WEBP" and max(image.size) == 64


@pytest.mark.parametrize("kind", CLIENTS)
def test_request_parameters(predictor, photo_jpeg, kind):
    """(Input parameters: the REST JSON test above; Triton's clients set request parameters only.)"""
    module = CLIENTS[kind]
    client = predictor.client(kind)
    result = client.infer("udnie", [_bytes_input(module, "image", [photo_jpeg])],
                          parameters={"format": "jpeg", "quality": 80, "max_side": 96})
    (encoded,) = result.as_numpy("stylized")
    image = Image.open(io.BytesIO(encoded))
    assert image.format == "JPEG" and max(image.size) == 96
    # strength 0 gives the photo back, exactly (pixels in, pixels out: no codec in between)
    photo = np.asarray(codec.decode(photo_jpeg, max_side=80))
    result = client.infer("udnie", [_pixels_input(module, photo)], parameters=_parameters(kind, strength=0.0))
    assert np.array_equal(result.as_numpy("stylized"), photo)


# -- bad requests ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CLIENTS)
def test_bad_requests_are_refused_with_the_problem_named(predictor, photo_jpeg, kind):
    module = CLIENTS[kind]
    client = predictor.client(kind)
    status = {"http": r"\[4\d\d\]", "grpc": r"StatusCode\.INVALID_ARGUMENT"}[kind]

    def refused(inputs, parameters=None, model="udnie") -> str:
        message = _refused(lambda: client.infer(model, inputs, parameters=parameters))
        assert re.search(status, message), message
        return message

    message = refused([_bytes_input(module, "image", [b"certainly not an image"])])
    assert "not a decodable image" in message and ("[415]" in message or kind == "grpc"), message
    assert "corrupt or truncated" in refused([_bytes_input(module, "image", [photo_jpeg[:400]])])
    floats = module.InferInput("image", [2, 2, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((2, 2, 3), np.float32))
    assert "must be BYTES" in refused([floats])
    assert "[H, W, 3]" in refused([_pixels_input(module, np.zeros((8, 8, 4), np.uint8))])
    assert "one encoded image" in refused([_bytes_input(module, "image", [photo_jpeg, photo_jpeg])])
    assert "unknown input(s) 'photo'" in refused([_bytes_input(module, "photo", [photo_jpeg])])
    assert "missing input 'image'" in refused([])
    good = _bytes_input(module, "image", [photo_jpeg])
    assert "'strength' must be at most 1.0" in refused([good], _parameters(kind, strength=3))
    assert "unknown parameter(s): colour" in refused([good], {"colour": "red"})
    assert "unsupported output format 'gif'" in refused([good], {"format": "gif"})
    assert "'max_side' must be int" in refused([good], {"max_side": "big"})
    if kind == "grpc":  # a float parameter is a Triton extension the protocol's gRPC message lacks
        assert "as the string '0.5'" in refused([good], {"strength": 0.5})
    # the server carries on
    assert client.infer("udnie", [good], parameters={"max_side": 32}).as_numpy("stylized")[0][:4] == b"\x89PNG"


def test_malformed_rest_bodies_are_4xx(predictor):
    url = f"http://{predictor.http_url}/v2/models/udnie/infer"
    cases = {
        "not valid base64": {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]},
        "data does not fit": {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [2, 2, 3], "data": [1, 2]}]},
    }
    for expected, body in cases.items():
        response = requests.post(url, json=body, timeout=30)
        assert 400 <= response.status_code < 500 and expected in response.json()["error"], response.text
    # binary extension with a header longer than the body
    response = requests.post(url, data=b"{}", timeout=30, headers={"Inference-Header-Content-Length": "99",
                                                                   "Content-Type": "application/octet-stream"})
    assert response.status_code == 400 and "does not fit" in response.json()["error"], response.text


def test_overload_is_503_with_retry_after(predictor, photo_jpeg):
    """A reservation holding every byte of the server's image memory (written by this test
    process, through the ledger the predictor uses) leaves no room: 503 at once, then 200."""
    hog = Reservation(model="test-hog", pixels=1, work=0.0, cores=0.0, bytes=1e18, threads=1.0, budget_s=60.0,
                      heavy=True, pid_started=psutil.Process().create_time())
    ledger = Ledger(predictor.ledger)
    assert ledger.try_reserve(hog, Settings(cpus=2.0, memory_bytes=10**19)) is None
    try:
        module = CLIENTS["http"]
        inputs = [_bytes_input(module, "image", [photo_jpeg])]
        message = _refused(lambda: predictor.client("http").infer("udnie", inputs, parameters={"max_side": 32}))
        assert "[503]" in message and "memory budget" in message, message
        response = requests.post(f"http://{predictor.http_url}/v2/models/udnie/infer", timeout=30, json={
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": [4, 4, 3], "data": [0] * 48}]})
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1, response.text
        grpc_message = _refused(lambda: predictor.client("grpc").infer("udnie", [
            _bytes_input(grpcclient, "image", [photo_jpeg])], parameters={"max_side": 32}))
        assert "UNAVAILABLE" in grpc_message, grpc_message
    finally:
        ledger.release(hog.key)
    assert predictor.client("http").infer("udnie", inputs, parameters={"max_side": 32}).as_numpy("stylized").size == 1


# -- the other families ------------------------------------------------------------------------


def test_multistyle_arbitrary_and_gatys(predictor, photo_jpeg):
    client = predictor.client("http")
    image = _bytes_input(httpclient, "image", [photo_jpeg])
    result = client.infer("multistyle", [image], parameters={"style": "3:0.5,12:0.5", "max_side": 64})
    assert _response_parameters("http", result)["blend"] == "3:0.5,12:0.5"
    assert "tiling is not available" in _refused(lambda: client.infer("multistyle", [image],
                                                                       parameters={"tile": True}))
    style = (SHARED / "images" / "styles" / "wave.jpg").read_bytes()
    styles = _bytes_input(httpclient, "style", [style])
    first = client.infer("arbitrary", [image, styles], parameters={"max_side": 64})
    again = client.infer("arbitrary", [image, styles], parameters={"max_side": 64})
    assert _response_parameters("http", again)["cache_hits"] == 1
    assert np.array_equal(first.as_numpy("stylized"), again.as_numpy("stylized"))
    assert "missing input 'style'" in _refused(lambda: client.infer("arbitrary", [image]))
    content = _bytes_input(httpclient, "content", [photo_jpeg])
    gatys = client.infer("gatys", [content, styles], parameters={"iterations": 2, "max_side": 48, "seed": 1})
    painting = Image.open(io.BytesIO(gatys.as_numpy("stylized")[0]))
    assert max(painting.size) == 48 and _response_parameters("http", gatys)["iterations_done"] == "2"
    assert "stream=true is not available" in _refused(lambda: client.infer(
        "gatys", [content, styles], parameters={"stream": True, "iterations": 1}))


# -- metrics, the README example, stopping ----------------------------------------------------------


def test_metrics_have_kserve_and_style_series(predictor, photo_jpeg, torchserve_udnie):
    predictor.client("http").infer("udnie", [_bytes_input(httpclient, "image", [photo_jpeg])],
                                   parameters={"max_side": 32})
    text = requests.get(f"http://{predictor.http_url}/metrics", timeout=10).text
    runtime = torchserve_udnie[0]
    assert re.search(r'^request_predict_seconds_count\{model_name="udnie"\} [1-9]', text, re.MULTILINE), text
    assert re.search(rf'^style_request_seconds_count\{{model="udnie",outcome="ok",runtime="{re.escape(runtime)}"\}} '
                     r"[1-9]", text, re.MULTILINE), text
    assert re.search(r'^style_requests_total\{model="udnie",outcome="input_error"\} [1-9]', text, re.MULTILINE)
    assert f'style_model_runtime{{model="udnie",runtime="{runtime}"}} 1.0' in text


def readme_curl_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- kserve-curl[^>]*-->\s*```bash\n(.*?)```", readme, re.DOTALL)
    assert match, "README lost its KServe curl example (marked <!-- kserve-curl -->)"
    return match.group(1)


def test_readme_curl_example_runs_verbatim(predictor, server, content_photos, tmp_path):
    if shutil.which("jq") is None or shutil.which("curl") is None:
        pytest.fail("the README example needs curl and jq (apt-get install curl jq)")
    shutil.copy(content_photos[0], tmp_path / "photo.jpg")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_curl_example()], cwd=tmp_path, timeout=120,
                         env={**os.environ, "KSERVE": f"http://{predictor.http_url}"}, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    painting = (tmp_path / "painting.jpg").read_bytes()
    # TorchServe, asked the same (JPEG at max_side 256), encodes the same pixels into the same bytes
    reference = requests.post(f"{server.inference_url}/predictions/udnie", data=(tmp_path / "photo.jpg").read_bytes(),
                              timeout=120, headers={"Content-Type": "image/jpeg", "X-Max-Side": "256",
                                                    "X-Format": "jpeg"})
    assert reference.status_code == 200
    assert Image.open(io.BytesIO(painting)).size == Image.open(io.BytesIO(reference.content)).size
    assert painting == reference.content


def test_sigterm_stops_the_predictor_cleanly(tmp_path, runtime_choice_cache):
    """Its own short-lived predictor: SIGTERM -> exit 0, both ports closed, no child left."""
    instance = _start(tmp_path, "udnie", {"STYLE_BACKEND": "onnxruntime", "STYLE_PRECISION": "fp32"})
    children = psutil.Process(instance.process.pid).children(recursive=True)
    assert _stop(instance.process) == 0, instance.log.read_text()[-2000:]
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for url in (instance.http_url, instance.grpc_url):
        host, port = url.split(":")
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=2).close()
    assert "Stopping the grpc server" in instance.log.read_text()


def _clip_request(data: bytes, **parameters) -> dict:
    import base64

    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]}],
            "parameters": parameters}


def test_rest_answers_a_clip_with_the_clip_and_its_summary(predictor, tmp_path):
    """A clip as a BYTES element comes back painted in the asked container: every frame, the
    sound, and the summary (frames, audio) as response parameters."""
    import base64

    clip = clips.make_clip(tmp_path / "pan.mp4", 64, 48, 12)
    response = requests.post(f"http://{predictor.http_url}/v2/models/udnie/infer",
                             json=_clip_request(clip.data, format="webm"), timeout=120)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["parameters"]["content_type"] == "video/webm"
    with av.open(io.BytesIO(base64.b64decode(output["data"][0]))) as container:
        assert container.streams.audio and container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
        assert len(list(container.decode(video=0))) == clip.frames
    assert response.json()["parameters"]["frames"] == str(clip.frames) and response.json()["parameters"]["audio"]


def test_rest_refuses_a_cut_clip_and_streaming_with_4xx(predictor, tmp_path):
    clip = clips.make_clip(tmp_path / "pan.mp4", 64, 48, 12)
    url = f"http://{predictor.http_url}/v2/models/udnie/infer"
    cut = clips.truncated(clip, tmp_path / "cut.mp4").read_bytes()
    response = requests.post(url, json=_clip_request(cut), timeout=60)
    assert 400 <= response.status_code < 500 and "truncated" in response.text, response.text
    response = requests.post(url, json=_clip_request(clip.data, stream=True), timeout=60)
    assert 400 <= response.status_code < 500 and "stream=true is not available" in response.text, response.text
