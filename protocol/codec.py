"""The pure codec: header structs and numpy arrays <-> lists of frames.

Messages are built here; each tensor's descriptor and payload frame come from
:mod:`.tensors` (re-exported here, so this stays the one import for callers).

No sockets here (this module never imports zmq), so it is tested without a network
and reused by any transport. Frames going out are ``bytes`` or ``memoryview``
objects that view the caller's arrays where the encoding allows (``raw`` of a
C-contiguous little-endian array is sent without a copy). Frames coming in may be
any buffer (``bytes``, ``memoryview``, a ``zmq.Frame``); ``raw`` tensors come back
as arrays viewing those buffers, so keep the frames' owner alive only as long as
the arrays are used (the arrays hold references to it).

Every limit in :class:`Limits` is checked before anything is allocated: a header
that claims ten billion elements is refused by arithmetic on the header alone.

Example::

    >>> import numpy as np
    >>> frames = encode_infer(1, "ab" * 32, 1, 100.0, {"x": np.arange(6.0).reshape(2, 3)})
    >>> msg, tensors = decode_message(frames)
    >>> msg.kind, tensors["x"].shape
    ('infer', (2, 3))
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import msgspec
import numpy as np

from .errors import DecodeError, EncodeError, StatusCode
from .messages import (
    FINGERPRINT_PATTERN,
    MAX_ID,
    MAX_MILLIS,
    MAX_STAGE,
    MAX_TENSORS,
    MAX_TOP_K,
    PROTOCOL_VERSION,
    ErrorReply,
    InferRequest,
    Message,
    Ping,
    Result,
    TensorDesc,
)
from .tensors import (
    DEFAULT_LIMITS,
    Encodings,
    Frame,
    Limits,
    TensorEncoding,
    decode_tensor,
    decode_tensors,
    decode_views,
    encode_tensor,
    encode_tensors,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "DEFAULT_LIMITS",
    "Decoded",
    "Encodings",
    "Frame",
    "Limits",
    "TensorEncoding",
    "decode_header",
    "decode_message",
    "decode_tensor",
    "decode_tensors",
    "encode_header",
    "encode_infer",
    "encode_message",
    "encode_tensor",
    "encode_tensors",
    "error_for",
    "ping_for",
    "result_for",
]

_P = TypeVar("_P")
_HEADER_ENCODER = msgspec.msgpack.Encoder()
_HEADER_DECODER = msgspec.msgpack.Decoder(Message)


class _Envelope(msgspec.Struct):
    """The lenient view of a header that failed strict decoding: enough to answer."""

    v: Any = None
    id: Any = None


_ENVELOPE_DECODER = msgspec.msgpack.Decoder(_Envelope)


# --------------------------------------------------------------------------- encode


def encode_header(msg: Message) -> bytes:
    """The MessagePack header frame of ``msg``."""
    return _HEADER_ENCODER.encode(msg)


def encode_message(msg: Message, payloads: Sequence[_P] = ()) -> list[bytes | _P]:
    """``[header, *payloads]``, checking that the payloads match the descriptors.

    Payloads are passed through untouched: any buffer a transport can send.
    """
    descs = msg.tensors if isinstance(msg, (InferRequest, Result)) else []
    if len(payloads) != len(descs):
        raise EncodeError(f"{len(descs)} tensor descriptors but {len(payloads)} payload frames")
    return [encode_header(msg), *payloads]


def encode_infer(
    request_id: int,
    bundle: str,
    stage: int,
    deadline_ms: float,
    tensors: Mapping[str, np.ndarray[Any, Any]],
    encodings: Encodings = None,
    top_k: int = 0,
) -> list[Frame]:
    """The frames of an ``infer`` request.

    Raises :class:`EncodeError` for anything the strict decoder on the other side
    would refuse (a bad fingerprint, stage, id or top-k, a deadline over an hour).
    """
    # Structs are not validated on construction: check what the schema constrains
    # here, in plain Python (a strict decode of our own header per request would
    # cost more than the rest of the encoding).
    if not _valid_fingerprint(bundle):
        raise EncodeError(f"invalid infer request: bundle must be a lowercase hex SHA-256, got {bundle!r}")
    for field, value, high in (("id", request_id, MAX_ID), ("stage", stage, MAX_STAGE), ("top_k", top_k, MAX_TOP_K)):
        if type(value) is not int or not 0 <= value <= high:
            raise EncodeError(f"invalid infer request: {field} must be an integer in [0, {high}], got {value!r}")
    deadline = max(0.0, float(deadline_ms))
    if not deadline <= MAX_MILLIS:  # also refuses NaN
        raise EncodeError(f"invalid infer request: deadline_ms must be at most {MAX_MILLIS:.0f}, got {deadline_ms}")
    descs, payloads = encode_tensors(tensors, encodings)
    if len(descs) > MAX_TENSORS:
        raise EncodeError(f"invalid infer request: {len(descs)} tensors exceed {MAX_TENSORS}")
    msg = InferRequest(
        v=PROTOCOL_VERSION,
        id=request_id,
        bundle=bundle,
        stage=stage,
        deadline_ms=deadline,
        top_k=top_k,
        tensors=descs,
    )
    return [_HEADER_ENCODER.encode(msg), *payloads]


_FINGERPRINT = re.compile(FINGERPRINT_PATTERN)


@functools.lru_cache(maxsize=64)
def _valid_fingerprint(bundle: str) -> bool:
    # Cached: a client sends the same one or few fingerprints all its life.
    return isinstance(bundle, str) and _FINGERPRINT.fullmatch(bundle) is not None


def result_for(
    request: InferRequest,
    scores: np.ndarray[Any, Any] | Sequence[float],
    stage: int,
    *,
    top_k: int | None = None,
    tensors: Mapping[str, np.ndarray[Any, Any]] | None = None,
    encodings: Encodings = None,
    queue_ms: float = 0.0,
    compute_ms: float = 0.0,
) -> tuple[Result, list[Frame]]:
    """Build the reply to ``request`` from one sample's class scores.

    Applies the request's ``top_k`` (or ``top_k`` if given): the best k scores, best
    first, with their class ids. Returns the header and its payload frames.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = request.top_k if top_k is None else top_k
    classes: list[int] | None = None
    if 0 < k < s.size:
        idx = np.argsort(-s, kind="stable")[:k]
        classes = idx.tolist()
        s = s[idx]
    descs: list[TensorDesc] = []
    payloads: list[Frame] = []
    if tensors:
        descs, payloads = encode_tensors(tensors, encodings)
    msg = Result(
        v=PROTOCOL_VERSION,
        id=request.id,
        stage=stage,
        scores=s.tolist(),
        classes=classes,
        queue_ms=queue_ms,
        compute_ms=compute_ms,
        tensors=descs,
    )
    return msg, payloads


