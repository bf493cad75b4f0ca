"""The requests ``jetsplit conformance`` sends, each with the reply SPEC.md requires.

Every request is formed from the server's ``description`` alone: the tensors a
stage asks for are synthesised from their dtypes, shapes and the frame
preprocessing (a gradient image of the preprocessing's size, constant carried
tensors, uniform probabilities, the announced ``count``). Malformed requests are
written byte by byte where the fault lives below what an encoder would produce
(trailing bytes, a non-string key, a repeated key).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from jetsplit.protocol import StatusCode
from jetsplit.protocol.codec import TensorEncoding, encode_tensor
from jetsplit.protocol.messages import (
    COMPRESSIONS,
    ENCODINGS,
    BundleInfo,
    Description,
    Message,
    Result,
    StageInfo,
)

if TYPE_CHECKING:
    from jetsplit.tools.conformance import Check, Peer

__all__ = ["Case", "bad_request_cases", "encoding_cases", "frames_of", "limit_cases", "routing_cases"]

_DEADLINE_MS = 10000.0
_MAX_DIM = 2**31 - 1
#: Limits above these are not probed: the request would cost too much to send.
_PROBE_MESSAGE = 256 << 20
_PROBE_HEADER = 16 << 20

Verify = Callable[[Message, Sequence[bytes]], "str | None"]


@dataclass(frozen=True)
class Case:
    """A request and the reply the spec requires: ``status``, the request's id
    (``want_id``), a version (``want_v``) and any further ``verify``."""

    name: str
    frames: list[bytes]
    status: StatusCode
    want_id: int | None
    want_v: int | None = None
    verify: Verify | None = None
    note: str = ""


def _pack(header: dict[str, Any]) -> bytes:
    return msgspec.msgpack.encode(header)


def frames_of(header: dict[str, Any], payloads: Sequence[bytes]) -> list[bytes]:
    """``[header, *payloads]`` as bytes frames."""
    return [_pack(header), *payloads]


def _synth(name: str, dtype: str, shape: Sequence[int | None], stage: StageInfo, value: int | None) -> np.ndarray:
    """An array the server must accept for the tensor described so."""
    if name == "frame" and stage.preprocess is not None:
        h, w = stage.preprocess.height, stage.preprocess.width
        channels = shape[2] if len(shape) == 3 and shape[2] is not None else None
        img = (np.add.outer(np.arange(h) * 7, np.arange(w) * 3) % 256).astype(np.uint8)
        return img if channels is None else np.repeat(img[:, :, None], channels, axis=2)
    if value is not None:
        return np.asarray(value, dtype=dtype)
    dims = [1 if d is None else d for d in shape]
    if name == "probs" and dims:
        return np.full(dims, 1.0 / dims[-1], dtype=dtype)
    return np.full(dims, 0.5 if np.dtype(dtype).kind == "f" else 1, dtype=dtype)


def _request(peer: Peer, bundle: BundleInfo, stage: StageInfo, choice: dict[str, tuple[str, str]] | None = None,
             *, top_k: int = 0, deadline_ms: float = _DEADLINE_MS,
             overrides: dict[str, Any] | None = None) -> tuple[int, dict[str, Any], list[bytes]]:
    """A valid request for ``stage`` (each tensor raw unless ``choice`` says
    ``name -> (encoding, compression)``): its id, header and payloads."""
    rid = peer.new_id()
    descs: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    for t in stage.inputs:
        array = _synth(t.name, t.dtype, t.shape, stage, t.value)
        encoding, compression = (choice or {}).get(t.name, ("raw", "none"))
        desc, frame = encode_tensor(t.name, array, TensorEncoding(encoding, compression))
        descs.append(msgspec.to_builtins(desc))
        payloads.append(bytes(frame))
    header = {"kind": "infer", "v": 2, "id": rid, "bundle": bundle.fingerprint, "stage": stage.index,
              "deadline_ms": deadline_ms, "top_k": top_k, "tensors": descs, **(overrides or {})}
    return rid, header, payloads


def _served(d: Description) -> list[tuple[BundleInfo, StageInfo]]:
    """Every (bundle, cloud stage) of the description."""
    return [(b, s) for b in d.bundles for s in b.stages if s.where == "cloud"]


def _result_check(bundle: BundleInfo, stage: StageInfo, top_k: int,
                  same_as: list[list[float]] | None = None) -> Verify:
    """A ``result`` for ``stage`` of ``bundle`` answering ``top_k``."""
    classes = len(bundle.labels)

    def verify(msg: Message, payloads: Sequence[bytes]) -> str | None:
        assert isinstance(msg, Result)
        if msg.stage < stage.index or msg.stage >= len(bundle.stages):
            return f"answered by stage {msg.stage}, expected {stage.index} or a later stage"
        if not all(math.isfinite(s) for s in msg.scores):
            return "scores are not finite"
        if top_k == 0:
            if msg.classes is not None or len(msg.scores) != classes:
                return f"top_k 0: expected {classes} scores and classes nil, got {len(msg.scores)} and {msg.classes}"
        else:
            want = min(top_k, classes)
            if msg.classes is None or len(msg.classes) != want or len(msg.scores) != want:
                return f"top_k {top_k}: expected {want} ranked classes, got {msg.classes}"
            if any(a < b for a, b in zip(msg.scores, msg.scores[1:])) or len(set(msg.classes)) != want:
                return "top-k classes are not distinct and best first"
        if same_as is not None:
            if not same_as:
                same_as.append(list(msg.scores))
            elif not np.allclose(same_as[0], msg.scores, atol=1e-5):
                return f"a lossless encoding changed the scores: {msg.scores[:3]} vs {same_as[0][:3]}"
        return None

    return verify


def encoding_cases(peer: Peer, d: Description) -> Iterator[Case | Check]:
    """Valid requests: each cloud stage raw; the first cloud stage of each bundle in
    every encoding and compression each tensor allows; top-k variants."""
    from jetsplit.tools.conformance import Check

    served = _served(d)
    if not served:
        yield Check("SKIP", "valid requests", "the server describes no cloud stage")
        return
    firsts = {b.fingerprint: s.index for b, s in reversed(served)}
    for bundle, stage in served:
        label = f"{bundle.name} stage {stage.index}"
        lossless: list[list[float]] = []
        rid, header, payloads = _request(peer, bundle, stage)
        yield Case(f"result: {label}, every tensor raw", frames_of(header, payloads), StatusCode.OK, rid,
                   verify=_result_check(bundle, stage, 0, lossless))
        if firsts[bundle.fingerprint] != stage.index:
            continue
        for t in stage.inputs:
            for encoding in (e for e in t.encodings if e in d.encodings):
                compressions = ["none"] if encoding == "jpeg" else [c for c in t.compressions if c in d.compressions]
                for compression in compressions or ["none"]:
                    if (encoding, compression) == ("raw", "none"):
                        continue
                    rid, header, payloads = _request(peer, bundle, stage, {t.name: (encoding, compression)})
                    exact = encoding == "raw"
                    yield Case(f"result: {label}, {t.name} as {encoding}+{compression}", frames_of(header, payloads),
                               StatusCode.OK, rid, verify=_result_check(bundle, stage, 0, lossless if exact else None))
        for k in (1, len(bundle.labels) + 3):
            rid, header, payloads = _request(peer, bundle, stage, top_k=k)
            yield Case(f"result: {label}, top_k {k} of {len(bundle.labels)} classes", frames_of(header, payloads),
                       StatusCode.OK, rid, verify=_result_check(bundle, stage, k))


def _append_entry(header: bytes, entry: bytes) -> bytes:
    """A fixmap header with one more entry (raw bytes of a key and a value)."""
    assert 0x80 <= header[0] < 0x8F, "a header of up to 14 entries"
    return bytes([header[0] + 1]) + header[1:] + entry


def bad_request_cases(peer: Peer, d: Description) -> Iterator[Case | Check]:
    """Malformed requests: BAD_REQUEST with the request's own id when it can be
    read (7.1), id 0 when not, and the order of checks (6.1)."""
    from jetsplit.tools.conformance import Check

    yield Case("BAD_REQUEST: a header that is not MessagePack, answered with id 0", [b"\xc1\xff\x00"],
               StatusCode.BAD_REQUEST, 0)
    rid = peer.new_id()
    yield Case("UNSUPPORTED_VERSION: v 99 with another schema, in version 1, with its id",
               [_pack({"v": 99, "id": rid, "op": "future"})], StatusCode.UNSUPPORTED_VERSION, rid, want_v=1)
    rid = peer.new_id()
    ping = _pack({"kind": "ping", "v": 2, "id": rid})
    yield Case("BAD_REQUEST: trailing bytes after the header, with its id", [ping + b"\x00"],
               StatusCode.BAD_REQUEST, rid)
    rid = peer.new_id()
    ping = _pack({"kind": "ping", "v": 2, "id": rid})
    yield Case("BAD_REQUEST: a key that is not a string, with its id", [_append_entry(ping, b"\x07\x01")],
               StatusCode.BAD_REQUEST, rid)
    rid = peer.new_id()
    ping = _pack({"kind": "ping", "v": 2, "id": rid})
    yield Case("BAD_REQUEST: a repeated key, with its id", [_append_entry(ping, b"\xa1v\x02")],
               StatusCode.BAD_REQUEST, rid)
    for name, fields in (("an unknown field", {"kind": "ping", "priority": 1}),
                         ("an unknown kind", {"kind": "infer2"}),
                         ("a reply kind sent to a server", {"kind": "pong"})):
        rid = peer.new_id()
        yield Case(f"BAD_REQUEST: {name}, with its id", [_pack({"v": 2, "id": rid, **fields})],
                   StatusCode.BAD_REQUEST, rid)
    served = _served(d)
    if not served:
        yield Check("SKIP", "BAD_REQUEST: tensors", "the server describes no cloud stage")
        return
    bundle, stage = served[0]
    rid, header, payloads = _request(peer, bundle, stage)
    if payloads:
        yield Case("BAD_REQUEST: a payload frame missing, with its id", frames_of(header, payloads[:-1]),
                   StatusCode.BAD_REQUEST, rid)
        rid, header, payloads = _request(peer, bundle, stage)
        header["tensors"][0]["nbytes"] += 1
        yield Case("BAD_REQUEST: nbytes differs from the frame, with its id", frames_of(header, payloads),
                   StatusCode.BAD_REQUEST, rid)
        rid, header, payloads = _request(peer, bundle, stage)
        header["tensors"] = header["tensors"] + header["tensors"][:1]
        yield Case("BAD_REQUEST: two tensors with one name", frames_of(header, [*payloads, payloads[0]]),
                   StatusCode.BAD_REQUEST, rid)
    rid, header, _ = _request(peer, bundle, stage)
    header["tensors"] = []
    yield Case(f"BAD_REQUEST: none of the tensors stage {stage.index} needs", frames_of(header, []),
               StatusCode.BAD_REQUEST, rid)
    rid, header, _ = _request(peer, bundle, stage, deadline_ms=0.0)
    header["tensors"] = []
    yield Case("order of checks: malformed and late is BAD_REQUEST, not EXPIRED", frames_of(header, []),
               StatusCode.BAD_REQUEST, rid)
    rid, header, payloads = _request(peer, bundle, stage, deadline_ms=0.0)
    yield Case("EXPIRED: a valid request whose deadline has passed", frames_of(header, payloads),
               StatusCode.EXPIRED, rid)


def routing_cases(peer: Peer, d: Description) -> Iterator[Case | Check]:
    """UNKNOWN_BUNDLE and UNKNOWN_STAGE, with the request's id."""
    from jetsplit.tools.conformance import Check

    served = _served(d)
    if not served:
        yield Check("SKIP", "UNKNOWN_BUNDLE / UNKNOWN_STAGE", "the server describes no cloud stage")
        return
    bundle, stage = served[0]
    known = {b.fingerprint for b in d.bundles}
    other = next(c * 64 for c in "fedcba9876543210" if c * 64 not in known)
    rid, header, payloads = _request(peer, bundle, stage, overrides={"bundle": other})
    yield Case("UNKNOWN_BUNDLE: a fingerprint it does not serve", frames_of(header, payloads),
               StatusCode.UNKNOWN_BUNDLE, rid)
    edge = [s.index for s in bundle.stages if s.where == "edge"]
    wrong = edge[0] if edge else min(len(bundle.stages), 1023)
    rid, header, payloads = _request(peer, bundle, stage, overrides={"stage": wrong})
    yield Case(f"UNKNOWN_STAGE: stage {wrong}, not a cloud stage of {bundle.name}", frames_of(header, payloads),
               StatusCode.UNKNOWN_STAGE, rid)


