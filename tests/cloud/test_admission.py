"""Admission control as pure logic: the queue bounds, the deadline prediction from
measured batches, the stale-head drop, and the screen that refuses from a header."""

from __future__ import annotations

import pytest

from jetsplit.cloud.admission import (
    PER_REQUEST_BYTES,
    Admission,
    QueueLimits,
    ServiceModel,
    held_bytes,
)
from jetsplit.cloud.batcher import Batcher
from jetsplit.cloud.config import CloudConfig, load_cloud_config
from jetsplit.errors import ConfigError
from jetsplit.protocol.errors import DecodeError, StatusCode
from jetsplit.protocol.messages import InferRequest, Ping, TensorDesc

FP = "ab" * 32
KEY = (FP, 1)


def _header(deadline_ms: float = 150.0, rid: int = 7, **desc: object) -> InferRequest:
    d = {"name": "carry", "dtype": "float32", "shape": [1, 64, 14, 14], "encoding": "f16", "nbytes": 25088, **desc}
    return InferRequest(v=1, id=rid, bundle=FP, stage=1, deadline_ms=deadline_ms, tensors=[TensorDesc(**d)])  # type: ignore[arg-type]


def _admission(requests: int = 100, nbytes: int = 1 << 20, max_batch: int = 4, engines: int = 1,
               now: list[float] | None = None) -> tuple[Admission, Batcher[str], list[float]]:
    clock = now if now is not None else [0.0]
    batcher: Batcher[str] = Batcher(max_batch, 2.0, clock=lambda: clock[0])
    refused: list[tuple[StatusCode, str]] = []
    adm = Admission(QueueLimits(requests, nbytes), batcher, max_batch, engines, {KEY},
                    on_refuse=lambda s, r: refused.append((s, r)), clock=lambda: clock[0])
    adm.refused = refused  # type: ignore[attr-defined]
    return adm, batcher, clock


def test_batcher_counts_ahead_and_bytes_and_drops_the_stale_head() -> None:
    now = [0.0]
    b: Batcher[str] = Batcher(max_batch=2, max_wait_ms=10, clock=lambda: now[0])
    for name, deadline in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("d", 9.0)):
        b.put("k", name, deadline, nbytes=10)
    assert b.queued("k") == (4, 40)
    assert b.ahead("k", 2.0) == 2 and b.ahead("k", 0.5) == 0 and b.ahead("other", 5.0) == 0
    # At t=1.5 a batch takes 1 s: a (past) and b (due at 2.0 < 2.5) cannot be served.
    now[0] = 1.5
    dropped = b.drop_stale(now[0], lambda key, size: 1.0)
    assert dropped == [("k", ["a", "b"])]
    assert b.queued("k") == (2, 20) and b.pending == 2
    batch = b.take()
    assert batch is not None and batch.items == ["c", "d"]
    b.done(2)
    assert b.queued("k") == (0, 0) and b.pending == 0 and b.keys() == []


def test_queue_bounds_in_requests_and_bytes() -> None:
    adm, batcher, _ = _admission(requests=3, nbytes=100)
    assert adm.check(KEY, 1.0, 40, 0.0) is None
    batcher.put(KEY, "r1", 1.0, 40)
    batcher.put(KEY, "r2", 1.0, 40)
    refusal = adm.check(KEY, 1.0, 40, 0.0)
    assert refusal is not None and refusal.status == StatusCode.OVERLOADED and refusal.reason == "queue_bytes"
    batcher.put(KEY, "r3", 1.0, 1)
    refusal = adm.check(KEY, 1.0, 1, 0.0)
    assert refusal is not None and refusal.reason == "queue_full" and "queue_requests = 3" in refusal.message
    refusal = adm.check(KEY, -1.0, 1, 0.0)
    assert refusal is not None and refusal.status == StatusCode.EXPIRED


def test_deadline_refusal_follows_the_measured_service_rate() -> None:
    adm, batcher, _ = _admission(max_batch=4)
    # Not measured yet: a deep queue is no reason to refuse.
    for i in range(40):
        batcher.put(KEY, f"r{i}", 10.0, 0)
    assert adm.check(KEY, 0.05, 0, 0.0) is None
    # Measured: 10 ms per full batch of 4 -> 2.5 ms per request, one engine.
    adm.batch_done(KEY, 4, 0.010, now=1.0)
    assert adm.model.rate(KEY) == pytest.approx(400.0)
    # 40 queued due at 10 s go after a request due sooner: nothing is ahead of it.
    assert adm.check(KEY, 0.05, 0, 0.0) is None
    # Due after them all: ~41 x 2.5 ms + one batch = 112.5 ms of work ahead.
    refusal = adm.check(KEY, 10.1, 0, 10.0)
    assert refusal is not None and refusal.reason == "deadline" and "ms of work ahead" in refusal.message
    assert adm.check(KEY, 10.2, 0, 10.0) is None


def test_below_a_batch_per_engine_judged_by_the_batch_it_joins() -> None:
    adm, batcher, _ = _admission(max_batch=4, engines=2)
    adm.batch_done(KEY, 4, 0.1, now=1.0)  # 100 ms per batch of 4: 25 ms per request
    for i in range(7):
        batcher.put(KEY, f"r{i}", 0.01, 0)
    # At full-batch rates 8 requests ahead look like 200 ms, but with fewer than a
    # batch per engine queued the request joins a batch that ends in ~100 ms.
    assert adm.check(KEY, 0.15, 0, 0.0) is None
    refusal = adm.check(KEY, 0.05, 0, 0.0)  # even that batch would end too late
    assert refusal is not None and refusal.reason == "deadline"
    batcher.put(KEY, "r7", 0.01, 0)  # a batch per engine waits: full-batch rates from here
    assert adm.check(KEY, 0.15, 0, 0.0) is not None


