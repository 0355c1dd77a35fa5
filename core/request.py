"""A request as every server hands it to a service: the photo, the style images, the parameters.

Each protocol has its adapter that reads its wire format into a ``Request``: TorchServe's
rows (multipart fields, a JSON body, a raw body, ``X-<Name>`` headers) in
``core.torchserve``, KServe's Open Inference Protocol inputs and parameters in
``predictor.protocol``. The services (``core.fast_service``, ``optimize.service``) check the
parameters against their ``RequestForm``, so every server refuses the same request with the
same message (an ``InputError`` naming the problem).

One style-field convention for every server: the style images are the fields ``style``,
``style_2``, ``style_3``, ... (multipart), the list ``styles`` (JSON), or the elements of the
input ``style`` (KServe), in that order.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from core import codec
from core.codec import InputError, Limits
from core.errors import quote

#: Unknown field names listed in a message; a form-decoded binary body makes hundreds.
MAX_NAMES_SHOWN = 5
#: The style image fields: ``style``, ``style_2``, ... and ``styles`` / ``styles[i]``.
STYLE_FIELD = re.compile(r"style(?:_(\d+))?|styles(?:\[(\d+)\])?")
MISSING_STYLE = "missing style image: send a 'style' file field (JSON: \"styles\": [b64, ...])"


@dataclass(frozen=True)
class Param:
    """One request parameter: its type, default, and allowed range or choices."""

    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""

    def parse(self, name: str, raw: Any) -> Any:
        if isinstance(raw, (bytes, bytearray)):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"parameter '{name}' is not UTF-8 text") from None
        try:
            value = _convert(self.kind, raw)
        except (TypeError, ValueError):
            raise InputError(f"parameter '{name}' must be {self.kind.__name__}, got {quote(raw)}") from None
        if self.choices is not None and value not in self.choices:
            raise InputError(f"parameter '{name}' must be one of {', '.join(self.choices)}, got {quote(raw)}")
        if self.low is not None and value < self.low:
            raise InputError(f"parameter '{name}' must be at least {self.low}{self._range_end()}, got {quote(raw)}")
        if self.high is not None and value > self.high:
            raise InputError(f"parameter '{name}' must be at most {self.high}, got {quote(raw)}")
        return value

    def _range_end(self) -> str:
        return f" (and at most {self.high})" if self.high is not None else ""


def _convert(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if kind is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(raw)
        return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
    if kind is float:
        if isinstance(raw, bool):
            raise ValueError(raw)
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(raw)
        return value
    if kind is str:
        if isinstance(raw, int) and not isinstance(raw, bool):  # JSON and gRPC clients send a style index as a number
            return str(raw)
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw.strip()
    if kind is list:  # a list of floats, as JSON list or comma-separated text
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [_convert(float, item) for item in items]
    raise TypeError(kind)


@dataclass
class Request:
    """One request, whatever server received it: the photo (encoded bytes, or pixels a
    protocol delivered as such; or a video clip's bytes), the style images in the client's
    order, the parameters as sent (the service checks them), the media types the client
    accepts and the media type the client declared for the photo's bytes ('' when none)."""

    photo: bytes | Image.Image | None = None
    styles: list[bytes] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    accept: str | None = None
    media_type: str = ""

    @property
    def declares_video(self) -> bool:
        """The client called the bytes a video (``Content-Type: video/mp4``, ...)."""
        return self.media_type.startswith("video/")


def style_position(name: str) -> tuple[int, int] | None:
    """Where style field ``name`` stands in the client's order (``style``, ``style_2``, ...,
    then ``styles[i]``); None when the name is no style field."""
    match = STYLE_FIELD.fullmatch(name)
    if match is None:
        return None
    if name.startswith("styles"):
        return (1, int(match.group(2) or 0))
    return (0, int(match.group(1) or 1))


@dataclass(frozen=True)
class RequestForm:
    """What one model's requests carry: the photo's field (also the name a raw body
    takes; ``aliases`` are other names it may come under), whether style images come
    with it, and the parameters with their types and bounds."""

    photo: str
    params: Mapping[str, Param]
    styles: bool = False
    aliases: tuple[str, ...] = ()

    def is_image_field(self, name: str) -> bool:
        return name == self.photo or name in self.aliases or (self.styles and style_position(name) is not None)

    def parse_params(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Every parameter, checked and typed (its default when not sent); an unknown name is
        an ``InputError`` that lists the known ones and says where the images go."""
        unknown = sorted(set(raw) - set(self.params))
        if unknown:
            hint = f"the image goes in field '{self.photo}'"
            if self.styles:
                hint += ", style images in fields 'style', 'style_2', ..."
            raise InputError(f"unknown parameter(s): {_names(unknown)}; known: {', '.join(self.params)}; {hint}")
        return {name: spec.parse(name, raw[name]) if name in raw else spec.default
                for name, spec in self.params.items()}

    def photo_of(self, request: Request, limits: Limits, max_side: int | None) -> Image.Image:
        """The request's photo, decoded (or as delivered) and checked against ``limits``,
        downscaled to ``max_side``."""
        if request.photo is None:
            raise InputError(f"no image in the request: send it as the body or as field '{self.photo}'")
        if isinstance(request.photo, Image.Image):
            return codec.fit(request.photo, limits, max_side)
        return codec.decode(request.photo, limits, max_side)


def decode_base64(name: str, value: Any) -> bytes:
    """Base64 (optionally a ``data:`` URL) -> bytes, with a message naming the field."""
    if not isinstance(value, str):
        raise InputError(f"field '{name}' must be a base64 string")
    if value.startswith("data:") and "," in value:
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"field '{name}' is not valid base64") from None


def _names(names: list[str]) -> str:
    """Field names as the client sent them, escaped and capped when they are not plain words
    (a binary body decoded as a form turns into such names)."""
    shown = [name if name.isidentifier() and name.isascii() and len(name) <= 40 else quote(name)
             for name in names[:MAX_NAMES_SHOWN]]
    more = len(names) - MAX_NAMES_SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
