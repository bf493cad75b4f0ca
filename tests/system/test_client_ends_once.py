"""Every request a ``Client`` takes ends exactly once, over both of ``infer``'s paths.

A request ends as a reply (``poll_replies`` or ``infer``'s return), as an id from
``expire()``, or, for ``infer``'s own request, as the ``RequestTimeout`` it raises.
The worker is a real ``jetsplit cloud serve`` process; "never answers" is that
process stopped with SIGSTOP after the client connected (alive and connected, as a
hung worker is), and "gone" is the process killed.

``infer`` has two paths: the short one when nothing else is in flight, the general
one when ``submit`` has requests out. The general path once dropped what ``expire()``
returned after its timeout reconnect, so the submitted requests never ended.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.protocol import Client, RequestTimeout
from tests.support.daemons import Daemon, start_worker

WAIT_MS = 300
# Deadlines far beyond the test: a request that ends does so because the client
# reported it, not because its deadline passed.
LONG_MS = 60_000


class Ledger:
    """How each request ended; asserts no id ends twice and no unknown id ends."""

    def __init__(self) -> None:
        self.sent: set[int] = set()
        self.ends: collections.Counter[int] = collections.Counter()
        self.how: dict[int, str] = {}

    def submit(self, client: Client, stage: int, tensors: dict[str, np.ndarray]) -> int:
        rid = client.submit(stage, tensors, deadline_ms=LONG_MS)
        self.sent.add(rid)
        return rid

    def end(self, rid: int, how: str) -> None:
        assert rid in self.sent, f"id {rid} ended ({how}) but was never submitted"
        self.ends[rid] += 1
        assert self.ends[rid] == 1, f"id {rid} ended twice ({self.how[rid]}, then {how})"
        self.how[rid] = how

    def drain(self, client: Client, timeout_s: float = 10.0) -> None:
        """Poll and expire as the edge loop does until every sent id has ended."""
        end = time.monotonic() + timeout_s
        while set(self.ends) != self.sent and time.monotonic() < end:
            for reply in client.poll_replies(20):
                self.end(reply.id, "reply")
            for rid in client.expire():
                self.end(rid, "expired")
        missing = self.sent - set(self.ends)
        assert not missing, f"{len(missing)} of {len(self.sent)} requests never ended"

    def quiet(self, client: Client, seconds: float = 0.3) -> None:
        """Nothing more ends: no reply or expiry for any id, known or not."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for reply in client.poll_replies(20):
                self.end(reply.id, "reply")  # fails: every id has ended already
            for rid in client.expire(now=time.monotonic() + LONG_MS / 1000.0):
                self.end(rid, "expired")


@pytest.fixture
def served(make_bundle: Any, offloads: Any, tmp_path: Path) -> Iterator[tuple[Daemon, str, int, list[dict[str, np.ndarray]], str]]:
    """A real worker process serving the split bundle: (daemon, endpoint, stage,
    hand-off tensors for 8 digits, fingerprint)."""
    bundle = make_bundle("split")
    stage, tensors, _ = offloads(bundle, 8)
    worker, endpoint = start_worker(str(bundle.root), bind=f"ipc://{tmp_path}/w.sock")
    try:
        yield worker, endpoint, stage, tensors, bundle.fingerprint
    finally:
        if worker.proc.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
        worker.stop()


def _connected(endpoint: str, fingerprint: str) -> Client:
    client = Client(endpoint, fingerprint, timeout_ms=5000)
    client.ping()  # the connection is up before the worker is stopped
    return client


def test_general_path_timeout_keeps_the_submitted_requests(served: Any) -> None:
    worker, endpoint, stage, tensors, fingerprint = served
    ledger = Ledger()
    with _connected(endpoint, fingerprint) as client:
        os.kill(worker.pid, signal.SIGSTOP)
        for i in range(3):
            ledger.submit(client, stage, tensors[i])
        with pytest.raises(RequestTimeout):
            client.infer(stage, tensors[3], timeout_ms=WAIT_MS)  # the general path: 3 in flight
        assert client.reconnects == 1
        # Reported by the very next expire(), long before their deadlines.
        assert sorted(client.expire()) == sorted(ledger.sent)
        for rid in ledger.sent:
            ledger.end(rid, "expired")
        os.kill(worker.pid, signal.SIGCONT)  # its late replies go to a closed socket
        ledger.quiet(client)


def test_short_path_timeout_ends_its_request_once(served: Any) -> None:
    worker, endpoint, stage, tensors, fingerprint = served
    ledger = Ledger()
    with _connected(endpoint, fingerprint) as client:
        os.kill(worker.pid, signal.SIGSTOP)
        with pytest.raises(RequestTimeout):
            client.infer(stage, tensors[0], timeout_ms=WAIT_MS)  # the short path: nothing else in flight
        assert client.reconnects == 1 and client.pending == 0
        os.kill(worker.pid, signal.SIGCONT)
        ledger.quiet(client)  # its reply, if the worker sends one now, is never reported
        # The client still works and its next requests end once each.
        assert client.infer(stage, tensors[1]).ok
        ledger.submit(client, stage, tensors[2])
        ledger.drain(client)
        assert ledger.how == dict.fromkeys(ledger.sent, "reply")


def test_general_path_with_an_answering_worker(served: Any) -> None:
    _, endpoint, stage, tensors, fingerprint = served
    ledger = Ledger()
    with _connected(endpoint, fingerprint) as client:
        for i in range(3):
            ledger.submit(client, stage, tensors[i])
        own = client.infer(stage, tensors[3])  # the general path
        assert own.ok and own.id not in ledger.sent
        ledger.drain(client)
        assert ledger.how == dict.fromkeys(ledger.sent, "reply")
        alone = client.infer(stage, tensors[4])  # the short path
        assert alone.ok and alone.id != own.id
        ledger.quiet(client)


def test_general_path_when_the_worker_dies(served: Any) -> None:
    worker, endpoint, stage, tensors, fingerprint = served
    ledger = Ledger()
    with _connected(endpoint, fingerprint) as client:
        os.kill(worker.pid, signal.SIGSTOP)  # hold the submitted requests unanswered
        for i in range(3):
            ledger.submit(client, stage, tensors[i])
        worker.proc.kill()
        worker.proc.wait(10)
        # Whether the send is refused (no connection) or times out, the three end.
        with pytest.raises(RequestTimeout):
            client.infer(stage, tensors[3], timeout_ms=WAIT_MS)
        ledger.drain(client, timeout_s=2.0)
        assert ledger.how == dict.fromkeys(ledger.sent, "expired")
        ledger.quiet(client)
