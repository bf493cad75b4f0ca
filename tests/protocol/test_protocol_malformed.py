"""Malformed and hostile messages: each gets the right status, none allocates or crashes."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import lz4.frame
import msgspec
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from jetsplit.protocol import DecodeError, Limits, StatusCode, decode_message, encode_infer

FP = "0123456789abcdef" * 4
BAD, BIG, VERSION = StatusCode.BAD_REQUEST, StatusCode.TOO_LARGE, StatusCode.UNSUPPORTED_VERSION


def _request(**overrides: Any) -> list[bytes]:
    """A valid one-tensor request as bytes frames, with header fields overridden
    (``tensor`` overrides the tensor descriptor's fields)."""
    frames = encode_infer(42, FP, 1, 100.0, {"x": np.arange(12, dtype=np.float32).reshape(3, 4)})
    header = msgspec.msgpack.decode(frames[0])
    desc_overrides = overrides.pop("tensor", {})
    header.update(overrides)
    header["tensors"][0].update(desc_overrides)
    for key in [k for k, v in header.items() if v is _DROP]:
        del header[key]
    for key in [k for k, v in header["tensors"][0].items() if v is _DROP]:
        del header["tensors"][0][key]
    return [msgspec.msgpack.encode(header), bytes(frames[1])]


_DROP = object()


def _with_payload(payload: bytes, **tensor: Any) -> list[bytes]:
    frames = _request(tensor={"nbytes": len(payload), **tensor})
    return [frames[0], payload]


def _jpeg(height: int, width: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.zeros((height, width), np.uint8))
    assert ok
    return buf.tobytes()


def _lying_jpeg(height: int, width: int) -> bytes:
    """A valid small JPEG whose frame header (SOF) is patched to claim another size."""
    data = bytearray(_jpeg(8, 8))
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + (data[i + 2] << 8 | data[i + 3])
    data[i + 5 : i + 9] = bytes([height >> 8, height & 255, width >> 8, width & 255])
    return bytes(data)


GIB = 1 << 30
CASES: list[tuple[str, Callable[[], list[bytes]], StatusCode, int | None]] = [
    ("no frames", lambda: [], BAD, None),
    ("empty header", lambda: [b""], BAD, None),
    ("garbage msgpack", lambda: [b"\xc1\xff\x00"], BAD, None),
    ("truncated header", lambda: [_request()[0][:-5], _request()[1]], BAD, 42),  # the id comes early
    ("header is an array", lambda: [msgspec.msgpack.encode([1, "infer", 42])], BAD, None),
    ("header is a string", lambda: [msgspec.msgpack.encode("infer")], BAD, None),
    ("missing payload frame", lambda: _request()[:1], BAD, 42),
    ("extra frame", lambda: [*_request(), b"extra"], BAD, 42),
    ("frame shorter than nbytes", lambda: [_request()[0], _request()[1][:-1]], BAD, 42),
    ("shape lies about the frame", lambda: _request(tensor={"shape": [4, 4]}), BAD, 42),
    ("nbytes lies about the frame", lambda: _request(tensor={"nbytes": 47}), BAD, 42),
    ("huge dims", lambda: _request(tensor={"shape": [2**31 - 1, 2**31 - 1, 2**31 - 1]}), BIG, 42),
    ("dim over 2**31", lambda: _request(tensor={"shape": [2**40]}), BAD, 42),
    ("negative dim", lambda: _request(tensor={"shape": [-3, -4]}), BAD, 42),
    ("rank over the schema cap", lambda: _request(tensor={"shape": [1] * 9}), BAD, 42),
    ("unknown dtype", lambda: _request(tensor={"dtype": "complex64"}), BAD, 42),
    ("object dtype", lambda: _request(tensor={"dtype": "object"}), BAD, 42),
    ("unknown encoding", lambda: _request(tensor={"encoding": "png"}), BAD, 42),
    ("unknown compression", lambda: _request(tensor={"compression": "gzip"}), BAD, 42),
    ("unknown tensor field", lambda: _request(tensor={"stride": [4]}), BAD, 42),
    ("tensor without nbytes", lambda: _request(tensor={"nbytes": _DROP}), BAD, 42),
    ("scale on raw", lambda: _request(tensor={"scale": 0.5}), BAD, 42),
    ("i8 without scale", lambda: _with_payload(bytes(12), encoding="i8"), BAD, 42),
    ("i8 with negative scale", lambda: _with_payload(bytes(12), encoding="i8", scale=-1.0), BAD, 42),
    ("i8 with NaN scale", lambda: _with_payload(bytes(12), encoding="i8", scale=float("nan")), BAD, 42),
    ("i8 to an int dtype", lambda: _with_payload(bytes(12), encoding="i8", scale=1.0, dtype="int32"), BAD, 42),
    ("f16 frame of f32 length", lambda: _request(tensor={"encoding": "f16"}), BAD, 42),
    ("id is a string", lambda: _request(id="42"), BAD, None),
    ("id negative", lambda: _request(id=-1), BAD, None),
    ("stage negative", lambda: _request(stage=-1), BAD, 42),
    ("deadline is a string", lambda: _request(deadline_ms="soon"), BAD, 42),
    ("deadline negative", lambda: _request(deadline_ms=-5.0), BAD, 42),
    ("bundle not hex", lambda: _request(bundle="Z" * 64), BAD, 42),
    ("bundle too short", lambda: _request(bundle="ab"), BAD, 42),
    ("unknown kind", lambda: _request(kind="infer2"), BAD, 42),
    ("missing kind", lambda: _request(kind=_DROP), BAD, 42),
    ("unknown header field", lambda: _request(priority=1), BAD, 42),
    ("missing version", lambda: _request(v=_DROP), BAD, 42),
    ("unknown version", lambda: _request(v=3), VERSION, 42),
    ("unknown version, other schema", lambda: [msgspec.msgpack.encode({"v": 7, "id": 5, "op": "x"})], VERSION, 5),
    ("version 0", lambda: [msgspec.msgpack.encode({"v": 0, "kind": "ping", "id": 1})], VERSION, 1),
    # SPEC.md 7.1: the id is echoed whenever the header's id can be read.
    ("trailing bytes after the header", lambda: [_request()[0] + b"\x00", _request()[1]], BAD, 42),
    ("garbage after the header", lambda: [_request()[0] + b"\xc1\xff", _request()[1]], BAD, 42),
    ("a key that is not a string", lambda: [_with_key(7, 1), _request()[1]], BAD, 42),
    ("a key that is a map", lambda: [_with_key({"a": 1}, 1), _request()[1]], BAD, 42),
    ("a repeated header key", lambda: [_repeat_key(b"\xa5stage\x01"), _request()[1]], BAD, 42),
    ("a repeated tensor key", lambda: [_repeat_tensor_key(), _request()[1]], BAD, 42),
    ("id after a bad value", lambda: [_id_last({"kind": "infer", "v": 2, "tensors": [{"x": [1.5, None]}]}), b""], BAD, 42),
    ("duplicate tensor names", lambda: [*_request(tensors=_request_desc() * 2), _request()[1]], BAD, 42),
    ("jpeg not a jpeg", lambda: _with_payload(b"GIF89a....", encoding="jpeg", dtype="uint8", shape=[8, 8]), BAD, 42),
    ("jpeg corrupt after SOF", lambda: _with_payload(_jpeg(8, 8)[:-40] + bytes(40), encoding="jpeg", dtype="uint8", shape=[8, 8]), BAD, 42),
    ("jpeg size differs", lambda: _with_payload(_jpeg(16, 8), encoding="jpeg", dtype="uint8", shape=[8, 8]), BAD, 42),
    ("jpeg claims a huge image", lambda: _with_payload(_lying_jpeg(65000, 65000), encoding="jpeg", dtype="uint8", shape=[8, 8]), BAD, 42),
    ("jpeg grey sent as colour", lambda: _with_payload(_jpeg(8, 8), encoding="jpeg", dtype="uint8", shape=[8, 8, 3]), BAD, 42),
    ("jpeg of float32", lambda: _with_payload(_jpeg(8, 8), encoding="jpeg", shape=[8, 8]), BAD, 42),
    ("jpeg compressed", lambda: _with_payload(_jpeg(8, 8), encoding="jpeg", dtype="uint8", shape=[8, 8], compression="lz4"), BAD, 42),
    ("empty jpeg", lambda: _with_payload(b"", encoding="jpeg", dtype="uint8", shape=[8, 8]), BAD, 42),
    ("lz4 garbage", lambda: _with_payload(b"\x04\x22\x4d\x18garbage", compression="lz4"), BAD, 42),
    ("lz4 too long", lambda: _with_payload(lz4.frame.compress(bytes(49)), compression="lz4"), BAD, 42),
    ("lz4 too short", lambda: _with_payload(lz4.frame.compress(bytes(47)), compression="lz4"), BAD, 42),
    ("lz4 bomb", lambda: _with_payload(lz4.frame.compress(bytes(64 << 20)), compression="lz4"), BAD, 42),
    ("zstd trailing garbage", lambda: _with_payload(zstandard.ZstdCompressor().compress(bytes(48)) + b"abc", compression="zstd"), BAD, 42),
    ("lz4 trailing garbage", lambda: _with_payload(lz4.frame.compress(bytes(48)) + b"abc", compression="lz4"), BAD, 42),
    ("zstd garbage", lambda: _with_payload(b"\x28\xb5\x2f\xfdgarbage", compression="zstd"), BAD, 42),
    ("zstd declares a bomb", lambda: _with_payload(zstandard.ZstdCompressor().compress(bytes(64 << 20)), compression="zstd"), BAD, 42),
    (
        "zstd bomb without declared size",
        lambda: _with_payload(zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20)), compression="zstd"),
        BAD,
        42,
    ),
]


