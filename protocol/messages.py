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
    "COLOURS",
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
    "SERVER_STATES",
    "SUPPORTED_VERSIONS",
    "BundleInfo",
    "Describe",
    "Description",
    "ErrorReply",
    "GateInfo",
    "InferRequest",
    "Message",
    "Ping",
    "Pong",
    "PreprocessInfo",
    "Result",
    "ServerLimits",
    "StageInfo",
    "TensorDesc",
    "TensorInfo",
]

#: The protocol version this implementation sends (SPEC.md section 9).
PROTOCOL_VERSION = 2
#: Every version it reads; a reply is written in the version of its request, so a
#: client of an older release keeps working against a newer worker.
SUPPORTED_VERSIONS = (1, 2)

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
ServerState = Literal["serving", "draining"]
Colour = Literal["gray", "rgb", "bgr"]

#: Element types allowed on the wire (always little-endian): the schema's own list.
DTYPES: tuple[str, ...] = get_args(DType)
ENCODINGS: tuple[str, ...] = get_args(Encoding)
COMPRESSIONS: tuple[str, ...] = get_args(Compression)
SERVER_STATES: tuple[str, ...] = get_args(ServerState)
COLOURS: tuple[str, ...] = get_args(Colour)

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
_MAX_LABELS = 1 << 16
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Side = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class _Header(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Fields every header has: ``kind`` (the tag), ``v`` and ``id``."""

    v: _Version
    id: _U64

    @property
    def kind(self) -> str:
        """The ``kind`` tag on the wire: ``infer``, ``ping``, ``result``, ``error``, ``pong``."""
        return str(self.__struct_config__.tag)


class TensorDesc(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """Describes one payload frame: what array it decodes to and how it is encoded.

    ``dtype`` and ``shape`` are those of the array the receiver reconstructs;
    ``encoding`` says how the frame's bytes represent it; ``scale`` is required for
    ``i8`` and absent otherwise; ``nbytes`` is the exact length of the frame as sent
    (after compression). Optional fields at their default are left out when
    encoding, as for :class:`InferRequest` and :class:`Result`: smaller headers, and
    a receiver's repeated-key check is then a count (protocol/peek.py).
    """

    name: _Name
    dtype: DType
    shape: Annotated[list[_Dim], msgspec.Meta(max_length=MAX_RANK)]
    encoding: Encoding = "raw"
    scale: float | None = None
    compression: Compression = "none"
    nbytes: Annotated[int, msgspec.Meta(ge=0, le=2**40)]


class InferRequest(_Header, tag="infer", kw_only=True, frozen=True, omit_defaults=True):
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


class Result(_Header, tag="result", kw_only=True, frozen=True, omit_defaults=True):
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


class Pong(_Header, tag="pong", kw_only=True, frozen=True, omit_defaults=True):
    """Answer to a :class:`Ping`. Frames: ``[header]``.

    ``server`` names the server software; ``bundles`` lists the fingerprints it
    serves; ``max_message_bytes`` is its limit on the total size of a request.
    Version 2 adds ``state`` (``serving``, or ``draining``: no new work, send it
    elsewhere) and ``load`` (requests it holds, queued or running). Fields equal to
    their default are left out, so a pong to a version-1 ping (built without the
    version-2 fields) is a version-1 pong.
    """

    server: Annotated[str, msgspec.Meta(max_length=256)] = ""
    bundles: Annotated[list[_Fingerprint], msgspec.Meta(max_length=1024)] = []
    max_message_bytes: Annotated[int, msgspec.Meta(ge=0)] = 0
    state: ServerState = "serving"
    load: _Count = 0


class Describe(_Header, tag="describe", kw_only=True, frozen=True):
    """Ask a server what it serves (version 2). Frames: ``[header]``; answered by a
    :class:`Description` with the same id."""


class TensorInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """One tensor a request carries (or a stage produces): ``shape`` has ``None`` for
    a dimension of any size; ``encodings``/``compressions`` are those the server
    accepts for it; ``value`` is the only value a scalar may have (``count``)."""

    name: _Name
    dtype: DType
    shape: Annotated[list[_Dim | None], msgspec.Meta(max_length=MAX_RANK)]
    encodings: Annotated[list[Encoding], msgspec.Meta(max_length=8)] = []
    compressions: Annotated[list[Compression], msgspec.Meta(max_length=8)] = []
    value: int | None = None


class PreprocessInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What the server does to a ``frame`` before the model sees it: resize to
    ``height`` x ``width`` (``interpolation``), convert to ``colour``, then per
    channel ``(pixel * scale - mean) / std`` as ``dtype``, laid out ``layout``."""

    height: _Side
    width: _Side
    colour: Colour
    layout: Literal["nchw", "nhwc"]
    dtype: Literal["float32", "float16", "uint8"]
    scale: float
    mean: Annotated[list[float], msgspec.Meta(min_length=1, max_length=4)]
    std: Annotated[list[float], msgspec.Meta(min_length=1, max_length=4)]
    interpolation: Literal["area", "linear", "nearest", "cubic"]


class GateInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The gate after a stage: accept the stage's answer iff its score >= ``threshold``."""

    kind: Annotated[str, msgspec.Meta(max_length=64)]
    threshold: float


class StageInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """One stage of a bundle's chain. ``inputs`` are the tensors an ``infer`` request
    resuming at this stage carries (cloud stages only: a request cannot resume at an
    edge stage); ``preprocess`` is set when they include ``frame``. ``outputs`` are
    what the stage produces: ``probs`` (the combined class probabilities a
    ``result`` carries) and, when it hands one on, ``carry``."""

    index: _Stage
    name: _Name
    where: Literal["edge", "cloud"]
    input: Literal["frame", "carry"]
    combine: Literal["replace", "average"]
    inputs: Annotated[list[TensorInfo], msgspec.Meta(max_length=MAX_TENSORS)] = []
    preprocess: PreprocessInfo | None = None
    outputs: Annotated[list[TensorInfo], msgspec.Meta(max_length=MAX_TENSORS)] = []
    gate: GateInfo | None = None


class BundleInfo(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """A bundle the server serves: ``labels[i]`` names class ``i``."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    fingerprint: _Fingerprint
    labels: Annotated[list[Annotated[str, msgspec.Meta(max_length=1024)]], msgspec.Meta(max_length=_MAX_LABELS)]
    stages: Annotated[list[StageInfo], msgspec.Meta(min_length=1, max_length=MAX_STAGE + 1)]


class ServerLimits(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The limits of SPEC.md section 7 as this server enforces them."""

    max_message_bytes: _Count
    max_header_bytes: _Count
    max_tensors: Annotated[int, msgspec.Meta(ge=0, le=MAX_TENSORS)]
    max_rank: Annotated[int, msgspec.Meta(ge=0, le=MAX_RANK)]
    max_elements: _Count
    max_decoded_bytes: _Count


class Description(_Header, tag="description", kw_only=True, frozen=True):
    """Answer to a :class:`Describe` (version 2). Frames: ``[header]``.

    Everything a client needs to form ``infer`` requests without the bundle: the
    bundles with their stages' input tensors, preprocessing and outputs, the
    encodings and compressions the server decodes, and its limits.
    """

    server: Annotated[str, msgspec.Meta(max_length=256)] = ""
    state: ServerState = "serving"
    encodings: Annotated[list[Encoding], msgspec.Meta(max_length=8)] = []
    compressions: Annotated[list[Compression], msgspec.Meta(max_length=8)] = []
    limits: ServerLimits
    bundles: Annotated[list[BundleInfo], msgspec.Meta(max_length=1024)] = []


#: Any header, decoded by its ``kind`` tag.
Message = InferRequest | Ping | Describe | Result | ErrorReply | Pong | Description
