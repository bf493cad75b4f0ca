"""The worker in-process, on real sockets: routing, resumption, batching, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from jetsplit.chain import Chain
from jetsplit.cloud.batcher import Batcher
from jetsplit.cloud.config import CloudConfig
from jetsplit.protocol import Client, StatusCode


@pytest.fixture
def serve(worker_thread: Any) -> Any:
    """serve(*bundles, **config) -> the endpoint of a worker serving them."""
    return lambda *bundles, **config: worker_thread(*bundles, **config).endpoints[0]


def _submit_all(client: Client, stage: int, reqs: list[dict[str, np.ndarray]]) -> list[Any]:
    """Send every request at once; their replies in request order."""
    ids = [client.submit(stage, r, deadline_ms=5000, send_timeout_ms=2000) for r in reqs]
    got: dict[int, Any] = {}
    while len(got) < len(ids):
        for rep in client.poll_replies(2000):
            got[rep.id] = rep
    return [got[rid] for rid in ids]


@pytest.mark.parametrize("threads", [1, 2, 0], ids=["engine-thread", "two-engine-threads", "inline"])
@pytest.mark.parametrize("mode", ["split", "ensemble", "little-big"])
def test_cloud_answers_equal_offline_chain(make_bundle, serve, offloads, mode: str, threads: int) -> None:
    bundle = make_bundle(mode)
    endpoint = serve(bundle, threads=threads)
    stage, reqs, frames = offloads(bundle, 24)
    with Chain.open(bundle) as full:
        # Every frame offloaded at the edge's gates; the cloud's own gates as tuned.
        thresholds = [float("inf") if s.where == "edge" else t for s, t in zip(bundle.stages, bundle.thresholds())]
        outs = full.run_from(0, full.preprocess(frames), thresholds=thresholds)
    with Client(endpoint, bundle.fingerprint, timeout_ms=5000) as client:
        replies = _submit_all(client, stage, reqs)
    for i, rep in enumerate(replies):
        assert rep.ok, rep.message
        np.testing.assert_allclose(rep.scores, outs.probs[i], atol=1e-5)
        assert rep.stage == outs.stage[i]


def test_errors_by_status(make_bundle, serve, offloads) -> None:
    bundle = make_bundle("split")
    other = make_bundle("little-big", name="other")
    endpoint = serve(bundle)
    stage, reqs, _ = offloads(bundle, 1)
    with Client(endpoint, other.fingerprint, timeout_ms=3000) as stranger:
        rep = stranger.infer(1, reqs[0], deadline_ms=1000)
        assert rep.status == StatusCode.UNKNOWN_BUNDLE and "not served here" in rep.message
    with Client(endpoint, bundle.fingerprint, timeout_ms=3000) as client:
        assert client.infer(0, reqs[0], deadline_ms=1000).status == StatusCode.UNKNOWN_STAGE
        bad = {"carry": np.zeros((1, 31), np.float32)}
        rep = client.infer(stage, bad, deadline_ms=1000)
        assert rep.status == StatusCode.BAD_REQUEST and "tensor 'carry': expected (1, 32) float32" in rep.message
        rep = client.infer(stage, {"frame": np.zeros((8, 8), np.uint8)}, deadline_ms=1000)
        assert rep.status == StatusCode.BAD_REQUEST and "expects tensors ['carry']" in rep.message
        assert client.infer(stage, reqs[0], deadline_ms=0).status == StatusCode.EXPIRED
        assert client.infer(stage, reqs[0], deadline_ms=2000).ok  # still serving
        pong = client.ping()
        assert bundle.fingerprint in pong.bundles


def test_requests_are_batched(make_bundle, worker_thread, offloads) -> None:
    bundle = make_bundle("split")
    # A long window: a full batch (8) leaves at once, so it costs nothing when the
    # requests arrive together, and a loaded machine still gets them into one.
    worker = worker_thread(bundle, max_batch=8, max_wait_ms=500.0)
    stage, reqs, _ = offloads(bundle, 32)
    with Client(worker.endpoints[0], bundle.fingerprint, timeout_ms=5000) as client:
        client.wait_ready(2000)
        replies = _submit_all(client, stage, reqs)
    assert all(r.ok for r in replies)
    # The engine ran batches, not 32 single requests: the worker's own count of
    # batches and of the requests in them.
    registry = worker.metrics.registry
    batches = registry.get_sample_value("jetsplit_batch_size_count")
    assert registry.get_sample_value("jetsplit_batch_size_sum") == 32
    assert batches is not None and batches <= 16, f"{batches} batches for 32 requests sent together"
    # Requests of one batch share its engine time, as the replies report it.
    assert len({r.compute_ms for r in replies}) <= batches


def test_batcher_deadline_order_and_expiry() -> None:
    now = [0.0]
    b: Batcher[str] = Batcher(max_batch=3, max_wait_ms=10, clock=lambda: now[0])
    b.put("k", "late", deadline=5.0)
    b.put("k", "soon", deadline=1.0)
    assert b.take() is None  # neither full nor waited long enough
    b.put("k", "dead", deadline=0.0)  # already past: handed back as expired
    batch = b.take()
    assert batch is not None and batch.items == ["soon", "late"] and batch.expired == ["dead"]
    b.done(2)
    b.put("x", "a", deadline=9.0)
    now[0] = 0.02  # waited 20 ms > 10 ms
    batch = b.take()
    assert batch is not None and batch.items == ["a"]
    b.done(1)
    assert b.pending == 0


def test_config_errors() -> None:
    from jetsplit.errors import ConfigError

    with pytest.raises(ConfigError, match="bundles: expected at least one bundle"):
        CloudConfig(bundles=())
    with pytest.raises(ConfigError, match="bind: expected an endpoint such as"):
        CloudConfig(bundles=("demo:split",), bind=("localhost:5555",))


@pytest.mark.parametrize("threads", [1, 0], ids=["engine-thread", "inline"])
def test_float16_activations_answer_as_the_chain_does_on_them(make_bundle, serve, offloads, threads: int) -> None:
    """Carries sent as f16 are kept as float16, stacked and widened per batch: the
    answers are the cloud chain's on the float16-rounded carries."""
    bundle = make_bundle("split")
    endpoint = serve(bundle, threads=threads, max_batch=8)
    stage, reqs, _ = offloads(bundle, 20)
    carries = np.concatenate([r["carry"] for r in reqs])
    with Chain.open(bundle, where="cloud") as cloud:
        rounded = carries.astype(np.float16).astype(np.float32)
        outs = cloud.run_from(stage, np.zeros(len(reqs), np.float32), rounded, None)
    with Client(endpoint, bundle.fingerprint, timeout_ms=5000, encodings="f16") as client:
        replies = _submit_all(client, stage, reqs)
    for i, rep in enumerate(replies):
        assert rep.ok, rep.message
        np.testing.assert_allclose(rep.scores, outs.probs[i], atol=1e-6)


