"""The Gatys path: the server's streamed optimization, read line by line for live progress.

There is no local fallback: it needs the VGG19 weights and minutes of CPU per image, which
is what the server is for. Strength and colours are applied to the result with the fast
path's ``finish``, so the two paths' options mean the same thing.
"""

from __future__ import annotations

import base64
import json
import urllib.error
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from app.client import ClientError, FastOptions, Outcome, decode_photo, error_message, normalize_url, ping, post, why
from core import codec
from core.style_options import finish

#: The gatys model's response timeout is 300 s (its own time budget stops it before that).
TIMEOUT_S = 330.0


@dataclass(frozen=True)
class Options:
    """What the page asks for; strength and colours are applied to the result here."""

    iterations: int = 20
    max_side: int = 256
    strength: float = 1.0
    preserve_colors: bool = False


@dataclass(frozen=True)
class Progress:
    """One ``progress`` line of the stream (``optimize.serving.progress_message``).

    ``iteration`` counts over all coarse-to-fine levels and ``iterations`` is the plan over
    all of them, as ``optimize.transfer.Progress`` reports them."""

    iteration: int
    iterations: int
    level: int
    levels: int
    elapsed_s: float
    losses: dict[str, float] = field(default_factory=dict)
    preview: Image.Image | None = None

    @property
    def fraction(self) -> float:
        """Overall completion, 0..1."""
        return min(1.0, max(0.0, self.iteration / max(1, self.iterations)))

    @property
    def loss(self) -> float | None:
        """The weighted total the optimizer minimizes (the other entries are its terms)."""
        return self.losses.get("total")


def parse_event(line: bytes | str) -> dict[str, Any]:
    """One NDJSON line of the stream, checked for the ``type`` every line carries."""
    try:
        event = json.loads(line)
    except ValueError:
        raise ClientError(f"the server's progress stream has a line that is not JSON: {line[:80]!r}") from None
    if not isinstance(event, dict) or event.get("type") not in ("start", "progress", "result"):
        raise ClientError(f"the server's progress stream has an unexpected line: {str(event)[:80]}")
    return event


def progress_from(event: dict[str, Any]) -> Progress:
    preview = None
    if event.get("preview"):
        try:
            preview = codec.decode(base64.b64decode(event["preview"]))
        except (ValueError, codec.InputError):
            preview = None  # a broken preview is cosmetic; the final image is what counts
    return Progress(
        iteration=int(event.get("iteration", 0)), iterations=int(event.get("iterations", 1)),
        level=int(event.get("level", 1)), levels=int(event.get("levels", 1)),
        elapsed_s=float(event.get("elapsed_s", 0.0)), losses=dict(event.get("losses") or {}), preview=preview,
    )


def read_stream(lines: Iterable[bytes | str], on_progress: Callable[[Progress], None] | None = None,
                ) -> dict[str, Any]:
    """Consumes the stream, reporting each ``progress`` line; returns the ``result`` line."""
    for line in lines:
        if not line.strip():
            continue
        event = parse_event(line)
        if event["type"] == "progress" and on_progress is not None:
            on_progress(progress_from(event))
        elif event["type"] == "result":
            return event
    raise ClientError("the server's progress stream ended without a result (was the request cut short?)")


def stylize(content_bytes: bytes, style_bytes: bytes, options: Options, url: str,
            on_progress: Callable[[Progress], None] | None = None, timeout: float = TIMEOUT_S) -> Outcome:
    """Runs the optimization on the server's ``gatys`` model, streaming progress."""
    content = decode_photo(content_bytes, options.max_side)
    decode_photo(style_bytes, None)  # refuse a broken style image here, with the codec's message
    url = normalize_url(url)
    reason = ping(url)
    if reason is not None:
        raise ClientError(f"The Gatys path needs the server, and the server at {url} {reason}. "
                          "(Fast styles fall back to local ONNX Runtime; Gatys cannot.)")
    fields = {"iterations": str(options.iterations), "max_side": str(options.max_side),
              "stream": "true", "preview": "true", "format": "png"}
    files = {"content": ("content.png", codec.encode(content, "png"), "image/png"),
             "style": ("style", style_bytes, "application/octet-stream")}
    try:
        with post(f"{url}/predictions/gatys", fields, files, timeout) as response:
            result = read_stream(response, on_progress)
    except urllib.error.HTTPError as error:
        raise ClientError(f"Gatys failed on the server (HTTP {error.code}): {error_message(error)}") from None
    except OSError as error:
        raise ClientError(f"Gatys failed: the server at {url} dropped the request ({why(error)})") from None
    painted = codec.decode(base64.b64decode(result["image"]))
    if painted.size != content.size:
        content = content.resize(painted.size, Image.Resampling.LANCZOS)
    after = finish(painted, content, FastOptions(options.strength, options.preserve_colors, None).params())
    note = (f"Gatys by TorchServe at {url}: {result.get('iterations_done')} iterations in "
            f"{result.get('elapsed_s')} s, stopped by {result.get('stop_reason')}.")
    return Outcome(content, after, codec.encode(after, "png"), "server", note)
