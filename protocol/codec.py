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
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, get_args

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
    SUPPORTED_VERSIONS,
    Describe,
    ErrorReply,
    InferRequest,
    Message,
    Ping,
    Result,
    TensorDesc,
)
from .peek import peek_envelope, repeated_key
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
    "describe_for",
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
    first, with their class ids (all of them, ranked, when k is at least the
    number of classes). Returns the header and its payload frames; the reply is in
    the request's protocol version.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    k = request.top_k if top_k is None else top_k
    classes: list[int] | None = None
    if k > 0:
        idx = np.argsort(-s, kind="stable")[:k]
        classes = idx.tolist()
        s = s[idx]
    descs: list[TensorDesc] = []
    payloads: list[Frame] = []
    if tensors:
        descs, payloads = encode_tensors(tensors, encodings)
    msg = Result(
        v=request.v,
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

    Raises :class:`DecodeError` with ``UNSUPPORTED_VERSION`` for a ``v`` this side
    does not speak (even when the rest of the header is not a header of ours),
    ``TOO_LARGE`` for a frame over ``max_header_bytes``, else ``BAD_REQUEST``; its
    ``request_id`` is the header's id whenever that could be read (SPEC.md 7.1).
    """
    view = buf if type(buf) is memoryview else memoryview(buf)
    if view.nbytes > limits.max_header_bytes:
        raise _error_with_envelope(
            view, f"header of {view.nbytes} bytes exceeds {limits.max_header_bytes}", StatusCode.TOO_LARGE
        )
    try:
        msg = _HEADER_DECODER.decode(view)
    # msgspec raises its own errors, but also UnicodeDecodeError on bad UTF-8 and
    # RecursionError on deep nesting: anything it raises means a bad header.
    except Exception as exc:
        version, request_id = peek_envelope(view)
        if version is not None and version not in SUPPORTED_VERSIONS:
            raise _version_error(version, request_id) from None
        raise DecodeError(f"bad header: {exc}", StatusCode.BAD_REQUEST, request_id, version) from None
    if msg.v not in SUPPORTED_VERSIONS:
        raise _version_error(msg.v, msg.id)
    kind = type(msg)
    required, getter, _ = _FIELDS[kind]
    if getter is None and view[0] <= 0x80 + required:
        return msg  # a fixmap of required fields only (ping, describe): each once
    tensors = msg.tensors if kind is InferRequest or kind is Result else ()  # type: ignore[union-attr]
    if repeated_key(view, _present(msg), [_present(d) for d in tensors] if tensors else ()):
        raise DecodeError("bad header: a map repeats a key", StatusCode.BAD_REQUEST, msg.id, msg.v)
    return msg


def _defaults(t: type) -> tuple[int, Callable[[Any], Any] | None, tuple[Any, ...]]:
    """Required fields of a struct (its ``kind`` tag included), a getter of its
    optional fields' values and their defaults."""
    fields = msgspec.structs.fields(t)
    optional = [f for f in fields if not f.required]
    defaults = tuple(f.default if f.default is not msgspec.NODEFAULT else f.default_factory() for f in optional)
    getter = operator.attrgetter(*(f.name for f in optional)) if optional else None
    return sum(f.required for f in fields) + (t is not TensorDesc), getter, defaults


_FIELDS = {t: _defaults(t) for t in (*get_args(Message), TensorDesc)}


def _present(struct: Any) -> int:
    """Keys a strictly decoded map certainly held: its required fields and the
    optional ones whose value is not the default (protocol/peek.py)."""
    required, getter, defaults = _FIELDS[type(struct)]
    if getter is None:
        return required
    values = getter(struct)
    if len(defaults) == 1:  # attrgetter of one name returns the value itself
        return required + (values != defaults[0])
    return required + sum(map(operator.ne, values, defaults))


def _error_with_envelope(view: memoryview, message: str, status: StatusCode) -> DecodeError:
    """A :class:`DecodeError` carrying the header's id and version if they can be read."""
    version, request_id = peek_envelope(view)
    return DecodeError(message, status, request_id, version)


def _version_error(version: int, request_id: int | None) -> DecodeError:
    # Answered in version 1, which every client reads (SPEC.md section 9).
    return DecodeError(
        f"protocol version {version} is not supported; this side speaks {', '.join(map(str, SUPPORTED_VERSIONS))}",
        StatusCode.UNSUPPORTED_VERSION,
        request_id,
        1,
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
        raise _error_with_envelope(
            views[0], f"message of {total} bytes exceeds {limits.max_message_bytes}", StatusCode.TOO_LARGE
        )
    msg = decode_header(views[0], limits)
    if screen is not None:
        screen(msg, total - views[0].nbytes)
    kind = type(msg)
    descs = msg.tensors if kind is InferRequest or kind is Result else ()  # type: ignore[union-attr]
    if not descs and len(views) == 1:
        return Decoded(msg, {})
    try:
        tensors = decode_views(descs, views[1:], limits, keep_f16, msg.v)
    except DecodeError as exc:
        exc.request_id = msg.id
        exc.version = msg.v
        raise
    return Decoded(msg, tensors)


def error_for(request_id: int, status: StatusCode, message: str, version: int = PROTOCOL_VERSION) -> ErrorReply:
    """An ``error`` header in ``version`` (the request's; messages longer than the
    wire allows are cut)."""
    return ErrorReply(v=version, id=request_id, status=int(status), message=message[:1024])


def ping_for(request_id: int) -> Ping:
    """A ``ping`` header."""
    return Ping(v=PROTOCOL_VERSION, id=request_id)


def describe_for(request_id: int) -> Describe:
    """A ``describe`` header."""
    return Describe(v=PROTOCOL_VERSION, id=request_id)

