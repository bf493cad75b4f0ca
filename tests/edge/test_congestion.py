"""Congestion as feedback: the controller offloads less while the cloud refuses
OVERLOADED, and as before once it stops; the pool prefers a worker that does not refuse."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.edge.controller import BudgetController, Budgets, ControllerConfig, ThresholdCurve
from jetsplit.edge.pool import WorkerPool
from jetsplit.protocol import Server, StatusCode
from jetsplit.protocol.errors import DecodeError
from jetsplit.protocol.messages import InferRequest

FPS = 30.0


@pytest.fixture
def bundle(make_bundle: Any) -> Any:
    return make_bundle("split")


@pytest.fixture
def requests(bundle: Any, offloads: Any) -> list[dict[str, np.ndarray]]:
    _, tensors, _ = offloads(bundle, 8)
    return tensors


def test_refusals_cut_the_offload_rate_and_it_recovers(gate_trace: Any, sim_clock: Any) -> None:
    gate = gate_trace.bundle.stages[0].gate
    ctl = BudgetController(ThresholdCurve.from_scores(gate_trace.calib), gate.threshold, Budgets(),
                           ControllerConfig(), sim_clock, gate_stage=0)
    base = float(np.mean(gate_trace.stream < gate.threshold))
    capacity = base / 3  # while congested, the worker serves a third of what the gate sends
    rng = np.random.default_rng(0)
    stream = np.resize(gate_trace.stream, 6000)
    sent_recent = base
    sent: list[bool] = []
    bindings: list[str] = []
    for i, score in enumerate(stream):
        sim_clock.now = i / FPS
        congested = 1500 <= i < 3500
        offloaded = bool(score < ctl.threshold)
        sent_recent += 0.02 * (float(offloaded) - sent_recent)
        if offloaded:
            # A worker past its capacity refuses what it cannot serve in time.
            refused = congested and rng.random() > min(1.0, capacity / max(sent_recent, 1e-6))
            ctl.observe_congestion(refused)
        ctl.observe_frame(float(score), offloaded, 20.0)
        sent.append(offloaded)
        bindings.append(ctl.snapshot().binding)
    rate = np.asarray(sent, float)
    before, during, after = rate[500:1500].mean(), rate[2500:3500].mean(), rate[5000:].mean()
    assert during < 0.6 * before, (before, during)  # offloads cut towards what the worker takes
    assert during > 0.3 * capacity  # cut, not stopped
    assert "congestion" in bindings[2500:3500]
    assert after > 0.9 * before, (before, after)  # and back once the refusals stop
    assert "congestion" not in bindings[5000:] and ctl.snapshot().limits.get("congestion") is None


class _Refusing:
    """A real protocol server whose admission screen refuses every request."""

    def __init__(self, endpoint: str, fingerprint: str) -> None:
        def refuse(header: Any, payload_bytes: int) -> None:
            if isinstance(header, InferRequest):  # pings are answered
                raise DecodeError("queue full", StatusCode.OVERLOADED, header.id)

        self.server = Server(endpoint, bundles=[fingerprint], screen=refuse)

    def pump(self) -> None:
        self.server.recv(5)


def test_pool_prefers_a_worker_that_does_not_refuse(worker_thread: Any, tmp_path: Path, bundle: Any,
                                                     requests: Any) -> None:
    good = worker_thread(bundle, endpoint=f"ipc://{tmp_path}/good.sock").endpoints[0]
    busy = _Refusing(f"ipc://{tmp_path}/busy.sock", bundle.fingerprint)
    statuses = []
    try:
        with WorkerPool([good, f"ipc://{tmp_path}/busy.sock"], bundle.fingerprint, timeout_ms=2000,
                        heartbeat_ms=50, overload_hold_ms=5000) as pool:
            end = time.monotonic() + 10.0
            while len(pool._membership.candidates(None)) < 2:  # both up (pongs)
                assert time.monotonic() < end, pool.members
                busy.pump()
                pool.poll_replies(5)
            for i in range(20):
                pool.submit(1, requests[i % len(requests)], deadline_ms=2000)
                got: list[Any] = []
                while not got:
                    assert time.monotonic() < end + 20.0
                    busy.pump()
                    got = pool.poll_replies(5)
                statuses.append(got[0].status)
    finally:
        busy.server.close()
    # At most the first request met the busy worker, was refused at once and not
    # re-sent (the frame is answered on the edge); the rest went to the other.
    assert statuses.count(StatusCode.OVERLOADED) <= 1
    assert statuses.count(StatusCode.OK) >= 19
