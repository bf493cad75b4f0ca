"""The hot path's own pieces: lean socket I/O, the server's hand-over queue, the
echo server's pass-through, float16 kept as received, and the header checks that
replaced a strict re-decode per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from jetsplit.protocol import Client, EchoServer, EncodeError, InferRequest, Server
from jetsplit.protocol.codec import decode_message, encode_infer
from jetsplit.protocol.sockio import readable, recv_parts, send_parts, wait


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://fastpath")
    b.connect("inproc://fastpath")
    try:
        yield a, b
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()


def test_send_and_receive_parts(pair: tuple[zmq.Socket[Any], zmq.Socket[Any]]) -> None:
    a, b = pair
    big = np.arange(100_000, dtype=np.float32)  # above pyzmq's copy threshold: sent by reference
    assert not readable(b)
    assert recv_parts(b) is None  # empty: None, not an exception
    assert send_parts(a, [b"head", b"", memoryview(big)])
    assert wait(b, 1000)
    assert readable(b)
    parts = recv_parts(b)
    assert parts is not None and len(parts) == 3
    assert parts[0].bytes == b"head" and len(parts[1]) == 0
    np.testing.assert_array_equal(np.frombuffer(parts[2].buffer, np.float32), big)
    assert recv_parts(b) is None and not readable(b)


def test_wait_times_out_and_send_fails_without_peer() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect("tcp://127.0.0.1:9")  # nothing listens there
    try:
        start = time.monotonic()
        assert not wait(sock, 50)
        assert time.monotonic() - start >= 0.04
        assert not send_parts(sock, [b"x"])  # no connection up: refused now, never queued
        assert not wait(sock, 20, writable=True)
    finally:
        sock.close(linger=0)
        ctx.term()


def test_call_soon_runs_on_the_socket_thread_and_wakes_recv(endpoint: str) -> None:
    with Server(endpoint) as server:
        ran: list[int] = []
        done = threading.Event()

        def poster() -> None:
            # Post once the socket thread is asleep in recv (its own flag, set just
            # before it polls): the call must wake it, not wait for the timeout.
            end = time.monotonic() + 10
            while not server._sleeping and time.monotonic() < end:
                time.sleep(0.001)  # polling another thread's state, not waiting for time
            server.call_soon(lambda: (ran.append(threading.get_ident()), done.set()))

        t = threading.Thread(target=poster)
        t.start()
        start = time.monotonic()
        assert server.recv(30_000) is None
        t.join()
        assert done.is_set() and ran == [threading.get_ident()]
        # Woken, not timed out: far below the 30 s timeout however loaded the machine.
        assert time.monotonic() - start < 20.0


def test_call_soon_failure_does_not_stop_the_server(endpoint: str, fingerprint: str) -> None:
    with EchoServer(endpoint, bundles=[fingerprint]) as echo:
        echo.server.call_soon(lambda: 1 / 0)
        with Client(echo.endpoint, fingerprint, timeout_ms=2000) as client:
            assert client.infer(0, {"x": np.ones(3, np.float32)}).ok


@pytest.mark.parametrize("encoding", ["raw", "f16", "i8", "raw+lz4"])
def test_echo_returns_what_the_server_decoded(endpoint: str, fingerprint: str, encoding: str) -> None:
    x = np.random.default_rng(0).standard_normal((3, 64, 32)).astype(np.float32)  # 24 KiB
    with EchoServer(endpoint, bundles=[fingerprint]) as echo, \
            Client(echo.endpoint, fingerprint, timeout_ms=2000) as client:
        reply = client.infer(0, {"act": x}, encodings=encoding).raise_for_status()
        # What the server decoded, sent back raw: exact for raw, the codec's rounding otherwise.
        want = decode_message(encode_infer(1, fingerprint, 0, 10.0, {"act": x}, encoding)).tensors["act"]
        assert reply.tensors["act"].dtype == np.float32
        np.testing.assert_array_equal(reply.tensors["act"], want)
        # top-k replies keep working through the same server.
        top = client.infer(0, {"act": x}, encodings=encoding, top_k=3).raise_for_status()
        assert top.classes is not None and list(top.classes) == [0, 1, 2]
        np.testing.assert_array_equal(top.tensors["act"], want)


def test_keep_f16_returns_views_of_the_frame(fingerprint: str) -> None:
    x = np.linspace(-3, 3, 600, dtype=np.float32).reshape(2, 300)
    frames = [bytes(f) if not isinstance(f, bytes) else f for f in encode_infer(1, fingerprint, 0, 10.0, {"a": x}, "f16")]
    kept = decode_message(frames, keep_f16=True).tensors["a"]
    widened = decode_message(frames).tensors["a"]
    assert kept.dtype == np.float16 and widened.dtype == np.float32
    assert np.shares_memory(kept, np.frombuffer(frames[1], np.uint8))
    np.testing.assert_array_equal(kept.astype(np.float32), widened)
    # float64 tensors are widened as before: keep_f16 is for float32 only.
    frames64 = encode_infer(1, fingerprint, 0, 10.0, {"a": x.astype(np.float64)}, "f16")
    assert decode_message(frames64, keep_f16=True).tensors["a"].dtype == np.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"request_id": -1}, "id"),
        ({"request_id": 2**63}, "id"),
        ({"request_id": True}, "id"),
        ({"bundle": "AB" * 32}, "bundle"),
        ({"bundle": "ab" * 31}, "bundle"),
        ({"stage": 1024}, "stage"),
        ({"stage": np.int64(1)}, "stage"),
        ({"top_k": 65536}, "top_k"),
        ({"deadline_ms": 3_600_001.0}, "deadline_ms"),
        ({"deadline_ms": float("inf")}, "deadline_ms"),
        ({"tensors": {"": np.zeros(1, np.float32)}}, "name"),
        ({"tensors": {"n" * 129: np.zeros(1, np.float32)}}, "name"),
    ],
)
def test_encode_infer_refuses_what_the_decoder_would(fingerprint: str, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"request_id": 1, "bundle": fingerprint, "stage": 0, "deadline_ms": 10.0,
                            "tensors": {}, "top_k": 0} | kwargs
    with pytest.raises(EncodeError, match=match):
        encode_infer(args["request_id"], args["bundle"], args["stage"], args["deadline_ms"], args["tensors"],
                     top_k=args["top_k"])


def test_encode_infer_edges_decode_strictly(fingerprint: str) -> None:
    """The bounds themselves are valid: what the encoder lets through, the strict
    decoder accepts."""
    frames = encode_infer(2**63 - 1, fingerprint, 1023, 3_600_000.0, {"n" * 128: np.zeros((0, 3), np.uint8)},
                          top_k=65535)
    msg = decode_message(frames).message
    assert isinstance(msg, InferRequest)
    assert (msg.id, msg.stage, msg.top_k, msg.deadline_ms) == (2**63 - 1, 1023, 65535, 3_600_000.0)
    assert decode_message(encode_infer(1, fingerprint, 0, -5.0, {})).message.deadline_ms == 0.0  # type: ignore[union-attr]


def test_recv_returns_on_time_under_a_flood_of_garbage(endpoint: str) -> None:
    """Malformed messages are answered inside recv; a steady stream of them must not
    keep recv from returning at its timeout (the worker's watchdog and stop check
    run between calls)."""
    with Server(endpoint) as server:
        stop, flowing = threading.Event(), threading.Event()
        sent = 0

        def flood() -> None:
            nonlocal sent
            ctx = zmq.Context()
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(server.last_endpoint)
            # The flood lasts until the test ends it, at most 30 s: a recv that
            # did not return at its timeout would return only once the flood stops.
            end = time.monotonic() + 30.0
            while not stop.is_set() and time.monotonic() < end:
                try:
                    sock.send(b"\xc1 not msgpack", zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:  # queues full once recv has returned: wait for room
                    sock.poll(1, zmq.POLLOUT)
                if sent >= 100:
                    flowing.set()
                while sock.poll(0):
                    sock.recv()  # the error replies
            sock.close(linger=0)
            ctx.term()

        t = threading.Thread(target=flood)
        t.start()
        try:
            assert flowing.wait(10), "the flood did not start"
            start = time.monotonic()
            assert server.recv(100) is None
            returned = time.monotonic() - start
            flood_alive = t.is_alive()
        finally:
            stop.set()
            t.join()
        # recv came back while the flood still ran (the order of events is the
        # claim; the 10 s bound only catches a recv that waited for the flood's end).
        assert flood_alive and returned < 10.0


class _Scripted(threading.Thread):
    """A server that answers by a plan, not a clock: on receiving its request
    number ``i`` it sends the replies to the requests ``plan[i]`` names, in that
    order, holding the others (so a reply can overtake another, or come late,
    whatever the machine's load). Replies on one connection arrive in the order
    they are sent."""

    def __init__(self, endpoint: str, plan: list[list[int]]) -> None:
        super().__init__(daemon=True)
        self.server = Server(endpoint)
        self.endpoint = self.server.last_endpoint
        self.plan = plan
        self.stop = threading.Event()
        self.start()

    def run(self) -> None:
        from jetsplit.protocol.codec import result_for

        received: list[Any] = []
        while not self.stop.is_set():
            req = self.server.recv(5)
            if req is None or not isinstance(req.header, InferRequest):
                continue
            received.append(req)
            for i in self.plan[len(received) - 1]:
                reply, payloads = result_for(received[i].header, [0.1, 0.9], 0)
                self.server.send(received[i], reply, payloads)
        self.server.close()


def test_infer_alone_drops_a_late_reply_to_a_request_given_up_on(endpoint: str, fingerprint: str) -> None:
    """The synchronous path: the first request times out; its reply, sent just
    before the second's, is dropped and the second gets its own."""
    srv = _Scripted(endpoint, [[], [0, 1]])
    try:
        with Client(srv.endpoint, fingerprint, timeout_ms=2000) as client:
            with pytest.raises(Exception, match="no reply"):
                client.infer(0, {"x": np.ones(2, np.float32)}, timeout_ms=150)
            # The timeout reopened the socket: the late reply cannot even reach it.
            reply = client.infer(0, {"x": np.ones(2, np.float32)})
            assert reply.ok and reply.top1 == 1 and client.pending == 0
    finally:
        srv.stop.set()
        srv.join(5)


def test_infer_with_requests_in_flight_keeps_them_apart(endpoint: str, fingerprint: str) -> None:
    """An infer() while submitted requests are pending takes the general path: its
    reply is returned, the others stay for poll_replies (they arrive first)."""
    srv = _Scripted(endpoint, [[0], [1], [2]])
    try:
        with Client(srv.endpoint, fingerprint, timeout_ms=2000) as client:
            first = client.submit(0, {"x": np.ones(2, np.float32)}, deadline_ms=2000, send_timeout_ms=1000)
            second = client.submit(0, {"x": np.ones(2, np.float32)}, deadline_ms=2000, send_timeout_ms=1000)
            reply = client.infer(0, {"x": np.ones(2, np.float32)})  # answered last
            assert reply.ok and reply.id not in (first, second)
            assert sorted(r.id for r in client.poll_replies(1000)) == sorted([first, second])
    finally:
        srv.stop.set()
        srv.join(5)


def test_infer_alone_drops_a_stale_reply_on_the_same_socket(endpoint: str, fingerprint: str) -> None:
    """A request expired without reopening the socket (something else was answered
    after it was sent) is answered late while the next infer() waits: that reply
    is dropped, the infer gets its own."""
    srv = _Scripted(endpoint, [[], [1], [0, 2]])
    try:
        with Client(srv.endpoint, fingerprint, timeout_ms=2000) as client:
            late = client.submit(0, {"x": np.ones(2, np.float32)}, deadline_ms=2000, send_timeout_ms=1000)
            quick = client.submit(0, {"x": np.ones(2, np.float32)}, deadline_ms=2000, send_timeout_ms=1000)
            assert [r.id for r in client.poll_replies(1000)] == [quick]
            assert client.expire(time.monotonic() + 10) == [late] and client.reconnects == 0
            reply = client.infer(0, {"x": np.ones(2, np.float32)})  # the late reply comes in first
            assert reply.ok and reply.id not in (late, quick)
            assert client.poll_replies(300) == []
    finally:
        srv.stop.set()
        srv.join(5)