# --------------------------------------------------------------------------- decode


class Decoded(NamedTuple):
    """A decoded message: its header struct and its tensors by name."""

    message: Message
    tensors: dict[str, np.ndarray[Any, Any]]


def decode_header(buf: ReadableBuffer, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode and validate a header frame, checking the protocol version.

    Raises :class:`DecodeError` with ``UNSUPPORTED_VERSION`` for another ``v`` (even
    when the rest of the header is not a v1 header), else ``BAD_REQUEST``.
    """
    view = buf if type(buf) is memoryview else memoryview(buf)
    if view.nbytes > limits.max_header_bytes:
        raise DecodeError(
            f"header of {view.nbytes} bytes exceeds {limits.max_header_bytes}", StatusCode.TOO_LARGE
        )
    try:
        msg = _HEADER_DECODER.decode(view)
    # msgspec raises its own errors, but also UnicodeDecodeError on bad UTF-8 and
    # RecursionError on deep nesting: anything it raises means a bad header.
    except Exception as exc:
        version, request_id = _peek(view)
        if version is not None and version != PROTOCOL_VERSION:
            raise _version_error(version, request_id) from None
        raise DecodeError(f"bad header: {exc}", StatusCode.BAD_REQUEST, request_id) from None
    if msg.v != PROTOCOL_VERSION:
        raise _version_error(msg.v, msg.id)
    return msg


def _peek(view: memoryview) -> tuple[int | None, int | None]:
    """Best-effort ``(v, id)`` of a header that failed strict decoding."""
    try:
        env = _ENVELOPE_DECODER.decode(view)
    except Exception:
        return None, None
    version = env.v if type(env.v) is int else None
    request_id = env.id if type(env.id) is int and 0 <= env.id < 2**63 else None
    return version, request_id


def _version_error(version: int, request_id: int | None) -> DecodeError:
    return DecodeError(
        f"protocol version {version} is not supported; this side speaks {PROTOCOL_VERSION}",
        StatusCode.UNSUPPORTED_VERSION,
        request_id,
    )


def decode_message(
    frames: Sequence[ReadableBuffer], limits: Limits = DEFAULT_LIMITS, *, keep_f16: bool = False,
    screen: Callable[[Message, int], None] | None = None,
) -> Decoded:
    """Decode ``[header, *payloads]`` with every limit checked before allocating.

    Raises :class:`DecodeError`; its ``status`` is the code to answer with.

    ``keep_f16``: ``f16`` payloads of ``float32`` tensors come back as float16
    arrays viewing the frames (no copy) instead of being widened one by one: for
    a receiver that stacks many requests and widens the batch at once
    (:mod:`jetsplit.halfcast`, the cloud worker).

    ``screen(header, payload_bytes)`` is called once the header is decoded and
    before any payload is: a server's admission control raises a
    :class:`DecodeError` from it (``OVERLOADED``) to refuse the request at the cost
    of its header alone.
    """
    if not frames:
        raise DecodeError("empty message: no header frame")
    views = [f if type(f) is memoryview else memoryview(f) for f in frames]
    total = 0
    for v in views:
        total += v.nbytes
    if total > limits.max_message_bytes:
        raise DecodeError(
            f"message of {total} bytes exceeds {limits.max_message_bytes}", StatusCode.TOO_LARGE
        )
    msg = decode_header(views[0], limits)
    if screen is not None:
        screen(msg, total - views[0].nbytes)
    kind = type(msg)
    descs = msg.tensors if kind is InferRequest or kind is Result else ()  # type: ignore[union-attr]
    if not descs and len(views) == 1:
        return Decoded(msg, {})
    try:
        tensors = decode_views(descs, views[1:], limits, keep_f16)
    except DecodeError as exc:
        exc.request_id = msg.id
        raise
    return Decoded(msg, tensors)


def error_for(request_id: int, status: StatusCode, message: str) -> ErrorReply:
    """An ``error`` header (messages longer than the wire allows are cut)."""
    return ErrorReply(v=PROTOCOL_VERSION, id=request_id, status=int(status), message=message[:1024])


def ping_for(request_id: int) -> Ping:
    """A ``ping`` header."""
    return Ping(v=PROTOCOL_VERSION, id=request_id)

