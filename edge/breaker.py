"""A circuit breaker for the offload path.

A cloud that is down must cost accuracy, not frame rate: sending to it anyway
spends a deadline on every unsure frame. The breaker stops offloading after
``failure_threshold`` consecutive failures (errors or timeouts), waits a back-off,
then lets ``half_open_probes`` requests through as probes; a probe that succeeds
closes it, one that fails opens it again with the back-off doubled (up to
``max_backoff_s``)::

    closed --N failures--> open --backoff elapsed--> half-open --success--> closed
                             ^                           |
                             +---------failure-----------+

Pure logic with an injectable clock; the edge agent calls it::

    if breaker.allow():            # may this frame go to the cloud?
        send(...)                  # then, when the reply or the deadline comes:
        breaker.record_success() or breaker.record_failure()

``trip(reason, backoff_s)`` opens it by decision (e.g. the worker holds another
bundle) with its own back-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader

__all__ = ["BreakerConfig", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half-open"]


@dataclass(frozen=True)
class BreakerConfig:
    """``[breaker]`` in edge.toml."""

    failure_threshold: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    backoff_factor: float = 2.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1:
            raise ConfigError("[breaker]: failure_threshold and half_open_probes must be >= 1")
        if not 0 < self.backoff_s <= self.max_backoff_s or self.backoff_factor < 1:
            raise ConfigError(
                f"[breaker]: expected 0 < backoff_s <= max_backoff_s and backoff_factor >= 1, got "
                f"{self.backoff_s}, {self.max_backoff_s}, {self.backoff_factor}"
            )

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[breaker]") -> BreakerConfig:
        r = TableReader(table, where, ConfigError)
        cfg = cls(
            failure_threshold=r.integer("failure_threshold", 5, minimum=1),
            backoff_s=r.number("backoff_s", 0.5),
            max_backoff_s=r.number("max_backoff_s", 10.0),
            backoff_factor=r.number("backoff_factor", 2.0),
            half_open_probes=r.integer("half_open_probes", 1, minimum=1),
        )
        r.done()
        return cfg


class CircuitBreaker:
    """closed -> open -> half-open -> closed; see the module docstring.

    Counters for reports: ``opened`` (times it opened), ``rejected`` (requests
    it refused). ``reason`` says why it last opened.
    """

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._backoff = self.config.backoff_s
        self._open_until = 0.0
        self._probes = 0
        self.opened = 0
        self.rejected = 0
        self.reason = ""

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose back-off elapsed reads half-open)."""
        if self._state == "open" and self._clock() >= self._open_until:
            self._state, self._probes = "half-open", 0
        return self._state

    @property
    def retry_in_s(self) -> float:
        """Seconds until the next probe may go (0 unless open)."""
        return max(0.0, self._open_until - self._clock()) if self.state == "open" else 0.0

    def allow(self) -> bool:
        """Whether a request may go to the cloud now. In half-open, the first
        ``half_open_probes`` callers get True (they are the probes)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and self._probes < self.config.half_open_probes:
            self._probes += 1
            return True
        self.rejected += 1
        return False

    def record_success(self) -> None:
        # A late reply to a request sent before the breaker opened says little
        # about the cloud now: only closed and half-open states learn from it.
        state = self.state
        if state == "open":
            return
        self._failures = 0
        if state == "half-open":
            self._state = "closed"
            self._backoff = self.config.backoff_s
            self.reason = ""

    def record_failure(self, reason: str = "failure") -> None:
        state = self.state
        if state == "open":
            return
        if state == "half-open":
            # The probe failed: wait longer before the next.
            self._backoff = min(self._backoff * self.config.backoff_factor, self.config.max_backoff_s)
            self._open(reason, self._backoff)
            return
        self._failures += 1
        if self._failures >= self.config.failure_threshold:
            self._open(f"{self._failures} consecutive failures (last: {reason})", self._backoff)

    def trip(self, reason: str, backoff_s: float | None = None) -> None:
        """Open now, by decision, for ``backoff_s`` (default: the current back-off)."""
        self._open(reason, self._backoff if backoff_s is None else backoff_s)

    def _open(self, reason: str, backoff_s: float) -> None:
        self._state = "open"
        self._open_until = self._clock() + backoff_s
        self._failures = 0
        self._probes = 0
        self.opened += 1
        self.reason = reason

    def snapshot(self) -> dict[str, Any]:
        """State for logs and ``jetsplit top``."""
        return {"state": self.state, "opened": self.opened, "rejected": self.rejected,
                "retry_in_s": round(self.retry_in_s, 3), "reason": self.reason}
