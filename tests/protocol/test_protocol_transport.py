"""Real sockets: the echo server in a thread, the client, timeouts and reconnects."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from jetsplit.protocol import (
    Client,
    EchoServer,
    InferRequest,
    Limits,
    RemoteError,
    RequestTimeout,
    Result,
    Server,
    StatusCode,
    Unavailable,
    encode_infer,
    result_for,
)
from jetsplit.protocol.codec import decode_message, encode_message, ping_for

TIMEOUT_MS = 2000  # generous for busy CI; tests that expect a timeout use short ones


@pytest.fixture
def echo(endpoint: str, fingerprint: str) -> Iterator[EchoServer]:
    with EchoServer(endpoint, bundles=[fingerprint]) as server:
        yield server


@pytest.fixture
def client(echo: EchoServer, fingerprint: str) -> Iterator[Client]:
    with Client(echo.endpoint, fingerprint, timeout_ms=TIMEOUT_MS) as c:
        yield c


def test_ping(client: Client, fingerprint: str) -> None:
    pong = client.ping()
    assert pong.server == "jetsplit-echo" and pong.bundles == [fingerprint]
    assert pong.max_message_bytes == Limits().max_message_bytes and pong.rtt_ms > 0


def test_ping_without_waiting(client: Client, fingerprint: str) -> None:
    """send_ping/take_pongs, the public hooks the worker pool's health checks use:
    the pong is filed by whichever call receives it, and taken once."""
    assert client.wait_ready()
    rid = client.send_ping()
    assert rid is not None
    end = time.monotonic() + TIMEOUT_MS / 1000.0
    pongs: dict[int, Any] = {}
    while not pongs and time.monotonic() < end:
        assert client.poll_replies(20) == []  # receives the pong and files it
        pongs = client.take_pongs()
    assert list(pongs) == [rid] and pongs[rid].bundles == [fingerprint]
    assert client.take_pongs() == {}


@pytest.mark.parametrize("encoding", ["raw", "f16", "i8", "raw+lz4", "i8+zstd"])
def test_infer_roundtrip_through_sockets(client: Client, encoding: str) -> None:
    tensors = {
        "act": np.random.default_rng(0).normal(size=(1, 16, 8, 8)).astype(np.float32),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 4), np.float32),
    }
    reply = client.infer(2, tensors, deadline_ms=1000, encodings=encoding, top_k=3)
    assert reply.ok and reply.stage == 2 and reply.raise_for_status() is reply
    assert reply.classes is not None and reply.classes.tolist() == [0, 1, 2] and reply.top1 == 0
    assert reply.scores.dtype == np.float32 and reply.scores[0] > reply.scores[1]
    assert reply.rtt_ms > 0 and reply.compute_ms >= 0 and reply.queue_ms >= 0
    for name, sent in tensors.items():
        got = reply.tensors[name]
        assert got.shape == np.shape(sent)
        np.testing.assert_allclose(got, sent, atol=0.05 if encoding != "raw" else 0)


def test_infer_jpeg_frame(client: Client) -> None:
    frame = np.full((48, 64, 3), (200, 30, 90), np.uint8)
    reply = client.infer(0, {"frame": frame}, encodings="jpeg")
    assert np.abs(reply.tensors["frame"].astype(int) - frame).max() <= 3


def test_all_scores_without_top_k(client: Client) -> None:
    reply = client.infer(1, {})
    assert reply.classes is None and reply.scores.shape == (10,) and reply.top1 == 0


def test_large_tensor_round_trip(client: Client) -> None:
    big = np.random.default_rng(1).random((256, 1024), dtype=np.float32)  # 1 MiB
    reply = client.infer(1, {"x": big})
    np.testing.assert_array_equal(reply.tensors["x"], big)


def test_async_window(client: Client) -> None:
    assert client.wait_ready()
    ids = [client.submit(1, {"i": np.array([i])}, deadline_ms=TIMEOUT_MS) for i in range(20)]
    assert client.pending == 20
    replies: list[Any] = []
    end = time.monotonic() + TIMEOUT_MS / 1000
    while len(replies) < 20 and time.monotonic() < end:
        replies += client.poll_replies(timeout_ms=100)
    assert sorted(r.id for r in replies) == sorted(ids)
    assert {int(r.tensors["i"][0]) for r in replies} == set(range(20))
    assert client.pending == 0 and client.poll_replies(0) == [] and client.expire() == []


def test_expired_deadline_is_answered_expired(client: Client) -> None:
    reply = client.infer(1, {}, deadline_ms=0)
    assert reply.status == StatusCode.EXPIRED and not reply.ok
    with pytest.raises(RemoteError, match="EXPIRED"):
        reply.raise_for_status()


def test_many_endpoints_round_robin(ipc_dir: Any, fingerprint: str) -> None:
    with EchoServer(f"ipc://{ipc_dir}/a.sock") as a, EchoServer(f"ipc://{ipc_dir}/b.sock") as b:
        with Client([a.endpoint, b.endpoint], fingerprint, timeout_ms=TIMEOUT_MS) as c:
            # IMMEDIATE sends only over connections that are up: wait until both
            # have served a request (two pings once stood for this; under load the
            # second connection could still be coming up).
            end = time.monotonic() + TIMEOUT_MS / 1000
            while not (a.requests and b.requests) and time.monotonic() < end:
                c.infer(0, {})
            a0, b0 = a.requests, b.requests
            assert a0 and b0, "the second connection never came up"
            for _ in range(10):
                c.infer(0, {})
        # Round robin over the two: each took its turn.
        assert a.requests - a0 == 5 and b.requests - b0 == 5


# ------------------------------------------------------------------ timeouts, reconnect


@pytest.fixture
def silent(ipc_dir: Any) -> Iterator[str]:
    """A ROUTER that accepts connections and never answers."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"ipc://{ipc_dir}/silent.sock")
    yield f"ipc://{ipc_dir}/silent.sock"
    sock.close()


