"""Video through the serving surfaces: the fast-style handlers, TorchServe for real, KServe.

In-process first (a TorchServe ``Context`` around ``FastStyleHandler``, as
tests/test_fast_handler.py does): a clip in every way a client sends one comes back the same
clip painted (its frames, timestamps and sound), streamed progress reaches the client, every
bad clip is a 4xx JSON naming the problem with no file left behind, and admission control
answers 413 (too long for any request: the CLI line) or 503 (no room now). Then the same
through a real TorchServe on loopback and the CLI, which must write the very bytes the
server answers for the same clip and settings. (KServe's predictor: tests/test_kserve.py,
against a real one: kserve's protocol module cannot share a process with Triton's gRPC
client, which that file's tests import.)
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import requests
from ts.context import Context, RequestProcessor
from ts.torch_handler.request_envelope.kservev2 import KServev2Envelope

from build_tools.archive import served_core_modules
from core.admission import Ledger, Reservation
from core.paths import ROOT
from handlers.fast_style import FastStyleHandler
from server.launch import Server, free_ports
from tests.support import clips

from .conftest import ONNX_DIR, SHARED, ts_metrics

MULTIPART = "multipart/form-data; boundary=xyz"
FRAMES, WIDTH, HEIGHT = 12, 64, 48


# -- what a painted clip must be -----------------------------------------------------------


def frame_times(data: bytes) -> list[float]:
    """The presentation time of every decoded frame, in seconds."""
    with av.open(io.BytesIO(data)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


def has_audio(data: bytes) -> bool:
    with av.open(io.BytesIO(data)) as container:
        return bool(container.streams.audio)


def first_frame(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def assert_same_clip_painted(clip: clips.Clip, data: bytes) -> None:
    """Every frame at its own time, the size and the sound kept, the pixels painted, no metadata."""
    assert frame_times(data) == pytest.approx(list(clip.times), abs=1e-3)
    assert first_frame(data).shape == (clip.height, clip.width, 3)
    assert has_audio(data)
    source = clips.pan_frames(clip.width, clip.height, 1)[0].astype(np.float32)
    assert np.abs(first_frame(data).astype(np.float32) - source).mean() > 15, "the frames are not painted"
    assert clips.PLANTED.encode() not in data, "the input's metadata is in the output"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> clips.Clip:
    return clips.make_clip(tmp_path_factory.mktemp("clips") / "pan.mp4", WIDTH, HEIGHT, FRAMES)


@pytest.fixture(scope="module")
def bad_clips(clip, tmp_path_factory) -> dict[str, bytes]:
    """Each kind of file the video path must refuse, by name."""
    folder = tmp_path_factory.mktemp("bad")
    unsupported = clips.make_clip(folder / "ffv1.mkv", 32, 32, 2, audio=False, video_codec="ffv1")
    return {
        "truncated": clips.truncated(clip, folder / "truncated.mp4").read_bytes(),
        "corrupt": clips.corrupt(clip, folder / "corrupt.mp4").read_bytes(),
        "audio_only": clips.audio_only(folder / "audio.mp4").read_bytes(),
        "zero_frames": clips.zero_frames(folder / "empty.mp4").read_bytes(),
        "unsupported_codec": unsupported.data,
        "text": b"this is not a video at all",
    }


# -- in process: the handler in a TorchServe context ---------------------------------------


class FakeSocket:
    """Where TorchServe's streamed chunks go: kept for the test to read."""

    def __init__(self):
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


