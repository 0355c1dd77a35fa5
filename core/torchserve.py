"""What every TorchServe handler of this project does the same way: read a request's
headers and ``X-<Name>`` parameters, resolve the output format, and answer an error.

Kept out of the handler modules so the fast-style, multi-style, arbitrary-style and Gatys
handlers share one copy, and free of any import of ``ts`` so it can be tested alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from core import codec
from core.errors import InputError, ServerFault

#: Response header naming the engine that painted the image, e.g. ``openvino/bf16``.
RUNTIME_HEADER = "X-Style-Runtime"
#: Longest HTTP reason phrase sent; the JSON body carries the whole message.
REASON_PHRASE_LIMIT = 200


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


def output_format(requested: str | None, context, idx: int) -> str:
    """The ``format`` parameter, else the first encodable type in ``Accept``, else PNG."""
    return codec.parse_format(requested) or codec.format_from_accept(header(context, idx, "accept")) or "png"


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


def answer_error(context, idx: int, error: InputError | ServerFault) -> str:
    """Sets the status and JSON content type of response ``idx``; returns its JSON body.
    An overload error carries ``retry_after`` seconds, sent as ``Retry-After``."""
    context.set_response_status(error.status, reason_phrase(str(error)), idx)
    context.set_response_content_type(idx, "application/json")
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        context.set_response_header(idx, "Retry-After", str(int(retry_after)))
    return json.dumps(error.as_json())