def limit_cases(peer: Peer, d: Description) -> Iterator[Case | Check]:
    """TOO_LARGE for each limit the server reports (when affordable to probe),
    with the request's id; UNSUPPORTED_ENCODING when something is not decodable."""
    from jetsplit.tools.conformance import Check

    lim = d.limits
    fp = d.bundles[0].fingerprint if d.bundles else "0" * 64

    def infer(rid: int, tensors: list[dict[str, Any]]) -> dict[str, Any]:
        return {"kind": "infer", "v": 2, "id": rid, "bundle": fp, "stage": 1, "deadline_ms": _DEADLINE_MS,
                "tensors": tensors}

    def desc(name: str, shape: list[int], nbytes: int, **kw: Any) -> dict[str, Any]:
        return {"name": name, "dtype": kw.pop("dtype", "uint8"), "shape": shape, "encoding": kw.pop("encoding", "raw"),
                "compression": kw.pop("compression", "none"), "nbytes": nbytes, **kw}

    if lim.max_tensors < 64:
        rid = peer.new_id()
        n = lim.max_tensors + 1
        yield Case(f"TOO_LARGE: {n} tensors over max_tensors {lim.max_tensors}",
                   frames_of(infer(rid, [desc(f"t{i}", [1], 1) for i in range(n)]), [b"\x00"] * n),
                   StatusCode.TOO_LARGE, rid)
    else:
        yield Check("SKIP", "TOO_LARGE: max_tensors", "max_tensors is the schema's cap of 64 (BAD_REQUEST above it)")
    if lim.max_rank < 8:
        rid = peer.new_id()
        yield Case(f"TOO_LARGE: rank {lim.max_rank + 1} over max_rank {lim.max_rank}",
                   frames_of(infer(rid, [desc("t", [1] * (lim.max_rank + 1), 1)]), [b"\x00"]),
                   StatusCode.TOO_LARGE, rid)
    if lim.max_rank >= 2 and lim.max_elements < _MAX_DIM * _MAX_DIM:
        rid = peer.new_id()
        rows = lim.max_elements // (1 << 30) + 1
        yield Case(f"TOO_LARGE: {rows} x 2^30 elements over max_elements {lim.max_elements}, before the frame "
                   "length is looked at", frames_of(infer(rid, [desc("t", [rows, 1 << 30], 1)]), [b"\x00"]),
                   StatusCode.TOO_LARGE, rid)
    squeezed = [c for c in d.compressions if c != "none"]
    elements = min(lim.max_elements, _MAX_DIM)
    if squeezed and elements * 10 > lim.max_decoded_bytes and lim.max_rank >= 1:
        rid = peer.new_id()
        yield Case(f"TOO_LARGE: {elements} float64 elements sent f16+{squeezed[0]} decode past max_decoded_bytes "
                   f"{lim.max_decoded_bytes}",
                   frames_of(infer(rid, [desc("t", [elements], 10, dtype="float64", encoding="f16",
                                              compression=squeezed[0])]), [b"\x00" * 10]),
                   StatusCode.TOO_LARGE, rid)
    if lim.max_header_bytes <= _PROBE_HEADER:
        rid = peer.new_id()
        header = _pack({"kind": "ping", "v": 2, "id": rid, "pad": "x" * (lim.max_header_bytes + 1)})
        yield Case(f"TOO_LARGE: a header over max_header_bytes {lim.max_header_bytes}, with its id", [header],
                   StatusCode.TOO_LARGE, rid)
    else:
        yield Check("SKIP", "TOO_LARGE: max_header_bytes", f"{lim.max_header_bytes} bytes is too much to send")
    if lim.max_message_bytes <= _PROBE_MESSAGE:
        rid = peer.new_id()
        half = lim.max_message_bytes // 2 + 1  # two frames, each under the per-frame limit
        tensors = [desc("a", [half], half), desc("b", [half], half)]
        yield Case(f"TOO_LARGE: a message over max_message_bytes {lim.max_message_bytes}, with its id",
                   frames_of(infer(rid, tensors), [bytes(half), bytes(half)]), StatusCode.TOO_LARGE, rid)
    else:
        yield Check("SKIP", "TOO_LARGE: max_message_bytes", f"{lim.max_message_bytes} bytes is too much to send")
    missing_enc = [e for e in ENCODINGS if e not in d.encodings]
    missing_comp = [c for c in COMPRESSIONS if c not in d.compressions]
    if missing_comp:
        rid = peer.new_id()
        yield Case(f"UNSUPPORTED_ENCODING: {missing_comp[0]}, not listed as decodable",
                   frames_of(infer(rid, [desc("t", [4], 4, compression=missing_comp[0])]), [b"\x00" * 4]),
                   StatusCode.UNSUPPORTED_ENCODING, rid)
    elif missing_enc == ["jpeg"]:
        rid = peer.new_id()
        yield Case("UNSUPPORTED_ENCODING: jpeg, not listed as decodable",
                   frames_of(infer(rid, [desc("t", [1, 1], 4, encoding="jpeg")]), [b"\xff\xd8\xff\xd9"]),
                   StatusCode.UNSUPPORTED_ENCODING, rid)
    else:
        yield Check("SKIP", "UNSUPPORTED_ENCODING", "the server decodes every encoding and compression")
