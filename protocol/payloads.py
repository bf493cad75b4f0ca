"""Payload transforms below the tensor codec: JPEG and lz4/zstd compression.

Pure (no sockets). OpenCV, lz4 and zstandard are imported only when a payload
needs them, so a side that never sends JPEG or compressed tensors does not need
them. Decoding is bounded: a JPEG's size is read from its frame header and a
compressed payload is never expanded past the length its descriptor implies.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from .errors import DecodeError, EncodeError, StatusCode
from .messages import TensorDesc

__all__ = ["JPEG_MAX_SIDE", "compress", "decodable", "decodable_compressions", "decode_jpeg", "decompress", "encode_jpeg", "jpeg_frame_size"]

#: The library each encoding or compression needs to be decoded (None: none).
_DECODERS = {"raw": None, "f16": None, "i8": None, "none": None, "jpeg": "cv2", "lz4": "lz4.frame", "zstd": "zstandard"}

#: JPEG stores each side in 16 bits.
JPEG_MAX_SIDE = 65535


def encode_jpeg(name: str, a: np.ndarray[Any, Any], quality: int) -> bytes:
    """A uint8 HxW, HxWx1 or HxWx3 array as a JPEG file; a 3-channel array is B, G,
    R (a camera frame as OpenCV holds it), so the file shows its true colours."""
    import cv2  # lazily: only jpeg needs OpenCV

    if a.dtype != np.uint8:
        raise EncodeError(f"tensor {name!r}: jpeg needs uint8, got {a.dtype}")
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3))):
        raise EncodeError(f"tensor {name!r}: jpeg needs shape HxW, HxWx1 or HxWx3, got {a.shape}")
    if not (0 < a.shape[0] <= JPEG_MAX_SIDE and 0 < a.shape[1] <= JPEG_MAX_SIDE):
        raise EncodeError(f"tensor {name!r}: jpeg sides must be in [1, 65535], got {a.shape}")
    img = np.ascontiguousarray(a)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EncodeError(f"tensor {name!r}: OpenCV could not encode the jpeg")
    return buf.tobytes()


def decodable(name: str) -> bool:
    """True if this side can decode the encoding or compression ``name`` (its
    library is installed): what a server lists in its ``description``."""
    module = _DECODERS.get(name)
    if module is None:
        return name in _DECODERS
    return importlib.util.find_spec(module.split(".")[0]) is not None


def decodable_compressions() -> list[str]:
    """The compressions this side can decode, ``none`` included."""
    return [c for c in ("none", "lz4", "zstd") if decodable(c)]


def compress(payload: bytes | memoryview, compression: str, level: int | None = None) -> bytes | memoryview:
    """``payload`` compressed as ``compression`` (``none`` returns it as is)."""
    if compression == "none":
        return payload
    if compression == "lz4":
        lz4_frame = _import_codec("lz4.frame", "lz4")
        kwargs = {} if level is None else {"compression_level": level}
        return bytes(lz4_frame.compress(payload, store_size=True, **kwargs))
    zstandard = _import_codec("zstandard", "zstandard")
    level = 3 if level is None else level
    return bytes(zstandard.ZstdCompressor(level=level, write_content_size=True).compress(payload))


def _import_codec(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EncodeError(f"compression needs the {package!r} package: pip install {package}") from exc


def decompress(desc: TensorDesc, view: memoryview, expected: int) -> bytes:
    """The payload of ``desc`` decompressed. Decompress to exactly ``expected`` bytes, never allocating more than that."""
    bad = DecodeError(f"tensor {desc.name!r}: {desc.compression} payload does not decompress to {expected} bytes")
    try:
        if desc.compression == "lz4":
            lz4_frame = _import_decoder("lz4.frame", "lz4")
            d = lz4_frame.LZ4FrameDecompressor()
            # One byte more than expected reveals a payload that is too long.
            out = d.decompress(view, max_length=expected + 1)
            if len(out) != expected or not d.eof or d.unused_data:
                raise bad
            return bytes(out)
        zstandard = _import_decoder("zstandard", "zstandard")
        declared = zstandard.frame_content_size(view)
        # A declared size is trusted by the library over max_output_size: check it.
        if declared not in (-1, expected):
            raise bad
        # A stream reader bounds the output; reading on across frames makes
        # trailing bytes (another frame, or garbage) show up as data or an error.
        reader = zstandard.ZstdDecompressor().stream_reader(view, read_across_frames=True)
        chunks: list[bytes] = []
        got = 0
        while got <= expected:
            chunk = reader.read(expected + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got != expected:
            raise bad
        return b"".join(chunks)
    except DecodeError:
        raise
    except Exception as exc:  # the libraries raise their own types on corrupt input
        raise DecodeError(f"tensor {desc.name!r}: corrupt {desc.compression} payload: {exc}") from None


def _import_decoder(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DecodeError(
            f"{package!r} is not installed on this side", StatusCode.UNSUPPORTED_ENCODING
        ) from None


def decode_jpeg(desc: TensorDesc, view: memoryview, bgr: bool = True) -> np.ndarray[Any, Any]:
    """The JPEG payload of ``desc`` as a uint8 array of its shape, size checked first.
    Three channels come out B, G, R (protocol version 2), or R, G, B when not ``bgr``
    (a version-1 request)."""
    import cv2

    height, width, components = jpeg_frame_size(desc.name, view)
    channels = desc.shape[2] if len(desc.shape) == 3 else 1
    if (height, width, components) != (desc.shape[0], desc.shape[1], channels):
        raise DecodeError(
            f"tensor {desc.name!r}: jpeg is {height}x{width}x{components}, header says {desc.shape}"
        )
    # IMREAD_UNCHANGED: no EXIF rotation, no channel conversion behind our back.
    img = cv2.imdecode(np.frombuffer(view, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DecodeError(f"tensor {desc.name!r}: corrupt jpeg")
    if img.ndim == 3 and not bgr:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = img.reshape(desc.shape)
    if img.shape != tuple(desc.shape):
        raise DecodeError(f"tensor {desc.name!r}: jpeg decoded to {img.shape}")
    return img


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_frame_size(name: str, data: memoryview) -> tuple[int, int, int]:
    """Height, width and component count from the JPEG's SOF segment, read without
    decoding, so a small file cannot make the decoder allocate a huge image."""
    b = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    n = len(b)
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        raise DecodeError(f"tensor {name!r}: not a jpeg (no SOI marker)")
    i = 2
    while i + 4 <= n:
        if b[i] != 0xFF:
            raise DecodeError(f"tensor {name!r}: corrupt jpeg marker stream")
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or start of scan before any SOF
            break
        length = (b[i + 2] << 8) | b[i + 3]
        if marker in _SOF_MARKERS:
            if i + 10 > n or length < 8:
                break
            height = (b[i + 5] << 8) | b[i + 6]
            width = (b[i + 7] << 8) | b[i + 8]
            return height, width, b[i + 9]
        i += 2 + length
    raise DecodeError(f"tensor {name!r}: jpeg has no frame header")
