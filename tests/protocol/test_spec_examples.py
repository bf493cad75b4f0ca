"""The annotated bytes of protocol/SPEC.md are what the encoder writes, and they
appear in the spec as shown (a third party implements from those bytes)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from jetsplit.protocol.codec import describe_for, encode_header, ping_for
from jetsplit.protocol.messages import ErrorReply, Pong

SPEC = (Path(__file__).resolve().parents[2] / "protocol" / "SPEC.md").read_text()


def _in_spec(data: bytes) -> bool:
    """The bytes as a hex run in the spec (line breaks and indentation between them allowed)."""
    flat = re.sub(r"\s+", " ", SPEC)
    return data.hex(" ") in flat


def test_ping_describe_and_error_bytes() -> None:
    assert _in_spec(encode_header(ping_for(1)))
    assert _in_spec(encode_header(describe_for(5)))
    assert _in_spec(encode_header(ErrorReply(v=2, id=7, status=3, message="x")))


def test_draining_pong_bytes() -> None:
    pong = Pong(v=2, id=1, server="jetsplit-cloud", max_message_bytes=67108864, state="draining", load=3)
    data = encode_header(pong)
    assert len(data) == 84 and "frame 0 (84 bytes)" in SPEC
    assert msgspec.msgpack.decode(data) == {"kind": "pong", "v": 2, "id": 1, "server": "jetsplit-cloud",
                                            "max_message_bytes": 67108864, "state": "draining", "load": 3}
    assert "b1 \"max_message_bytes\" ce 04 00 00 00" in SPEC


def test_trailing_byte_example_gets_its_id() -> None:
    from jetsplit.protocol import DecodeError, decode_message

    data = bytes.fromhex("83 a4 6b 69 6e 64 a4 70 69 6e 67 a1 76 02 a2 69 64 09 00")
    assert _in_spec(data)
    try:
        decode_message([data])
    except DecodeError as exc:
        assert (exc.status, exc.request_id) == (2, 9)
    else:
        raise AssertionError("trailing bytes were accepted")


def test_frame_tensor_entry_bytes() -> None:
    entry = msgspec.msgpack.encode({"name": "frame", "dtype": "uint8", "shape": [None, None, 1]})
    assert entry.hex(" ").startswith("83 a4 6e 61 6d 65 a5 66 72 61 6d 65")
    assert entry.endswith(bytes.fromhex("93 c0 c0 01")) and "a5 \"shape\" 93 c0 c0 01" in SPEC
