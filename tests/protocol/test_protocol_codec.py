"""Codec round trips: every dtype and encoding, awkward layouts, zero copy."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jetsplit.protocol import (
    PROTOCOL_VERSION,
    EncodeError,
    InferRequest,
    Ping,
    Pong,
    Result,
    TensorDesc,
    TensorEncoding,
    decode_message,
    decode_tensor,
    encode_infer,
    encode_message,
    encode_tensor,
    result_for,
)
from jetsplit.protocol.codec import decode_header, encode_header, error_for, ping_for
from jetsplit.protocol.messages import DTYPES

FP = "0123456789abcdef" * 4
FLOATS = ["float16", "float32", "float64"]


def _roundtrip(array: Any, encoding: str | TensorEncoding = "raw") -> np.ndarray:
    frames = encode_infer(5, FP, 1, 50.0, {"t": array}, encoding)
    # Through bytes, as a socket would deliver them.
    decoded = decode_message([bytes(f) for f in frames])
    assert isinstance(decoded.message, InferRequest)
    return decoded.tensors["t"]


def _sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.startswith("float"):
        return rng.normal(0, 3, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    big = np.concatenate([a, a], axis=-1) if a.ndim else a
    return {
        "c": a,
        "fortran": np.asfortranarray(a),
        "strided": big[..., ::2] if a.ndim else a,
        "transposed": a.T,
        "big-endian": a.astype(a.dtype.newbyteorder(">")),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 5), (7,), (), (0,), (2, 0, 3)])
def test_raw_roundtrip_every_dtype_and_layout(dtype: str, shape: tuple[int, ...]) -> None:
    base = _sample(dtype, shape)
    for layout, array in _layouts(base).items():
        out = _roundtrip(array)
        assert out.dtype == np.dtype(dtype), layout
        assert out.shape == array.shape, layout
        np.testing.assert_array_equal(out, array, err_msg=layout)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(4, 6), (), (0, 3)])
@pytest.mark.parametrize("compression", ["none", "lz4", "zstd"])
def test_f16_and_i8_roundtrip(dtype: str, shape: tuple[int, ...], compression: str) -> None:
    for layout, array in _layouts(_sample(dtype, shape)).items():
        half = _roundtrip(array, TensorEncoding("f16", compression))
        assert half.dtype == np.dtype(dtype) and half.shape == array.shape
        np.testing.assert_allclose(half, array.astype(np.float16), err_msg=layout)

        quant = _roundtrip(array, TensorEncoding("i8", compression))
        assert quant.dtype == np.dtype(dtype) and quant.shape == array.shape
        if array.size:
            step = float(np.abs(array.astype(np.float64)).max()) / 127
            # Half a quantization step, plus float16's own rounding of the result.
            tol = step / 2 + 1e-3 * float(np.abs(array.astype(np.float64)).max())
            assert np.max(np.abs(quant.astype(np.float64) - array.astype(np.float64))) <= tol, layout


def test_i8_scale_is_max_abs_over_127() -> None:
    desc, frame = encode_tensor("a", np.array([-2.54, 0.0, 1.27], np.float32), "i8")
    assert desc.scale == pytest.approx(2.54 / 127)
    assert np.frombuffer(frame, np.int8).tolist() == [-127, 0, 64]
    zeros, _ = encode_tensor("z", np.zeros(3, np.float32), "i8")
    assert zeros.scale == 1.0  # positive even for an all-zero tensor


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_raw_compressed_roundtrip(dtype: str, compression: str) -> None:
    array = np.repeat(_sample(dtype, (4, 1)), 50, axis=1)  # compressible
    desc, frame = encode_tensor("t", array, TensorEncoding("raw", compression))
    assert desc.compression == compression and desc.nbytes < array.nbytes
    np.testing.assert_array_equal(decode_tensor(desc, frame), array)


@pytest.mark.parametrize("shape", [(32, 48), (32, 48, 1), (32, 48, 3), (1, 1, 3)])
def test_jpeg_roundtrip(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    flat = np.zeros(shape, np.uint8)
    flat[...] = rng.integers(0, 255, shape[2] if len(shape) == 3 else 1, dtype=np.uint8)
    out = _roundtrip(flat, TensorEncoding("jpeg", quality=95))
    assert out.dtype == np.uint8 and out.shape == shape
    # A flat colour survives JPEG almost exactly, in the same channel order.
    assert np.abs(out.astype(int) - flat.astype(int)).max() <= 2
    noisy = rng.integers(0, 255, shape, dtype=np.uint8)
    assert _roundtrip(np.asfortranarray(noisy), "jpeg").shape == shape


def test_jpeg_channels_are_blue_green_red() -> None:
    """SPEC.md 4 (version 2): channels 0, 1, 2 of a jpeg tensor are B, G, R, the
    order of camera frames, so the file shows a frame's true colours."""
    import cv2

    blue = np.zeros((16, 16, 3), np.uint8)
    blue[..., 0] = 255
    _, frame = encode_tensor("im", blue, "jpeg")
    # Any JPEG reader sees a blue image (OpenCV returns BGR, PIL-style readers RGB).
    bgr = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
    assert bgr[8, 8, 0] > 240 and bgr[8, 8, 2] < 15
    # A JPEG file made elsewhere (true colours) decodes to a BGR tensor.
    desc = TensorDesc(name="frame", dtype="uint8", shape=[16, 16, 3], encoding="jpeg", nbytes=len(frame))
    out = decode_tensor(desc, frame)
    assert out[8, 8, 0] > 240 and out[8, 8, 2] < 15