@pytest.fixture(scope="module")
def private_temp(tmp_path_factory):
    """A temp folder of our own, so 'nothing left behind' is checked where nobody else writes."""
    folder = tmp_path_factory.mktemp("worker-tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(folder))
        yield folder


@pytest.fixture(scope="module")
def handler(built_store, private_temp, tmp_path_factory) -> FastStyleHandler:
    """``udnie`` with its own admission ledger and no waiting for room (an overload answers at once)."""
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STYLE_ADMISSION_LEDGER", str(ledger))
        patch.setenv("STYLE_ADMISSION_WAIT_S", "0")
        manifest = {"model": {"modelName": "udnie", "serializedFile": "udnie.onnx"}}
        context = Context("udnie", str(ONNX_DIR), manifest, 1, None, "0.12.0", metrics=ts_metrics())
        context.cl_socket = FakeSocket()
        handler = FastStyleHandler()
        handler.initialize(context)
    return handler


def call(handler: FastStyleHandler, row: dict, content_type: str, **headers: str):
    """One request through ``handle``: (status, media type, headers, body, streamed chunks)."""
    context = handler.context
    context.request_ids = {0: "request-0"}
    context.request_processor = [RequestProcessor({"Content-Type": content_type, **headers})]
    context.cl_socket.sent.clear()
    [body] = handler.handle([row], context)
    status = context.get_response_status(0)[0] or 200
    return (status, context.get_response_content_type(0), context.get_response_headers(0), body,
            list(context.cl_socket.sent))


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


def test_raw_body_comes_back_painted_with_its_timing_and_sound(handler, clip, private_temp):
    status, media, headers, body, _ = call(handler, {"body": bytearray(clip.data)}, "video/mp4")
    assert status == 200 and media == "video/mp4", body
    assert_same_clip_painted(clip, body)
    assert headers["X-Style-Frames"] == str(FRAMES) and Fraction(headers["X-Style-Fps"]) == clip.fps
    assert headers["X-Style-Audio"] == "copied" and headers["X-Style-Pixel-Format"]
    assert headers["X-Style-Runtime"] == handler.service.runtime
    assert leftovers(private_temp) == [], "the upload or its painting was left behind"


def test_multipart_field_json_base64_and_format_agree(handler, clip):
    """A ``video`` file field, JSON base64 and a sniffed body without a video type: the same bytes."""
    raw = call(handler, {"body": bytearray(clip.data)}, "video/mp4")[3]
    field = call(handler, {"video": bytearray(clip.data)}, MULTIPART)[3]
    as_json = call(handler, {"body": {"image": base64.b64encode(clip.data).decode()}}, "application/json")[3]
    sniffed = call(handler, {"body": bytearray(clip.data)}, "application/octet-stream")[3]
    assert raw == field == as_json == sniffed
    status, media, _, webm, _ = call(handler, {"video": bytearray(clip.data), "format": b"webm"}, MULTIPART)
    assert status == 200 and media == "video/webm"
    with av.open(io.BytesIO(webm)) as container:
        assert container.streams.video[0].codec_context.name in ("vp9", "libvpx-vp9")
        assert len(list(container.decode(video=0))) == FRAMES


def test_stream_sends_progress_then_the_clip(handler, clip):
    status, media, _, final, chunks = call(handler, {"video": bytearray(clip.data), "stream": b"true"}, MULTIPART)
    assert status == 200 and media == "application/x-ndjson"
    lines = [json.loads(chunk[chunk.index(b"{"):chunk.rindex(b"}") + 1]) for chunk in chunks]
    assert lines[0] == {"type": "start", "frames": FRAMES, "width": WIDTH, "height": HEIGHT, "fps": str(clip.fps),
                        "audio": True, "format": "mp4"}
    progress = [line for line in lines if line["type"] == "progress"]
    assert progress[0]["frames_done"] >= 1 and progress[-1]["frames_done"] == FRAMES
    assert all(line["frames_total"] == FRAMES and "eta_s" in line for line in progress)
    result = json.loads(final)
    assert result["type"] == "result" and result["media_type"] == "video/mp4" and result["frames"] == str(FRAMES)
    assert_same_clip_painted(clip, base64.b64decode(result["video"]))


@pytest.mark.parametrize("name, status, words", [
    ("truncated", 400, "truncated"),
    ("corrupt", 400, "corrupt"),
    ("audio_only", 415, "no video stream"),
    ("zero_frames", None, "no video stream|no frames"),  # a muxer may drop the empty stream
    ("unsupported_codec", 415, "unsupported video codec"),
    ("text", 415, "not a video container"),
])  # fmt: skip
def test_bad_clips_are_4xx_json_naming_the_problem_and_leave_nothing(handler, bad_clips, private_temp, name,
                                                                     status, words):
    answered, media, _, body, _ = call(handler, {"body": bytearray(bad_clips[name])}, "video/mp4")
    assert media == "application/json" and 400 <= answered < 500 and answered == (status or answered), body
    message = json.loads(body)
    assert message["code"] == answered and re.search(words, message["message"]), message
    assert leftovers(private_temp) == []


@pytest.mark.parametrize("params, words", [
    ({"format": b"gif"}, "unsupported output format"),
    ({"max_side": b"32"}, "max_side"),
    ({"stabilize": b"1.5"}, "stabilize"),
])  # fmt: skip
def test_bad_video_parameters_are_400(handler, clip, private_temp, params, words):
    status, _, _, body, _ = call(handler, {"video": bytearray(clip.data), **params}, MULTIPART)
    assert status == 400 and words in json.loads(body)["message"]
    assert leftovers(private_temp) == []


def test_stabilize_on_a_photo_is_refused(handler, small_photo):
    buffer = io.BytesIO()
    small_photo.save(buffer, "PNG")
    status, _, _, body, _ = call(handler, {"image": bytearray(buffer.getvalue()), "stabilize": b"0.5"}, MULTIPART)
    assert status == 400 and "applies to videos" in json.loads(body)["message"]


def test_a_photo_streams_too_one_result_line(handler, small_photo):
    """``stream=true`` on a photo: the same NDJSON result line a clip ends with, the image in it."""
    buffer = io.BytesIO()
    small_photo.save(buffer, "PNG")
    status, media, _, final, _ = call(handler, {"image": bytearray(buffer.getvalue()), "stream": b"true"}, MULTIPART)
    result = json.loads(final)
    assert status == 200 and media == "application/x-ndjson" and result["type"] == "result"
    assert result["media_type"] == "image/png" and result["runtime"] == handler.service.runtime
    assert base64.b64decode(result["image"]).startswith(b"\x89PNG")


def test_a_clip_too_long_for_any_request_is_413_naming_the_cli(handler, clip, private_temp, monkeypatch):
    """Charged frames x pixels: with a (pretend) short enough response timeout no wait could fit it."""
    monkeypatch.setattr(handler.service.admission, "budget_s", 0.01)
    status, media, _, body, _ = call(handler, {"body": bytearray(clip.data)}, "video/mp4")
    message = json.loads(body)
    assert status == 413 and media == "application/json" and message["code"] == 413
    assert f"{FRAMES} frames of {WIDTH}x{HEIGHT}" in message["message"]
    assert "python -m stylize clip.mp4 -o out/ --style udnie" in message["message"]
    assert leftovers(private_temp) == []


def test_no_room_now_is_503_with_retry_after(handler, clip, private_temp):
    """Every core held by another request in the ledger: the clip is refused at once, not queued."""
    admission = handler.service.admission
    ledger = Ledger(admission.settings.ledger_path())
    holder = Reservation(model="other", pixels=1, work=0.0, cores=admission.settings.cpus, bytes=0, threads=1,
                         budget_s=60, heavy=True, pid_started=admission._pid_started)
    ledger.try_reserve(holder, admission.settings)
    try:
        status, _, headers, body, _ = call(handler, {"body": bytearray(clip.data)}, "video/mp4")
    finally:
        ledger.release(holder.key)
    message = json.loads(body)
    assert status == 503 and message["type"] == "Overloaded" and int(headers["Retry-After"]) >= 1
    assert leftovers(private_temp) == []


def test_kserve_v2_envelope_carries_a_clip(handler, clip):
    """Behind KServe (service_envelope=kservev2): the clip as the BYTES ``image`` input."""
    request = {"id": "v", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                      "data": [base64.b64encode(clip.data).decode()]}]}
    context = handler.context
    context.request_ids = {0: "request-0"}
    context.request_processor = [RequestProcessor({"body": {"content-type": "application/json"}})]
    [response] = KServev2Envelope(handler.handle).handle([{"body": json.dumps(request).encode()}], context)
    [output] = response["outputs"]
    assert output["datatype"] == "BYTES"
    assert_same_clip_painted(clip, base64.b64decode(output["data"][0]))


