"""Tensors <-> payload frames: the array half of the codec (pure, no sockets).

:func:`encode_tensor` puts one array on the wire as a descriptor and a payload
frame (``raw`` views the array, ``f16``/``i8`` narrow it, ``jpeg`` and lz4/zstd
compress it, through :mod:`.payloads`); :func:`decode_views` checks every
descriptor against :class:`Limits` and its frame's length before allocating
anything, then decodes. :mod:`.codec` builds whole messages from these; it
re-exports everything public here, so ``jetsplit.protocol.codec`` stays the one
import for callers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DecodeError, EncodeError, StatusCode
from .messages import (
    COMPRESSIONS,
    DTYPES,
    ENCODINGS,
    MAX_NAME,
    MAX_RANK,
    MAX_TENSORS,
    PROTOCOL_VERSION,
    TensorDesc,
)
from .payloads import JPEG_MAX_SIDE, compress, decode_jpeg, decompress, encode_jpeg

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "DEFAULT_LIMITS",
    "Encodings",
    "Frame",
    "Limits",
    "TensorEncoding",
    "decode_tensor",
    "decode_tensors",
    "decode_views",
    "encode_tensor",
    "encode_tensors",
]

#: What an outgoing frame is: bytes, or a memoryview onto an array.
Frame = bytes | memoryview


@dataclass(frozen=True)
class Limits:
    """Bounds a receiver enforces before allocating anything (SPEC.md section 7).

    ``max_message_bytes`` bounds the sum of all frames and is also the socket's
    ``ZMQ_MAXMSGSIZE`` (libzmq checks it per frame, we check the sum);
    ``max_decoded_bytes`` bounds what decoding may allocate (f16/i8 widen, jpeg and
    compression expand).
    """

    max_header_bytes: int = 1 << 20
    max_message_bytes: int = 64 << 20
    max_decoded_bytes: int = 256 << 20
    max_tensors: int = 16
    max_rank: int = MAX_RANK
    max_elements: int = 1 << 26

    def __post_init__(self) -> None:
        if not 0 <= self.max_tensors <= MAX_TENSORS:
            raise ValueError(f"max_tensors must be in [0, {MAX_TENSORS}], got {self.max_tensors}")
        if not 0 <= self.max_rank <= MAX_RANK:
            raise ValueError(f"max_rank must be in [0, {MAX_RANK}], got {self.max_rank}")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class TensorEncoding:
    """How to put one array on the wire: ``encoding`` plus optional ``compression``.

    ``quality`` is the JPEG quality (1-100); ``level`` the compressor's level (None:
    the library default). :meth:`parse` reads the short form used in bundles and
    configs: ``"raw"``, ``"f16+lz4"``, ``"i8+zstd"``, ``"jpeg"``.
    """

    encoding: str = "raw"
    compression: str = "none"
    quality: int = 90
    level: int | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise EncodeError(f"unknown encoding {self.encoding!r}; expected one of {ENCODINGS}")
        if self.compression not in COMPRESSIONS:
            raise EncodeError(
                f"unknown compression {self.compression!r}; expected one of {COMPRESSIONS}"
            )
        if self.encoding == "jpeg" and self.compression != "none":
            raise EncodeError("jpeg payloads are already compressed; compression must be 'none'")
        if not 1 <= self.quality <= 100:
            raise EncodeError(f"jpeg quality must be in [1, 100], got {self.quality}")

    @classmethod
    def parse(cls, spec: str | TensorEncoding) -> TensorEncoding:
        """``"i8+lz4"`` -> ``TensorEncoding("i8", "lz4")``; an instance passes through."""
        if isinstance(spec, TensorEncoding):
            return spec
        return _parse_encoding(spec)


@functools.lru_cache(maxsize=256)
def _parse_encoding(spec: str) -> TensorEncoding:
    # Cached: a client parses the same one or two specs for every request, and
    # instances are immutable.
    encoding, _, compression = spec.strip().partition("+")
    return TensorEncoding(encoding or "raw", compression or "none")


#: Per-tensor encodings: one for all tensors, or a mapping by tensor name
#: (names not in the mapping are sent ``raw``).
Encodings = str | TensorEncoding | Mapping[str, str | TensorEncoding] | None

_RAW = TensorEncoding()
_FLOATS = ("float16", "float32", "float64")

#: dtype name -> the dtype it travels as: little-endian whatever the host (a no-op
#: on x86_64 and aarch64).
_WIRE_DTYPES: dict[str, np.dtype[Any]] = {name: np.dtype(name).newbyteorder("<") for name in DTYPES}
#: Arrays whose dtype is already the wire's (the host's native one on x86_64 and
#: aarch64) -> the name; looked up by dtype so the hot path skips ``dtype.name``
#: (a Python-level property in numpy) and any byte swapping.
_AS_WIRE: dict[np.dtype[Any], str] = {np.dtype(n): n for n in DTYPES if np.dtype(n) == _WIRE_DTYPES[n]}
_NATIVE_DTYPES: dict[str, np.dtype[Any]] = {name: np.dtype(name) for name in DTYPES}
_ITEMSIZE: dict[str, int] = {name: np.dtype(name).itemsize for name in DTYPES}
_F16 = np.dtype("<f2")
_ENCODED_ITEMSIZE = {"f16": 2, "i8": 1}


def _payload_itemsize(desc: TensorDesc) -> int:
    return _ENCODED_ITEMSIZE.get(desc.encoding) or _ITEMSIZE[desc.dtype]


# --------------------------------------------------------------------------- encode


def encode_tensor(
    name: str, array: np.ndarray[Any, Any] | Any, encoding: str | TensorEncoding = _RAW
) -> tuple[TensorDesc, Frame]:
    """Encode one array; returns its descriptor and its payload frame.

    Any memory layout is accepted (non-contiguous, Fortran order, big-endian,
    0-d, empty); ``raw`` of a C-contiguous little-endian array is not copied.
    """
    enc = encoding if isinstance(encoding, TensorEncoding) else _parse_encoding(encoding)
    a = array if type(array) is np.ndarray else np.asarray(array)
    dtype = _AS_WIRE.get(a.dtype)
    if dtype is None:
        dtype = a.dtype.name
        if dtype not in _WIRE_DTYPES:
            raise EncodeError(f"tensor {name!r}: dtype {a.dtype} is not allowed; allowed: {DTYPES}")
        a = a.astype(_WIRE_DTYPES[dtype])  # a byte-swapped array: swap once, here
    if a.ndim > MAX_RANK:
        raise EncodeError(f"tensor {name!r}: rank {a.ndim} exceeds {MAX_RANK}")
    if not 0 < len(name) <= MAX_NAME:
        raise EncodeError(f"tensor name {name!r}: expected 1 to {MAX_NAME} characters")
    scale: float | None = None
    payload: Frame
    if enc.encoding == "raw":
        # A C-contiguous array is sent as its own buffer (any format: ZeroMQ sends bytes).
        payload = a.data if a.flags.c_contiguous else _as_bytes_view(a)
    elif enc.encoding == "f16":
        if dtype not in _FLOATS:
            raise EncodeError(f"tensor {name!r}: f16 needs a float array, got {dtype}")
        payload = _as_bytes_view(a.astype("<f2", copy=False))
    elif enc.encoding == "i8":
        if dtype not in _FLOATS:
            raise EncodeError(f"tensor {name!r}: i8 needs a float array, got {dtype}")
        q, scale = _quantize(name, a)
        payload = _as_bytes_view(q)
    else:
        payload = encode_jpeg(name, a, enc.quality)
    if enc.compression != "none":
        payload = compress(payload, enc.compression, enc.level)
    desc = TensorDesc(
        name=name,
        dtype=dtype,  # type: ignore[arg-type]  # checked against DTYPES above
        shape=list(a.shape),
        encoding=enc.encoding,  # type: ignore[arg-type]  # checked in TensorEncoding
        scale=scale,
        compression=enc.compression,  # type: ignore[arg-type]
        nbytes=len(payload) if isinstance(payload, bytes) else payload.nbytes,
    )
    return desc, payload


def _as_bytes_view(a: np.ndarray[Any, Any]) -> memoryview:
    # ascontiguousarray copies only when the layout needs it (Fortran, strided);
    # the flat uint8 view makes 0-d and bool arrays plain bytes buffers.
    c = np.ascontiguousarray(a)
    return c.reshape(-1).view(np.uint8).data


def _quantize(name: str, a: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], float]:
    x = a.astype(np.float32, copy=False)
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    if not math.isfinite(amax):
        raise EncodeError(f"tensor {name!r}: i8 cannot encode NaN or infinity")
    # An all-zero tensor still needs a positive scale so that decoders can divide.
    scale = amax / 127.0 if amax > 0.0 else 1.0
    q = np.clip(np.rint(x / np.float32(scale)), -127, 127).astype(np.int8)
    return q, scale


def encode_tensors(
    tensors: Mapping[str, np.ndarray[Any, Any]], encodings: Encodings = None
) -> tuple[list[TensorDesc], list[Frame]]:
    """Encode every array of ``tensors`` (in mapping order) with its encoding."""
    descs: list[TensorDesc] = []
    frames: list[Frame] = []
    for name, array in tensors.items():
        desc, frame = encode_tensor(name, array, _encoding_for(name, encodings))
        descs.append(desc)
        frames.append(frame)
    return descs, frames


def _encoding_for(name: str, encodings: Encodings) -> str | TensorEncoding:
    if encodings is None:
        return _RAW
    if isinstance(encodings, (str, TensorEncoding)):
        return encodings
    return encodings.get(name, _RAW)


# --------------------------------------------------------------------------- decode


def decode_tensors(
    descs: Sequence[TensorDesc], frames: Sequence[ReadableBuffer], limits: Limits = DEFAULT_LIMITS
) -> dict[str, np.ndarray[Any, Any]]:
    """Decode payload frames against their descriptors; all checks come first."""
    return decode_views(descs, [f if type(f) is memoryview else memoryview(f) for f in frames], limits)


def decode_views(
    descs: Sequence[TensorDesc], views: Sequence[memoryview], limits: Limits, keep_f16: bool = False,
    version: int = PROTOCOL_VERSION,
) -> dict[str, np.ndarray[Any, Any]]:
    if len(descs) > limits.max_tensors:
        raise DecodeError(f"{len(descs)} tensors exceed {limits.max_tensors}", StatusCode.TOO_LARGE)
    if len(views) != len(descs):
        raise DecodeError(f"header describes {len(descs)} tensors but {len(views)} payload frames follow")
    decoded_bytes = 0
    for desc, view in zip(descs, views):
        decoded_bytes += _check(desc, view.nbytes, limits)
    if len(descs) > 1:
        seen: set[str] = set()
        for desc in descs:
            if desc.name in seen:
                raise DecodeError(f"duplicate tensor name {desc.name!r}")
            seen.add(desc.name)
    if decoded_bytes > limits.max_decoded_bytes:
        raise DecodeError(
            f"tensors would decode to {decoded_bytes} bytes, over {limits.max_decoded_bytes}",
            StatusCode.TOO_LARGE,
        )
    return {desc.name: _decode_checked(desc, view, keep_f16, version) for desc, view in zip(descs, views)}


def decode_tensor(
    desc: TensorDesc, frame: ReadableBuffer, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray[Any, Any]:
    """Decode one payload frame; ``raw`` returns a view of ``frame``."""
    view = memoryview(frame)
    decoded = _check(desc, view.nbytes, limits)
    if decoded > limits.max_decoded_bytes:
        raise DecodeError(f"tensor {desc.name!r} too large", StatusCode.TOO_LARGE)
    return _decode_checked(desc, view)


def _check(desc: TensorDesc, frame_len: int, limits: Limits) -> int:
    """Validate a descriptor against the limits and its frame's length, allocating
    nothing; returns the number of bytes decoding will produce."""
    name = desc.name
    shape = desc.shape
    if len(shape) > limits.max_rank:
        raise DecodeError(f"tensor {name!r}: rank {len(shape)} exceeds {limits.max_rank}", StatusCode.TOO_LARGE)
    # Python ints: no overflow (at most 8 dims, each < 2**31, by the schema).
    elements = math.prod(shape)
    if elements > limits.max_elements:
        raise DecodeError(
            f"tensor {name!r}: shape {shape} exceeds {limits.max_elements} elements", StatusCode.TOO_LARGE
        )
    if frame_len != desc.nbytes:
        raise DecodeError(f"tensor {name!r}: header says {desc.nbytes} bytes, frame has {frame_len}")
    encoding = desc.encoding
    if encoding == "raw" and desc.compression == "none" and desc.scale is None:
        # The common case first, in as few steps as it takes (a receiver runs this
        # with caches a large payload just flushed).
        payload = elements * _ITEMSIZE[desc.dtype]
        if frame_len != payload:
            raise DecodeError(
                f"tensor {name!r}: shape {shape} as raw {desc.dtype} needs {payload} bytes, frame has {frame_len}"
            )
        return payload
    if encoding == "i8":
        if desc.scale is None or not math.isfinite(desc.scale) or desc.scale <= 0.0:
            raise DecodeError(f"tensor {name!r}: i8 needs a finite positive scale, got {desc.scale}")
    elif desc.scale is not None:
        raise DecodeError(f"tensor {name!r}: scale is only allowed with i8")
    if (encoding == "f16" or encoding == "i8") and desc.dtype not in _FLOATS:
        raise DecodeError(f"tensor {name!r}: {encoding} decodes to floats, not {desc.dtype}")
    if encoding == "jpeg":
        if desc.dtype != "uint8" or not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3))):
            raise DecodeError(f"tensor {name!r}: jpeg must be uint8 HxW, HxWx1 or HxWx3")
        if not (0 < shape[0] <= JPEG_MAX_SIDE and 0 < shape[1] <= JPEG_MAX_SIDE):
            raise DecodeError(f"tensor {name!r}: jpeg sides must be in [1, 65535]")
        if desc.compression != "none":
            raise DecodeError(f"tensor {name!r}: jpeg must not be compressed")
        if frame_len == 0:
            raise DecodeError(f"tensor {name!r}: empty jpeg")
        return elements
    payload = elements * _payload_itemsize(desc)
    compressed = desc.compression != "none"
    if not compressed and frame_len != payload:
        raise DecodeError(
            f"tensor {name!r}: shape {shape} as {encoding} {desc.dtype} needs "
            f"{payload} bytes, frame has {frame_len}"
        )
    # The widened array plus, when compressed, the decompressed payload.
    return elements * _ITEMSIZE[desc.dtype] + (payload if compressed else 0)


def _decode_checked(
    desc: TensorDesc, view: memoryview, keep_f16: bool = False, version: int = PROTOCOL_VERSION
) -> np.ndarray[Any, Any]:
    encoding = desc.encoding
    if encoding == "jpeg":
        # Version 1 mapped a JPEG's R, G, B to channels 0, 1, 2; version 2 maps
        # B, G, R, the order of camera frames (SPEC.md section 4).
        return decode_jpeg(desc, view, bgr=version >= 2)
    buf: memoryview | bytes = view
    if desc.compression != "none":
        buf = decompress(desc, view, math.prod(desc.shape) * _payload_itemsize(desc))
    if encoding == "raw":
        return np.frombuffer(buf, dtype=_WIRE_DTYPES[desc.dtype]).reshape(desc.shape)
    if encoding == "f16":
        half = np.frombuffer(buf, dtype=_F16).reshape(desc.shape)
        if keep_f16 and desc.dtype == "float32":
            return half
        return half.astype(_NATIVE_DTYPES[desc.dtype], copy=False)
    assert desc.scale is not None  # checked in _check
    q = np.frombuffer(buf, dtype=np.int8)
    # Dequantize in at least float32: a float16 scale can underflow to zero.
    work = np.float64 if desc.dtype == "float64" else np.float32
    out = q.astype(work)
    out *= work(desc.scale)
    return out.astype(_NATIVE_DTYPES[desc.dtype], copy=False).reshape(desc.shape)