def test_requests_late_by_the_time_their_batch_runs_are_not_run(make_bundle, offloads) -> None:
    """A formed batch can wait for its engine; a request whose deadline passes
    meanwhile is answered expired and only the others are run."""
    import time

    from jetsplit.cloud.batcher import Batch
    from jetsplit.cloud.worker import Worker, _Job
    from jetsplit.handoff import stack
    from jetsplit.protocol.messages import InferRequest
    from jetsplit.protocol.transport import Request

    bundle = make_bundle("split")
    stage, reqs, _ = offloads(bundle, 4)
    worker = Worker(CloudConfig(bind=("ipc:///tmp/unused",), bundles=(str(bundle.root),)))
    try:
        now = time.monotonic()
        items = []
        for i, tensors in enumerate(reqs):
            header = InferRequest(v=1, id=i + 1, bundle=bundle.fingerprint, stage=stage, deadline_ms=50.0)
            # Requests 1 and 3 arrived 80 ms ago with 50 ms to live: late now.
            items.append(Request((b"c",), header, tensors, now - (0.08 if i in (1, 3) else 0.0)))
        served = worker.served[bundle.fingerprint]
        job = _Job(Batch((bundle.fingerprint, stage), items, [], [0.0] * 4), served, stage,
                   stack(served.chain, stage, [r.tensors for r in items]), min(r.deadline_at for r in items))
        worker._run_job(job)
        sample = worker.metrics.registry.get_sample_value
        assert sample("jetsplit_requests_total", {"status": "expired"}) == 2
        assert sample("jetsplit_requests_total", {"status": "ok"}) == 2
        assert sample("jetsplit_batch_size_sum") == 2  # the batch that ran had the two on time
    finally:
        worker.close()