def test_timeout_against_a_silent_server(silent: str, fingerprint: str) -> None:
    with Client(silent, fingerprint, timeout_ms=200) as c:
        start = time.monotonic()
        with pytest.raises(RequestTimeout):
            c.infer(1, {"x": np.ones(3)})
        # Not before the timeout; the upper bound only catches a wait far past it.
        assert 0.15 < time.monotonic() - start < 10.0
        assert c.reconnects == 1 and c.pending == 0
        with pytest.raises(RequestTimeout):
            c.ping(timeout_ms=100)


def test_nothing_listening(ipc_dir: Any, fingerprint: str) -> None:
    with Client(f"ipc://{ipc_dir}/nobody.sock", fingerprint, timeout_ms=100) as c:
        with pytest.raises(Unavailable):
            c.submit(1, {}, deadline_ms=100)
        with pytest.raises(RequestTimeout):
            c.infer(1, {})


def test_reconnect_after_server_restart(endpoint: str, fingerprint: str) -> None:
    first = EchoServer(endpoint).start()
    bound = first.endpoint  # the real port for tcp://127.0.0.1:*
    with Client(bound, fingerprint, timeout_ms=TIMEOUT_MS) as c:
        assert c.infer(1, {}).ok
        first.stop()
        with pytest.raises(RequestTimeout):
            c.infer(1, {}, timeout_ms=200)
        with EchoServer(bound):
            assert c.infer(1, {}).ok  # the reopened socket reaches the new server
            assert c.ping().server == "jetsplit-echo"
        assert c.reconnects >= 1


def test_expire_returns_lost_requests_and_reconnects(silent: str, fingerprint: str) -> None:
    with Client(silent, fingerprint, timeout_ms=TIMEOUT_MS) as c:
        assert c.wait_ready()
        early = c.submit(1, {}, deadline_ms=10)
        late = c.submit(1, {}, deadline_ms=60_000)
        assert c.poll_replies(timeout_ms=20) == []
        assert c.expire(now=time.monotonic() + 1) == [early, late]  # late: abandoned
        assert c.reconnects == 1 and c.pending == 0  # nothing was received since


# ------------------------------------------------------------------ server helper


@pytest.fixture
def raw_dealer(echo: EchoServer) -> Iterator[zmq.Socket[Any]]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(echo.endpoint)
    yield sock
    sock.close()


def _exchange(sock: zmq.Socket[Any], frames: list[Any]) -> Any:
    sock.send_multipart(frames)
    assert sock.poll(TIMEOUT_MS), "no reply"
    return decode_message(sock.recv_multipart()).message


