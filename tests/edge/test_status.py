"""The agent says offload trouble out loud (issue 11, item 2): no worker up, the
breaker opening and closing, and a periodic status line, with their exact words."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from jetsplit.bundle import Bundle
from jetsplit.edge.agent import AgentStats, EdgeAgent
from jetsplit.edge.breaker import BreakerConfig, CircuitBreaker
from jetsplit.edge.config import EdgeConfig, load_edge_config
from jetsplit.edge.sinks import FrameResult, QueueSink
from jetsplit.edge.status import Status, status_line
from jetsplit.errors import ConfigError
from jetsplit.protocol import Client
from tests.support.frames import digits_folder


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _result(where: str, reason: str | None = None) -> FrameResult:
    return FrameResult(0, 3, "3", 0.9, "head", where, 5.0, reason=reason)  # type: ignore[arg-type]


def _records(caplog: Any) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "jetsplit.edge.status"]


def test_status_line_words() -> None:
    assert status_line(10.0, 299, 898, 36, 32, {"deadline": 3, "circuit open": 1}, (2, 2), "closed") == (
        "status: 29.9 fps, 898 frames, offloaded 12.0%, cloud 32, fallback 4 (deadline 3, circuit open 1), "
        "workers up 2/2, breaker closed")
    assert status_line(5.0, 0, 0, 0, 0, {}, None, "closed") == (
        "status: 0.0 fps, 0 frames, offloaded 0.0%, cloud 0, fallback 0, breaker closed")


def test_status_line_covers_the_last_interval(caplog) -> None:
    caplog.set_level(logging.INFO, "jetsplit.edge.status")
    clock = Clock()
    stats = AgentStats()
    status = Status(stats, CircuitBreaker(clock=clock), None, interval_s=10.0, clock=clock)
    for _ in range(20):
        stats.add(_result("edge"))
    stats.offloaded += 2
    stats.add(_result("cloud"))
    stats.add(_result("fallback", "deadline"))
    clock.t += 9.9
    status.tick()
    assert _records(caplog) == []
    clock.t += 0.1
    status.tick()
    for _ in range(5):
        stats.add(_result("fallback", "circuit open"))
    clock.t += 10.0
    status.tick()
    assert _records(caplog) == [
        ("INFO", "status: 2.2 fps, 22 frames, offloaded 9.1%, cloud 1, fallback 1 (deadline 1), breaker closed"),
        ("INFO", "status: 0.5 fps, 27 frames, offloaded 0.0%, cloud 0, fallback 5 (circuit open 5), breaker closed"),
    ]


def test_status_line_off_with_interval_zero(caplog) -> None:
    caplog.set_level(logging.INFO, "jetsplit.edge.status")
    clock = Clock()
    status = Status(AgentStats(), CircuitBreaker(clock=clock), None, interval_s=0.0, clock=clock)
    clock.t += 3600.0
    status.tick()
    assert _records(caplog) == []


def test_breaker_opening_and_closing_are_warned_once_each(caplog) -> None:
    caplog.set_level(logging.INFO, "jetsplit.edge.status")
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=2, backoff_s=0.5, max_backoff_s=1.0), clock=clock)
    status = Status(AgentStats(), breaker, None, interval_s=0.0, clock=clock)
    breaker.record_failure("unavailable")
    breaker.record_failure("unavailable")
    status.tick()
    for _ in range(5):  # probes that fail: counted, not logged
        clock.t += 1.0
        assert breaker.allow()
        breaker.record_failure("timeout")
        status.tick()
        assert not breaker.allow()
    clock.t += 1.0
    assert breaker.allow()
    breaker.record_success()
    status.tick()
    assert _records(caplog) == [
        ("WARNING", "circuit breaker open: 2 consecutive failures (last: unavailable); unsure frames get the "
                    "edge's answer, next probe in 0.5 s"),
        ("WARNING", "circuit breaker closed: the cloud answers again (5 request(s) refused while open)"),
    ]


def test_no_worker_up_is_warned_then_its_return(tmp_path: Path, make_bundle: Any, worker_thread: Any,
                                                caplog) -> None:
    caplog.set_level(logging.INFO, "jetsplit.edge.status")
    bundle = make_bundle("split")
    endpoint = f"ipc://{tmp_path}/w"
    clock = Clock()
    with Client([endpoint], bundle.fingerprint) as client:
        status = Status(AgentStats(), CircuitBreaker(clock=clock), client, interval_s=0.0, clock=clock)
        status.started()
        clock.t += 1.0
        status.tick()  # still none: said once
        worker_thread(bundle, endpoint=endpoint)
        assert client.wait_ready(5000)
        clock.t += 1.0
        status.tick()
    assert _records(caplog) == [
        ("WARNING", f"no worker is up among {endpoint}: unsure frames get the edge's answer until one answers "
                    "(is the worker running, reachable, and does it allow our CURVE key?)"),
        ("WARNING", "worker(s) up again: 1 of 1; offloading resumes"),
    ]


@pytest.fixture
def bundle(make_bundle: Any) -> Bundle:
    return make_bundle("split")


def test_agent_with_its_worker_down_says_so_while_it_runs(bundle: Bundle, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, "jetsplit.edge.status")
    src = digits_folder(tmp_path / "digits", 80)
    endpoints = (f"ipc://{tmp_path}/down-a", f"ipc://{tmp_path}/down-b")
    config = EdgeConfig(bundle=str(bundle.root), source=str(src), sinks=(), cloud=endpoints, deadline_ms=50.0,
                        status_interval_s=1e-6)
    agent = EdgeAgent(config, sinks=QueueSink())
    try:
        results = list(agent.results())
    finally:
        agent.close()
    assert len(results) == 80
    messages = [m for _, m in _records(caplog)]
    assert messages[0] == (f"no worker is up among {endpoints[0]}, {endpoints[1]}: unsure frames get the edge's "
                           "answer until one answers (is the worker running, reachable, and does it allow our "
                           "CURVE key?)")
    assert any(m.startswith("circuit breaker open: 5 consecutive failures (last: unavailable); ") for m in messages)
    lines = [m for m in messages if m.startswith("status: ")]
    assert lines and all(m.endswith(", workers up 0/2, breaker open") or "breaker half-open" in m
                         or "breaker closed" in m for m in lines)
    assert sum("cloud unavailable" in m or "circuit open" in m for m in lines) >= 1


def test_status_interval_from_file_env_and_flag(bundle: Bundle, tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text(f'[edge]\nbundle = "{bundle.root}"\nsource = "{tmp_path}"\nstatus_interval_s = 30\n')
    assert load_edge_config(toml, {}, {}).status_interval_s == 30.0
    env = {"JETSPLIT_EDGE_STATUS_INTERVAL_S": "5"}
    assert load_edge_config(toml, env, {}).status_interval_s == 5.0
    assert load_edge_config(toml, env, {"status_interval_s": 0.0}).status_interval_s == 0.0
    assert load_edge_config(None, {}, {"bundle": "b", "source": "s"}).status_interval_s == 60.0
    with pytest.raises(ConfigError) as err:
        load_edge_config(toml, {}, {"status_interval_s": -1.0})
    assert str(err.value) == "status_interval_s: expected a number of seconds >= 0 (0: no status line), got -1.0"
