"""The worker describes itself, says when it drains and how loaded it is, and
answers with each request's own id (SPEC.md 3.7-3.9, 6.1, 7.1), against a real
Worker on ipc://."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from jetsplit.bundle import Bundle
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.worker import Worker
from jetsplit.handoff import needed
from jetsplit.protocol import Client, StatusCode
from jetsplit.protocol.codec import encode_infer
from jetsplit.protocol.messages import Description, TensorInfo

NO_BUNDLE = "0" * 64


def _exchange(endpoint: str, frames: list[Any], timeout_ms: int = 5000) -> dict[str, Any]:
    """Send ``frames`` on a fresh DEALER and return the reply header as a dict."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        assert sock.poll(timeout_ms), "no reply"
        reply: dict[str, Any] = msgspec.msgpack.decode(sock.recv_multipart()[0])
        return reply
    finally:
        sock.close()


def _tensors_from(info: list[TensorInfo], frame: np.ndarray) -> dict[str, np.ndarray]:
    """The request tensors a description asks for, built from nothing else."""
    out: dict[str, np.ndarray] = {}
    for t in info:
        if t.name == "frame":
            out["frame"] = frame
        elif t.value is not None:
            out[t.name] = np.asarray(t.value, dtype=t.dtype)
        else:
            shape = [1 if d is None else d for d in t.shape]
            out[t.name] = np.full(shape, 0.1, dtype=t.dtype)
    return out


@pytest.mark.parametrize("mode", ["little-big", "split", "ensemble"])
def test_a_request_formed_from_the_description_alone_is_answered(make_bundle, worker_thread, mode: str) -> None:
    bundle: Bundle = make_bundle(mode)
    worker = worker_thread(bundle)
    with Client(worker.endpoints, NO_BUNDLE, timeout_ms=5000) as client:
        d = client.describe()
    assert d.state == "serving" and d.limits.max_message_bytes == 64 << 20
    assert set(d.encodings) == {"raw", "f16", "i8", "jpeg"} and "none" in d.compressions
    (b,) = d.bundles
    assert (b.name, b.fingerprint, b.labels) == (bundle.name, bundle.fingerprint, list(bundle.labels))
    assert [(s.index, s.name, s.where) for s in b.stages] == [
        (i, s.name, s.where) for i, s in enumerate(bundle.stages)]
    frame = np.full((28, 28), 200, np.uint8)
    for s in b.stages:
        if s.where == "edge":
            assert s.inputs == []
            continue
        # What validation wants is what the description says, name for name.
        assert tuple(t.name for t in s.inputs) == needed(bundle, s.index)
        assert (s.preprocess is not None) == any(t.name == "frame" for t in s.inputs)
        tensors = _tensors_from(s.inputs, frame)
        with Client(worker.endpoints, b.fingerprint, timeout_ms=5000) as client:
            reply = client.infer(s.index, tensors, deadline_ms=5000, top_k=1)
        assert reply.ok, reply.message
        assert reply.classes is not None and 0 <= int(reply.classes[0]) < len(b.labels)
        assert [t.name for t in s.outputs][0] == "probs"


def test_description_preprocess_matches_the_bundle(make_bundle, worker_thread) -> None:
    bundle = make_bundle("little-big")
    worker = worker_thread(bundle)
    with Client(worker.endpoints, NO_BUNDLE, timeout_ms=5000) as client:
        stage = client.describe().bundles[0].stages[1]
    p, want = stage.preprocess, bundle.preprocess
    assert p is not None
    assert (p.height, p.width, p.colour, p.layout, p.scale, tuple(p.mean), tuple(p.std)) == (
        want.height, want.width, want.colour, want.layout, want.scale, want.mean, want.std)
    assert stage.inputs[0].shape == [None, None, 1] and stage.inputs[0].encodings == ["raw", "jpeg"]


def test_pong_reports_the_load(make_bundle, worker_thread, offloads) -> None:
    bundle = make_bundle("split")
    stage, tensors, _ = offloads(bundle, 3)
    # Batches wait up to 3 s to fill: the three requests sit in the worker meanwhile.
    worker = worker_thread(bundle, max_batch=64, max_wait_ms=3000.0)
    with Client(worker.endpoints, bundle.fingerprint, timeout_ms=5000) as client:
        assert client.ping().load == 0
        ids = [client.submit(stage, t, deadline_ms=10000) for t in tensors]
        end = time.monotonic() + 5
        while (pong := client.ping()).load < 3:
            assert time.monotonic() < end, pong
        assert pong.state == "serving"
        replies: list[Any] = []
        while len(replies) < 3:
            replies += client.poll_replies(100)
        assert sorted(r.id for r in replies) == sorted(ids) and client.ping().load == 0


