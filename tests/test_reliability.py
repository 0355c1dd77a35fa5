"""Hostile and broken input, load, batch settings, and the running server's safe defaults
(killed workers and bursts: tests/test_reliability_kills.py)."""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import re
import struct
import zlib

import numpy as np
import psutil
import pytest
import requests
import torch
from PIL import Image

from bench.load import measure, server_rss

STYLE = "la_muse"


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_bomb() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _corpus(photo: Image.Image) -> dict[str, tuple[bytes, int | None, tuple[int, int] | None]]:
    """name -> (payload, expected 4xx status or None for success, expected output size)."""
    jpeg, png = _save(photo, "JPEG"), _save(photo, "PNG")
    exif = Image.Exif()
    exif[0x0112] = 8  # display rotated 90 degrees counter-clockwise
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    gif_frames = [photo.convert("P"), photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM).convert("P")]
    size = photo.size
    return {
        "empty": (b"", 400, None),
        "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), 415, None),
        "text": (b"Dear server, please paint me.", 415, None),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], 400, None),
        "truncated png": (png[: len(png) // 2], 400, None),
        "decompression bomb": (_png_bomb(), 413, None),
        "1x1": (_save(Image.new("RGB", (1, 1), "red"), "PNG"), None, (1, 1)),
        "2x2": (_save(Image.new("RGB", (2, 2), "blue"), "PNG"), None, (2, 2)),
        "16-bit png": (_save(Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257), "PNG"), None, size),
        "cmyk jpeg": (_save(photo.convert("CMYK"), "JPEG"), None, size),
        "palette png with transparency": (_save(palette, "PNG", transparency=0), None, size),
        "grayscale": (_save(photo.convert("L"), "PNG"), None, size),
        "LA": (_save(photo.convert("LA"), "PNG"), None, size),
        "exif rotated jpeg": (_save(photo, "JPEG", exif=exif.tobytes()), None, (size[1], size[0])),
        "animated gif": (_save(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:]), None, size),
        "tiff": (_save(photo, "TIFF"), None, size),
        "bmp": (_save(photo, "BMP"), None, size),
    }


def _send(server, path: str, payload: bytes) -> requests.Response:
    url = f"{server.inference_url}/predictions/{STYLE}"
    if path == "raw":
        return requests.post(url, data=payload, headers={"Content-Type": "application/octet-stream"}, timeout=120)
    if path == "multipart":
        return requests.post(url, files={"image": ("upload", payload)}, timeout=120)
    return requests.post(url, json={"image": base64.b64encode(payload).decode()}, timeout=120)


@pytest.fixture(scope="module")
def photo(small_photo) -> Image.Image:
    return small_photo.resize((97, 75))


@pytest.mark.parametrize("path", ["raw", "multipart", "json"])
def test_bad_and_odd_images_on_every_input_path(server, photo, path):
    good = _save(photo, "JPEG")
    for name, (payload, status, size) in _corpus(photo).items():
        response = _send(server, path, payload)
        if status is None:
            assert response.status_code == 200, f"{name}: {response.text}"
            assert Image.open(io.BytesIO(response.content)).size == size, name
        else:
            assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
            error = response.json()
            assert error["code"] == status and error["message"], name
        after = _send(server, path, good)
        assert after.status_code == 200, f"good request after '{name}' failed: {after.text}"


def test_exif_rotation_orients_the_output(server):
    # A tall image stored sideways: top half white, bottom half black once rotated.
    stored = Image.new("RGB", (64, 32))
    stored.paste((255, 255, 255), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    response = _send(server, "raw", _save(stored, "JPEG", exif=exif.tobytes(), quality=95))
    result = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), np.float32)
    assert result.shape == (64, 32)
    upright = np.asarray(stored.transpose(Image.Transpose.ROTATE_270).convert("L"), np.float32)
    top_bright = upright[:32].mean() > upright[32:].mean()
    assert (result[:32].mean() > result[32:].mean()) == top_bright


@pytest.mark.parametrize(
    "body, words",
    [
        ('{"image": "bm90IGFuIGltYWdl", "strength": 2}', "strength"),
        ('{"image": "bm90IGFuIGltYWdl", "quality": "high"}', "quality"),
        ('{"image": "bm90IGFuIGltYWdl", "preserve_colors": "perhaps"}', "preserve_colors"),
        ('{"image": "bm90IGFuIGltYWdl", "max_side": 1e9}', "max_side"),
        ('{"image": "bm90IGFuIGltYWdl", "style": "van_gogh"}', "unknown parameter"),
        ('{"image": 12}', "base64"),
        ("[]", "object"),
        ("{{{{", "not valid JSON"),
    ],
)
def test_bad_parameters_and_json(server, photo, body, words):
    url = f"{server.inference_url}/predictions/{STYLE}"
    response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert 400 <= response.status_code < 500 and words in response.json()["message"], response.text
    assert _send(server, "json", _save(photo, "PNG")).status_code == 200


