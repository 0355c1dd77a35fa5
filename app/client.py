"""Talking to TorchServe for the page, and the fast path with its local ONNX Runtime fallback.

Kept free of Streamlit so the unit tests and ``AppTest`` exercise the same code, and so the
page stays a layout. HTTP goes through the standard library: the app needs two request
shapes (a multipart POST, streamed lines), not another dependency.
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

from PIL import Image

from app import local
from core import codec, settings, video
from core.errors import InputError
from core.settings import RESPONSE_TIMEOUT_S
from core.style_options import PARAMS, VIDEO_PARAMS

DEFAULT_SERVER_URL = settings.default("STYLE_SERVER_URL")
#: TorchServe's default management port, assumed on the inference URL's host unless
#: ``$STYLE_MANAGEMENT_URL`` says otherwise.
DEFAULT_MANAGEMENT_PORT = 8081
#: The environment variables holding TorchServe's inference and management keys (token auth).
INFERENCE_TOKEN, MANAGEMENT_TOKEN = "STYLE_SERVER_TOKEN", "STYLE_MANAGEMENT_TOKEN"
#: How long to wait for ``/ping``: a missing server must not stall the page.
PING_TIMEOUT_S = 2.0
#: A fast style answers in seconds; this only bounds a server that hangs.
FAST_TIMEOUT_S = 120.0
#: A clip may take the server its whole response timeout; a little more covers the transfer.
VIDEO_TIMEOUT_S = RESPONSE_TIMEOUT_S + 30.0
#: Server answers that mean "this server cannot do it" rather than "your request is wrong":
#: the model is not registered (404) or the server failed (5xx). Those fall back to local.
_SERVER_SIDE = (404, 500, 502, 503, 504, 507)

#: Multipart file parts: field name -> (file name, bytes, media type).
Files = dict[str, tuple[str, bytes, str]]


class ClientError(Exception):
    """Something the user must fix or know (bad image, 4xx from the server, no Gatys server);
    the message is shown as is."""


@dataclass(frozen=True)
class FastOptions:
    """The fast path's knobs, validated with the handler's own ``PARAMS`` bounds."""

    strength: float = 1.0
    preserve_colors: bool = False
    max_side: int | None = 512

    def params(self) -> dict[str, Any]:
        """The ``finish``/handler parameter dict; out-of-range values raise ``InputError``."""
        return {
            "strength": PARAMS["strength"].parse("strength", self.strength),
            "preserve_colors": PARAMS["preserve_colors"].parse("preserve_colors", self.preserve_colors),
            "max_side": None if self.max_side is None else PARAMS["max_side"].parse("max_side", self.max_side),
        }


@dataclass(frozen=True)
class Outcome:
    """The before/after pair, the PNG to download, and which backend produced it."""

    before: Image.Image
    after: Image.Image
    png: bytes
    backend: str  # "server" or "local"
    note: str
    #: A line under the images (the Gatys path: which loss network and precision painted it).
    caption: str = ""
    #: The Gatys path's (iteration, total loss) points as they were streamed.
    loss_curve: tuple[tuple[int, float], ...] = ()


def server_url() -> str:
    """``$STYLE_SERVER_URL`` (the TorchServe inference address), else the local default."""
    return normalize_url(settings.env("STYLE_SERVER_URL"))


def management_url(inference_url: str) -> str:
    """``$STYLE_MANAGEMENT_URL`` (the TorchServe management address), else the inference
    URL's host on TorchServe's default management port."""
    explicit = settings.env("STYLE_MANAGEMENT_URL")
    if explicit:
        return normalize_url(explicit)
    parts = urllib.parse.urlsplit(normalize_url(inference_url))
    host = parts.hostname or "127.0.0.1"
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{DEFAULT_MANAGEMENT_PORT}"


def normalize_url(url: str) -> str:
    """Trailing slashes dropped, so ``f"{url}/ping"`` is right; anything but http(s) refused."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"server URL must start with http:// or https://, got {url!r}")
    return url


