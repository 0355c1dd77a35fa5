"""Reads one TorchServe request into image bytes and validated parameters.

TorchServe hands a handler one dict per request: a raw body arrives as ``body`` (already
JSON-decoded when its Content-Type is ``application/json``), multipart form fields arrive
under their own names, and query-string parameters arrive as fields too. This module turns
all three shapes into the same ``ParsedRequest``, or an ``InputError`` naming the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.codec import InputError
from core.errors import NotAnImage, quote

#: Field names under which TorchServe delivers a raw (non-multipart) body.
RAW_BODY_FIELDS = ("body", "data")
#: The Content-Type curl sends with ``--data``/``--data-binary`` unless told otherwise.
FORM_URLENCODED = "application/x-www-form-urlencoded"
#: Unknown field names listed in a message; a form-decoded binary body makes hundreds.
MAX_NAMES_SHOWN = 5


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
        if not isinstance(raw, str):
            raise ValueError(raw)
        return raw.strip()
    if kind is list:  # a list of floats, as JSON list or comma-separated text
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [_convert(float, item) for item in items]
    raise TypeError(kind)


@dataclass
class ParsedRequest:
    """Images by field name (raw bytes, still encoded) and parameters after validation."""

    images: dict[str, bytes] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def image(self, name: str) -> bytes:
        if name not in self.images:
            raise InputError(f"missing image field '{name}'")
        return self.images[name]


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


def is_kserve_v2(rows: list[Any]) -> bool:
    """True when TorchServe's ``kservev2`` envelope has turned a request into v2 inputs."""
    return bool(rows) and all(isinstance(r, dict) and "datatype" in r and "name" in r for r in rows)


def from_kserve_v2(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Open Inference Protocol (v2) inputs -> one request row: each input's name is a field
    (a BYTES ``image`` input carries the base64 image), single-element data unwrapped."""
    row: dict[str, Any] = {}
    for item in inputs:
        value = item.get("data")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        row[item["name"]] = value
    return row


def parse_request(
    row: Mapping[str, Any],
    content_type: str,
    image_fields: Callable[[str], bool],
    params: Mapping[str, Param],
    raw_body_field: str,
) -> ParsedRequest:
    """Splits one TorchServe request into images and parameters.

    ``image_fields(name)`` says which field names carry images; ``raw_body_field`` is the
    name given to a raw body that is an image; every other field must be in ``params``.
    """
    parsed = ParsedRequest()
    raw_params: dict[str, Any] = {}
    for name, value in row.items():
        if name in RAW_BODY_FIELDS and not image_fields(name):
            _read_body(value, content_type, image_fields, raw_body_field, parsed, raw_params)
        elif image_fields(name):
            if isinstance(value, str):
                value = _text_field_image(name, value, content_type)
            parsed.images[name] = bytes(value)
        else:
            raw_params[name] = value
    if content_type.lower().startswith(FORM_URLENCODED) and not parsed.images:
        raise InputError(_form_body_message(raw_body_field), status=415)
    unknown = sorted(set(raw_params) - set(params))
    if unknown:
        raise InputError(f"unknown parameter(s): {_names(unknown)}; known: {', '.join(params)}; "
                         f"{_image_fields_hint(image_fields, raw_body_field)}")
    parsed.params = {
        name: spec.parse(name, raw_params[name]) if name in raw_params else spec.default
        for name, spec in params.items()
    }
    return parsed


def _text_field_image(name: str, value: str, content_type: str) -> bytes:
    """An image field that arrived as text: base64 (JSON, KServe), or in a multipart request
    a file TorchServe decoded as text because its part said ``text/*``, i.e. a text file
    sent where the image belongs."""
    try:
        return decode_base64(name, value)
    except InputError:
        if not content_type.lower().startswith("multipart/"):
            raise
        raise NotAnImage(
            f"field '{name}' holds a text file ({len(value)} characters), not an image: upload a JPEG, PNG or "
            f"WebP file (curl -F {name}=@photo.jpg)"
        ) from None


def _form_body_message(field_name: str) -> str:
    return (
        f"the body arrived as a form ({FORM_URLENCODED}, curl's default for --data-binary), not as an image: "
        "set a Content-Type such as image/jpeg (curl -H 'Content-Type: image/jpeg' --data-binary @photo.jpg URL) "
        f"or send the image as field '{field_name}' (curl -F {field_name}=@photo.jpg URL)"
    )


def _names(names: list[str]) -> str:
    """Field names as the client sent them, escaped and capped when they are not plain words
    (a binary body decoded as a form turns into such names)."""
    shown = [name if name.isidentifier() and name.isascii() and len(name) <= 40 else quote(name)
             for name in names[:MAX_NAMES_SHOWN]]
    more = len(names) - MAX_NAMES_SHOWN
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _image_fields_hint(image_fields: Callable[[str], bool], raw_body_field: str) -> str:
    hint = f"the image goes in field '{raw_body_field}'"
    if image_fields("style"):
        hint += ", style images in fields 'style', 'style_2', ..."
    return hint


def _read_body(
    value: Any,
    content_type: str,
    image_fields: Callable[[str], bool],
    raw_body_field: str,
    parsed: ParsedRequest,
    raw_params: dict[str, Any],
) -> None:
    if content_type.startswith("application/json"):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = json.loads(value)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise InputError(f"body is not valid JSON ({error})") from None
        if not isinstance(value, dict):
            raise InputError("JSON body must be an object, e.g. {\"image\": \"<base64>\"}")
        for key, item in value.items():
            if image_fields(key) and isinstance(item, list):  # e.g. "styles": [b64, b64]
                for i, element in enumerate(item):
                    parsed.images[f"{key}[{i}]"] = decode_base64(f"{key}[{i}]", element)
            elif image_fields(key):
                parsed.images[key] = decode_base64(key, item)
            else:
                raw_params[key] = item
    elif isinstance(value, str):
        raise InputError(f"body is text ({content_type or 'no Content-Type'}), not an image", status=415)
    else:
        parsed.images[raw_body_field] = bytes(value)


@dataclass
class Job:
    """One request on its way through a handler (handler modules may define only one
    class, so this lives here). ``error`` set = it skips the remaining stages."""

    image: Any = None
    params: dict[str, Any] | None = None
    result: Any = None
    error: InputError | None = None