def test_service_model_scales_unmeasured_sizes_and_learns_efficiency() -> None:
    m = ServiceModel(max_batch=8, engines=1)
    assert m.batch_s("k", 8) == 0.0 and m.rate("k") == 0.0
    m.observe("k", 2, 0.004, now=0.0, backlogged=False)
    assert m.batch_s("k", 8) == pytest.approx(0.016)  # linear from the largest smaller size
    assert m.batch_s("k", 1) == pytest.approx(0.004)  # only larger measured: at most that long
    # Backlogged for 1 s with 0.5 s of engine time done: half the time is the model.
    m.observe("k", 8, 0.010, now=10.0, backlogged=True)
    for i in range(1, 51):
        m.observe("k", 8, 0.010, now=10.0 + i * 0.02, backlogged=True)
    assert 0.5 < m.efficiency < 0.9


def test_screen_refuses_from_the_header_with_its_id() -> None:
    adm, batcher, _ = _admission(requests=1)
    batcher.put(KEY, "r", 1.0, 0)
    with pytest.raises(DecodeError) as err:
        adm.screen(_header(rid=42), 25088)
    assert err.value.status == StatusCode.OVERLOADED and err.value.request_id == 42
    assert adm.refused == [(StatusCode.OVERLOADED, "queue_full")]  # type: ignore[attr-defined]
    adm.screen(Ping(v=1, id=1), 0)  # not a request: passed
    other = InferRequest(v=1, id=3, bundle="cd" * 32, stage=1, deadline_ms=100.0)
    adm.screen(other, 0)  # not served here: the worker answers it itself


def test_held_bytes_counts_arrays_that_do_not_view_the_frame() -> None:
    assert held_bytes(_header(), 25088) == 25088 + PER_REQUEST_BYTES
    i8 = _header(encoding="i8", scale=0.1, nbytes=12544)
    assert held_bytes(i8, 12544) == 12544 + 64 * 14 * 14 * 4 + PER_REQUEST_BYTES


def test_limits_sized_from_the_machine_and_config_errors(tmp_path) -> None:
    limits = QueueLimits.sized(2, memory=8 << 30)
    assert limits.requests == QueueLimits.DEFAULT_REQUESTS and limits.bytes == 128 << 20  # 8 GiB / 16 / 2 keys
    assert QueueLimits.sized(1, memory=64 << 20).bytes == 16 << 20  # never below 16 MiB
    assert QueueLimits.sized(1, requests=10, mib=2.5) == QueueLimits(10, int(2.5 * (1 << 20)))
    with pytest.raises(ConfigError, match="queue_requests: expected an integer >= 1, got 0"):
        CloudConfig(bundles=("demo:split",), queue_requests=0)
    with pytest.raises(ConfigError, match="rcvhwm: expected an integer >= 1"):
        CloudConfig(bundles=("demo:split",), rcvhwm=0)
    toml = tmp_path / "cloud.toml"
    toml.write_text('bundles = ["demo:split"]\nqueue_requests = 500\nqueue_mib = 8\nrcvhwm = 16\n')
    cfg = load_cloud_config(toml, {"JETSPLIT_CLOUD_QUEUE_MIB": "4"}, {"rcvhwm": 8})
    assert (cfg.queue_requests, cfg.queue_mib, cfg.rcvhwm) == (500, 4.0, 8)
    toml.write_text('bundles = ["demo:split"]\nqueue_mb = 8\n')
    with pytest.raises(ConfigError, match="queue_mb"):
        load_cloud_config(toml, {}, {})


def test_refused_from_the_header_before_its_payload_is_decoded(tmp_path) -> None:
    """A full queue refuses a request whose payload is malformed with OVERLOADED,
    not BAD_REQUEST: the payload was never looked at."""
    import zmq

    from jetsplit.protocol.codec import decode_message, encode_header
    from jetsplit.protocol.sockio import recv_parts, send_parts
    from jetsplit.protocol.transport import Server, dealer_socket

    adm, batcher, clock = _admission(requests=1)
    batcher.put(KEY, "r", 1e9, 0)
    clock[0] = 0.0
    server = Server(f"ipc://{tmp_path}/w.sock", screen=adm.screen)
    ctx: zmq.Context = zmq.Context()
    sock = dealer_socket(ctx, [f"ipc://{tmp_path}/w.sock"])
    try:
        bad_payload = b"\0" * 10  # the header says 25088 bytes
        assert sock.poll(5000, zmq.POLLOUT)
        assert send_parts(sock, [encode_header(_header(rid=9)), bad_payload])
        assert server.recv(2000) is None  # answered inside, never handed to the worker
        assert sock.poll(5000)
        frames = recv_parts(sock)
        assert frames is not None
        reply, _ = decode_message([f.buffer for f in frames])
        assert reply.id == 9 and reply.status == StatusCode.OVERLOADED  # type: ignore[union-attr]
        # With room in the queue, the same message is decoded and found malformed.
        adm.limits = QueueLimits(10, 1 << 20)
        assert send_parts(sock, [encode_header(_header(rid=10)), bad_payload])
        assert server.recv(2000) is None
        assert sock.poll(5000)
        frames = recv_parts(sock)
        assert frames is not None
        reply, _ = decode_message([f.buffer for f in frames])
        assert reply.id == 10 and reply.status == StatusCode.BAD_REQUEST  # type: ignore[union-attr]
    finally:
        sock.close(0)
        ctx.term()
        server.close()
