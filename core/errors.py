"""The kinds of failure a request can meet, each answered as JSON with its status.

``InputError``: the client got something wrong (4xx, the message names the problem).
``Overloaded``: the server cannot take the work now (503 with ``Retry-After``).
``Unavailable``: this server lacks what the request needs until an operator supplies it (501).
``ServerFault``: something failed on our side (500); never blamed on the request.
"""

from __future__ import annotations


class InputError(ValueError):
    """The request is wrong; ``status`` is the HTTP code and the message names the problem."""

    kind = "InputError"

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status

    def as_json(self) -> dict:
        return {"code": self.status, "type": self.kind, "message": str(self)}


class NotAnImage(InputError):
    """Bytes that are no image this service decodes (415): the CLI words its own reason for
    a file, the servers send the message as it is."""

    def __init__(self, message: str, status: int = 415):
        super().__init__(message, status)


def quote(value: object, limit: int = 40) -> str:
    """Client data fit to echo in a message: Python's ``ascii()`` form (control bytes and
    non-ASCII escaped, never raw: a reason phrase must be one line of ASCII) cut to about
    ``limit`` characters, so a binary body never comes back inside an error."""
    text = ascii(value)
    if len(text) <= limit:
        return text
    if isinstance(value, (bytes, bytearray)):
        return f"{text[:limit]}... ({len(value)} bytes)"
    if isinstance(value, str):
        return f"{text[:limit]}... ({len(value)} characters)"
    return f"{text[:limit]}..."


class ServerFault(Exception):
    """A fault of ours (a bug, a broken model file): answered 500, logged with its traceback."""

    kind = "ServerFault"
    status = 500

    @classmethod
    def wrapping(cls, error: BaseException) -> ServerFault:
        return cls(f"internal error: {type(error).__name__}: {error}")

    def as_json(self) -> dict:
        return {"code": self.status, "type": self.kind, "message": str(self)}


class Unavailable(Exception):
    """This server cannot perform the request until an operator supplies something (501);
    the message says what and how (``optimize.serving.LossNetworkUnavailable`` says why 501)."""

    kind = "ModelUnavailable"
    status = 501

    def as_json(self) -> dict:
        return {"code": self.status, "type": self.kind, "message": str(self)}


class Overloaded(Exception):
    """The server cannot take this work now (``core.admission``): answered 503 with
    ``Retry-After``; ``reason`` names the exhausted resource (memory, time, cpu)."""

    kind = "Overloaded"
    status = 503

    def __init__(self, message: str, reason: str, retry_after: int):
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after

    def as_json(self) -> dict:
        return {"code": self.status, "type": self.kind, "message": str(self), "reason": self.reason,
                "retry_after_s": self.retry_after}


#: Every failure answered with its own status and JSON body (``status``, ``as_json()``).
Refusal = InputError | Overloaded | Unavailable | ServerFault
