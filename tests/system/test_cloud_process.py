"""The cloud worker as a real process: hostile input, CURVE, SIGTERM under load."""

from __future__ import annotations

import os
import random
import re
import signal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq

from jetsplit.chain import Chain
from jetsplit.protocol import Client, CurveClient, StatusCode, encode_infer
from tests.support.daemons import curve_keys, rss_kib, start_worker


def _valid_request(bundle: Any, offloads: Any) -> tuple[int, dict[str, np.ndarray], np.ndarray]:
    """One digit's hand-off tensors, offloaded at the edge, and the scores the
    whole chain gives it."""
    stage, (tensors,), frames = offloads(bundle, 1)
    with Chain.open(bundle) as full:
        want = full.run_all(full.preprocess(frames))[-1].probs[0]
    return stage, tensors, want


def _malformed(rng: random.Random, fp: str, valid: list[bytes]) -> list[bytes]:
    header = msgspec.msgpack.decode(valid[0])
    payload = bytes(valid[1])
    kind = rng.randrange(10)
    h = dict(header)
    h["tensors"] = [dict(t) for t in header["tensors"]]
    t = h["tensors"][0]
    if kind == 0:  # truncated payload
        return [valid[0], payload[: rng.randrange(len(payload))]]
    if kind == 1:  # extra frames
        return [valid[0], payload, rng.randbytes(rng.randrange(1, 64))]
    if kind == 2:  # shape lies about the frame length
        t["shape"] = [1, rng.randrange(33, 4096)]
    elif kind == 3:  # huge dimensions
        t["shape"] = [2**31 - 1, 2**31 - 1, rng.randrange(1, 9)]
    elif kind == 4:  # wrong types
        key = rng.choice(["stage", "deadline_ms", "id", "tensors", "bundle"])
        h[key] = rng.choice(["x", -1, [1, 2], {"a": 1}, 1.5e300, None])
    elif kind == 5:  # unknown protocol version
        h["v"] = rng.choice([0, 2, 99, 2**31])
    elif kind == 6:  # garbage MessagePack
        return [rng.randbytes(rng.randrange(1, 256)), payload]
    elif kind == 7:  # unknown fingerprint
        h["bundle"] = f"{rng.getrandbits(256):064x}"
    elif kind == 8:  # bad dtype / encoding
        t[rng.choice(["dtype", "encoding", "compression"])] = rng.choice(["complex128", "object", "rot13", ""])
    else:  # missing header fields or unknown ones
        if rng.random() < 0.5:
            h.pop(rng.choice(["v", "id", "bundle", "stage", "kind"]), None)
        else:
            h["surprise"] = 1
    return [msgspec.msgpack.encode(h), payload]


