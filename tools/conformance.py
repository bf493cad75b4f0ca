"""``jetsplit conformance``: check a server against ``protocol/SPEC.md``.

    jetsplit conformance ENDPOINT [--timeout-ms 3000] [--json]
                         [--curve-secret FILE --curve-server-key FILE]

Any implementation of the worker side can be checked, knowing only its endpoint:
the checker pings it, asks it to describe itself, then forms requests from that
description alone (tools/conformance_requests.py) and sends, on its own socket:
valid requests for every cloud stage in every encoding and compression the
server lists; requests that provoke each status code a client can provoke
without harming the server (BAD_REQUEST, UNSUPPORTED_VERSION, UNKNOWN_BUNDLE,
UNKNOWN_STAGE, EXPIRED, TOO_LARGE, UNSUPPORTED_ENCODING when an encoding is not
listed), each checked for the request's own id (SPEC.md 7.1) and for the order of
checks (6.1); the limits it reports; and that it still answers a ping after all
of it. ``OVERLOADED``, ``INTERNAL`` and ``SHUTTING_DOWN`` cannot be provoked
without loading, breaking or stopping the server: they are listed as skipped.

One line per check: ``PASS``, ``FAIL`` (with what was expected and what came) or
``SKIP`` (with why). Exit status 0 when nothing failed, 1 otherwise, 2 for a usage
error or a server that does not answer at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
import zmq

from jetsplit.errors import ConfigError
from jetsplit.protocol import DecodeError, StatusCode
from jetsplit.protocol.codec import decode_header
from jetsplit.protocol.messages import Description, Pong
from jetsplit.protocol.security import CurveClient, apply_client
from jetsplit.tools.conformance_requests import (
    Case,
    bad_request_cases,
    encoding_cases,
    limit_cases,
    routing_cases,
)
from jetsplit.tools.remote import add_remote_args, check_endpoint, curve_from_args

__all__ = ["Check", "Peer", "main", "run_checks"]


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    outcome: str  # PASS | FAIL | SKIP
    name: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.outcome}  {self.name}" + (f": {self.detail}" if self.detail else "")


class Peer:
    """A DEALER on the server; one request at a time, answers matched by id."""

    def __init__(self, endpoint: str, timeout_ms: int, curve: CurveClient | None = None,
                 socket_type: int = zmq.DEALER) -> None:
        self.timeout_ms = timeout_ms
        self._ctx: zmq.Context[Any] = zmq.Context.instance()
        self._sock = self._ctx.socket(socket_type)
        self._sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            apply_client(self._sock, curve)
        self._sock.connect(endpoint)
        self._next = 1000

    def new_id(self) -> int:
        self._next += 1
        return self._next

    def ask(self, frames: Sequence[bytes], want_id: int | None) -> list[bytes] | None:
        """Send ``frames``; the reply whose header's id is ``want_id`` (any reply when
        None), or None after the timeout. Replies to other ids are dropped."""
        try:
            self._sock.send_multipart(list(frames), copy=True)
        except zmq.ZMQError:
            return None
        end = time.monotonic() + self.timeout_ms / 1000.0
        while (left := int((end - time.monotonic()) * 1000)) > 0:
            if not self._sock.poll(left):
                break
            reply: list[bytes] = self._sock.recv_multipart()
            if self._sock.type == zmq.REQ:
                return reply
            header = _lenient(reply[0])
            if want_id is None or header.get("id") == want_id:
                return reply
        return None

    def close(self) -> None:
        self._sock.close(linger=0)


def _lenient(frame: bytes) -> dict[str, Any]:
    try:
        value = msgspec.msgpack.decode(frame)
    except Exception:
        return {}
    return value if isinstance(value, dict) else {}


def _strict(frame: bytes) -> Any:
    """The reply header decoded as SPEC.md says (strictly), or the problem with it."""
    try:
        return decode_header(frame)
    except DecodeError as exc:
        return exc


def _expect(peer: Peer, case: Case) -> Check:
    """Send a case and compare the reply with what the spec says it must be."""
    reply = peer.ask(case.frames, case.want_id)
    if reply is None:
        return Check("FAIL", case.name, f"no reply within {peer.timeout_ms} ms")
    msg = _strict(reply[0])
    if isinstance(msg, DecodeError):
        return Check("FAIL", case.name, f"malformed reply: {msg}")
    got_status = getattr(msg, "status", 0) if msg.kind in ("error", "result") else None
    want = case.status
    if msg.kind != ("result" if want == StatusCode.OK else "error"):
        return Check("FAIL", case.name, f"expected {'a result' if want == StatusCode.OK else want.name}, "
                                        f"got a {msg.kind} {_status_name(got_status)}: {getattr(msg, 'message', '')}")
    if got_status != want:
        return Check("FAIL", case.name, f"expected {want.name}, got {_status_name(got_status)}: "
                                        f"{getattr(msg, 'message', '')}")
    if case.want_id is not None and msg.id != case.want_id:
        return Check("FAIL", case.name, f"expected the request's id {case.want_id}, got {msg.id}")
    if case.want_v is not None and msg.v != case.want_v:
        return Check("FAIL", case.name, f"expected a version-{case.want_v} reply, got version {msg.v}")
    if case.verify is not None:
        problem = case.verify(msg, reply[1:])
        if problem:
            return Check("FAIL", case.name, problem)
    return Check("PASS", case.name, case.note)


def _status_name(status: int | None) -> str:
    if status is None:
        return "(no status)"
    try:
        return StatusCode(status).name
    except ValueError:
        return f"status {status}"


def _ping(peer: Peer, name: str) -> tuple[Check, Pong | None]:
    rid = peer.new_id()
    reply = peer.ask([msgspec.msgpack.encode({"kind": "ping", "v": 2, "id": rid})], rid)
    if reply is None:
        return Check("FAIL", name, f"no pong within {peer.timeout_ms} ms"), None
    msg = _strict(reply[0])
    if isinstance(msg, DecodeError) or not isinstance(msg, Pong):
        return Check("FAIL", name, f"expected a pong, got {msg}"), None
    if len(reply) != 1:
        return Check("FAIL", name, f"a pong is one frame, got {len(reply)}"), None
    return Check("PASS", name, f"{msg.server or 'unnamed'}, {msg.state}, load {msg.load}"), msg


def _describe(peer: Peer, pong: Pong | None) -> tuple[Check, Description | None]:
    name = "describe: a description with the request's id, every field valid"
    rid = peer.new_id()
    reply = peer.ask([msgspec.msgpack.encode({"kind": "describe", "v": 2, "id": rid})], rid)
    if reply is None:
        return Check("FAIL", name, f"no description within {peer.timeout_ms} ms"), None
    msg = _strict(reply[0])
    if not isinstance(msg, Description):
        return Check("FAIL", name, f"expected a description, got {msg}"), None
    problems = []
    for b in msg.bundles:
        if [s.index for s in b.stages] != list(range(len(b.stages))):
            problems.append(f"bundle {b.name!r}: stage indexes {[s.index for s in b.stages]} are not 0..n-1")
        for s in b.stages:
            if s.where == "edge" and s.inputs:
                problems.append(f"bundle {b.name!r} stage {s.index}: an edge stage lists request tensors")
            if (s.preprocess is not None) != any(t.name == "frame" for t in s.inputs):
                problems.append(f"bundle {b.name!r} stage {s.index}: preprocess present iff a frame is carried")
    if pong is not None and sorted(pong.bundles) != sorted(b.fingerprint for b in msg.bundles):
        problems.append("pong.bundles and the description's fingerprints differ")
    if pong is not None and pong.max_message_bytes not in (0, msg.limits.max_message_bytes):
        problems.append("pong.max_message_bytes and limits.max_message_bytes differ")
    if "raw" not in msg.encodings or "none" not in msg.compressions:
        problems.append("raw encoding and no compression must be decodable")
    if problems:
        return Check("FAIL", name, "; ".join(problems)), msg
    return Check("PASS", name, f"{len(msg.bundles)} bundle(s)"), msg


def run_checks(endpoint: str, timeout_ms: int = 3000, curve: CurveClient | None = None) -> Iterator[Check]:
    """Every check against the server at ``endpoint``, in order, as it runs."""
    peer = Peer(endpoint, timeout_ms, curve)
    try:
        check, pong = _ping(peer, "ping: a pong with the request's id")
        yield check
        if pong is None:
            return
        yield from _version_1_ping(peer)
        yield _req_socket(endpoint, timeout_ms, curve)
        check, description = _describe(peer, pong)
        yield check
        if description is None:
            return
        groups: list[Callable[[Peer, Description], Iterator[Case | Check]]] = [
            encoding_cases, bad_request_cases, routing_cases, limit_cases]
        for group in groups:
            for case in group(peer, description):
                yield case if isinstance(case, Check) else _expect(peer, case)
        for status in (StatusCode.OVERLOADED, StatusCode.INTERNAL, StatusCode.SHUTTING_DOWN):
            yield Check("SKIP", f"status {status.name}", "cannot be provoked without loading, breaking or "
                                                         "stopping the server")
        check, _ = _ping(peer, "still serving: a ping after every malformed request")
        yield check
    finally:
        peer.close()


def _version_1_ping(peer: Peer) -> Iterator[Check]:
    rid = peer.new_id()
    reply = peer.ask([msgspec.msgpack.encode({"kind": "ping", "v": 1, "id": rid})], rid)
    name = "version 1: a v1 ping gets a v1 pong, or UNSUPPORTED_VERSION in v1"
    if reply is None:
        yield Check("FAIL", name, "no reply")
        return
    header = _lenient(reply[0])
    if header.get("v") != 1:
        yield Check("FAIL", name, f"reply is in version {header.get('v')}")
    elif header.get("kind") == "pong" and ("state" in header or "load" in header):
        yield Check("FAIL", name, "a v1 pong has no state or load")
    elif header.get("kind") == "error" and header.get("status") != StatusCode.UNSUPPORTED_VERSION:
        yield Check("FAIL", name, f"got status {header.get('status')}")
    else:
        yield Check("PASS", name, "speaks version 1" if header.get("kind") == "pong" else "refuses version 1")


def _req_socket(endpoint: str, timeout_ms: int, curve: CurveClient | None) -> Check:
    name = "REQ client: a ping through a REQ socket (empty delimiter) is answered"
    peer = Peer(endpoint, timeout_ms, curve, zmq.REQ)
    try:
        reply = peer.ask([msgspec.msgpack.encode({"kind": "ping", "v": 2, "id": 7})], None)
    finally:
        peer.close()
    if reply is None:
        return Check("FAIL", name, "no reply")
    header = _lenient(reply[0])
    if header.get("kind") != "pong" or header.get("id") != 7:
        return Check("FAIL", name, f"expected a pong with id 7, got {header}")
    return Check("PASS", name)


def main(argv: Sequence[str]) -> int:
    """Entry point of ``jetsplit conformance``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jetsplit conformance",
                                     description="check a server against protocol/SPEC.md")
    add_remote_args(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per check")
    args = parser.parse_args(list(argv))
    endpoint = check_endpoint(args.endpoint)
    curve = curve_from_args(args)
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    for i, check in enumerate(run_checks(endpoint, args.timeout_ms, curve)):
        if i == 0 and check.outcome == "FAIL":
            raise ConfigError(f"{endpoint}: {check.detail} (is a worker listening there? does it need CURVE "
                              "keys: --curve-secret/--curve-server-key?)")
        counts[check.outcome] += 1
        print(json.dumps(asdict(check)) if args.json else check.line(), flush=True)
    if not args.json:
        print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped", file=sys.stderr)
    return 1 if counts["FAIL"] else 0
