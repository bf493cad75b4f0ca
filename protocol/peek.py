"""A header's ``v`` and ``id``, read from bytes that strict decoding refused.

SPEC.md section 7.1: an error reply carries the request's id whenever the header
frame starts with a MessagePack map holding a top-level integer ``id``, even if the
rest is wrong (trailing bytes after the map, a key that is not a string, a field
of the wrong type, a message over a size limit). This walks the map's entries
without building any object, skipping what it does not need, and gives up after
:data:`PEEK_LIMIT` bytes so that an over-size header costs a bounded amount.

Also here: :func:`repeated_key`, the check that no map of a header repeats a key
(msgspec keeps the last copy silently; the spec says such a header is malformed).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import msgspec

__all__ = ["PEEK_LIMIT", "Envelope", "peek_envelope", "repeated_key"]

#: Bytes of a header frame looked at for ``v`` and ``id`` (SPEC.md section 7.1).
PEEK_LIMIT = 64 * 1024

#: ``(v, id)``: each None when not found as an integer in range.
Envelope = tuple[int | None, int | None]

_MAX_ID = 2**63 - 1


class _Stop(Exception):
    """The bytes end, or run past the limit, or hold something that is not MessagePack."""


def _need(buf: memoryview, pos: int, n: int, end: int) -> None:
    if pos + n > end:
        raise _Stop


def _length(buf: memoryview, pos: int, size: int, end: int) -> int:
    _need(buf, pos, size, end)
    return int.from_bytes(buf[pos:pos + size], "big")


def _int_at(buf: memoryview, pos: int, end: int) -> tuple[int | None, int]:
    """The integer at ``pos`` (None if the value there is not an integer) and the
    position after the value, which is skipped when it is not an integer."""
    b = buf[pos]
    if b <= 0x7F:
        return b, pos + 1
    if b >= 0xE0:
        return b - 0x100, pos + 1
    fmt = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}.get(b)
    if fmt is None:
        return None, _skip(buf, pos, end)
    size = struct.calcsize(fmt)
    _need(buf, pos + 1, size, end)
    return int(struct.unpack_from(fmt, buf, pos + 1)[0]), pos + 1 + size


def _str_at(buf: memoryview, pos: int, end: int) -> tuple[bytes | None, int]:
    """The raw bytes of the string at ``pos`` (None if not a string) and the next position."""
    b = buf[pos]
    if 0xA0 <= b <= 0xBF:
        n, start = b & 0x1F, pos + 1
    elif b in (0xD9, 0xDA, 0xDB):
        size = {0xD9: 1, 0xDA: 2, 0xDB: 4}[b]
        n, start = _length(buf, pos + 1, size, end), pos + 1 + size
    else:
        return None, _skip(buf, pos, end)
    _need(buf, start, n, end)
    return bytes(buf[start:start + n]), start + n


# First byte -> (bytes of length that follow, payload bytes fixed, items per length unit)
# for the variable-size types; fixed-size types are in _FIXED.
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}
_BLOBS = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin and str: length size
_EXTS = {0xC7: 1, 0xC8: 2, 0xC9: 4}  # ext: length size, then a type byte
_CONTAINERS = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}  # length size, items per entry


def _skip(buf: memoryview, pos: int, end: int) -> int:
    """The position after the value at ``pos`` (nested containers without recursion)."""
    todo = 1
    while todo:
        todo -= 1
        _need(buf, pos, 1, end)
        b = buf[pos]
        pos += 1
        if b <= 0x7F or b >= 0xE0:
            continue
        if b <= 0x8F:
            todo += 2 * (b & 0x0F)
        elif b <= 0x9F:
            todo += b & 0x0F
        elif b <= 0xBF:
            pos += b & 0x1F
        elif b in _FIXED:
            pos += _FIXED[b]
        elif b in _BLOBS:
            size = _BLOBS[b]
            pos += size + _length(buf, pos, size, end)
        elif b in _EXTS:
            size = _EXTS[b]
            pos += size + 1 + _length(buf, pos, size, end)
        elif b in _CONTAINERS:
            size, per = _CONTAINERS[b]
            todo += per * _length(buf, pos, size, end)
            pos += size
        else:
            raise _Stop  # 0xC1: never used
    if pos > end:
        raise _Stop
    return pos


def _map_header(buf: memoryview, end: int) -> tuple[int, int]:
    """Entries of the top-level map and where they start."""
    _need(buf, 0, 1, end)
    b = buf[0]
    if 0x80 <= b <= 0x8F:
        return b & 0x0F, 1
    if b == 0xDE:
        return _length(buf, 1, 2, end), 3
    if b == 0xDF:
        return _length(buf, 1, 4, end), 5
    raise _Stop


def peek_envelope(buf: memoryview | bytes, limit: int = PEEK_LIMIT) -> Envelope:
    """``(v, id)`` of the header in ``buf`` as far as they can be read: the first
    top-level ``v`` and ``id`` entries holding integers (``id`` in 0 .. 2^63-1)
    among those found before anything unreadable, within ``limit`` bytes."""
    view = memoryview(buf).cast("B") if not isinstance(buf, memoryview) or buf.format != "B" else buf
    end = min(len(view), limit)
    version: int | None = None
    request_id: int | None = None
    seen_v = seen_id = False
    try:
        entries, pos = _map_header(view, end)
        for _ in range(entries):
            _need(view, pos, 1, end)
            key, pos = _str_at(view, pos, end)
            _need(view, pos, 1, end)
            if (key == b"v" and not seen_v) or (key == b"id" and not seen_id):
                value, pos = _int_at(view, pos, end)
                if key == b"v":
                    seen_v, version = True, value
                else:
                    seen_id = True
                    request_id = value if value is not None and 0 <= value <= _MAX_ID else None
                if seen_v and seen_id:
                    break
            else:
                pos = _skip(view, pos, end)
    except (_Stop, IndexError, struct.error):
        pass
    return version, request_id


_KEYS = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])


class _Tensors(msgspec.Struct):
    """Just the ``tensors`` array of a header, its maps left undecoded."""

    tensors: list[msgspec.Raw] = []


_TENSORS = msgspec.msgpack.Decoder(_Tensors)


def _declared(buf: memoryview | bytes) -> int:
    """Entries a map declares in its first bytes (the caller knows it is a map)."""
    b = buf[0]
    if b <= 0x8F:
        return b & 0x0F
    return int.from_bytes(buf[1:3] if b == 0xDE else buf[1:5], "big")


def repeated_key(header: memoryview | bytes, present: int, tensors_present: Sequence[int] = ()) -> bool:
    """True if the header map, or one of the tensor descriptor maps in its
    ``tensors`` array, holds a key twice. Call only on a header that decoded
    strictly (so every map has string keys, all known).

    ``present`` is how many distinct keys the header is known to hold (its required
    fields and the optional ones whose value is not the default), and
    ``tensors_present`` the same for each tensor descriptor. A map that declares no
    more entries than that cannot repeat a key: the common case, since encoders
    leave out defaults. Otherwise it is decoded into a dict, which keeps one copy
    of each key, so a repeated key shows as fewer entries than declared.
    """
    declared = _declared(header)
    if declared > present and len(_KEYS.decode(header)) != declared:
        return True
    if tensors_present:
        for item, least in zip(_TENSORS.decode(header).tensors, tensors_present):
            count = _declared(memoryview(item))
            if count > least and len(_KEYS.decode(item)) != count:
                return True
    return False