def _headers(content_type: str | None = None, token_variable: str = INFERENCE_TOKEN) -> dict[str, str]:
    """``$STYLE_SERVER_TOKEN`` (``$STYLE_MANAGEMENT_TOKEN`` for the management API), if set,
    is TorchServe's key for that API when token authorization is on."""
    headers = {"Accept": "image/png, application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    token = settings.env(token_variable)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def why(error: OSError) -> object:
    """The useful part of a connection error (``URLError.reason``, e.g. "Connection refused")."""
    return getattr(error, "reason", error)


def ping(url: str, timeout: float = PING_TIMEOUT_S) -> str | None:
    """None when TorchServe at ``url`` reports healthy, else why not (for the page to say)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/ping", headers=_headers()), timeout=timeout) as r:
            status = json.loads(r.read() or b"{}").get("status", "")
            return None if status == "Healthy" else f"reports status {status!r}"
    except urllib.error.HTTPError as error:
        return f"answered /ping with HTTP {error.code}"
    except OSError as error:  # URLError, refused, timed out
        return f"is not reachable ({why(error)})"
    except ValueError:
        return "answered /ping with something that is not TorchServe's JSON"


def get_management(url: str, timeout: float = PING_TIMEOUT_S) -> Any:
    """A GET on TorchServe's management API, its JSON decoded; raises ``OSError`` (unreachable,
    HTTP errors) or ``ValueError`` (not JSON)."""
    request = urllib.request.Request(url, headers=_headers(token_variable=MANAGEMENT_TOKEN))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def multipart(fields: dict[str, str], files: Files) -> tuple[bytes, str]:
    """Encodes a ``multipart/form-data`` body; returns it and its Content-Type header."""
    boundary = f"----style-app-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, media_type) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {media_type}\r\n\r\n")
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def post(url: str, fields: dict[str, str], files: Files, timeout: float) -> HTTPResponse:
    """A multipart POST; the open response is returned so streamed answers can be read line by line."""
    body, content_type = multipart(fields, files)
    request = urllib.request.Request(url, data=body, headers=_headers(content_type), method="POST")
    return urllib.request.urlopen(request, timeout=timeout)


def error_message(error: urllib.error.HTTPError) -> str:
    """The ``message`` of the server's JSON error body, else its text (shortened)."""
    try:
        body = error.read()
    except OSError:
        body = b""
    try:
        return str(json.loads(body)["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace").strip()[:300] or f"HTTP {error.code}"


def decode_photo(data: bytes, max_side: int | None) -> Image.Image:
    """The project's codec (EXIF, transparency, size limits), its refusal shown to the user."""
    try:
        return codec.decode(data, max_side=max_side)
    except codec.InputError as error:
        raise ClientError(f"Cannot read that image: {error}") from None


def _fast_fields(params: dict[str, Any]) -> dict[str, str]:
    return {"format": "png", "strength": str(params["strength"]),
            "preserve_colors": "true" if params["preserve_colors"] else "false"}


def server_or_local(model: str, fields: dict[str, str], files: Files, url: str,
                    local: Callable[[], tuple[bytes, str]], timeout: float = FAST_TIMEOUT_S,
                    verb: str = "Stylized", what: str = "request") -> tuple[bytes, str, str]:
    """TorchServe's answer from ``/predictions/<model>``, or, when the server is unreachable or
    cannot serve the model, ``local()``'s (its bytes and the runtime that made them): the
    bytes, ``"server"`` or ``"local"``, and the note saying which and why. A request the server
    refuses (a 4xx: the ``what`` was bad) is a ``ClientError`` with its reason, not retried here."""
    url = normalize_url(url)
    reason = ping(url)
    if reason is None:
        try:
            with post(f"{url}/predictions/{model}", fields, files, timeout) as response:
                return response.read(), "server", f"{verb} by TorchServe at {url} (model '{model}')."
        except urllib.error.HTTPError as error:
            message = error_message(error)
            if error.code not in _SERVER_SIDE:
                raise ClientError(f"The server refused the {what} (HTTP {error.code}): {message}") from None
            reason = f"could not serve '{model}' (HTTP {error.code}: {message})"
        except OSError as error:
            reason = f"failed during the request ({why(error)})"
    try:
        data, runtime = local()
    except (OSError, RuntimeError, ValueError) as error:  # a missing build (ModelError), a bad file
        raise ClientError(f"The server at {url} {reason}, and the local fallback cannot run: {error}") from None
    return data, "local", f"{verb} locally with {runtime} ({model}): the server at {url} {reason}."


def stylize_fast(photo_bytes: bytes, style: str, options: FastOptions, url: str, onnx_dir: Path,
                 timeout: float = FAST_TIMEOUT_S) -> Outcome:
    """Stylizes with TorchServe's ``/predictions/<style>``; when the server is unreachable or
    cannot serve the style, with the local ONNX file instead. ``Outcome.note`` says which.

    The photo is decoded and downscaled here, then sent as PNG (lossless), so the server
    works on exactly the "before" image the page shows.
    """
    params = options.params()
    photo = decode_photo(photo_bytes, params["max_side"])

    def here() -> tuple[bytes, str]:
        painted = local.stylize(photo, style, params, onnx_dir)
        return codec.encode(painted, "png"), local.stylizer(style, onnx_dir).runtime

    data, backend, note = server_or_local(style, _fast_fields(params),
                                          {"image": ("photo.png", codec.encode(photo, "png"), "image/png")},
                                          url, here, timeout)
    return Outcome(photo, codec.decode(data), data, backend, note)


@dataclass(frozen=True)
class VideoOutcome:
    """A painted clip, its media type and file suffix, and which backend painted it."""

    data: bytes
    fmt: str  # a ``core.video.VIDEO_FORMATS`` kind
    backend: str  # "server" or "local"
    note: str

    @property
    def media_type(self) -> str:
        return video.VIDEO_FORMATS[self.fmt]


def clip_format(clip: bytes) -> str:
    """The output kind for an uploaded clip: its own when the servers write it, else mp4."""
    kind = video.sniff(clip[:64])
    return kind if kind in video.VIDEO_FORMATS else "mp4"


def stylize_video(clip: bytes, style: str, stabilize: float, url: str, onnx_dir: Path,
                  timeout: float = VIDEO_TIMEOUT_S) -> VideoOutcome:
    """Paints a clip with TorchServe's ``/predictions/<style>``; when the server is unreachable
    or cannot serve the style, here with the same stylizer and ``core.video`` (the CLI's
    path). A clip the server refuses (unreadable, too long) is a ``ClientError`` with its reason."""
    try:
        stabilize = VIDEO_PARAMS["stabilize"].parse("stabilize", stabilize)
    except InputError as error:
        raise ClientError(str(error)) from None
    fmt = clip_format(clip)

    def here() -> tuple[bytes, str]:
        try:
            return paint_video_locally(clip, fmt, style, stabilize, onnx_dir), local.stylizer(style, onnx_dir).runtime
        except InputError as error:  # the clip itself: no fallback can help
            raise ClientError(f"Cannot read that clip: {error}") from None

    data, backend, note = server_or_local(
        style, {"format": fmt, "stabilize": str(stabilize)},
        {"video": (f"clip.{fmt}", clip, video.VIDEO_FORMATS[fmt])}, url, here, timeout, verb="Painted", what="clip")
    return VideoOutcome(data, fmt, backend, note)


def paint_video_locally(clip: bytes, fmt: str, style: str, stabilize: float, onnx_dir: Path) -> bytes:
    """The server's steps in this process: the clip probed, then painted by the style's
    stylizer frame by frame with the default finishing; the temp files go whatever happens."""
    stylizer = local.stylizer(style, onnx_dir)
    defaults = {name: spec.default for name, spec in PARAMS.items()}
    with tempfile.TemporaryDirectory(prefix="style-app-video-") as folder:
        source, target = Path(folder) / "upload", Path(folder) / f"painted.{fmt}"
        source.write_bytes(clip)
        video.probe(source)
        video.paint_video(source, target, lambda frames: stylizer.paint(frames, [defaults] * len(frames)),
                          video.VideoOptions(output=fmt, stabilize=stabilize))
        return target.read_bytes()
