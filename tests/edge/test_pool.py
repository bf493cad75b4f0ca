"""WorkerPool against real workers (``cloud.worker.Worker`` in threads on ``ipc://``)
and scripted ones (a protocol ``Server`` that holds requests, stops answering
pings, answers late, says it is shutting down, or vanishes): spreading, health,
re-send once, de-duplication, DNS membership."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from jetsplit.bundle import Bundle
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.worker import Worker
from jetsplit.datasets import load_dataset
from jetsplit.edge.agent import EdgeAgent
from jetsplit.edge.config import EdgeConfig, load_edge_config
from jetsplit.edge.pool import PoolConfig, WorkerPool, is_dns_endpoint, resolve_endpoint
from jetsplit.edge.sinks import QueueSink
from jetsplit.errors import ConfigError
from jetsplit.protocol import Server, StatusCode
from jetsplit.protocol.client import Reply
from jetsplit.protocol.codec import result_for
from jetsplit.protocol.errors import Unavailable
from jetsplit.protocol.messages import InferRequest, Ping
from jetsplit.protocol.transport import Request
from tests.support.frames import digits_folder

# Fast health checks so a test sees a death within a fraction of a second.
FAST: dict[str, Any] = {"heartbeat_ms": 50, "dead_after_ms": 300}


@pytest.fixture
def bundle(make_bundle: Any) -> Bundle:
    return make_bundle("split")


@pytest.fixture
def requests(bundle: Bundle, offloads: Any) -> list[dict[str, np.ndarray]]:
    """Real hand-off tensors (the split bundle's activation) for 64 digits."""
    _, tensors, _ = offloads(bundle, 64)
    return tensors


@pytest.fixture
def worker(tmp_path: Path, bundle: Bundle, worker_thread: Any) -> Callable[[str], Worker]:
    """worker(name) -> a real Worker serving the bundle at ipc://{tmp}/{name}."""
    return lambda name: worker_thread(bundle, endpoint=f"ipc://{tmp_path}/{name}")


class Scripted(threading.Thread):
    """A worker that does what the test tells it: holds requests, answers pings or
    not, answers what it holds on ``release``, says ``shutting down``, or closes its
    socket at once on ``die`` (as a killed process's socket closes)."""

    def __init__(self, endpoint: str, fingerprint: str, *, shutting_down: bool = False) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.fingerprint, self.shutting_down = endpoint, fingerprint, shutting_down
        self.pings, self.release, self.die, self.bound = (threading.Event() for _ in range(4))
        self.pings.set()
        self.state: Literal["serving", "draining"] = "serving"  # what its pongs say
        self.held: list[Request] = []
        self.received = 0
        self.start()
        assert self.bound.wait(10)

    def run(self) -> None:
        server = Server(self.endpoint, bundles=[self.fingerprint], answer_pings=False)
        self.bound.set()
        try:
            while not self.die.is_set():
                req = server.recv(5)
                if req is not None and isinstance(req.header, Ping):
                    if self.pings.is_set():
                        server.state = self.state
                        server.send(req, server.pong_for(req.header))
                elif req is not None and isinstance(req.header, InferRequest):
                    self.received += 1
                    if self.shutting_down:
                        server.send_error(req, StatusCode.SHUTTING_DOWN, "draining")
                    else:
                        self.held.append(req)
                if self.release.is_set():
                    for r in self.held:
                        assert isinstance(r.header, InferRequest)
                        server.send(r, *result_for(r.header, np.eye(10, dtype=np.float32)[3], 1))
                    self.held.clear()
        finally:
            server.close()

    def kill(self) -> None:
        self.die.set()
        self.join(10)


def _pump(pool: WorkerPool, until: Callable[[], bool], timeout: float = 10.0) -> list[Reply]:
    """Drive the pool (as the edge loop does) until ``until()``; the replies seen."""
    got: list[Reply] = []
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, f"timed out; members {pool.members}, stats {pool.stats}"
        got += pool.poll_replies(20)
    return got


def _collect(pool: WorkerPool, ids: list[int], timeout: float = 10.0) -> tuple[dict[int, Reply], list[int]]:
    """Every reply and expiry for ``ids``, asserting none is reported twice."""
    replies: dict[int, Reply] = {}
    expired: list[int] = []
    end = time.monotonic() + timeout
    while len(replies) + len(expired) < len(ids):
        assert time.monotonic() < end, f"{len(replies)} replies, {len(expired)} expired of {len(ids)}"
        for r in pool.poll_replies(20):
            assert r.id not in replies, "duplicate reply"
            replies[r.id] = r
        expired += pool.expire()
    assert len(set(expired)) == len(expired) and not set(expired) & set(replies)
    assert set(replies) | set(expired) == set(ids)
    return replies, expired


def test_spreads_over_live_workers_one_reply_each(worker, tmp_path: Path, bundle: Bundle, requests) -> None:
    a, b = worker("a"), worker("b")
    with WorkerPool([f"ipc://{tmp_path}/a", f"ipc://{tmp_path}/b"], bundle.fingerprint, **FAST) as pool:
        assert pool.wait_ready(5000)
        _pump(pool, lambda: set(pool.members.values()) == {"up"})
        ids: list[int] = []
        replies: dict[int, Reply] = {}
        for i in range(200):  # a window of 8 in flight, as the agent keeps
            while pool.pending >= 8:
                replies.update((r.id, r) for r in pool.poll_replies(50))
            ids.append(pool.submit(1, requests[i % 64], deadline_ms=5000))
            assert pool.last_sent_bytes > 0
        got, expired = _collect(pool, [i for i in ids if i not in replies])
        replies.update(got)
    assert not expired and len(replies) == 200 and len(set(ids)) == 200
    assert all(r.ok and r.scores.shape == (10,) for r in replies.values())
    assert a.accepted > 40 and b.accepted > 40 and a.accepted + b.accepted == 200


def test_least_in_flight_avoids_a_worker_that_holds_requests(worker, tmp_path: Path, bundle: Bundle, requests) -> None:
    worker("real")
    slow = Scripted(f"ipc://{tmp_path}/slow", bundle.fingerprint)
    try:
        with WorkerPool([f"ipc://{tmp_path}/real", f"ipc://{tmp_path}/slow"], bundle.fingerprint, **FAST) as pool:
            _pump(pool, lambda: set(pool.members.values()) == {"up"})
            ids, early = [], []
            for i in range(100):
                ids.append(pool.submit(1, requests[i % 64], deadline_ms=3000))
                early += _pump(pool, lambda: pool.pending <= slow.received)  # the real worker's answer is in
            assert slow.received <= 3, slow.received
            slow.release.set()
            replies, expired = _collect(pool, [i for i in ids if i not in {r.id for r in early}])
    finally:
        slow.kill()
    assert len(replies) + len(early) == 100 and not expired


def _one_up_then_second(worker, pool: WorkerPool, tmp_path: Path, name: str) -> None:
    worker(name)
    _pump(pool, lambda: pool.members[f"ipc://{tmp_path}/{name}"] == "up")


def test_killed_member_requests_resent_once(worker, tmp_path: Path, bundle: Bundle, requests, caplog) -> None:
    caplog.set_level(logging.INFO, "jetsplit.edge.pool")
    doomed = Scripted(f"ipc://{tmp_path}/doomed", bundle.fingerprint)
    with WorkerPool([f"ipc://{tmp_path}/doomed", f"ipc://{tmp_path}/live"], bundle.fingerprint, **FAST) as pool:
        assert pool.wait_ready(5000)
        # Deadlines far off: what ends these requests is the death being seen.
        ids = [pool.submit(1, requests[i], deadline_ms=60_000) for i in range(10)]  # all to the one up member
        _pump(pool, lambda: doomed.received == 10)
        _one_up_then_second(worker, pool, tmp_path, "live")
        t0 = time.monotonic()
        doomed.kill()  # its socket closes: the connection drops, as with SIGKILL
        replies, expired = _collect(pool, ids, timeout=30.0)
        # Seen by the connection monitor, not a deadline (60 s); well under it
        # however loaded the machine (about 0.1 s when idle).
        assert time.monotonic() - t0 < 30.0
        assert pool.members[f"ipc://{tmp_path}/doomed"] == "down"
    assert not expired and all(r.ok for r in replies.values())
    assert pool.stats.resent == 10 and pool.stats.duplicates == 0
    assert "doomed down (connection lost)" in caplog.text and "re-sent 10 request(s)" in caplog.text


def test_late_reply_after_resend_is_dropped(worker, tmp_path: Path, bundle: Bundle, requests) -> None:
    hung = Scripted(f"ipc://{tmp_path}/hung", bundle.fingerprint)
    try:
        with WorkerPool([f"ipc://{tmp_path}/hung", f"ipc://{tmp_path}/live"], bundle.fingerprint, **FAST) as pool:
            assert pool.wait_ready(5000)
            ids = [pool.submit(1, requests[i], deadline_ms=5000) for i in range(10)]
            _pump(pool, lambda: hung.received == 10)
            _one_up_then_second(worker, pool, tmp_path, "live")
            hung.pings.clear()  # alive and connected, but silent: only heartbeats can tell
            replies, expired = _collect(pool, ids)
            assert pool.members[f"ipc://{tmp_path}/hung"] == "down" and pool.stats.resent == 10
            hung.release.set()  # now the first worker answers too, late
            late = _pump(pool, lambda: pool.stats.duplicates == 10)
    finally:
        hung.kill()
    assert not late and not expired
    # Every answer is the live worker's (the scripted one always says 3).
    truth = load_dataset("digits", "test").labels[:10]
    assert np.mean([replies[i].top1 == t for i, t in zip(ids, truth)]) > 0.7


def test_resent_at_most_once_then_reported_once(tmp_path: Path, bundle: Bundle, requests) -> None:
    a = Scripted(f"ipc://{tmp_path}/a", bundle.fingerprint)
    b = Scripted(f"ipc://{tmp_path}/b", bundle.fingerprint)
    with WorkerPool([f"ipc://{tmp_path}/a", f"ipc://{tmp_path}/b"], bundle.fingerprint, **FAST) as pool:
        _pump(pool, lambda: set(pool.members.values()) == {"up"})
        ids = [pool.submit(1, requests[i], deadline_ms=60_000) for i in range(10)]
        _pump(pool, lambda: a.received + b.received == 10)
        on_a = a.received
        a.kill()
        _pump(pool, lambda: b.received == 10)  # a's requests, re-sent to b
        t0 = time.monotonic()
        b.kill()
        replies, expired = _collect(pool, ids, timeout=30.0)
        # Reported when b is seen dead (stats.abandoned below), not at the 60 s
        # deadline: well under it however loaded the machine.
        assert time.monotonic() - t0 < 30.0, "lost requests must be reported at once, not at their deadline"
    assert not replies and sorted(expired) == sorted(ids)
    assert pool.stats.resent == on_a and pool.stats.abandoned == 10


def test_expired_on_a_silent_member_is_not_resent(worker, tmp_path: Path, bundle: Bundle, requests) -> None:
    hung = Scripted(f"ipc://{tmp_path}/hung", bundle.fingerprint)
    try:
        with WorkerPool([f"ipc://{tmp_path}/hung", f"ipc://{tmp_path}/live"], bundle.fingerprint,
                        heartbeat_ms=50, dead_after_ms=2000) as pool:
            assert pool.wait_ready(5000)
            ids = [pool.submit(1, requests[i], deadline_ms=150) for i in range(5)]
            _pump(pool, lambda: hung.received == 5)
            _one_up_then_second(worker, pool, tmp_path, "live")
            replies, expired = _collect(pool, ids)
    finally:
        hung.kill()
    assert not replies and sorted(expired) == sorted(ids) and pool.stats.resent == 0


@pytest.mark.parametrize("strikes", [1, 3])
def test_member_going_down_inside_expire_reports_each_id_once(tmp_path: Path, bundle: Bundle, requests,
                                                               strikes: int) -> None:
    """Timeouts that take a member down while expire() walks the overdue requests
    abandon that member's other overdue ones; each id is still reported exactly
    once (this raised KeyError when the walk reached an abandoned request)."""
    hung = Scripted(f"ipc://{tmp_path}/hung", bundle.fingerprint)  # answers pings, holds requests
    try:
        with WorkerPool([f"ipc://{tmp_path}/hung", f"ipc://{tmp_path}/nobody"], bundle.fingerprint,
                        heartbeat_ms=50, timeout_strikes=strikes) as pool:
            assert pool.wait_ready(5000)
            ids = [pool.submit(1, requests[i], deadline_ms=100) for i in range(4)]
            _pump(pool, lambda: hung.received == 4)
            first = pool.expire(time.monotonic() + 1.0)
            second = pool.expire(time.monotonic() + 1.0)
    finally:
        hung.kill()
    assert sorted(first) == sorted(ids) and second == []
    assert pool.stats.expired + pool.stats.abandoned == 4


def test_shutting_down_member_is_left_and_its_request_resent(worker, tmp_path: Path, bundle: Bundle, requests) -> None:
    worker("live")
    draining = Scripted(f"ipc://{tmp_path}/draining", bundle.fingerprint, shutting_down=True)
    try:
        with WorkerPool([f"ipc://{tmp_path}/draining", f"ipc://{tmp_path}/live"], bundle.fingerprint, **FAST) as pool:
            _pump(pool, lambda: set(pool.members.values()) == {"up"})
            ids = [pool.submit(1, requests[i], deadline_ms=5000) for i in range(20)]
            replies, expired = _collect(pool, ids)
            assert pool.members[f"ipc://{tmp_path}/draining"] == "down"
    finally:
        draining.kill()
    assert not expired and all(r.ok for r in replies.values())
    assert draining.received >= 1 and pool.stats.resent == draining.received


def test_draining_member_gets_no_new_requests_and_its_answers_are_taken(
        worker, tmp_path: Path, bundle: Bundle, requests) -> None:
    worker("live")
    leaving = Scripted(f"ipc://{tmp_path}/leaving", bundle.fingerprint)
    endpoint = f"ipc://{tmp_path}/leaving"
    try:
        with WorkerPool([endpoint, f"ipc://{tmp_path}/live"], bundle.fingerprint, **FAST) as pool:
            _pump(pool, lambda: set(pool.members.values()) == {"up"})
            first = [pool.submit(1, requests[i], deadline_ms=10000) for i in range(6)]
            seen = _pump(pool, lambda: leaving.received > 0)
            leaving.state = "draining"
            seen += _pump(pool, lambda: pool.draining == [endpoint])
            before = leaving.received
            later = [pool.submit(1, requests[i], deadline_ms=5000) for i in range(6, 26)]
            replies, expired = _collect(pool, later)
            assert not expired and all(r.ok for r in replies.values())
            assert leaving.received == before  # nothing new went to the draining member
            leaving.release.set()  # it still answers what it holds: taken, not re-sent
            held = [i for i in first if i not in {r.id for r in seen}]
            assert len(held) == before
            replies, expired = _collect(pool, held)
            assert not expired and all(r.ok for r in replies.values())
            assert pool.members[endpoint] == "up" and pool.stats.resent == 0
            leaving.state = "serving"  # a restarted worker at the same address
            _pump(pool, lambda: pool.draining == [])
    finally:
        leaving.kill()


def test_no_live_member(tmp_path: Path, bundle: Bundle, requests) -> None:
    with WorkerPool([f"ipc://{tmp_path}/nobody", f"ipc://{tmp_path}/none"], bundle.fingerprint, **FAST) as pool:
        assert not pool.wait_ready(200)
        with pytest.raises(Unavailable):
            pool.submit(1, requests[0], deadline_ms=100)
        assert pool.expire() == [] and pool.pending == 0


def test_dns_name_members_join_and_leave(worker, tmp_path: Path, bundle: Bundle, requests, caplog) -> None:
    caplog.set_level(logging.INFO, "jetsplit.edge.pool")
    name = "tcp://workers.jetsplit.test:5555"
    a, b = f"ipc://{tmp_path}/a", f"ipc://{tmp_path}/b"
    table: dict[str, list[str]] = {name: [a]}
    calls: list[str] = []

    def resolver(endpoint: str) -> list[str]:
        calls.append(endpoint)
        if not table[endpoint]:
            raise socket.gaierror("temporary failure in name resolution")
        return list(table[endpoint])

    wa, wb = worker("a"), worker("b")
    with WorkerPool([name], bundle.fingerprint, resolver=resolver, resolve_interval_s=0.05, **FAST) as pool:
        assert pool.members == {a: "joining"} and pool.wait_ready(5000)
        table[name] = [a, b]
        _pump(pool, lambda: pool.members == {a: "up", b: "up"})
        ids = [pool.submit(1, requests[i], deadline_ms=5000) for i in range(40)]
        _collect(pool, ids)
        assert wa.accepted > 0 and wb.accepted > 0
        table[name] = []  # a DNS failure keeps the members
        n = len(calls)
        _pump(pool, lambda: len(calls) > n + 2)
        assert set(pool.members) == {a, b}
        table[name] = [b]
        _pump(pool, lambda: set(pool.members) == {b})
        ids = [pool.submit(1, requests[i], deadline_ms=5000) for i in range(10)]
        replies, _ = _collect(pool, ids)
        assert all(r.ok for r in replies.values())
    assert f"member {b} joined (from {name})" in caplog.text
    assert f"member {a} no longer in DNS" in caplog.text and f"member {a} left" in caplog.text


def test_localhost_resolves_to_real_members(bundle: Bundle, tmp_path: Path, requests) -> None:
    w = Worker(CloudConfig(bind=("tcp://127.0.0.1:0",), bundles=(str(bundle.root),)))
    w.start()
    stop = threading.Event()
    t = threading.Thread(target=w.serve, args=(stop,), daemon=True)
    t.start()
    try:
        port = int(w.endpoints[0].rsplit(":", 1)[1])
        name = f"tcp://localhost:{port}"
        assert is_dns_endpoint(name) and not is_dns_endpoint(f"tcp://127.0.0.1:{port}")
        expected = resolve_endpoint(name)  # 127.0.0.1, and [::1] where localhost has it
        assert f"tcp://127.0.0.1:{port}" in expected
        with WorkerPool([name], bundle.fingerprint, **FAST) as pool:
            assert sorted(pool.members) == expected
            assert pool.wait_ready(5000)
            replies, _ = _collect(pool, [pool.submit(1, requests[i], deadline_ms=5000) for i in range(10)])
        assert all(r.ok for r in replies.values())
    finally:
        stop.set()
        t.join(10)


def test_slow_dns_never_stalls_the_caller(worker, tmp_path: Path, bundle: Bundle) -> None:
    worker("a")
    release, hanging = threading.Event(), threading.Event()
    first = [True]

    def resolver(endpoint: str) -> list[str]:
        if not first[0]:
            hanging.set()
            release.wait(60)  # a DNS server that takes its time
        first[0] = False
        return [f"ipc://{tmp_path}/a"]

    with WorkerPool(["tcp://slow.dns.test:5555"], bundle.fingerprint, resolver=resolver,
                    resolve_interval_s=0.01, **FAST) as pool:
        assert pool.wait_ready(5000)
        _pump(pool, hanging.is_set)  # a re-resolve is under way and hangs
        worst = 0.0
        for _ in range(30):
            t0 = time.monotonic()
            pool.poll_replies(10)
            pool.expire()
            worst = max(worst, time.monotonic() - t0)
        still_hanging = not release.is_set()
        release.set()
    # Every call returned while the lookup hung (it would have taken 60 s); a
    # 10 ms poll takes well under 10 s even on a loaded machine.
    assert still_hanging and worst < 10.0, worst


def test_agent_uses_the_pool_for_several_workers(worker, make_bundle, tmp_path: Path, bundle: Bundle) -> None:
    wa, wb = worker("a"), worker("b")
    src = digits_folder(tmp_path / "digits", 120)
    config = EdgeConfig(bundle=str(bundle.root), source=str(src), deadline_ms=2000, sinks=(),
                        cloud=(f"ipc://{tmp_path}/a", f"ipc://{tmp_path}/b"))
    agent = EdgeAgent(config, sinks=QueueSink())
    try:
        assert isinstance(agent.client, WorkerPool)
        results = list(agent.results())
    finally:
        agent.close()
    assert sorted(r.frame for r in results) == list(range(120))
    cloud = [r for r in results if r.where == "cloud"]
    assert cloud and not any(r.where == "fallback" for r in results)
    assert wa.accepted + wb.accepted == len(cloud) == agent.stats.offloaded


def _edge_toml(path: Path, bundle: Bundle, pool: str) -> Path:
    """An edge.toml with two workers (nobody listens: the pool connects lazily) and ``pool``."""
    path.write_text(f'[edge]\nbundle = "{bundle.root}"\nsource = "{path.parent}"\n'
                    f'cloud = ["ipc://{path.parent}/w0", "ipc://{path.parent}/w1"]\n{pool}')
    return path


@pytest.mark.parametrize(("table", "expected"), [
    ("", PoolConfig()),
    ("[pool]\nheartbeat_ms = 100\ndead_after_ms = 500.0\ntimeout_strikes = 2\nhold_down_s = 2.5\n"
     "resolve_interval_s = 30\n", PoolConfig(100.0, 500.0, 2, 2.5, 30.0)),
    ("[pool]\nhold_down_s = 0\n", PoolConfig(hold_down_s=0.0)),
])
def test_pool_table_reaches_the_agents_pool(bundle: Bundle, tmp_path: Path, table: str, expected: PoolConfig) -> None:
    config = load_edge_config(_edge_toml(tmp_path / "edge.toml", bundle, table), {}, {})
    assert config.pool == expected and config.describe()["pool"] == expected.__dict__
    agent = EdgeAgent(config, sinks=QueueSink())
    try:
        pool = agent.client
        assert isinstance(pool, WorkerPool) and len(pool.members) == 2
        assert pool.heartbeat_s == expected.heartbeat_ms / 1000 and pool.dead_after_s == expected.dead_after_ms / 1000
        assert pool.timeout_strikes == expected.timeout_strikes and pool.hold_down_s == expected.hold_down_s
        assert pool.resolve_interval_s == expected.resolve_interval_s
    finally:
        agent.close()


@pytest.mark.parametrize(("table", "message"), [
    ("heartbeat_ms = 0", "[pool].heartbeat_ms: expected a finite number > 0, got 0.0"),
    ("dead_after_ms = -5", "[pool].dead_after_ms: expected a finite number > 0, got -5.0"),
    ("dead_after_ms = \"1s\"", "[pool].dead_after_ms: expected a number, got '1s'"),
    ("timeout_strikes = 0", "[pool].timeout_strikes: expected an integer >= 1, got 0"),
    ("timeout_strikes = 2.5", "[pool].timeout_strikes: expected an integer, got 2.5"),
    ("hold_down_s = -1", "[pool].hold_down_s: expected a finite number >= 0, got -1.0"),
    ("resolve_interval_s = inf", "[pool].resolve_interval_s: expected a finite number > 0, got inf"),
    ("resolve_interval_s = nan", "[pool].resolve_interval_s: expected a finite number > 0, got nan"),
    ("heartbeat = 100", "[pool]: unknown key(s) heartbeat"),
])
def test_pool_table_bad_value_is_one_line_naming_the_key(bundle: Bundle, tmp_path: Path, table: str,
                                                         message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_edge_config(_edge_toml(tmp_path / "edge.toml", bundle, f"[pool]\n{table}\n"), {}, {})
    assert message in str(err.value) and "\n" not in str(err.value)
