"""The Gatys path: the server's streamed optimization, read line by line for live progress.

There is no local fallback: it needs VGG weights and minutes of CPU per image, which is
what the server is for. Strength and colours are applied to the result with the fast
path's ``finish``, so the two paths' options mean the same thing.

Before a request, ``describe`` asks TorchServe's management API which loss networks the
server can run (``GET /models/gatys?customized=true``); during one, the stream's ``start``
and ``result`` lines say which network and precision painted. Servers that say neither
still work: the page just names less.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from app.client import (
    ClientError,
    FastOptions,
    Outcome,
    decode_photo,
    error_message,
    get_management,
    normalize_url,
    ping,
    post,
    why,
)
from core import codec
from core.settings import RESPONSE_TIMEOUT_S
from core.style_options import finish

#: Longer than the gatys model's response timeout (its own time budget stops it before that).
TIMEOUT_S = RESPONSE_TIMEOUT_S + 30.0


@dataclass(frozen=True)
class Options:
    """What the page asks for; strength and colours are applied to the result here."""

    iterations: int = 20
    max_side: int = 256
    strength: float = 1.0
    preserve_colors: bool = False
    #: Sent when set; unset, the server uses its default loss network.
    loss_network: str | None = None


def network_label(label: str) -> str:
    """``vgg16 (keras-imagenet)`` -> ``VGG16 (keras-imagenet)``: the architecture as it is written."""
    return re.sub(r"^vgg(\d+)", lambda match: match.group(0).upper(), label.strip())


@dataclass(frozen=True)
class Painter:
    """The loss network and precision a run used, as far as the server said."""

    loss_network: str | None = None
    precision: str | None = None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Painter:
        network, precision = event.get("loss_network"), event.get("precision")
        return cls(network if isinstance(network, str) and network else None,
                   precision if isinstance(precision, str) and precision else None)

    def or_else(self, other: Painter) -> Painter:
        """Each field from ``self`` when known, else from ``other``."""
        return Painter(self.loss_network or other.loss_network, self.precision or other.precision)

    def __str__(self) -> str:
        """``VGG16 (keras-imagenet), bf16``; empty when the server named neither."""
        return ", ".join(filter(None, [self.loss_network and network_label(self.loss_network), self.precision]))


@dataclass(frozen=True)
class Start:
    """The stream's ``start`` line (``optimize.serving.start_message``)."""

    iterations: int
    levels: int
    budget_s: float | None = None
    painter: Painter = Painter()

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Start:
        budget = event.get("budget_s")
        return cls(int(event.get("iterations", 1)), int(event.get("levels", 1)),
                   None if budget is None else float(budget), Painter.from_event(event))


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

    def eta_s(self, budget_s: float | None = None) -> float | None:
        """Seconds left at the pace so far, at most what is left of the server's time budget;
        None before the first iteration."""
        if self.iteration <= 0:
            return None
        left = self.elapsed_s / self.iteration * max(0, self.iterations - self.iteration)
        return left if budget_s is None else min(left, max(0.0, budget_s - self.elapsed_s))


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
                on_start: Callable[[Start], None] | None = None) -> dict[str, Any]:
    """Consumes the stream, reporting the ``start`` and each ``progress`` line; returns the
    ``result`` line."""
    for line in lines:
        if not line.strip():
            continue
        event = parse_event(line)
        if event["type"] == "start" and on_start is not None:
            on_start(Start.from_event(event))
        elif event["type"] == "progress" and on_progress is not None:
            on_progress(progress_from(event))
        elif event["type"] == "result":
            return event
    raise ClientError("the server's progress stream ended without a result (was the request cut short?)")


