"""Bringing the worker pool up, many times over (issue 11, item 1).

An edge given two healthy workers sometimes never marked either up: the first ping
went out before the connection's handshake ended and was refused (ZMQ_IMMEDIATE),
the next was due only a heartbeat later, after the agent had stopped waiting; and
a pool moved only while polled, which the agent did only with requests in flight,
so no member ever came up for the whole run. These tests bring pools up against
real workers on loopback TCP (two endpoints, a name that resolves to two, and after
a worker restarts), as the pool's direct callers and as the agent."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.bundle import Bundle
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.worker import Worker
from jetsplit.edge.agent import EdgeAgent
from jetsplit.edge.config import EdgeConfig
from jetsplit.edge.pool import PoolConfig, WorkerPool
from jetsplit.edge.sinks import QueueSink
from jetsplit.protocol.errors import Unavailable
from tests.support.frames import digits_folder

RUNS = 10


@pytest.fixture
def bundle(make_bundle: Any) -> Bundle:
    return make_bundle("split")


@pytest.fixture
def request_tensors(bundle: Bundle, offloads: Any) -> dict[str, np.ndarray]:
    _, tensors, _ = offloads(bundle, 1)
    return tensors[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(bundle: Bundle, endpoint: str) -> Iterator[Worker]:
    """A real worker on ``endpoint`` in a thread, stopped (sockets closed) on exit."""
    w = Worker(CloudConfig(bind=(endpoint,), bundles=(str(bundle.root),), drain_timeout_s=0.5))
    w.start()
    stop = threading.Event()
    t = threading.Thread(target=w.serve, args=(stop,), daemon=True)
    t.start()
    try:
        yield w
    finally:
        stop.set()
        t.join(10)


def _bring_up(endpoints: list[str], bundle: Bundle, tensors: dict[str, np.ndarray], live: int = 2,
              **kw: Any) -> list[str]:
    """One bring-up as the pool's callers do it: ready within a second, the ``live``
    members up within that second, and a request answered. The states at the end."""
    with WorkerPool(endpoints, bundle.fingerprint, **kw) as pool:
        assert pool.wait_ready(1000), f"no member up within 1 s: {pool.members}"
        left = 100
        while list(pool.members.values()).count("up") < live and left:
            pool.poll_replies(10)
            left -= 1
        rid = pool.submit(1, tensors, deadline_ms=5000)
        replies = []
        while not replies:
            replies = pool.poll_replies(1000)
            assert replies or not pool.expire(), "request lost"
        assert [r.id for r in replies] == [rid] and replies[0].ok
        return sorted(pool.members.values())


def test_two_workers_come_up_every_time_and_after_a_restart(bundle: Bundle, request_tensors) -> None:
    p1, p2 = _free_port(), _free_port()
    eps = [f"tcp://127.0.0.1:{p1}", f"tcp://127.0.0.1:{p2}"]
    with _serving(bundle, eps[1]):
        with _serving(bundle, eps[0]):
            states = [_bring_up(eps, bundle, request_tensors) for _ in range(RUNS)]
        # The first worker is gone (its socket closed): the pool still comes up on the other.
        assert _bring_up(eps, bundle, request_tensors, live=1).count("up") == 1
        with _serving(bundle, eps[0]):  # restarted on its port
            states += [_bring_up(eps, bundle, request_tensors) for _ in range(RUNS)]
    assert states == [["up", "up"]] * (2 * RUNS)


def test_a_name_resolving_to_two_comes_up_every_time(bundle: Bundle, request_tensors) -> None:
    port = _free_port()
    # Two workers on one port, one per loopback address, behind one name (a
    # Kubernetes headless Service's shape); the resolver stands in for DNS only.
    addrs = [f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.2:{port}"]
    name = f"tcp://workers.jetsplit.test:{port}"
    with _serving(bundle, addrs[0]), _serving(bundle, addrs[1]):
        for _ in range(RUNS):
            states = _bring_up([name], bundle, request_tensors, resolver=lambda ep: addrs)
            assert states == ["up", "up"]


def test_bring_up_does_not_wait_for_a_heartbeat(bundle: Bundle, request_tensors) -> None:
    # The first ping cannot go before the handshake ends; it must go the moment it
    # can, not a heartbeat later (with a heartbeat of a minute this was never).
    port = _free_port()
    with _serving(bundle, f"tcp://127.0.0.1:{port}"):
        for _ in range(RUNS):
            assert _bring_up([f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{_free_port()}"], bundle,
                             request_tensors, live=1, heartbeat_ms=60_000).count("up") == 1


def test_a_caller_that_only_submits_brings_members_up(bundle: Bundle, request_tensors) -> None:
    # The agent submits until a member is up and polls only once something is in
    # flight: submitting alone must move the pool.
    port = _free_port()
    with _serving(bundle, f"tcp://127.0.0.1:{port}"):
        with WorkerPool([f"tcp://127.0.0.1:{port}", f"ipc:///nonexistent/{port}"], bundle.fingerprint) as pool:
            for _ in range(10_000):
                try:
                    rid = pool.submit(1, request_tensors, deadline_ms=5000)
                    break
                except Unavailable:  # until a pong is taken
                    time.sleep(0.001)  # the next frame of a fast camera
            else:
                pytest.fail(f"never up: {pool.members}")
            assert pool.pending == 1 and rid > 0


def test_agent_offloads_from_the_first_unsure_frame_every_run(bundle: Bundle, tmp_path: Path) -> None:
    """The issue's command, in-process: a realtime folder at 100 fps, two workers,
    the default deadline (the agent waits at most that long for the pool)."""
    p1, p2 = _free_port(), _free_port()
    eps = (f"tcp://127.0.0.1:{p1}", f"tcp://127.0.0.1:{p2}")
    src = digits_folder(tmp_path / "digits", 60)
    cloud = 0
    with _serving(bundle, eps[0]), _serving(bundle, eps[1]):
        for _ in range(RUNS):
            # A heartbeat of a minute: bring-up may not depend on a second ping.
            config = EdgeConfig(bundle=str(bundle.root), source=str(src), sinks=(), cloud=eps, realtime=True,
                                fps=100.0, deadline_ms=2000.0, pool=PoolConfig(heartbeat_ms=60_000))
            agent = EdgeAgent(config, sinks=QueueSink())
            try:
                results = list(agent.results())
            finally:
                agent.close()
            # Paced like a camera: frames that come while the loop is busy (on a
            # loaded machine) are dropped, never answered late.
            assert len(results) + agent.stats.dropped == 60
            assert agent.stats.fallback_reasons == {} and agent.stats.cloud == agent.stats.offloaded
            cloud += agent.stats.cloud
    assert cloud > 0

def test_healthy_members_are_not_called_down_after_a_busy_spell(bundle: Bundle, request_tensors, caplog) -> None:
    # The caller is busy (no polling) for longer than dead_after_ms while the pong
    # to its last ping waits in the socket: that pong counts, nothing goes down.
    port = _free_port()
    caplog.set_level(logging.INFO, "jetsplit.edge.pool")
    with _serving(bundle, f"tcp://127.0.0.1:{port}"):
        with WorkerPool([f"tcp://127.0.0.1:{port}"], bundle.fingerprint, heartbeat_ms=20, dead_after_ms=400) as pool:
            assert pool.wait_ready(1000)
            member = pool._membership.members[f"tcp://127.0.0.1:{port}"]
            for _ in range(3):
                while not member.pings:  # a ping goes out
                    pool.poll_replies(5)
                assert member.client.socket.poll(1000)  # its pong is queued
                time.sleep(0.8)  # the caller is busy (an edge stage): 2x dead_after_ms pass
                pool.poll_replies(0)
                assert pool.members == {f"tcp://127.0.0.1:{port}": "up"}
    assert "down" not in caplog.text and pool.stats.member_downs == 0


def test_agent_finds_workers_that_start_after_it(bundle: Bundle, tmp_path: Path) -> None:
    # The board boots before the cloud: nobody answers while the agent waits, and it
    # goes on with nothing in flight. Its pool must still find the workers.
    p1, p2 = _free_port(), _free_port()
    eps = (f"tcp://127.0.0.1:{p1}", f"tcp://127.0.0.1:{p2}")
    config = EdgeConfig(bundle=str(bundle.root), source=str(digits_folder(tmp_path / "digits", 300)), sinks=(),
                        cloud=eps, realtime=True, fps=100.0, deadline_ms=2000.0)
    agent = EdgeAgent(config, sinks=QueueSink())
    try:
        results = agent.results()
        early = [next(results)]  # the agent waited for the pool in vain, then took a frame
        assert agent.client is not None and not agent.client.wait_ready(0)
        with _serving(bundle, eps[0]), _serving(bundle, eps[1]):
            late = list(results)
    finally:
        agent.close()
    assert len(early) + len(late) + agent.stats.dropped == 300
    # Once the cloud answered (the breaker's probe), no frame is refused the cloud again.
    wheres = [(r.where, r.reason) for r in late]
    first = wheres.index(("cloud", None))
    assert not [w for w in wheres[first:] if w[1] in ("cloud unavailable", "circuit open")], wheres[first:]
