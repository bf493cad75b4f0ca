"""jetsplit.protocol: the wire between edge and cloud (``SPEC.md`` is normative).

One request or reply is one ZeroMQ multipart message: a MessagePack header frame
(:mod:`.messages`) and one raw frame per tensor (:mod:`.codec`). :mod:`.transport`
owns the sockets, :mod:`.security` the CurveZMQ keys, :class:`Client` is what the
edge uses, :class:`Server` is what a worker builds on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import Client, PingReply, Reply
from .codec import (
    DEFAULT_LIMITS,
    Decoded,
    Limits,
    TensorEncoding,
    decode_message,
    decode_tensor,
    decode_tensors,
    encode_infer,
    encode_message,
    encode_tensor,
    encode_tensors,
    error_for,
    result_for,
)
from .errors import (
    DecodeError,
    EncodeError,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    StatusCode,
    Unavailable,
)
from .messages import (
    PROTOCOL_VERSION,
    ErrorReply,
    InferRequest,
    Message,
    Ping,
    Pong,
    Result,
    TensorDesc,
)
from .security import CurveClient, CurveServer, generate_keypair, load_keypair
from .transport import Request, Server, SocketOptions

if TYPE_CHECKING:
    from .echo import EchoServer


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m jetsplit.protocol.echo` does not find
    # its own module already loaded by the package.
    if name == "EchoServer":
        from .echo import EchoServer

        return EchoServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DEFAULT_LIMITS",
    "PROTOCOL_VERSION",
    "Client",
    "CurveClient",
    "CurveServer",
    "DecodeError",
    "Decoded",
    "EchoServer",
    "EncodeError",
    "ErrorReply",
    "InferRequest",
    "Limits",
    "Message",
    "Ping",
    "PingReply",
    "Pong",
    "ProtocolError",
    "RemoteError",
    "Reply",
    "Request",
    "RequestTimeout",
    "Result",
    "Server",
    "SocketOptions",
    "StatusCode",
    "TensorDesc",
    "TensorEncoding",
    "Unavailable",
    "decode_message",
    "decode_tensor",
    "decode_tensors",
    "encode_infer",
    "encode_message",
    "encode_tensor",
    "encode_tensors",
    "error_for",
    "generate_keypair",
    "load_keypair",
    "result_for",
]