@pytest.mark.parametrize(
    ("frames", "status"),
    [
        ([b"\xc1garbage"], StatusCode.BAD_REQUEST),
        ([msgspec.msgpack.encode({"v": 9, "kind": "ping", "id": 3})], StatusCode.UNSUPPORTED_VERSION),
        ([msgspec.msgpack.encode({"v": 1, "kind": "pong", "id": 3})], StatusCode.BAD_REQUEST),
        ([*encode_infer(3, "ab" * 32, 1, 100.0, {"x": np.ones(4)}), b"extra"], StatusCode.BAD_REQUEST),
    ],
    ids=["garbage", "version", "reply-kind", "extra-frame"],
)
def test_server_answers_malformed_and_keeps_serving(
    raw_dealer: zmq.Socket[Any], client: Client, frames: list[Any], status: StatusCode
) -> None:
    reply = _exchange(raw_dealer, [bytes(f) for f in frames])
    assert reply.kind == "error" and reply.status == status
    assert reply.id == (0 if status == StatusCode.BAD_REQUEST and frames[0].startswith(b"\xc1") else 3)
    assert client.infer(1, {}).ok


def test_req_socket_client(echo: EchoServer) -> None:
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(echo.endpoint)
    try:
        pong = _exchange(req, [bytes(f) for f in encode_message(ping_for(11))])
        assert pong.kind == "pong" and pong.id == 11
    finally:
        req.close()


def test_oversized_frame_is_dropped_by_libzmq(ipc_dir: Any, fingerprint: str) -> None:
    limits = Limits(max_message_bytes=64 << 10)
    with EchoServer(f"ipc://{ipc_dir}/small.sock", limits=limits) as echo:
        with Client(echo.endpoint, fingerprint, timeout_ms=300) as c:
            with pytest.raises(RequestTimeout):
                c.infer(1, {"x": np.zeros(1 << 20, np.uint8)})  # the connection is cut
            c.timeout_ms = TIMEOUT_MS
            assert c.infer(1, {"x": np.zeros(1000, np.uint8)}).ok


def test_serve_with_handler_errors_and_post(ipc_dir: Any, fingerprint: str) -> None:
    endpoint = f"ipc://{ipc_dir}/worker.sock"
    stop = threading.Event()

    def handler(header: InferRequest, tensors: dict[str, np.ndarray]) -> Result:
        if header.stage == 3:
            raise RuntimeError("engine exploded")
        return result_for(header, [0.2, 0.8], stage=header.stage)[0]

    server = Server(endpoint, bundles=[fingerprint])
    thread = threading.Thread(target=lambda: (server.serve(handler, stop, poll_ms=20), server.close()))
    thread.start()
    try:
        with Client(endpoint, fingerprint, timeout_ms=TIMEOUT_MS) as c:
            ok = c.infer(1, {})
            assert ok.top1 == 1 and ok.compute_ms > 0
            failed = c.infer(3, {})
            assert failed.status == StatusCode.INTERNAL and "engine exploded" in failed.message
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_recv_and_post_from_a_worker_thread(ipc_dir: Any, fingerprint: str) -> None:
    """The batching worker's shape: recv on the socket thread, reply from another."""
    endpoint = f"ipc://{ipc_dir}/batch.sock"
    with Server(endpoint, bundles=[fingerprint]) as server, Client(endpoint, fingerprint, TIMEOUT_MS) as c:
        assert c.wait_ready()
        ids = [c.submit(1, {"x": np.full(2, i, np.float32)}, deadline_ms=TIMEOUT_MS) for i in range(4)]
        batch = []
        end = time.monotonic() + TIMEOUT_MS / 1000
        while len(batch) < 4 and time.monotonic() < end:
            request = server.recv(timeout_ms=50)
            if request is not None:
                batch.append(request)
        assert [r.header.id for r in batch] == ids and all(not r.expired() for r in batch)

        def work() -> None:
            for r in batch:
                assert isinstance(r.header, InferRequest)
                server.post(r, *result_for(r.header, [float(r.tensors["x"][0])], stage=1))

        worker = threading.Thread(target=work)
        worker.start()
        replies: list[Any] = []
        while len(replies) < 4 and time.monotonic() < end:
            assert server.recv(timeout_ms=20) is None  # flushes the posted replies
            replies += c.poll_replies(timeout_ms=0)
        worker.join(5)
        assert sorted(float(r.scores[0]) for r in replies) == [0.0, 1.0, 2.0, 3.0]
