"""TorchServe's side of every handler: a request row in, a ``core.request.Request`` out; a
``core.reply.Reply`` in, the response's status, headers and body out.

TorchServe hands a handler one dict per request: a raw body arrives as ``body`` (already
JSON-decoded when its Content-Type is ``application/json``), multipart form fields arrive
under their own names, and query-string parameters arrive as fields too; parameters may
also come as ``X-<Name>`` headers. Behind KServe (``service_envelope=kservev2``) a request
arrives as its v2 inputs. All of them become the same ``Request``, or an ``InputError``
naming the problem. Free of any import of ``ts``, so it can be tested alone (the handlers'
base class, ``core.handler``, is the part that needs TorchServe).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from core.errors import InputError, NotAnImage, Refusal
from core.reply import STYLE_PREFIX, Reply, error_reply
from core.request import Request, RequestForm, decode_base64, style_position

#: Response header naming the engine that painted the image, e.g. ``openvino/bf16``.
RUNTIME_HEADER = f"{STYLE_PREFIX}Runtime"
#: Longest HTTP reason phrase sent; the JSON body carries the whole message.
REASON_PHRASE_LIMIT = 200
#: Field names under which TorchServe delivers a raw (non-multipart) body.
RAW_BODY_FIELDS = ("body", "data")
#: The Content-Type curl sends with ``--data``/``--data-binary`` unless told otherwise.
FORM_URLENCODED = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Worker:
    """What TorchServe tells a worker about its model: name, served file, config, GPU."""

    name: str
    model_file: Path | None
    config: Mapping | None
    gpu_id: int | None

    @classmethod
    def of(cls, context) -> Worker:
        properties = context.system_properties
        model = context.manifest["model"]
        serialized = model.get("serializedFile")
        gpu_id = properties.get("gpu_id")
        return cls(model["modelName"], Path(properties["model_dir"]) / serialized if serialized else None,
                   getattr(context, "model_yaml_config", None), None if gpu_id is None else int(gpu_id))


# -- reading a request -------------------------------------------------------------------------


def header(context, idx: int, name: str) -> str:
    """A request header by lower-case name ('' if absent). For content-type, the raw
    body's own type comes first: TorchServe records it per input field."""
    properties = context.request_processor[idx].get_request_properties()
    body = properties.get("body")
    if name == "content-type" and isinstance(body, dict) and body.get("content-type"):
        return body["content-type"]
    for key, value in properties.items():
        if key.lower() == name and isinstance(value, str):
            return value
    return ""


def header_params(context, idx: int, names: Iterable[str]) -> dict[str, str]:
    """Parameters sent as ``X-Max-Side: 512`` style headers (for raw-body requests);
    TorchServe does not pass the query string to handlers."""
    found = {}
    for name in names:
        value = header(context, idx, "x-" + name.replace("_", "-"))
        if value:
            found[name] = value
    return found


def read_request(context, idx: int, row: Mapping[str, Any], form: RequestForm) -> Request:
    """Request ``idx`` of a batch: its row, its ``X-<Name>`` parameters (a field of the same
    name wins) and its Accept header."""
    row = {**header_params(context, idx, form.params), **row}
    return parse_row(row, header(context, idx, "content-type"), form, header(context, idx, "accept") or None)


def parse_row(row: Mapping[str, Any], content_type: str, form: RequestForm, accept: str | None = None) -> Request:
    """Splits one TorchServe request row into the photo, the style images and the parameters."""
    images: list[tuple[str, int, bytes]] = []  # (field, position within the field, bytes), in row order
    params: dict[str, Any] = {}
    for name, value in row.items():
        if name in RAW_BODY_FIELDS and not form.is_image_field(name):
            _read_body(value, content_type, form, images, params)
        elif form.is_image_field(name):
            for i, item in enumerate(value if isinstance(value, list) else [value]):  # a v2 input: a list
                images.append((name, i, _text_field_image(name, item, content_type) if isinstance(item, str)
                               else bytes(item)))
        else:
            params[name] = value
    if content_type.lower().startswith(FORM_URLENCODED) and not images:
        raise InputError(_form_body_message(form.photo), status=415)
    photos = [data for name, _, data in images if name == form.photo or name in form.aliases]
    styles = sorted((item for item in images if style_position(item[0]) is not None),
                    key=lambda item: (style_position(item[0]), item[1]))
    # The body's declared type tells a video from an image before any byte is read (a
    # multipart part's own type does not reach the handler: the service sniffs those).
    media_type = content_type.split(";")[0].strip().lower()
    return Request(photos[0] if photos else None, [data for _, _, data in styles], params, accept, media_type)


def _read_body(value: Any, content_type: str, form: RequestForm, images: list[tuple[str, int, bytes]],
               params: dict[str, Any]) -> None:
    if content_type.startswith("application/json"):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = json.loads(value)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise InputError(f"body is not valid JSON ({error})") from None
        if not isinstance(value, dict):
            raise InputError("JSON body must be an object, e.g. {\"image\": \"<base64>\"}")
        for key, item in value.items():
            if form.is_image_field(key) and isinstance(item, list):  # e.g. "styles": [b64, b64]
                images.extend((key, i, decode_base64(f"{key}[{i}]", element)) for i, element in enumerate(item))
            elif form.is_image_field(key):
                images.append((key, 0, decode_base64(key, item)))
            else:
                params[key] = item
    elif isinstance(value, str):
        raise InputError(f"body is text ({content_type or 'no Content-Type'}), not an image or a video", status=415)
    else:
        images.append((form.photo, 0, bytes(value)))


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


# -- answering ---------------------------------------------------------------------------------


def reason_phrase(message: str) -> str:
    """A message as an HTTP reason phrase: one line of printable ASCII, capped. TorchServe
    frames the phrase by its length in characters but sends its UTF-8 bytes, so one
    non-ASCII character desynchronises the worker's stream and kills it; a line break would
    split the status line."""
    text = message.encode("ascii", "backslashreplace").decode("ascii")
    text = "".join(char if char.isprintable() else " " for char in text)
    if len(text) > REASON_PHRASE_LIMIT:
        text = text[: REASON_PHRASE_LIMIT - 3] + "..."
    return text


def answer(context, idx: int, reply: Reply) -> bytes | str:
    """Sets response ``idx``'s status, media type and headers (the summary's); returns its body."""
    if reply.status != HTTPStatus.OK:
        context.set_response_status(reply.status, reason_phrase(reply.reason), idx)
    context.set_response_content_type(idx, reply.media_type)
    for name, value in reply.headers.items():
        context.set_response_header(idx, name, value)
    return reply.body


def answer_error(context, idx: int, error: Refusal) -> str:
    """Answers request ``idx`` with ``error``'s status and JSON body (an overload's
    ``retry_after`` seconds as ``Retry-After``); returns the body."""
    return answer(context, idx, error_reply(error))
