"""Status codes carried on the wire, and the exceptions of the protocol package.

Status codes are part of the wire format (``protocol/SPEC.md`` section 6): their
numbers never change meaning. Exceptions are Python-side only; every one of them is
a :class:`jetsplit.errors.ProtocolError`, so the CLI prints it as one line.
"""

from __future__ import annotations

from enum import IntEnum

from jetsplit.errors import ProtocolError

__all__ = [
    "DecodeError",
    "EncodeError",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "StatusCode",
    "Unavailable",
]


class StatusCode(IntEnum):
    """The ``status`` field of a reply. 0 is success; everything else is an error."""

    OK = 0
    #: The request's deadline passed before the server could run it.
    EXPIRED = 1
    #: The message is malformed: undecodable header, wrong types, frames that do
    #: not match their descriptors, an unknown kind.
    BAD_REQUEST = 2
    #: No bundle with this fingerprint is loaded on the server.
    UNKNOWN_BUNDLE = 3
    #: The bundle has no cloud stage with this index.
    UNKNOWN_STAGE = 4
    #: The server's queue is full; the client may try another server.
    OVERLOADED = 5
    #: The server failed while running the request (a bug or an engine failure).
    INTERNAL = 6
    #: The header's protocol version ``v`` is not one the server speaks.
    UNSUPPORTED_VERSION = 7
    #: A limit was exceeded (tensor count, rank, elements, bytes).
    TOO_LARGE = 8
    #: A valid encoding or compression the server cannot decode (for example a
    #: missing optional compression library).
    UNSUPPORTED_ENCODING = 9
    #: The server is draining before exit and takes no new work; try another.
    SHUTTING_DOWN = 10


class DecodeError(ProtocolError):
    """A received message is malformed, too large or of another version.

    ``status`` is the code a server answers with; ``request_id`` is the request's
    id when it could still be read from the header, else ``None``; ``version`` the
    header's ``v`` when it could be read (the error reply is written in it when the
    server speaks it, else in version 1).
    """

    def __init__(
        self,
        message: str,
        status: StatusCode = StatusCode.BAD_REQUEST,
        request_id: int | None = None,
        version: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.request_id = request_id
        self.version = version


class EncodeError(ProtocolError):
    """An array cannot be encoded as asked (dtype not allowed, wrong shape for jpeg...)."""


class RequestTimeout(ProtocolError):
    """No reply arrived within the timeout (server down, unreachable, or refusing our key)."""


class Unavailable(ProtocolError):
    """A request could not even be queued for sending: no server connection is ready."""


class RemoteError(ProtocolError):
    """The server answered with an error status (raised by ``Reply.raise_for_status``)."""

    def __init__(self, status: StatusCode, message: str, request_id: int) -> None:
        super().__init__(f"{status.name}: {message}" if message else status.name)
        self.status = status
        self.request_id = request_id
