"""Typed wire messages: the MessagePack header frame of every message.

A message is one ZeroMQ multipart message (``protocol/SPEC.md`` is normative)::

    frame 0      header: a MessagePack map, one of the structs below
    frame 1..N   one raw payload frame per entry of ``header.tensors`` (in order)

The header is a map keyed by field name; ``kind`` selects the struct. Decoding is
strict: unknown fields, wrong types and out-of-range values are rejected, and the
protocol version ``v`` is checked on every message (see :mod:`.codec`).

Example, a request carrying one int8-quantized activation (header shown as JSON)::

    frame 0: {"kind": "infer", "v": 1, "id": 7, "bundle": "9f86d0...0a08",
              "stage": 1, "deadline_ms": 150.0, "top_k": 5,
              "tensors": [{"name": "act", "dtype": "float32", "shape": [1, 64, 8, 8],
                           "encoding": "i8", "scale": 0.0213, "compression": "none",
                           "nbytes": 4096}]}
    frame 1: 4096 bytes, int8, C order

and its reply::

    frame 0: {"kind": "result", "v": 1, "id": 7, "status": 0, "stage": 1,
              "scores": [0.91, 0.04, ...], "classes": [3, 8, ...],
              "queue_ms": 0.4, "compute_ms": 1.9, "tensors": []}
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

import msgspec

__all__ = [
    "COMPRESSIONS",
    "DTYPES",
    "ENCODINGS",
    "FINGERPRINT_PATTERN",
    "MAX_ID",
    "MAX_MILLIS",
    "MAX_NAME",
    "MAX_RANK",
    "MAX_STAGE",
    "MAX_TENSORS",
    "MAX_TOP_K",
    "PROTOCOL_VERSION",
    "ErrorReply",
    "InferRequest",
    "Message",
    "Ping",
    "Pong",
    "Result",
    "TensorDesc",
]

#: The only protocol version this implementation speaks; any other ``v`` is refused.
PROTOCOL_VERSION = 1

#: Hard caps written into the schema; :class:`.codec.Limits` may set lower ones.
MAX_TENSORS = 64
MAX_RANK = 8

DType = Literal[
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
]
Encoding = Literal["raw", "f16", "i8", "jpeg"]
Compression = Literal["none", "lz4", "zstd"]

#: Element types allowed on the wire (always little-endian): the schema's own list.
DTYPES: tuple[str, ...] = get_args(DType)
ENCODINGS: tuple[str, ...] = get_args(Encoding)
COMPRESSIONS: tuple[str, ...] = get_args(Compression)

#: Upper bounds of header fields, as the schema below enforces them (the encoder
#: checks the same ones before sending: protocol/codec.py).
MAX_ID = 2**63 - 1
MAX_STAGE = 1023
MAX_TOP_K = 65535
MAX_MILLIS = 3_600_000.0
MAX_NAME = 128
#: A bundle fingerprint: the hex SHA-256 of its canonical manifest.
FINGERPRINT_PATTERN = "^[0-9a-f]{64}$"

_U64 = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
_Version = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
_Stage = Annotated[int, msgspec.Meta(ge=0, le=MAX_STAGE)]
_Millis = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_MILLIS)]
_Dim = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
_Fingerprint = Annotated[str, msgspec.Meta(pattern=FINGERPRINT_PATTERN)]
_MAX_SCORES = 1 << 20


class _Header(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Fields every header has: ``kind`` (the tag), ``v`` and ``id``."""

    v: _Version
    id: _U64

    @property
    def kind(self) -> str:
        """The ``kind`` tag on the wire: ``infer``, ``ping``, ``result``, ``error``, ``pong``."""
        return str(self.__struct_config__.tag)


class TensorDesc(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Describes one payload frame: what array it decodes to and how it is encoded.

    ``dtype`` and ``shape`` are those of the array the receiver reconstructs;
    ``encoding`` says how the frame's bytes represent it; ``scale`` is required for
    ``i8`` and absent otherwise; ``nbytes`` is the exact length of the frame as sent
    (after compression).
    """

    name: _Name
    dtype: DType
    shape: Annotated[list[_Dim], msgspec.Meta(max_length=MAX_RANK)]
    encoding: Encoding = "raw"
    scale: float | None = None
    compression: Compression = "none"
    nbytes: Annotated[int, msgspec.Meta(ge=0, le=2**40)]


class InferRequest(_Header, tag="infer", kw_only=True, frozen=True):
    """Run a bundle's chain from ``stage`` on the tensors that follow the header.

    Frames: ``[header, payload_0, ..., payload_{N-1}]`` with N = ``len(tensors)``.
    ``deadline_ms`` is the time left when the client sent it; ``top_k`` = 0 asks for
    every class score.
    """

    bundle: _Fingerprint
    stage: _Stage
    deadline_ms: _Millis
    top_k: Annotated[int, msgspec.Meta(ge=0, le=MAX_TOP_K)] = 0
    tensors: Annotated[list[TensorDesc], msgspec.Meta(max_length=MAX_TENSORS)] = []


class Ping(_Header, tag="ping", kw_only=True, frozen=True):
    """Health check. Frames: ``[header]``. Answered by a :class:`Pong` with the same id."""


class Result(_Header, tag="result", kw_only=True, frozen=True):
    """A successful answer to an :class:`InferRequest`.

    Frames: ``[header, payload_0, ...]`` (usually just the header). ``scores`` are the
    answering stage's class scores; when ``classes`` is ``None`` they are all the
    classes in class order, else ``classes[i]`` is the class of ``scores[i]`` (top-k,
    best first). ``stage`` is the index of the stage that produced the answer.
    """

    status: Literal[0] = 0
    stage: _Stage
    scores: Annotated[list[float], msgspec.Meta(max_length=_MAX_SCORES)] = []
    classes: Annotated[list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(max_length=_MAX_SCORES)] | None = None
    queue_ms: _Millis = 0.0
    compute_ms: _Millis = 0.0
    tensors: Annotated[list[TensorDesc], msgspec.Meta(max_length=MAX_TENSORS)] = []


class ErrorReply(_Header, tag="error", kw_only=True, frozen=True):
    """A request that could not be answered. Frames: ``[header]``.

    ``status`` is a non-zero :class:`.errors.StatusCode`; ``message`` is for humans.
    ``id`` is the request's id, or 0 when the request was too broken to read it.
    """

    status: Annotated[int, msgspec.Meta(ge=1, le=255)]
    message: Annotated[str, msgspec.Meta(max_length=1024)] = ""


class Pong(_Header, tag="pong", kw_only=True, frozen=True):
    """Answer to a :class:`Ping`. Frames: ``[header]``.

    ``server`` names the server software; ``bundles`` lists the fingerprints it
    serves; ``max_message_bytes`` is its limit on the total size of a request.
    """

    server: Annotated[str, msgspec.Meta(max_length=256)] = ""
    bundles: Annotated[list[_Fingerprint], msgspec.Meta(max_length=1024)] = []
    max_message_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0


#: Any header, decoded by its ``kind`` tag.
Message = InferRequest | Ping | Result | ErrorReply | Pong