def test_a_draining_worker_says_so_in_its_pongs(make_bundle, tmp_path, offloads) -> None:
    bundle = make_bundle("split")
    stage, tensors, _ = offloads(bundle, 1)
    endpoint = f"ipc://{tmp_path}/w.sock"
    worker = Worker(CloudConfig(bind=(endpoint,), bundles=(str(bundle.root),), drain_timeout_s=5.0))
    worker.start()
    stop = threading.Event()
    thread = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
    thread.start()
    states: set[str] = set()
    statuses: set[StatusCode] = set()
    with Client(endpoint, bundle.fingerprint, timeout_ms=2000) as client:
        assert client.ping().state == "serving"
        stop.set()
        # Keep work arriving, so the worker stays in its drain while we look.
        end = time.monotonic() + 5
        while ("draining" not in states or StatusCode.SHUTTING_DOWN not in statuses) and time.monotonic() < end:
            statuses.add(client.infer(stage, tensors[0], deadline_ms=2000).status)
            states.add(client.ping().state)
        assert "draining" in states and StatusCode.SHUTTING_DOWN in statuses
        d = client.describe()  # still answered while draining
        assert d.state == "draining"
    thread.join(10)


def _infer_header(fingerprint: str, tensors: dict[str, np.ndarray], **fields: Any) -> tuple[dict[str, Any], list[Any]]:
    frames = encode_infer(77, fingerprint, 1, 5000.0, tensors)
    header = msgspec.msgpack.decode(frames[0])
    header.update(fields)
    return header, [bytes(f) for f in frames[1:]]


@pytest.mark.parametrize("fault", ["trailing bytes", "non-string key", "repeated key", "over max_tensors"])
def test_errors_carry_the_request_id(make_bundle, worker_thread, fault: str) -> None:
    bundle = make_bundle("little-big")
    worker = worker_thread(bundle)
    frame = {"frame": np.zeros((28, 28), np.uint8)}
    header, payloads = _infer_header(bundle.fingerprint, frame)
    raw = msgspec.msgpack.encode(header)
    if fault == "trailing bytes":
        frames = [raw + b"\x00", *payloads]
    elif fault == "non-string key":
        frames = [bytes([raw[0] + 1]) + raw[1:] + msgspec.msgpack.encode(3) + b"\x01", *payloads]
    elif fault == "repeated key":
        frames = [bytes([raw[0] + 1]) + raw[1:] + msgspec.msgpack.encode("stage") + b"\x01", *payloads]
    else:
        many = {f"t{i}": np.zeros(1, np.uint8) for i in range(17)}
        header, payloads = _infer_header(bundle.fingerprint, many)
        frames = [msgspec.msgpack.encode(header), *payloads]
    reply = _exchange(worker.endpoints[0], frames)
    want = StatusCode.TOO_LARGE if fault == "over max_tensors" else StatusCode.BAD_REQUEST
    assert (reply["kind"], reply["id"], reply["status"]) == ("error", 77, want), reply


def test_a_malformed_late_request_is_bad_request_not_expired(make_bundle, worker_thread) -> None:
    bundle = make_bundle("little-big")
    worker = worker_thread(bundle)
    with Client(worker.endpoints, bundle.fingerprint, timeout_ms=5000) as client:
        wrong = client.infer(1, {"carry": np.zeros((1, 4), np.float32)}, deadline_ms=0)
        late = client.infer(1, {"frame": np.zeros((28, 28), np.uint8)}, deadline_ms=0)
    assert wrong.status == StatusCode.BAD_REQUEST and "frame" in wrong.message
    assert late.status == StatusCode.EXPIRED


def test_top_k_over_the_number_of_classes_ranks_them_all(make_bundle, worker_thread) -> None:
    bundle = make_bundle("little-big")
    worker = worker_thread(bundle)
    with Client(worker.endpoints, bundle.fingerprint, timeout_ms=5000) as client:
        reply = client.infer(1, {"frame": np.zeros((28, 28), np.uint8)}, deadline_ms=5000, top_k=50)
    assert reply.ok and reply.classes is not None
    assert sorted(reply.classes.tolist()) == list(range(10))
    assert np.all(np.diff(reply.scores) <= 0)


def test_a_version_1_client_gets_version_1_replies(make_bundle, worker_thread) -> None:
    bundle = make_bundle("little-big")
    worker = worker_thread(bundle)
    pong = _exchange(worker.endpoints[0], [msgspec.msgpack.encode({"kind": "ping", "v": 1, "id": 4})])
    assert pong["v"] == 1 and "state" not in pong and "load" not in pong
    header, payloads = _infer_header(bundle.fingerprint, {"frame": np.zeros((28, 28), np.uint8)}, v=1)
    result = _exchange(worker.endpoints[0], [msgspec.msgpack.encode(header), *payloads])
    assert (result["kind"], result["v"], result["id"]) == ("result", 1, 77)
    future = _exchange(worker.endpoints[0], [msgspec.msgpack.encode({"kind": "ping", "v": 3, "id": 5})])
    assert (future["v"], future["id"], future["status"]) == (1, 5, StatusCode.UNSUPPORTED_VERSION)


def test_description_decodes_strictly_and_is_stable(make_bundle, worker_thread) -> None:
    bundle = make_bundle("ensemble")
    worker = worker_thread(bundle)
    reply = _exchange(worker.endpoints[0], [msgspec.msgpack.encode({"kind": "describe", "v": 2, "id": 9})])
    again = _exchange(worker.endpoints[0], [msgspec.msgpack.encode({"kind": "describe", "v": 2, "id": 9})])
    assert reply == again
    d = msgspec.convert(reply, Description)
    count = [t for t in d.bundles[0].stages[2].inputs if t.name == "count"][0]
    assert count.value == 2 and count.shape == []