# -- a real TorchServe ------------------------------------------------------------------------

#: The served models this file talks to, one per family, and their handlers.
SERVED = {"udnie": ROOT / "handlers" / "fast_style.py", "multistyle": ROOT / "handlers" / "multistyle.py",
          "arbitrary": ROOT / "handlers" / "arbitrary.py"}


def carries_this_code(archive: Path, handler: Path) -> bool:
    """Whether the archive holds this checkout's handler and ``core`` modules, byte for byte."""
    with zipfile.ZipFile(archive) as mar:
        names = set(mar.namelist())
        wanted = {handler.name: handler, **{f"core/{m.name}": m for m in served_core_modules([handler])}}
        return all(name in names and mar.read(name) == path.read_bytes() for name, path in wanted.items())


def repack(archive: Path, handler: Path, target: Path) -> None:
    """``archive`` with this checkout's handler and ``core`` modules (model files, config and
    manifest as built), so the served code is the code under test."""
    with zipfile.ZipFile(archive) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            if not (item.filename.startswith("core/") or item.filename == handler.name):
                new.writestr(item, old.read(item))
        for module in served_core_modules([handler]):
            new.write(module, f"core/{module.name}")
        new.write(handler, handler.name)


@pytest.fixture(scope="module")
def torchserve(request, built_store, tmp_path_factory):
    """The session's TorchServe when its archives carry this code (scripts/test.sh builds them
    first); else one of our own serving the three families repacked with it."""
    if all(carries_this_code(built_store / f"{name}.mar", handler) for name, handler in SERVED.items()):
        yield request.getfixturevalue("server")
        return
    store = tmp_path_factory.mktemp("video-store")
    for name, handler in SERVED.items():
        repack(built_store / f"{name}.mar", handler, store / f"{name}.mar")
    instance = Server(tmp_path_factory.mktemp("video-torchserve"), store, free_ports())
    instance.start()
    try:
        instance.wait_ready(timeout=600)
        yield instance
    finally:
        instance.stop()