def test_body_over_the_request_limit_is_refused_and_serving_goes_on(server, photo):
    """TorchServe's frontend answers 413 itself (its body is empty: no handler runs)."""
    oversized = b"\xff" * (64 * 2**20 + 1)
    response = requests.post(f"{server.inference_url}/predictions/{STYLE}", data=oversized,
                             headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert response.status_code == 413
    assert _send(server, "raw", _save(photo, "JPEG")).status_code == 200


def test_short_load_no_failures_no_leak(server):
    """Short form of ``python -m bench.load`` (60 s there): one style, concurrency 3 > 1 worker."""
    report = measure(server, ["udnie"], concurrency=3, duration=12, max_requests=400)
    print(report)
    assert report["failed"] == 0, report
    assert report["requests"] >= 10
    assert report["rss_at_end_mb"] <= 1.10 * report["rss_after_warmup_mb"], report


def test_shipped_models_have_no_batch_gathering_phase(built_store):
    """TorchServe 0.12 never answers requests its frontend gathered for a batch when the
    worker dies meanwhile (tests/test_reliability_kills.py shows it); with batchSize 1 that
    moment does not exist, so every model the project ships and builds uses it."""
    import zipfile

    import yaml

    from bench.load import fast_model_config
    from export.models import STYLED_MODEL_CONFIG
    from optimize.archive import model_config

    for config in (fast_model_config(), STYLED_MODEL_CONFIG, model_config()):
        assert config["batchSize"] == 1, config
    for archive in sorted(built_store.glob("*.mar")):
        with zipfile.ZipFile(archive) as mar:
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
            config = yaml.safe_load(mar.read(manifest["model"]["configFile"]))
        assert config.get("batchSize", 1) == 1, f"{archive.name}: batchSize {config['batchSize']}"


def test_admission_assumes_the_servers_default_response_timeout():
    from core.admission import DEFAULT_RESPONSE_TIMEOUT_S
    from server.launch import ROOT

    config = (ROOT / "config.properties").read_text()
    assert f"default_response_timeout={DEFAULT_RESPONSE_TIMEOUT_S:g}" in config.splitlines()


def test_listeners_are_loopback_only(server):
    """Read from the running process: every socket TorchServe listens on is 127.0.0.1."""
    java = psutil.Process(int((server.runtime_dir / "tmp" / ".model_server.pid").read_text()))
    connections = getattr(java, "net_connections", None) or java.connections  # psutil < 6 (pinned for kserve)
    listening = [c for c in connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 3
    for connection in listening:
        address = ipaddress.ip_address(connection.laddr.ip)
        address = getattr(address, "ipv4_mapped", None) or address  # Java reports ::ffff:127.0.0.1
        assert address.is_loopback, connection
    assert server_rss(java.pid) > 0


def test_running_server_refuses_registration_and_reports_safe_settings(server):
    response = requests.post(f"{server.management_url}/models", params={"url": "https://example.com/evil.mar"},
                             timeout=10)
    assert response.status_code == 405  # the model API is off: nothing can be registered
    log = (server.log_dir / "ts_log.log").read_text()
    allowed = re.search(r"Allowed Urls: \[(.*)\]", log).group(1)
    assert allowed == f"file://{server.model_store}/[A-Za-z0-9_-]+\\.mar"
    assert "Model API enabled: false" in log
    assert "Custom python dependency for model allowed: false" in log


def test_checkpoints_load_with_weights_only(tmp_path):
    """A pickled checkpoint that would run code is refused by the loader."""
    from networks import load_pytorch_examples

    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.conv2d.weight": Exploit()}, path)
    with pytest.raises(Exception, match="Weights only load failed|Unsupported"):
        load_pytorch_examples(path)


# --- the gatys endpoint: the same corpus as its content image, multipart and JSON ---------

GATYS_FAST = {"iterations": "1", "max_side": "48"}


def _gatys(server, path: str, content: bytes, style: bytes, params: dict | None = None) -> requests.Response:
    url = f"{server.inference_url}/predictions/gatys"
    params = {**GATYS_FAST, **(params or {})}
    if path == "multipart":
        return requests.post(url, files={"content": ("c", content), "style": ("s", style)}, data=params, timeout=120)
    body = {"content": base64.b64encode(content).decode(), "styles": [base64.b64encode(style).decode()], **params}
    return requests.post(url, json=body, timeout=120)


@pytest.mark.parametrize("path", ["multipart", "json"])
def test_gatys_refuses_bad_images_and_keeps_serving(server, photo, path):
    style = _save(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG")
    good = _save(photo, "JPEG")
    for name, (payload, status, _size) in _corpus(photo).items():
        response = _gatys(server, path, payload, style)
        if status is None:  # decodable: an image, or a 4xx if it is too small to optimize
            if response.status_code == 200:
                assert Image.open(io.BytesIO(response.content)).mode == "RGB", name
            else:
                assert 400 <= response.status_code < 500 and response.json()["message"], f"{name}: {response.text}"
        else:
            assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
            assert response.json()["message"], name
    after = _gatys(server, path, good, style)
    assert after.status_code == 200, after.text


def test_gatys_raw_body_and_missing_style_are_clear_4xx(server, photo):
    url = f"{server.inference_url}/predictions/gatys"
    raw = requests.post(url, data=_save(photo, "JPEG"), headers={"Content-Type": "image/jpeg"}, timeout=60)
    assert 400 <= raw.status_code < 500 and "style" in raw.json()["message"]
    no_style = requests.post(url, files={"content": ("c", _save(photo, "JPEG"))}, timeout=60)
    assert 400 <= no_style.status_code < 500 and "style" in no_style.json()["message"]


def test_gatys_stops_at_its_budget_and_returns_the_best_image(server, photo):
    """A request asking for far more work than its time allows ends by its own budget (the
    same mechanism that keeps every request inside responseTimeout), never 'Worker died'."""
    response = _gatys(server, "multipart", _save(photo, "JPEG"), _save(photo, "PNG"),
                      {"iterations": "1000", "max_side": "96", "max_seconds": "2"})
    assert response.status_code == 200, response.text
    assert response.headers["X-Gatys-Stop-Reason"] == "time_budget"
    assert 1 <= int(response.headers["X-Gatys-Iterations-Done"]) < 1000
    assert Image.open(io.BytesIO(response.content)).size[0] > 0


def test_no_secrets_in_the_repo_or_the_image_context():
    """Token files TorchServe writes (key_file.json) and private keys never get tracked or
    into the Docker build context; the runtime folder they land in is ignored."""
    import subprocess

    from server.launch import ROOT

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert not [f for f in tracked if f.endswith(("key_file.json", ".pem", ".key", ".p12"))]
    ignored = subprocess.run(["git", "check-ignore", "build/server/key_file.json"], cwd=ROOT, capture_output=True)
    assert ignored.returncode == 0, "build/ (where the launcher's key_file.json goes) must be git-ignored"
    context = (ROOT / ".dockerignore").read_text().split()
    assert context[0] == "*" or "*" in context, ".dockerignore must be an allow-list"
    # Only named folders come back in: build/onnx/ (the bulk image's styles) may, never
    # build/ itself or build/server/, where the launcher writes its key file.
    allowed = [line[1:].strip("/") for line in context if line.startswith("!")]
    assert not [path for path in allowed if "key" in path or "build/server/key_file.json".startswith(path)]


def test_kubernetes_memory_holds_the_idle_server_and_the_admission_budget(server):
    """Memory requests equal limits (a pod under node pressure keeps what the bound assumed);
    the share admission control gives images (``memory_fraction`` of the limit) holds one photo
    of the largest size served, and the rest holds this whole server as it runs now."""
    import yaml

    from bench.load import java_pid
    from core.admission import Settings
    from server.launch import ROOT

    def gib(quantity: str) -> float:
        assert quantity.endswith("Gi"), quantity
        return float(quantity[:-2])

    settings = Settings(cpus=2.0)
    running = server_rss(java_pid(server)) / 2**30
    manifests = ["deploy/kubernetes/deployment.yaml", "deploy/kserve/inferenceservice.yaml",
                 "deploy/kserve/servingruntime.yaml"]
    def resources(node) -> list[dict]:
        if isinstance(node, dict):
            here = [node["resources"]] if isinstance(node.get("resources"), dict) else []
            return here + [r for value in node.values() for r in resources(value)]
        return [r for value in node for r in resources(value)] if isinstance(node, list) else []

    found = 0
    for manifest in manifests:
        for spec in resources(list(yaml.safe_load_all((ROOT / manifest).read_text()))):
            limit = gib(spec["limits"]["memory"])
            assert gib(spec["requests"]["memory"]) == limit, manifest
            assert settings.memory_fraction * limit * 2**30 >= 4096 * 4096 * settings.bytes_per_pixel, manifest
            assert (1 - settings.memory_fraction) * limit >= running, (manifest, running)
            found += 1
    assert found == len(manifests)