def stylize(content_bytes: bytes, style_bytes: bytes, options: Options, url: str,
            on_progress: Callable[[Progress], None] | None = None, timeout: float = TIMEOUT_S,
            on_start: Callable[[Start], None] | None = None) -> Outcome:
    """Runs the optimization on the server's ``gatys`` model, streaming progress; the outcome
    carries the loss curve and a caption naming the loss network and precision."""
    content = decode_photo(content_bytes, options.max_side)
    decode_photo(style_bytes, None)  # refuse a broken style image here, with the codec's message
    url = normalize_url(url)
    reason = ping(url)
    if reason is not None:
        raise ClientError(f"The Gatys path needs the server, and the server at {url} {reason}. "
                          "(Fast styles fall back to local ONNX Runtime; Gatys cannot.)")
    fields = {"iterations": str(options.iterations), "max_side": str(options.max_side),
              "stream": "true", "preview": "true", "format": "png"}
    if options.loss_network:
        fields["loss_network"] = options.loss_network
    files = {"content": ("content.png", codec.encode(content, "png"), "image/png"),
             "style": ("style", style_bytes, "application/octet-stream")}
    curve: list[tuple[int, float]] = []
    started = [Start(options.iterations, 1)]

    def progressed(progress: Progress) -> None:
        if progress.loss is not None:
            curve.append((progress.iteration, progress.loss))
        if on_progress is not None:
            on_progress(progress)

    def began(start: Start) -> None:
        started[0] = start
        if on_start is not None:
            on_start(start)

    try:
        with post(f"{url}/predictions/gatys", fields, files, timeout) as response:
            result = read_stream(response, progressed, began)
            headers = Painter(response.headers.get("X-Gatys-Loss-Network"), response.headers.get("X-Gatys-Precision"))
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
    painter = Painter.from_event(result).or_else(started[0].painter).or_else(headers)
    return Outcome(content, after, codec.encode(after, "png"), "server", note,
                   caption(painter, result), tuple(curve))


def caption(painter: Painter, result: Mapping[str, Any]) -> str:
    """``Painted by VGG16 (keras-imagenet), bf16, 20 iterations in 12.3 s.``"""
    who = str(painter) or "the server's default loss network (this server does not name it)"
    return f"Painted by {who}, {result.get('iterations_done')} iterations in {result.get('elapsed_s')} s."


# --- what the server can run, from TorchServe's management API ----------------------------------


@dataclass(frozen=True)
class LossNetwork:
    """One entry of the description's ``loss_networks``."""

    name: str
    available: bool
    label: str | None = None
    reason: str | None = None

    def __str__(self) -> str:
        return network_label(self.label or self.name)


@dataclass(frozen=True)
class Description:
    """What ``GET /models/gatys?customized=true`` says the server can paint with."""

    networks: tuple[LossNetwork, ...]
    default: str | None = None
    precision: str | None = None

    @property
    def chosen(self) -> LossNetwork | None:
        """The network a request will use: the server's default when it can run, else the first
        that can; None when none can."""
        usable = [network for network in self.networks if network.available]
        return next((n for n in usable if n.name == self.default), usable[0] if usable else None)

    @property
    def override(self) -> str | None:
        """The ``loss_network`` to ask for: None when the server's default can run (it is used)."""
        chosen = self.chosen
        return chosen.name if chosen is not None and chosen.name != self.default else None


def parse_description(listing: Any) -> Description | None:
    """The management API's answer (a list whose first item has ``customizedMetadata``, a JSON
    string or object); None when it does not describe loss networks (an older server)."""
    try:
        metadata = listing[0]["customizedMetadata"]
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        entries = metadata["loss_networks"]
        networks = tuple(LossNetwork(str(name), entry.get("available") is True, _text(entry.get("label")),
                                     _text(entry.get("reason"))) for name, entry in entries.items())
        return Description(networks, _text(metadata.get("default_loss_network")), _text(metadata.get("precision")))
    except (LookupError, TypeError, ValueError, AttributeError):
        return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def describe(management_url: str) -> Description | None:
    """The gatys model's description from the management API at ``management_url``; None when
    that fails for any reason (server down, management API elsewhere, no key, older server)."""
    try:
        return parse_description(get_management(f"{normalize_url(management_url)}/models/gatys?customized=true"))
    except (OSError, ValueError, ClientError):
        return None