def test_a_version_1_request_keeps_the_version_1_jpeg_order() -> None:
    """Version 1 mapped R, G, B to channels 0, 1, 2: a v1 edge's colours survive."""
    import cv2

    red_first = np.zeros((16, 16, 3), np.uint8)
    red_first[..., 0] = 255
    ok, buf = cv2.imencode(".jpg", red_first[..., ::-1].copy())  # what a v1 encoder wrote
    assert ok
    frames = encode_infer(5, FP, 1, 100.0, {})
    header = msgspec.msgpack.decode(frames[0])
    header["v"] = 1
    header["tensors"] = [{"name": "frame", "dtype": "uint8", "shape": [16, 16, 3], "encoding": "jpeg",
                          "nbytes": len(buf)}]
    msg, tensors = decode_message([msgspec.msgpack.encode(header), buf.tobytes()])
    assert msg.v == 1 and tensors["frame"][8, 8, 0] > 240 and tensors["frame"][8, 8, 2] < 15


def test_raw_decode_is_zero_copy_and_contiguous_encode_is_too() -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    desc, frame = encode_tensor("t", array, "raw")
    assert isinstance(frame, memoryview) and np.shares_memory(np.asarray(frame), array)
    received = bytearray(frame)  # what a socket hands over
    out = decode_tensor(desc, memoryview(received))
    assert np.shares_memory(out, np.frombuffer(received, np.uint8))
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    ("array", "encoding", "match"),
    [
        (np.zeros(3, np.complex64), "raw", "dtype"),
        (np.array(["a"]), "raw", "dtype"),
        (np.zeros(3, np.int32), "f16", "float"),
        (np.zeros(3, np.uint8), "i8", "float"),
        (np.array([1.0, np.nan], np.float32), "i8", "NaN"),
        (np.zeros((4, 4), np.float32), "jpeg", "uint8"),
        (np.zeros((4, 4, 2), np.uint8), "jpeg", "shape"),
        (np.zeros((0, 4), np.uint8), "jpeg", "sides"),
        (np.zeros(4, np.uint8), "png", "unknown encoding"),
        (np.zeros(4, np.uint8), "raw+gzip", "unknown compression"),
        (np.zeros((4, 4), np.uint8), "jpeg+lz4", "already compressed"),
        (np.zeros((1,) * 9, np.uint8), "raw", "rank"),
    ],
)
def test_encode_errors(array: np.ndarray, encoding: str, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        encode_tensor("t", array, encoding)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"bundle": "not-hex"}, "bundle"), ({"stage": -1}, "stage"), ({"top_k": -2}, "top_k")],
)
def test_encode_infer_validates_header(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"bundle": FP, "stage": 0, "top_k": 0} | kwargs
    with pytest.raises(EncodeError, match=match):
        encode_infer(1, args["bundle"], args["stage"], 10.0, {}, top_k=args["top_k"])


