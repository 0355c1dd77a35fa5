"""The two kinds of failure a request can meet, each answered as JSON with its status.

``InputError``: the client got something wrong (4xx, the message names the problem).
``Overloaded``: the server cannot take the work now (503 with ``Retry-After``).
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


class ServerFault(Exception):
    """A fault of ours (a bug, a broken model file): answered 500, logged with its traceback."""

    kind = "ServerFault"
    status = 500

    @classmethod
    def wrapping(cls, error: BaseException) -> ServerFault:
        return cls(f"internal error: {type(error).__name__}: {error}")

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
