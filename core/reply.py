"""What a service answers, in terms any server can send.

A ``Reply`` is the status, the media type and the body, and a ``summary``: what the client
learns besides the body (the engine, a style blend, how far an optimization got). TorchServe
sends the summary as headers (``X-Style-Runtime``, ``X-Gatys-Seed``: ``prefix`` plus the name
in title case), KServe as response parameters. A refused request is a ``Reply`` too: its
error's status and a JSON body naming the problem. A streamed reply is NDJSON: progress
lines while the work runs (``ndjson_line``), then ``result_line`` carrying the encoded result.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from core.errors import Refusal, ServerFault

#: The fast styles' header names start with this (``X-Style-Runtime``, ``X-Style-Blend``).
STYLE_PREFIX = "X-Style-"
#: Streamed replies: one JSON message a line.
NDJSON = "application/x-ndjson"


@dataclass
class Reply:
    """One answer. ``reason`` is an error's message (TorchServe's reason phrase);
    ``retry_after`` the seconds an overloaded server asks the client to wait."""

    status: int
    media_type: str
    body: bytes | str
    summary: dict[str, Any] = field(default_factory=dict)
    prefix: str = STYLE_PREFIX
    reason: str = ""
    retry_after: int | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The HTTP headers: each summary entry as ``<prefix><Name>``, and ``Retry-After``."""
        headers = {self.prefix + name.replace("_", "-").title(): str(value) for name, value in self.summary.items()}
        if self.retry_after is not None:
            headers["Retry-After"] = str(int(self.retry_after))
        return headers


def error_reply(error: Refusal) -> Reply:
    """A refused request: its status and a JSON body naming the problem (an overload's
    ``retry_after`` becomes ``Retry-After``)."""
    return Reply(error.status, "application/json", json.dumps(error.as_json()), reason=str(error),
                 retry_after=getattr(error, "retry_after", None))


def fault_reply(error: BaseException) -> Reply:
    """A fault nobody foresaw: 500 with JSON, so the client learns something and the worker lives."""
    return error_reply(ServerFault.wrapping(error))


def ndjson_line(message: dict[str, Any]) -> str:
    """One streamed message: compact JSON and a newline."""
    return json.dumps(message, separators=(",", ":")) + "\n"


def result_line(summary: dict[str, Any], data: bytes, fmt: str, media_type: str, key: str = "image") -> str:
    """The last streamed line: the summary, the result's format and media type, and the
    result itself as base64 under ``key`` (``image`` or ``video``)."""
    return ndjson_line({"type": "result", **summary, "format": fmt, "media_type": media_type,
                        key: base64.b64encode(data).decode("ascii")})