def test_encodings_per_name_and_default() -> None:
    tensors = {"a": np.ones((2, 2), np.float32), "b": np.ones((2, 2), np.float32)}
    msg = decode_message(encode_infer(1, FP, 0, 10.0, tensors, {"a": "i8+zstd"})).message
    assert isinstance(msg, InferRequest)
    assert [(d.encoding, d.compression) for d in msg.tensors] == [("i8", "zstd"), ("raw", "none")]


def test_other_messages_roundtrip() -> None:
    for msg in [ping_for(3), error_for(4, 5, "x" * 5000)]:  # type: ignore[arg-type]
        out = decode_message(encode_message(msg)).message
        assert type(out) is type(msg) and out.id == msg.id
    request = InferRequest(v=PROTOCOL_VERSION, id=9, bundle=FP, stage=1, deadline_ms=1.0, top_k=2)
    result, payloads = result_for(request, [0.1, 0.7, 0.2], stage=2, tensors={"e": np.arange(3)})
    decoded = decode_message([bytes(f) for f in encode_message(result, payloads)])
    assert isinstance(decoded.message, Result)
    assert decoded.message.classes == [1, 2] and decoded.message.scores == pytest.approx([0.7, 0.2])
    np.testing.assert_array_equal(decoded.tensors["e"], np.arange(3))
    all_scores, _ = result_for(request, [0.1, 0.7], stage=2, top_k=0)
    assert all_scores.classes is None and all_scores.scores == pytest.approx([0.1, 0.7])
    # SPEC.md 3.5: top_k at or above the number of classes ranks them all.
    ranked, _ = result_for(request, [0.1, 0.7, 0.2], stage=2, top_k=5)
    assert ranked.classes == [1, 2, 0] and ranked.scores == pytest.approx([0.7, 0.2, 0.1])


def test_replies_are_written_in_the_request_version() -> None:
    v1 = InferRequest(v=1, id=9, bundle=FP, stage=1, deadline_ms=1.0)
    assert result_for(v1, [0.5, 0.5], stage=1)[0].v == 1
    assert error_for(9, 2, "x", v1.v).v == 1  # type: ignore[arg-type]
    pong = msgspec.msgpack.decode(encode_header(Pong(v=1, id=3, server="s")))
    assert pong == {"kind": "pong", "v": 1, "id": 3, "server": "s"}  # no version-2 fields


def test_header_is_a_plain_messagepack_map() -> None:
    header = encode_header(Ping(v=1, id=7))
    assert msgspec.msgpack.decode(header) == {"kind": "ping", "v": 1, "id": 7}
    assert decode_header(msgspec.msgpack.encode({"id": 7, "v": 1, "kind": "ping"})) == Ping(v=1, id=7)


# ------------------------------------------------------------------ property tests

_dtypes = st.sampled_from(DTYPES)
_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def _arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(_dtypes)).newbyteorder(draw(st.sampled_from("<>")))
    array = draw(hnp.arrays(dtype, draw(_shapes)))
    view = draw(st.sampled_from(["c", "f", "t", "step"]))
    if view == "f":
        return np.asfortranarray(array)
    if view == "t":
        return array.T
    if view == "step" and array.ndim:
        return array[::2]
    return array


@settings(max_examples=150, deadline=None)
@given(array=_arrays(), compression=st.sampled_from(["none", "lz4", "zstd"]))
def test_property_raw_roundtrip_is_exact(array: np.ndarray, compression: str) -> None:
    out = _roundtrip(array, TensorEncoding("raw", compression))
    assert out.shape == array.shape and out.dtype == array.dtype.newbyteorder("=")
    # Bitwise equality, so NaNs and -0.0 count too.
    assert out.tobytes() == np.ascontiguousarray(array).astype(out.dtype).tobytes()


@settings(max_examples=100, deadline=None)
@given(
    array=hnp.arrays(
        st.sampled_from(FLOATS),
        _shapes,
        elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=16),
    )
)
def test_property_i8_error_is_at_most_half_a_step(array: np.ndarray) -> None:
    out = _roundtrip(array, "i8")
    assert out.shape == array.shape
    if array.size:
        amax = float(np.abs(array.astype(np.float64)).max())
        err = np.abs(out.astype(np.float64) - array.astype(np.float64))
        assert err.max() <= amax / 254 + 1e-3 * amax + 1e-12