def test_fuzz_10000_malformed_messages_keeps_serving(make_bundle, offloads, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    worker, endpoint = start_worker(str(bundle.root), bind=f"ipc://{tmp_path}/w.sock")
    try:
        stage, tensors, want = _valid_request(bundle, offloads)
        with Client(endpoint, bundle.fingerprint, timeout_ms=5000) as client:
            for _ in range(50):  # warm-up before measuring memory
                assert client.infer(stage, tensors, deadline_ms=2000).ok
        rss_before = rss_kib(worker.pid)
        valid = [bytes(f) for f in encode_infer(7, bundle.fingerprint, stage, 2000.0, tensors)]
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        rng = random.Random(1234)
        replies = 0
        sent = 0
        for _ in range(10_000):
            sock.send_multipart(_malformed(rng, bundle.fingerprint, valid))
            sent += 1
            while sock.poll(0):
                sock.recv_multipart()
                replies += 1
        while sock.poll(1000):
            sock.recv_multipart()
            replies += 1
        sock.close()
        # Every malformed message got an error reply or was dropped; none crashed it.
        assert worker.proc.poll() is None
        assert 0.5 * sent < replies <= sent
        with Client(endpoint, bundle.fingerprint, timeout_ms=5000) as client:
            rep = client.infer(stage, tensors, deadline_ms=2000)
            assert rep.ok
            np.testing.assert_allclose(rep.scores, want, atol=1e-5)
        growth = rss_kib(worker.pid) / rss_before - 1
        assert growth < 0.20, f"RSS grew {growth:.1%}"
    finally:
        assert worker.stop() == 0


def test_curve_allow_list(make_bundle, offloads, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    keys, allowed = curve_keys(tmp_path, "edge")
    worker, endpoint = start_worker(
        str(bundle.root), bind="tcp://127.0.0.1:0",
        extra=("--curve-secret", str(keys / "worker.key_secret"), "--curve-allow", str(allowed)),
    )
    try:
        stage, tensors, _ = _valid_request(bundle, offloads)
        server_key = keys / "worker.key"
        with Client(endpoint, bundle.fingerprint, timeout_ms=3000,
                    curve=CurveClient(keys / "edge.key_secret", server_key)) as ok:
            assert ok.infer(stage, tensors, deadline_ms=2000).ok
        for curve in (CurveClient(keys / "stranger.key_secret", server_key), None):
            with Client(endpoint, bundle.fingerprint, timeout_ms=500, curve=curve) as bad:
                with pytest.raises(Exception, match="(?i)timeout|timed out|no reply|no worker"):
                    bad.infer(stage, tensors, deadline_ms=400)
    finally:
        assert worker.stop() == 0


@pytest.mark.parametrize("threads", ["1", "0"], ids=["engine-thread", "inline"])
def test_sigterm_under_load_answers_everything_accepted(make_bundle, offloads, tmp_path: Path, threads: str) -> None:
    bundle = make_bundle("split")
    worker, endpoint = start_worker(str(bundle.root), bind=f"ipc://{tmp_path}/w.sock",
                                    extra=("--max-wait-ms", "5", "--max-batch", "8", "--threads", threads))
    stage, tensors, _ = _valid_request(bundle, offloads)
    with Client(endpoint, bundle.fingerprint, timeout_ms=10000) as client:
        client.wait_ready(5000)
        ids = [client.submit(stage, tensors, deadline_ms=10000) for _ in range(400)]
        worker.proc.send_signal(signal.SIGTERM)
        ids += [client.submit(stage, tensors, deadline_ms=10000) for _ in range(100)]
        replies = {}
        while len(replies) < len(ids):
            got = client.poll_replies(3000)
            if not got:
                break
            replies.update({r.id: r for r in got})
    assert worker.proc.wait(30) == 0
    statuses = [replies[i].status for i in ids if i in replies]
    assert set(statuses) <= {StatusCode.OK, StatusCode.SHUTTING_DOWN}
    # Every request got an answer: OK for those the worker had accepted,
    # "shutting down" for those that arrived after SIGTERM.
    assert len(statuses) == len(ids)
    assert worker.proc.stderr is not None
    log = worker.proc.stderr.read()
    accepted, answered = map(int, re.search(r"stopped: accepted (\d+), answered (\d+)", log).groups())
    assert accepted == answered == statuses.count(StatusCode.OK) >= 1


def _threads(pid: int) -> dict[int, tuple[str, str]]:
    """Thread id -> (name, the CPU list it may run on) of process ``pid``."""
    out: dict[int, tuple[str, str]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
        out[int(task.name)] = (fields["Name"].strip(), fields["Cpus_allowed_list"].strip())
    return out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to place engine and socket threads apart")
def test_worker_process_places_its_threads(make_bundle, offloads) -> None:
    """--engine-cpus/--io-cpus: the engine thread on one CPU, the socket thread and
    libzmq's I/O thread on the other; the worker still answers."""
    bundle = make_bundle("split")
    cpus = sorted(os.sched_getaffinity(0))
    engine, io = cpus[-1], cpus[0]
    daemon, endpoint = start_worker(str(bundle.root), bind="tcp://127.0.0.1:*",
                                    extra=("--threads", "1", "--engine-cpus", str(engine), "--io-cpus", str(io)))
    try:
        with Client(endpoint, bundle.fingerprint, timeout_ms=5000) as client:
            _, tensors, want = _valid_request(bundle, offloads)
            reply = client.infer(1, tensors, deadline_ms=5000, encodings="f16")
            assert reply.ok, reply.message
            np.testing.assert_allclose(reply.scores, want, atol=2e-2)  # the carry went as float16
        threads = _threads(daemon.proc.pid)
        pid = daemon.proc.pid
        assert threads[pid][1] == str(io), threads  # the socket (main) thread
        assert [cpus for name, cpus in threads.values() if name == "ZMQbg/IO/0"] == [str(io)], threads
        # The engine thread (and whatever ONNX Runtime started while loading the model).
        assert any(cpus == str(engine) for _, cpus in threads.values()), threads
    finally:
        daemon.stop()