def _with_key(key: Any, value: Any) -> bytes:
    """The valid header with one more entry whose key is not a string."""
    header = _request()[0]
    assert 0x80 <= header[0] <= 0x8E
    return bytes([header[0] + 1]) + header[1:] + msgspec.msgpack.encode(key) + msgspec.msgpack.encode(value)


def _repeat_key(entry: bytes) -> bytes:
    """The valid header with ``entry`` (a key and value, as MessagePack) appended."""
    header = _request()[0]
    return bytes([header[0] + 1]) + header[1:] + entry


def _repeat_tensor_key() -> bytes:
    """The valid header with its tensor descriptor's ``name`` entry written twice."""
    header = _request()[0]
    start = header.index(b"\xa4name")
    desc = start - 1  # the descriptor's map byte comes just before its first key
    assert 0x80 <= header[desc] <= 0x8E
    return header[:desc] + bytes([header[desc] + 1]) + b"\xa4name\xa1y" + header[desc + 1:]


def _id_last(fields: dict[str, Any]) -> bytes:
    """A header map with ``id`` 42 as its last entry, after ``fields``."""
    return msgspec.msgpack.encode({**fields, "id": 42})


def _request_desc() -> list[dict[str, Any]]:
    return list(msgspec.msgpack.decode(_request()[0])["tensors"])


