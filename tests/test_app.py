"""The Streamlit app's logic: ``app.client`` as plain functions, and the page via ``AppTest``.

The server path runs against the session's real TorchServe (``server`` fixture); the local
fallback is reached by pointing the app at a loopback port that is bound but not listening,
so the connection is refused at once and no other process can take the port meanwhile.
A tiny in-process HTTP server stands in for error answers a real server rarely gives.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import client, gatys, local, styles
from core import codec
from core.style_options import finish

from .conftest import DEFAULT_STYLES, ONNX_DIR, SHARED

APP = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"
SIDE = 96  # tiny images: these tests check behaviour, not pictures


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo(small_photo) -> bytes:
    image = small_photo.copy()
    image.thumbnail((SIDE, SIDE))
    return _jpeg(image)


@pytest.fixture(scope="module")
def painting() -> bytes:
    path = SHARED / "images" / "styles" / "wave.jpg"
    image = Image.open(path).convert("RGB") if path.exists() else Image.new("RGB", (64, 64), (30, 90, 160))
    image.thumbnail((SIDE, SIDE))
    return _jpeg(image)


@pytest.fixture
def closed_url() -> Iterator[str]:
    """A loopback URL that refuses connections: bound, never listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# --- stream parsing ----------------------------------------------------------------------------


def _line(**event) -> bytes:
    return (json.dumps(event) + "\n").encode()


def test_read_stream_reports_progress_and_returns_the_result():
    preview = base64.b64encode(codec.encode(Image.new("RGB", (8, 8), "red"), "jpeg")).decode()
    lines = [
        _line(type="start", size=[48, 32], iterations=4, levels=1),
        b"\n",
        _line(type="progress", iteration=1, iterations=4, level=1, levels=1, elapsed_s=0.5,
              losses={"content": 1.0, "style": 2.0, "total": 3.0}, preview=preview),
        _line(type="progress", iteration=4, iterations=4, level=1, levels=1, elapsed_s=1.5, losses={}),
        _line(type="result", image="AAAA", iterations_done=4),
    ]
    seen: list[gatys.Progress] = []
    result = gatys.read_stream(lines, seen.append)
    assert result["iterations_done"] == 4
    assert [p.iteration for p in seen] == [1, 4]
    assert seen[0].fraction == 0.25 and seen[1].fraction == 1.0
    assert seen[0].preview is not None and seen[0].preview.size == (8, 8)
    assert seen[0].loss == 3.0 and seen[1].loss is None


def test_progress_fraction_counts_over_all_levels():
    """The server counts iterations over all coarse-to-fine levels (``optimize.transfer.Progress``)."""
    progress = gatys.Progress(iteration=15, iterations=20, level=2, levels=2, elapsed_s=1.0)
    assert progress.fraction == 0.75


@pytest.mark.parametrize(
    "lines, words",
    [([b"not json\n"], "not JSON"), ([_line(type="weird")], "unexpected line"),
     ([_line(type="start"), _line(type="progress", iteration=1)], "ended without a result")],
)
def test_read_stream_rejects_broken_streams(lines, words):
    with pytest.raises(client.ClientError, match=words):
        gatys.read_stream(lines)


# --- configuration -----------------------------------------------------------------------------


