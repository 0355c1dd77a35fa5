"""The fast-style handler driven directly, as TorchServe's worker drives it (no server)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from ts.context import Context, RequestProcessor
from ts.torch_handler.request_envelope.kservev2 import KServev2Envelope

from core import codec
from handlers.fast_style import FastStyleHandler

from .conftest import ONNX_DIR, ts_metrics


@pytest.fixture(scope="module")
def context(built_store) -> Context:
    manifest = {"model": {"modelName": "udnie", "serializedFile": "udnie.onnx"}}
    return Context("udnie", str(ONNX_DIR), manifest, 1, None, "0.12.0", metrics=ts_metrics())


@pytest.fixture(scope="module")
def handler(context) -> FastStyleHandler:
    handler = FastStyleHandler()
    handler.initialize(context)
    return handler


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _b64(image: Image.Image) -> str:
    return base64.b64encode(_jpeg(image)).decode()


def test_kserve_v2_request_through_torchserves_envelope(handler, context, small_photo):
    """Behind KServe (service_envelope=kservev2): a BYTES ``image`` input plus parameters."""
    request = {
        "id": "abc",
        "inputs": [
            {"name": "image", "shape": [1], "datatype": "BYTES", "data": [_b64(small_photo)]},
            {"name": "max_side", "shape": [1], "datatype": "INT32", "data": [96]},
        ],
    }
    context.request_processor = [RequestProcessor({"body": {"content-type": "application/json"}})]
    envelope = KServev2Envelope(handler.handle)
    [response] = envelope.handle([{"body": json.dumps(request).encode()}], context)
    assert response["id"] == "abc" and response["model_name"] == "udnie"
    [output] = response["outputs"]
    assert output["datatype"] == "BYTES"
    image = Image.open(io.BytesIO(base64.b64decode(output["data"][0])))
    assert image.format == "PNG" and max(image.size) == 96


def test_batch_mixing_good_and_bad_requests(handler, context, small_photo):
    """One bad request in a batch gets its own 4xx; its neighbours still get images."""
    context.request_processor = [RequestProcessor({"body": {"content-type": "image/jpeg"}}) for _ in range(3)]
    rows = [{"body": bytearray(_jpeg(small_photo))}, {"body": bytearray(b"junk")},
            {"body": bytearray(_jpeg(small_photo.resize((50, 70))))}]
    out = handler.handle(rows, context)
    assert context.get_response_status(1)[0] == 415 and json.loads(out[1])["code"] == 415
    for idx, size in ((0, small_photo.size), (2, (50, 70))):
        assert context.get_response_status(idx)[0] in (None, 200)
        image = Image.open(io.BytesIO(out[idx]))
        assert image.size == size
        assert np.abs(codec.to_array(image.convert("RGB")) - codec.to_array(small_photo.resize(size))).mean() > 15


@pytest.mark.parametrize(("settings", "named"), [
    ({"backend": "tensorrt"}, "handler.backend must be one of"),
    ({"precision": "fp16"}, "fp16 needs a GPU"),
    ({"backend": "openvino", "min_psnr_db": 200}, "min_psnr_db 200: no allowed runtime reaches it"),
])
def test_bad_runtime_settings_stop_the_worker_at_start_up_by_name(built_store, settings, named):
    manifest = {"model": {"modelName": "udnie", "serializedFile": "udnie.onnx"}}
    context = Context("udnie", str(ONNX_DIR), manifest, 1, None, "0.12.0", metrics=ts_metrics())
    context.model_yaml_config = {"handler": settings}
    with pytest.raises(ValueError, match=named):
        FastStyleHandler().initialize(context)
