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

from .conftest import ONNX_DIR, assert_no_metadata, jpeg_with_metadata, ts_metrics


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


def _handle_one(handler, context, row: dict, properties: dict) -> tuple[int | None, str | None, bytes | str]:
    """One request through the handler: (status, reason phrase, body)."""
    context.request_processor = [RequestProcessor(properties)]
    [out] = handler.handle([row], context)
    status, phrase = context.get_response_status(0)
    return status, phrase, out


def test_non_ascii_field_names_get_an_ascii_reason_phrase(handler, context, small_photo):
    """TorchServe frames the phrase by character count but sends UTF-8: a non-ASCII phrase
    desynchronised the worker's stream and killed it (curl -d 'caf\u00e9=1' did)."""
    row = {"image": bytearray(_jpeg(small_photo)), "caf\u00e9": b"1"}
    status, phrase, out = _handle_one(handler, context, row, {"content-type": "multipart/form-data; boundary=x"})
    assert status == 400 and phrase.isascii() and phrase.isprintable(), phrase
    assert "unknown parameter" in json.loads(out)["message"]


def test_text_file_as_the_image_field_is_415(handler, context):
    properties = {"content-type": "multipart/form-data; boundary=x", "image": {"content-type": "text/plain"}}
    status, _, out = _handle_one(handler, context, {"image": "line one\nline two\n"}, properties)
    assert status == 415 and "field 'image' holds a text file" in json.loads(out)["message"]


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("strength", [b"1", b"0.5"])
def test_the_photos_metadata_never_reaches_the_painting(handler, context, small_photo, fmt, strength):
    row = {"image": bytearray(jpeg_with_metadata(small_photo)), "strength": strength, "format": fmt.encode()}
    status, _, out = _handle_one(handler, context, row, {"content-type": "multipart/form-data; boundary=x"})
    assert status in (None, 200), out
    assert_no_metadata(out)


def test_png_compression_as_field_or_header(handler, context, small_photo):
    multipart = {"content-type": "multipart/form-data; boundary=x"}
    photo = bytearray(_jpeg(small_photo))
    sizes = {}
    for level in (b"0", b"9"):
        status, _, out = _handle_one(handler, context, {"image": photo, "png_compression": level}, multipart)
        assert status in (None, 200) and Image.open(io.BytesIO(out)).format == "PNG"
        sizes[level] = len(out)
    assert sizes[b"0"] > sizes[b"9"]
    _, _, by_header = _handle_one(handler, context, {"body": photo},
                                  {"body": {"content-type": "image/jpeg"}, "X-Png-Compression": "0"})
    assert len(by_header) == sizes[b"0"]
    status, _, out = _handle_one(handler, context, {"image": photo, "png_compression": b"12"}, multipart)
    assert status == 400 and "png_compression" in json.loads(out)["message"]


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