def post(server: Server, model: str, **kwargs) -> requests.Response:
    return requests.post(f"{server.inference_url}/predictions/{model}", timeout=240, **kwargs)


def test_served_clip_every_family(torchserve, clip):
    """curl --data-binary with a video type, a multipart ``video`` field, and content + style."""
    raw = post(torchserve, "udnie", data=clip.data, headers={"Content-Type": "video/mp4"})
    assert raw.status_code == 200 and raw.headers["Content-Type"] == "video/mp4", raw.text[:300]
    assert_same_clip_painted(clip, raw.content)
    assert raw.headers["X-Style-Frames"] == str(FRAMES) and raw.headers["X-Style-Audio"] == "copied"
    blend = post(torchserve, "multistyle", files={"video": ("pan.mp4", clip.data, "video/mp4")},
                 data={"style": "3:0.5,12:0.5", "stabilize": "0"})
    assert blend.status_code == 200 and blend.headers["X-Style-Stabilize"] == "0", blend.text[:300]
    assert blend.headers["X-Style-Blend"] and blend.headers["Content-Type"] == "video/mp4"
    assert_same_clip_painted(clip, blend.content)
    painting = (SHARED / "images" / "styles" / "wave.jpg").read_bytes()
    own = post(torchserve, "arbitrary", files={"content": ("pan.mp4", clip.data, "video/mp4"),
                                               "style": ("wave.jpg", painting, "image/jpeg")},
               data={"format": "mov"})
    assert own.status_code == 200 and own.headers["Content-Type"] == "video/quicktime", own.text[:300]
    assert_same_clip_painted(clip, own.content)


def test_served_stream_is_progress_then_the_clip(torchserve, clip):
    response = post(torchserve, "udnie", data=clip.data, headers={"Content-Type": "video/mp4", "X-Stream": "true"},
                    stream=True)
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[0]["type"] == "start" and lines[0]["frames"] == FRAMES
    progress = [line for line in lines if line["type"] == "progress"]
    assert progress and progress[-1]["frames_done"] == FRAMES
    assert lines[-1]["type"] == "result" and lines[-1]["media_type"] == "video/mp4"
    assert_same_clip_painted(clip, base64.b64decode(lines[-1]["video"]))


def test_served_bad_clip_is_4xx_json_and_the_worker_lives(torchserve, clip, bad_clips):
    for name in ("truncated", "audio_only", "text"):
        response = post(torchserve, "udnie", data=bad_clips[name], headers={"Content-Type": "video/mp4"})
        assert 400 <= response.status_code < 500 and response.json()["code"] == response.status_code, name
        assert response.json()["message"], name
    worker_tmp = torchserve.runtime_dir / "tmp"
    assert not list(worker_tmp.glob("style-video-*")), "an upload was left in the worker's temp folder"
    assert post(torchserve, "udnie", data=clip.data, headers={"Content-Type": "video/mp4"}).status_code == 200


def test_cli_and_server_write_the_same_bytes(torchserve, clip, tmp_path):
    """The same clip and settings: the CLI's file is the server's answer, byte for byte (both
    open the engine the session's measured choice names: $STYLE_RUNTIME_DIR)."""
    served = post(torchserve, "udnie", data=clip.data, headers={"Content-Type": "video/mp4", "X-Stabilize": "0.5"})
    assert served.status_code == 200, served.text[:300]
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "stylize", str(clip.path), "-o", str(out), "--style", "udnie",
                           "--stabilize", "0.5", "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    [written] = out.iterdir()
    assert written.suffix == ".mp4" and written.read_bytes() == served.content


def readme_video_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- video-curl[^>]*-->\s*```bash\n(.*?)```", readme, re.DOTALL)
    assert match, "README lost its video example (marked <!-- video-curl -->)"
    return match.group(1)


def test_readme_video_example_runs_verbatim(torchserve, clip, tmp_path):
    """The README's curl and CLI lines, as written, in a folder holding ``clip.mp4``: the
    server's answer and the CLI's file are one and the same painted clip."""
    (tmp_path / "clip.mp4").write_bytes(clip.data)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    env = {**os.environ, "TS": torchserve.inference_url, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_video_example()], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    served = (tmp_path / "painted.mp4").read_bytes()
    assert_same_clip_painted(clip, served)
    [written] = (tmp_path / "painted").iterdir()
    assert written.read_bytes() == served