@pytest.mark.parametrize(("frames", "status", "request_id"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_message_gets_its_status(
    frames: Callable[[], list[bytes]], status: StatusCode, request_id: int | None
) -> None:
    data = frames()
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as info:
            decode_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.status == status, str(info.value)
    assert info.value.request_id == request_id
    # Refused before allocating: nothing near what the hostile header claims.
    assert peak < 4 << 20, f"decoding allocated {peak} bytes"


@pytest.mark.parametrize(
    ("limits", "frames"),
    [
        (Limits(max_tensors=1), lambda: encode_infer(1, FP, 0, 1.0, {"a": np.ones(1), "b": np.ones(1)})),
        (Limits(max_rank=2), lambda: encode_infer(1, FP, 0, 1.0, {"a": np.ones((1, 1, 1))})),
        (Limits(max_elements=99), lambda: encode_infer(1, FP, 0, 1.0, {"a": np.ones(100, np.uint8)})),
        (Limits(max_message_bytes=1000), lambda: encode_infer(1, FP, 0, 1.0, {"a": np.ones(1000, np.uint8)})),
        (Limits(max_header_bytes=50), lambda: encode_infer(1, FP, 0, 1.0, {"a": np.ones(1)})),
        # f16 widens to float64: 4x the frame, over the decoded-bytes budget.
        (Limits(max_decoded_bytes=5000), lambda: encode_infer(1, FP, 0, 1.0, {"a": np.ones(1000)}, "f16")),
    ],
    ids=["tensors", "rank", "elements", "message-bytes", "header-bytes", "decoded-bytes"],
)
def test_limits_give_too_large(limits: Limits, frames: Callable[[], list[Any]]) -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(frames(), limits)
    assert info.value.status == StatusCode.TOO_LARGE
    # Every header here is readable: the error carries the request's own id.
    assert info.value.request_id == 1


def test_oversize_message_carries_the_id_without_reading_the_payloads() -> None:
    frames = [*_request(), bytes(2000)]
    with pytest.raises(DecodeError) as info:
        decode_message(frames, Limits(max_message_bytes=1000))
    assert (info.value.status, info.value.request_id) == (StatusCode.TOO_LARGE, 42)


def test_an_id_beyond_the_peek_limit_is_not_read() -> None:
    # SPEC.md 7.1: a receiver looks for the id in the first 64 KiB only.
    header = msgspec.msgpack.encode({"kind": "ping", "v": 2, "pad": "x" * (70 << 10), "id": 42})
    with pytest.raises(DecodeError) as info:
        decode_message([header])
    assert (info.value.status, info.value.request_id) == (StatusCode.BAD_REQUEST, None)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=64), max_size=4))
def test_fuzz_random_frames_only_raise_decode_error(frames: list[bytes]) -> None:
    try:
        decode_message(frames)
    except DecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fuzz_mutated_header_only_raises_decode_error(data: st.DataObject) -> None:
    frames = _request()
    header = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(header) - 1))
        header[pos] = data.draw(st.integers(0, 255))
    try:
        decode_message([bytes(header), frames[1]])
    except DecodeError:
        pass