def test_streamlit_binds_to_loopback_by_default(tmp_path):
    """``streamlit run app/streamlit_app.py`` from any folder reads ``app/.streamlit/config.toml``.

    Checked with Streamlit's own config loader, set up as ``streamlit run`` sets it up, in a
    separate process (this one's Streamlit config belongs to ``AppTest``)."""
    code = ("import sys; from streamlit import config; config._main_script_path = sys.argv[1]; "
            "print(config.get_option('server.address'), config.get_option('browser.gatherUsageStats'))")
    env = {name: value for name, value in os.environ.items() if not name.startswith("STREAMLIT_")}
    result = subprocess.run([sys.executable, "-c", code, str(APP)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["127.0.0.1", "False"]


def test_server_url_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("STYLE_SERVER_URL", "http://example.invalid:9999/")
    assert client.server_url() == "http://example.invalid:9999"
    monkeypatch.delenv("STYLE_SERVER_URL")
    assert client.server_url() == client.DEFAULT_SERVER_URL
    with pytest.raises(client.ClientError, match="http://"):
        client.normalize_url("ftp://somewhere")


def test_styles_without_paintings_degrade_to_names(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLE_PAINTINGS_DIR", str(tmp_path / "absent"))
    assert styles.painting_path("wave") is None
    (tmp_path / "wave.jpg").write_bytes(b"not an image")
    assert styles.painting_path("wave", tmp_path) == tmp_path / "wave.jpg"
    assert styles.thumbnail(tmp_path / "wave.jpg") is None


def test_thumbnails_are_square_crops_of_the_paintings():
    """Paintings of any shape line up in the picker's row."""
    folder = SHARED / "images" / "styles"
    sizes = {styles.thumbnail(styles.painting_path(name, folder)).size for name in ("scream", "wave")}
    assert sizes == {(styles.THUMBNAIL_SIDE, styles.THUMBNAIL_SIDE)}


def test_extra_built_styles_are_offered(tmp_path):
    """A newly built style is offered; the derived files beside each style are not."""
    for name in ("candy.onnx", "candy.uint8.onnx", "candy.int8.onnx", "wave.onnx", "wave.fp16.onnx"):
        (tmp_path / name).write_bytes(b"")
    assert styles.available_styles(tmp_path) == [*DEFAULT_STYLES, "candy"]
    assert styles.available_styles(tmp_path / "absent") == list(DEFAULT_STYLES)
    assert not [name for name in styles.available_styles(ONNX_DIR) if "." in name]  # the real build folder


# --- fast path: local fallback and server ------------------------------------------------------


def test_unreachable_server_falls_back_to_local_onnx(photo, closed_url):
    outcome = client.stylize_fast(photo, "wave", client.FastOptions(max_side=64), closed_url, ONNX_DIR)
    assert outcome.backend == "local"
    assert "Stylized locally with" in outcome.note and closed_url in outcome.note
    assert max(outcome.before.size) == 64 and outcome.after.size == outcome.before.size
    assert codec.decode(outcome.png).size == outcome.after.size
    assert np.abs(_array(outcome.after) - _array(outcome.before)).mean() > 10  # it was painted


def test_local_fallback_applies_the_handlers_finishing(photo, closed_url):
    options = client.FastOptions(strength=0.0, max_side=64)
    outcome = client.stylize_fast(photo, "wave", options, closed_url, ONNX_DIR)
    assert np.array_equal(_array(outcome.after), _array(outcome.before))  # strength 0 = the photo
    colours = client.stylize_fast(photo, "wave", client.FastOptions(preserve_colors=True, max_side=64),
                                  closed_url, ONNX_DIR)
    painted = local.stylize(colours.before, "wave", client.FastOptions(max_side=64).params(), ONNX_DIR)
    expected = finish(painted, colours.before, {"strength": 1.0, "preserve_colors": True})
    assert np.array_equal(_array(colours.after), _array(expected))


def test_local_fallback_without_a_built_style_says_how_to_build(photo, closed_url, tmp_path):
    with pytest.raises(client.ClientError, match=r"not reachable.*scripts/build\.sh"):
        client.stylize_fast(photo, "wave", client.FastOptions(max_side=64), closed_url, tmp_path)


def test_local_fallback_runs_any_built_style(photo, closed_url, tmp_path):
    """A style trained here (``python -m train export``) is offered and runs like the defaults."""
    (tmp_path / "my_style.onnx").symlink_to(ONNX_DIR / "wave.onnx")
    assert styles.available_styles(tmp_path)[-1] == "my_style"
    outcome = client.stylize_fast(photo, "my_style", client.FastOptions(max_side=64), closed_url, tmp_path)
    reference = client.stylize_fast(photo, "wave", client.FastOptions(max_side=64), closed_url, ONNX_DIR)
    assert outcome.backend == "local" and np.array_equal(_array(outcome.after), _array(reference.after))


def test_unreadable_photo_is_refused_before_any_request(closed_url):
    with pytest.raises(client.ClientError, match="Cannot read that image"):
        client.stylize_fast(b"GIF89a broken", "wave", client.FastOptions(), closed_url, ONNX_DIR)


def test_server_path_matches_the_local_fallback(server, photo, closed_url):
    options = client.FastOptions(strength=0.7, preserve_colors=True, max_side=80)
    served = client.stylize_fast(photo, "udnie", options, server.inference_url, ONNX_DIR)
    assert served.backend == "server" and "TorchServe" in served.note
    fallback = client.stylize_fast(photo, "udnie", options, closed_url, ONNX_DIR)
    assert served.after.size == fallback.after.size == served.before.size
    assert np.abs(_array(served.after) - _array(fallback.after)).max() <= 2  # same graph, same finish


def test_style_missing_on_server_and_locally_reports_both(server, photo):
    with pytest.raises(client.ClientError, match=r"HTTP 404.*unknown style 'no_such_style'"):
        client.stylize_fast(photo, "no_such_style", client.FastOptions(max_side=64), server.inference_url, ONNX_DIR)


# --- server answers a real server rarely gives, from a stand-in ---------------------------------


class _StandIn(BaseHTTPRequestHandler):
    """Healthy ping; 400 for fast styles; 501 (no VGG weights) for gatys."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._send(200, {"status": "Healthy"})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/gatys"):
            self._send(501, {"code": 501, "type": "ModelUnavailable", "message": "put vgg19 weights in X"})
        else:
            self._send(400, {"code": 400, "type": "InputError", "message": "parameter 'strength' is off"})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def stand_in() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_client_error_from_the_server_is_shown_not_retried_locally(stand_in, photo):
    with pytest.raises(client.ClientError, match=r"refused the request \(HTTP 400\): parameter 'strength'"):
        client.stylize_fast(photo, "wave", client.FastOptions(max_side=64), stand_in, ONNX_DIR)


def test_gatys_without_weights_shows_the_servers_message(stand_in, photo, painting):
    with pytest.raises(client.ClientError, match=r"HTTP 501\): put vgg19 weights in X"):
        gatys.stylize(photo, painting, gatys.Options(iterations=1, max_side=32), stand_in)


# --- Gatys path ---------------------------------------------------------------------------------


def test_gatys_streams_progress_from_the_server(server, photo, painting):
    seen: list[gatys.Progress] = []
    options = gatys.Options(iterations=2, max_side=48, strength=0.5)
    outcome = gatys.stylize(photo, painting, options, server.inference_url, seen.append)
    assert seen and seen[-1].iteration == 2 and seen[-1].fraction == 1.0
    assert seen[-1].loss is not None and seen[-1].loss > 0
    assert outcome.backend == "server" and "2 iterations" in outcome.note
    assert max(outcome.after.size) == 48 and outcome.after.size == outcome.before.size


def test_gatys_has_no_local_fallback(photo, painting, closed_url):
    with pytest.raises(client.ClientError, match="needs the server"):
        gatys.stylize(photo, painting, gatys.Options(), closed_url)


# --- the page, through AppTest ------------------------------------------------------------------


def _page(monkeypatch, url: str) -> AppTest:
    monkeypatch.setenv("STYLE_SERVER_URL", url)
    return AppTest.from_file(str(APP), default_timeout=60).run()


def _stylize(at: AppTest, photo: bytes) -> AppTest:
    at.file_uploader(key="photo").upload("photo.jpg", photo, "image/jpeg")
    if at.radio(key="method").value == "Fast style":
        at.slider(key="fast_size").set_value(64)
    at.run()
    return at.button(key="stylize").click().run()


def test_page_falls_back_locally_and_says_so(monkeypatch, photo, closed_url):
    at = _page(monkeypatch, closed_url)
    assert "not reachable" in at.sidebar.warning[0].value
    assert at.button(key="stylize").disabled  # nothing to stylize yet
    at = _stylize(at, photo)
    assert not at.exception and not at.error
    assert "Stylized locally with" in at.info[0].value
    assert [image.captions for image in at.image][-2:] == [["Before"], ["After"]]
    assert at.download_button(key="download").label == "Download PNG"


def test_page_uses_the_server_when_it_answers(monkeypatch, server, photo):
    at = _page(monkeypatch, server.inference_url)
    assert at.sidebar.success[0].value == "TorchServe is reachable."
    at.radio(key="style").set_value("scream")
    at = _stylize(at, photo)
    assert not at.exception and not at.error
    assert "TorchServe" in at.main.success[0].value and "'scream'" in at.main.success[0].value


def test_page_thumbnails_degrade_to_names(monkeypatch, tmp_path, closed_url):
    monkeypatch.setenv("STYLE_PAINTINGS_DIR", str(tmp_path))
    at = _page(monkeypatch, closed_url)
    assert not at.image  # no paintings, no thumbnails
    assert [caption.value for caption in at.caption][:len(DEFAULT_STYLES)] == list(DEFAULT_STYLES)


def test_page_gatys_path(monkeypatch, server, photo, painting):
    """The real server describes its loss networks on the management API and names the one
    that painted, and its precision, on the stream."""
    monkeypatch.setenv("STYLE_MANAGEMENT_URL", server.management_url)
    at = _page(monkeypatch, server.inference_url)
    at.radio(key="method").set_value("Gatys (slow, iterative)").run()
    assert at.button(key="stylize").disabled  # a style image is needed too
    assert re.match(r"The server will paint with the loss network VGG1[69]\b.* in (fp32|bf16)\.$", at.info[0].value)
    at.file_uploader(key="style_image").upload("wave.jpg", painting, "image/jpeg")
    at.slider(key="iterations").set_value(2)
    at.slider(key="gatys_size").set_value(32)
    at = _stylize(at, photo)
    assert not at.exception and not at.error
    assert "Gatys by TorchServe" in at.main.success[0].value
    assert [image.captions for image in at.image][-2:] == [["Before"], ["After"]]
    captions = [caption.value for caption in at.caption]
    assert any(re.match(r"Painted by VGG1[69]\b.*, (fp32|bf16), 2 iterations in", text) for text in captions), captions
    assert not at.get("progress") and len(at.get("vega_lite_chart")) == 1


# --- the page's Gatys method against a stand-in server: what painted, live view, errors ----------

PAINTER = {"loss_network": "vgg16 (keras-imagenet)", "precision": "bf16"}
DESCRIBED = {"loss_networks": {"vgg19": {"available": False, "reason": "VGG19 weights not found at /nowhere"},
                               "vgg16": {"available": True, "label": "vgg16 (keras-imagenet)"}},
             "default_loss_network": "vgg16", "precision": "bf16"}
NONE_AVAILABLE = {"loss_networks": {
    "vgg19": {"available": False, "reason": "VGG19 weights not found at /a"},
    "vgg16": {"available": False, "reason": "VGG16 weights not found at /b ($TORCH_HOME, $HOME)"},
}, "default_loss_network": "vgg19", "precision": None}


def _b64(image: Image.Image, fmt: str) -> str:
    return base64.b64encode(codec.encode(image, fmt)).decode()


def _gatys_stream(painter: dict, result: bool = True) -> bytes:
    """Four iterations over two levels, a JPEG preview on the first three, then the result;
    ``painter`` (the loss network and precision) on the start and result lines."""
    preview = _b64(Image.new("RGB", (16, 12), (200, 80, 40)), "jpeg")
    lines = [_line(type="start", size=[32, 24], iterations=4, levels=2, budget_s=300.0, seed=0, **painter)]
    for iteration, (level, total) in enumerate([(1, 900.0), (1, 300.0), (2, 100.0), (2, 50.0)], start=1):
        extra = {"preview": preview, "preview_format": "jpeg"} if iteration < 4 else {}
        lines.append(_line(type="progress", iteration=iteration, iterations=4, level=level, levels=2,
                           elapsed_s=5.0 * iteration, losses={"content": total / 3, "total": total}, **extra))
    if result:
        lines.append(_line(type="result", iterations_done=4, stop_reason="iterations", seed=0, elapsed_s=20.0,
                           losses={"total": 50.0}, format="png", media_type="image/png",
                           image=_b64(Image.new("RGB", (32, 24), (20, 60, 140)), "png"), **painter))
    return b"".join(lines)


class _FakeGatys(BaseHTTPRequestHandler):
    """TorchServe's inference and management APIs on one port, as far as the page's Gatys method
    uses them: ``/ping``, ``GET /models/gatys?customized=true`` (``server.description``; None
    answers 404, as an older server's worker without it would not) and ``POST /predictions/gatys``
    (``server.answer``: status and body). Request bodies are kept in ``server.requests``."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/ping":
            self._send(200, "application/json", json.dumps({"status": "Healthy"}).encode())
        elif self.path == "/models/gatys?customized=true" and self.server.description is not None:
            listing = [{"modelName": "gatys", "customizedMetadata": json.dumps(self.server.description)}]
            self._send(200, "application/json", json.dumps(listing).encode())
        else:
            self._send(404, "application/json", json.dumps({"code": 404, "message": "not here"}).encode())

    def do_POST(self):  # noqa: N802
        self.server.requests.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        status, body = self.server.answer
        self._send(status, "application/x-ndjson" if status == 200 else "application/json", body)

    def _send(self, status: int, media_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_gatys(monkeypatch) -> Iterator:
    """Starts a ``_FakeGatys`` on a free loopback port and points the page's inference and
    management URLs at it; returns the server (``description``, ``answer``, ``requests``)."""
    servers: list[ThreadingHTTPServer] = []

    def start(description: dict | None, answer: tuple[int, bytes]) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FakeGatys)
        httpd.description, httpd.answer, httpd.requests = description, answer, []
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setenv("STYLE_SERVER_URL", url)
        monkeypatch.setenv("STYLE_MANAGEMENT_URL", url)
        return httpd

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _gatys_page(photo: bytes, painting: bytes) -> AppTest:
    """The page on the Gatys method with a photo and a style image uploaded, not yet clicked."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.radio(key="method").set_value("Gatys (slow, iterative)").run()
    at.file_uploader(key="photo").upload("photo.jpg", photo, "image/jpeg")
    at.file_uploader(key="style_image").upload("wave.jpg", painting, "image/jpeg")
    at.slider(key="iterations").set_value(4)
    at.slider(key="gatys_size").set_value(32)
    return at.run()


def _texts(at: AppTest) -> list[str]:
    """Every text on the page: markdown, captions, alerts, progress bars."""
    return ([element.value for element in [*at.markdown, *at.caption, *at.info, *at.warning, *at.error,
                                            *at.success]]
            + [bar.text for bar in at.get("progress")])


def test_read_stream_reports_the_start_line_with_what_paints():
    seen: list[gatys.Start] = []
    gatys.read_stream(_gatys_stream(PAINTER).splitlines(keepends=True), on_start=seen.append)
    assert seen == [gatys.Start(4, 2, 300.0, gatys.Painter("vgg16 (keras-imagenet)", "bf16"))]
    assert str(seen[0].painter) == "VGG16 (keras-imagenet), bf16"
    gatys.read_stream(_gatys_stream({}).splitlines(keepends=True), on_start=seen.append)
    assert seen[-1].painter == gatys.Painter() and str(seen[-1].painter) == ""  # an older server


def test_eta_is_the_pace_so_far_within_the_time_budget():
    progress = gatys.Progress(iteration=5, iterations=20, level=1, levels=1, elapsed_s=10.0)
    assert progress.eta_s() == 30.0
    assert progress.eta_s(budget_s=25.0) == 15.0
    assert gatys.Progress(iteration=0, iterations=20, level=1, levels=1, elapsed_s=0.0).eta_s() is None


@pytest.mark.parametrize("as_string", [True, False])
def test_description_names_the_network_a_request_will_use(as_string):
    metadata = json.dumps(DESCRIBED) if as_string else DESCRIBED
    found = gatys.parse_description([{"modelName": "gatys", "customizedMetadata": metadata}])
    assert found.chosen.name == "vgg16" and str(found.chosen) == "VGG16 (keras-imagenet)"
    assert found.precision == "bf16"
    assert gatys.parse_description([{"customizedMetadata": NONE_AVAILABLE}]).chosen is None
    assert found.override is None  # the server's default: nothing to ask for
    fallback = {**DESCRIBED, "default_loss_network": "vgg19"}  # the default cannot run: another can
    assert gatys.parse_description([{"customizedMetadata": fallback}]).override == "vgg16"


@pytest.mark.parametrize("listing", [None, [], {"models": []}, [{"modelName": "gatys"}],
                                     [{"customizedMetadata": "null"}], [{"customizedMetadata": "{not json"}],
                                     [{"customizedMetadata": {"runtime": "onnxruntime/fp32"}}],
                                     [{"customizedMetadata": {"loss_networks": ["vgg16"]}}]])
def test_a_description_without_loss_networks_is_no_description(listing):
    """Older servers, other models' shapes, garbage: the page then shows no note."""
    assert gatys.parse_description(listing) is None


def test_management_url_comes_from_the_environment_else_the_default_port(monkeypatch):
    monkeypatch.delenv("STYLE_MANAGEMENT_URL", raising=False)
    assert client.management_url("http://example.invalid:9080/") == "http://example.invalid:8081"
    monkeypatch.setenv("STYLE_MANAGEMENT_URL", "http://127.0.0.1:9081/")
    assert client.management_url("http://example.invalid:9080") == "http://127.0.0.1:9081"


def test_describe_of_an_unreachable_server_is_none(closed_url):
    assert gatys.describe(closed_url) is None


def _live_view_script() -> None:
    """A ``LiveView`` fed the stream in ``st.session_state["lines"]``, which stops before its
    result, and left open: the page while the request runs (AppTest sees a script's end only)."""
    import contextlib

    import streamlit as st

    from app import client, gatys, gatys_view

    view = gatys_view.LiveView()
    with contextlib.suppress(client.ClientError):  # "ended without a result"
        gatys.read_stream(st.session_state["lines"], view.progress, view.start)


def test_live_view_shows_progress_eta_preview_loss_curve_and_painter():
    at = AppTest.from_function(_live_view_script, default_timeout=60)
    at.session_state["lines"] = _gatys_stream(PAINTER, result=False).splitlines(keepends=True)[:-1]  # to iteration 3
    at.run()
    assert not at.exception
    [bar] = at.get("progress")
    assert bar.text == "Iteration 3/4 (level 2/2), 15.0 s, loss 100, about 5 s left"
    assert bar.value == 75
    assert [image.captions for image in at.image] == [["Preview, iteration 3"]]
    [chart] = at.get("vega_lite_chart")
    assert '"type": "log"' in chart.proto.spec or '"type":"log"' in chart.proto.spec
    assert [caption.value for caption in at.caption] == ["Painting with VGG16 (keras-imagenet), bf16"]


def test_page_gatys_names_the_network_before_and_after_and_keeps_the_loss_curve(fake_gatys, photo, painting):
    server = fake_gatys(DESCRIBED, (200, _gatys_stream(PAINTER)))
    at = _gatys_page(photo, painting)
    assert at.info[0].value == "The server will paint with the loss network VGG16 (keras-imagenet) in bf16."
    assert not at.button(key="stylize").disabled
    at = at.button(key="stylize").click().run()
    assert not at.exception and not at.error
    assert b'name="loss_network"' not in server.requests[-1]  # the server's default is the one named
    assert "Gatys by TorchServe" in at.main.success[0].value
    assert "Painted by VGG16 (keras-imagenet), bf16, 4 iterations in 20.0 s." in [c.value for c in at.caption]
    assert [image.captions for image in at.image][-2:] == [["Before"], ["After"]]
    assert len(at.get("vega_lite_chart")) == 1  # the loss curve stays with the result
    assert not at.get("progress") and not [image for image in at.image if "Preview" in image.captions[0]]


def test_page_gatys_older_server_still_works_and_names_less(fake_gatys, photo, painting):
    fake_gatys(None, (200, _gatys_stream({})))
    at = _gatys_page(photo, painting)
    assert not at.info and not at.warning  # no description: no note either way
    at = at.button(key="stylize").click().run()
    assert not at.exception and not at.error
    assert any(c.value.startswith("Painted by the server's default loss network") for c in at.caption)


def test_page_gatys_without_a_loss_network_says_so_and_disables_the_button(fake_gatys, photo, painting):
    fake_gatys(NONE_AVAILABLE, (501, b"{}"))
    at = _gatys_page(photo, painting)
    [warning] = at.warning
    assert "has no loss network" in warning.value and "STYLE_VGG16_WEIGHTS" in warning.value
    assert "VGG19 weights not found at /a" in warning.value
    assert r"VGG16 weights not found at /b (\$TORCH_HOME, \$HOME)" in warning.value  # no formula between the $s
    assert at.button(key="stylize").disabled
    assert not [text for text in _texts(at) if text.startswith("Upload")]  # the warning says why, not a hint


@pytest.mark.parametrize("answer, words", [
    ((501, json.dumps({"code": 501, "type": "ModelUnavailable", "message": "put vgg weights in X"}).encode()),
     r"HTTP 501\): put vgg weights in X"),
    ((200, _gatys_stream(PAINTER, result=False)), "ended without a result"),  # cut short mid-run
])
def test_page_gatys_error_leaves_no_progress_behind(fake_gatys, photo, painting, answer, words):
    fake_gatys(None, answer)
    at = _gatys_page(photo, painting).button(key="stylize").click().run()
    assert not at.exception
    [error] = at.error
    assert re.search(words, error.value)
    assert not at.get("progress") and not at.get("vega_lite_chart")
    assert not [image for image in at.image if "Preview" in image.captions[0]]
    assert not [text for text in _texts(at) if "Waiting" in text or text.startswith("Painting with")]


# --- video ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from tests.support.clips import make_clip

    return make_clip(tmp_path_factory.mktemp("app-clip") / "pan.mp4", 64, 48, 6)


def _video_frames(data: bytes) -> tuple[int, bool]:
    import av

    with av.open(io.BytesIO(data)) as container:
        return len(list(container.decode(video=0))), bool(container.streams.audio)


def test_video_falls_back_to_local_painting_with_frames_and_sound(clip, closed_url):
    outcome = client.stylize_video(clip.data, "udnie", 0.5, closed_url, ONNX_DIR)
    assert outcome.backend == "local" and "Painted locally with" in outcome.note and "not reachable" in outcome.note
    assert outcome.fmt == "mp4" and outcome.media_type == "video/mp4"
    assert _video_frames(outcome.data) == (clip.frames, True)


def test_video_refused_by_the_server_shows_its_reason_not_retried_locally(clip, stand_in):
    with pytest.raises(client.ClientError, match=r"refused the clip \(HTTP 400\)"):
        client.stylize_video(clip.data, "wave", 0.5, stand_in, ONNX_DIR)


def test_unreadable_clip_is_refused_with_the_reason(closed_url):
    with pytest.raises(client.ClientError, match="Cannot read that clip"):
        client.stylize_video(b"\x00\x00\x00\x18ftypmp42 but nothing else", "udnie", 0.5, closed_url, ONNX_DIR)


def test_page_video_mode_plays_the_painted_clip(monkeypatch, clip, closed_url):
    at = _page(monkeypatch, closed_url)
    at.radio(key="medium").set_value("A video clip").run()
    assert at.button(key="paint_clip").disabled
    at.file_uploader(key="clip").upload("pan.mp4", clip.data, "video/mp4")
    at.run()
    at = at.button(key="paint_clip").click().run()
    assert not at.exception and not at.error
    assert "Painted locally with" in at.info[0].value
    assert len(at.get("video")) == 1
    assert at.download_button(key="download_clip").label == "Download MP4"
