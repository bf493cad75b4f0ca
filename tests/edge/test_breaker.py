"""The circuit breaker's state machine on an injected clock."""

from __future__ import annotations

import pytest

from jetsplit.edge.breaker import BreakerConfig, CircuitBreaker
from jetsplit.errors import ConfigError


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_closed_open_half_open_closed() -> None:
    clock = _Clock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=3, backoff_s=1.0, max_backoff_s=4.0), clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure("timeout")
    b.record_success()  # consecutive failures only
    for _ in range(3):
        b.record_failure("timeout")
    assert b.state == "open" and not b.allow() and b.rejected == 1
    assert "3 consecutive failures" in b.reason
    clock.now += 0.99
    assert not b.allow()
    clock.now += 0.02
    assert b.state == "half-open"
    assert b.allow() and not b.allow()  # one probe at a time
    b.record_failure("timeout")  # the probe failed: open, back-off doubled
    assert b.state == "open" and b.retry_in_s == pytest.approx(2.0)
    clock.now += 2.0
    assert b.allow()
    b.record_failure()
    assert b.retry_in_s == pytest.approx(4.0)
    clock.now += 4.0
    assert b.allow()
    b.record_failure()
    assert b.retry_in_s == pytest.approx(4.0)  # capped
    clock.now += 4.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow() and b.reason == ""
    # Back-off starts over after a close.
    for _ in range(3):
        b.record_failure()
    assert b.retry_in_s == pytest.approx(1.0)
    assert b.opened == 5


def test_late_replies_while_open_do_not_close_it() -> None:
    clock = _Clock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=1, backoff_s=1.0), clock)
    b.record_failure()
    b.record_success()  # a reply to a request sent before it opened
    assert b.state == "open"


def test_trip_with_its_own_backoff() -> None:
    clock = _Clock()
    b = CircuitBreaker(clock=clock)
    b.trip("worker holds another bundle", backoff_s=30.0)
    assert b.snapshot()["state"] == "open" and b.snapshot()["reason"] == "worker holds another bundle"
    clock.now += 29.0
    assert not b.allow()
    clock.now += 1.0
    assert b.allow()


@pytest.mark.parametrize(
    ("table", "message"),
    [({"failure_threshold": 0}, "failure_threshold"), ({"backoff_s": 5.0, "max_backoff_s": 1.0}, "backoff_s"),
     ({"retries": 3}, "unknown key")],
)
def test_config_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BreakerConfig.from_table(table)
