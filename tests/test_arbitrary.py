"""Arbitrary style transfer: port parity with the peer's ONNX pair, real photos painted in real
paintings' styles, strength, the style-vector cache, bad style images, and the endpoint."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import onnxruntime as ort
import pytest
import requests
import torch
from PIL import Image, ImageOps

from core import codec
from core.arbitrary import PARAMS, ArbitraryStylizer, FixedStylePainter, StyleRequest, blend_weights
from core.errors import InputError
from core.runtime_choice import RuntimeSettings
from export import magenta_weights
from export.arbitrary import load_predictor, load_transformer
from export.quantize import psnr_db

from .conftest import ONNX_DIR, SHARED

PAINTINGS = SHARED / "images" / "styles"


@pytest.fixture(scope="module")
def peer_folder():
    return magenta_weights.fetch()


@pytest.fixture(scope="module")
def painter() -> ArbitraryStylizer:
    if not (ONNX_DIR / "arbitrary_transform.onnx").is_file():
        pytest.fail(f"{ONNX_DIR / 'arbitrary_transform.onnx'} missing: run scripts/build.sh first")
    return ArbitraryStylizer.open(ONNX_DIR, RuntimeSettings(backend="onnxruntime", precision="fp32"))


def _square(path, side: int) -> np.ndarray:
    image = ImageOps.fit(Image.open(path).convert("RGB"), (side, side), Image.Resampling.LANCZOS)
    return np.asarray(image, np.float32)


def _painting(name: str) -> bytes:
    return (PAINTINGS / f"{name}.jpg").read_bytes()


def _content(content_photos, index: int = 0, side: int = 160) -> Image.Image:
    return codec.decode(content_photos[index].read_bytes(), max_side=side)


def test_port_matches_the_peer_pair_at_384(peer_folder, content_photos):
    """Predictor: near exact. Transformer: exact against the peer's graph computed in float,
    and 23-30 dB against the peer itself, which rounds its activations to int8."""
    predictor = load_predictor(peer_folder / "arbitrary_predict.onnx")
    transformer = load_transformer(peer_folder / "arbitrary_transform.onnx")
    cpu = ["CPUExecutionProvider"]
    peer_predict = ort.InferenceSession(str(peer_folder / "arbitrary_predict.onnx"), providers=cpu)
    peer_transform = ort.InferenceSession(str(peer_folder / "arbitrary_transform.onnx"), providers=cpu)
    float_peer = magenta_weights.without_activation_quantization(peer_folder / "arbitrary_transform.onnx")
    float_transform = ort.InferenceSession(float_peer.SerializeToString(), providers=cpu)
    style = _square(PAINTINGS / "wave.jpg", 256)
    peer_vector = peer_predict.run(None, {"style_image": style[None] / 255})[0].reshape(1, 100)
    with torch.no_grad():
        vector = predictor(torch.from_numpy(style.transpose(2, 0, 1)[None].copy())).numpy()
    assert np.abs(vector - peer_vector).max() < 0.05 * np.abs(peer_vector).max()
    content = _square(content_photos[0], 384)
    feeds = {"content_image": content[None] / 255, "mobilenet_conv/Conv/BiasAdd": vector.reshape(1, 1, 1, 100)}
    with torch.no_grad():
        ours = transformer(torch.from_numpy(content.transpose(2, 0, 1)[None].copy()), torch.from_numpy(vector))
    ours = ours.numpy()[0].transpose(1, 2, 0)
    assert np.abs(ours - float_transform.run(None, feeds)[0][0] * 255).max() < 0.1
    assert psnr_db(peer_transform.run(None, feeds)[0][0] * 255, ours) > 22.0


def test_painting_moves_the_photo_toward_the_style(painter, content_photos):
    """In the predictor's style space the painting lands much nearer the painting's style than
    the photo was, and nearer the further ``strength`` goes."""
    photo = _content(content_photos)
    own = painter.image_vector(photo)
    style = painter.style_vector(_painting("scream"))
    distances = []
    for strength in (0.0, 0.5, 1.0):
        painted = painter.paint(photo, [_painting("scream")], strength=strength)
        assert painted.size == photo.size
        distances.append(float(np.linalg.norm(painter.image_vector(painted) - style)))
    assert distances[2] < 0.6 * float(np.linalg.norm(own - style))
    assert distances[0] > distances[1] > distances[2]


def test_strength_zero_stays_near_the_photo(painter, content_photos):
    photo = _content(content_photos, index=1)
    near = psnr_db(codec.to_array(photo), codec.to_array(painter.paint(photo, [_painting("wave")], strength=0.0)))
    far = psnr_db(codec.to_array(photo), codec.to_array(painter.paint(photo, [_painting("wave")], strength=1.0)))
    assert near > 19.0 and near > far + 5.0


def test_output_has_the_photo_size_even_odd(painter, content_photos):
    photo = _content(content_photos).crop((0, 0, 97, 61))
    assert painter.paint(photo, [_painting("udnie")]).size == (97, 61)


def test_a_cached_style_skips_the_predictor_and_paints_identically(painter, content_photos):
    photo = _content(content_photos)
    style = _painting("la_muse")
    first = painter.paint(photo, [style])
    runs, hits = painter.predictor_runs, painter.cache.hits
    again = painter.paint(photo, [style])
    assert painter.predictor_runs == runs and painter.cache.hits == hits + 1
    assert np.array_equal(np.asarray(first), np.asarray(again))
    other_size = painter.style_vector(style, style_size=128)  # the key includes the size
    assert painter.predictor_runs == runs + 1 and not np.array_equal(other_size, painter.style_vector(style))


def test_two_styles_blend_between_them(painter, content_photos):
    photo = _content(content_photos)
    wave, scream = _painting("wave"), _painting("scream")
    request = StyleRequest((wave, scream), blend_weights(2, [1, 3]), 1.0, 256)
    expected = 0.25 * painter.style_vector(wave) + 0.75 * painter.style_vector(scream)
    assert np.allclose(painter.target_vector(photo, request), expected, atol=1e-6)


def test_a_large_painting_is_read_whatever_the_photo_limit(painter):
    big = Image.open(PAINTINGS / "wreck.jpg").convert("RGB").resize((3000, 2400))
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    assert painter.style_vector(buffer.getvalue()).shape == (1, 100)


@pytest.mark.parametrize(
    ("styles", "weights", "message"),
    [([b"not an image"], None, "not a decodable image"), ([], None, "missing style"),
     ([b"x", b"y"], [1.0], "2 style image"), ([b"x"], [-1.0], "non-negative")],
)
def test_bad_styles_name_the_problem(painter, small_photo, styles, weights, message):
    with pytest.raises(InputError, match=message):
        painter.paint(small_photo, styles, weights)


def test_fixed_style_painter_paints_bytes_like_the_stylizer(painter, content_photos):
    fixed = FixedStylePainter(painter, [_painting("wave")])
    params = {**{name: spec.default for name, spec in PARAMS.items()}, "max_side": 120, "format": "png"}
    painted = Image.open(io.BytesIO(fixed.stylize_bytes(content_photos[0].read_bytes(), params)))
    photo = codec.decode(content_photos[0].read_bytes(), max_side=120)
    assert np.array_equal(np.asarray(painted), np.asarray(painter.paint(photo, [_painting("wave")])))
    with pytest.raises(InputError, match="style image"):
        FixedStylePainter(painter, [b"not an image"])


# ---------------------------------------------------------------------------------------
# Served through TorchServe
# ---------------------------------------------------------------------------------------


def _post(server, **kwargs) -> requests.Response:
    return requests.post(f"{server.inference_url}/predictions/arbitrary", timeout=120, **kwargs)


def test_endpoint_paints_multipart_and_json_alike_and_caches(server, content_photos):
    content = content_photos[0].read_bytes()
    style = _painting("rain_princess")
    files = {"content": ("c.jpg", content, "image/jpeg"), "style": ("s.jpg", style, "image/jpeg")}
    multipart = _post(server, files=files, data={"max_side": "150"})
    as_json = _post(server, json={"content": base64.b64encode(content).decode(),
                                  "styles": [base64.b64encode(style).decode()], "max_side": 150})
    for response in (multipart, as_json):
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "image/png"
    assert as_json.headers["X-Style-Cache-Hits"] == "1"  # the second sight of the painting
    assert multipart.content == as_json.content
    painted = Image.open(io.BytesIO(multipart.content))
    assert painted.size == codec.decode(content, max_side=150).size
    metrics = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    hits = re.search(r'^StyleVectorCacheHits\{ModelName="arbitrary".*\} ([0-9.]+)$', metrics, re.M)
    assert hits and float(hits.group(1)) >= 1


@pytest.mark.parametrize(
    ("files", "message", "status"),
    [({}, "missing style image", 400), ({"style": ("s.jpg", b"garbage", "image/jpeg")}, "style image", 415)],
)
def test_endpoint_bad_styles_get_4xx_json(server, content_photos, files, message, status):
    response = _post(server, files={"content": ("c.jpg", content_photos[0].read_bytes(), "image/jpeg"), **files},
                     data={"max_side": "64"})
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")
    assert message in response.json()["message"]
