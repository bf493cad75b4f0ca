"""Edge fixtures: real gate scores from a bundle, and a frame-stream simulator
that drives the budget controller and the circuit breaker on a simulated clock."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.bundle import Bundle, load_bundle
from jetsplit.chain import Chain
from jetsplit.datasets import load_dataset
from jetsplit.edge.breaker import CircuitBreaker
from jetsplit.edge.controller import BudgetController

_DEMO = Path(__file__).resolve().parents[2] / "jetsplit" / "demo" / "bundles" / "little-big" / "bundle.toml"


@dataclass(frozen=True)
class GateTrace:
    """Scores of the first (edge) gate: ``calib`` to build the curve from,
    ``stream`` to play; and the bundle they came from."""

    bundle: Bundle
    calib: np.ndarray
    stream: np.ndarray


def _scores(chain: Chain, data: str, split: str) -> np.ndarray:
    ds = load_dataset(data, split)
    return chain.run_all(chain.preprocess(ds.images))[0].score.astype(np.float64)


@pytest.fixture
def gate_trace(make_bundle: Any) -> GateTrace:
    """The demo little-big bundle on MNIST where it has been built, else the
    tiny little-big bundle on scikit-learn digits: real scores either way."""
    if _DEMO.is_file():
        bundle, data = load_bundle("demo:little-big"), "mnist"
    else:
        bundle, data = make_bundle("little-big"), "digits"
    with Chain.open(bundle) as chain:
        return GateTrace(bundle, _scores(chain, data, "calib"), _scores(chain, data, "test"))


@dataclass
class SimLog:
    """Per frame, in frame order."""

    t: list[float] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    wanted: list[bool] = field(default_factory=list)
    sent: list[bool] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    energy_mj: list[float] = field(default_factory=list)
    bytes_up: list[int] = field(default_factory=list)
    breaker: list[str] = field(default_factory=list)

    def arr(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    controller: BudgetController,
    clock: Clock,
    scores: np.ndarray,
    n_frames: int,
    rtt_ms: Callable[[float, np.random.Generator], float | None],
    *,
    fps: float = 30.0,
    edge_ms: float = 4.0,
    deadline_ms: float = 200.0,
    bytes_per_offload: int = 1000,
    local_mj: float = 30.0,
    offload_mj: float = 80.0,
    breaker: CircuitBreaker | None = None,
    seed: int = 0,
) -> SimLog:
    """Play ``n_frames`` frames at ``fps`` with gate scores drawn from ``scores``
    (shuffled, cycled). A frame whose score is under the controller's threshold
    is offloaded (if the breaker allows); ``rtt_ms(t, rng)`` is the cloud's round
    trip at time t, None when the cloud is dead (the request times out at the
    deadline and the frame falls back). Outcomes reach the controller and the
    breaker when they happen on the simulated clock, as in the agent."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(scores)) for _ in range(n_frames // len(scores) + 1)])[:n_frames]
    log = SimLog()
    events: list[tuple[float, int, str, dict[str, Any]]] = []
    seq = 0

    def deliver_until(t: float) -> None:
        while events and events[0][0] <= t:
            t_done, _, kind, kw = heapq.heappop(events)
            clock.now = t_done
            if kind == "reply" and breaker is not None:
                breaker.record_success() if kw["ok"] else breaker.record_failure("timeout")
            if kind == "reply":
                controller.observe_round_trip(kw["rtt"])
            else:
                controller.observe_frame(**kw, now=t_done)

    for i in range(n_frames):
        t = i / fps
        deliver_until(t)
        clock.now = t
        thr = controller.threshold
        score = float(scores[order[i]])
        wanted = score < thr
        sent = wanted and (breaker is None or breaker.allow())
        if sent:
            rtt = rtt_ms(t, rng)
            ok = rtt is not None and edge_ms + rtt <= deadline_ms
            wait = (edge_ms + rtt) if ok and rtt is not None else deadline_ms
            where = "cloud" if ok else "fallback"
            energy = offload_mj
            heapq.heappush(events, (t + wait / 1000.0, seq, "reply", {"rtt": wait - edge_ms, "ok": ok}))
            seq += 1
        else:
            wait, where, energy = edge_ms, ("fallback" if wanted else "edge"), local_mj
        nbytes = bytes_per_offload if sent else 0
        frame = {"score": score, "threshold": thr, "offloaded": sent, "latency_ms": wait, "bytes_up": nbytes, "energy_mj": energy}
        heapq.heappush(events, (t + wait / 1000.0, seq, "frame", frame))
        seq += 1
        log.t.append(t)
        log.threshold.append(thr)
        log.wanted.append(wanted)
        log.sent.append(sent)
        log.where.append(where)
        log.latency_ms.append(wait)
        log.energy_mj.append(energy)
        log.bytes_up.append(nbytes)
        log.breaker.append(breaker.state if breaker is not None else "closed")
    deliver_until(float("inf"))
    return log


@pytest.fixture
def sim_clock() -> Clock:
    return Clock()


@pytest.fixture
def sim() -> Callable[..., SimLog]:
    return simulate
