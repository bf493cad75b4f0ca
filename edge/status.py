"""What the edge agent says while it runs: offload trouble out loud, and a status line.

A running agent logs (logger ``jetsplit.edge.status``):

- a **warning when no worker is up**: at start if none answered while the agent
  waited, and whenever the last one goes; and a line when one is up again;
- a **warning when the circuit breaker opens**, with its reason, and one when it
  closes again (the probes that fail in between are counted, not logged: a cloud
  that is down for an hour writes two lines, not thousands);
- every ``status_interval_s`` (``[edge]`` in edge.toml, ``JETSPLIT_EDGE_STATUS_INTERVAL_S``,
  ``--status-interval-s``; 0 turns it off) a **status line** over the last interval::

      status: 29.9 fps, 898 frames, offloaded 11.9%, cloud 103, fallback 4 (deadline 3, circuit open 1),
      workers up 2/2, breaker closed

The agent calls :meth:`Status.started` once the offload client had its chance to
come up, and :meth:`Status.tick` from its loop; nothing here touches a socket
beyond asking the client whether a worker is up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jetsplit.edge.breaker import CircuitBreaker
from jetsplit.edge.offload_client import OffloadClient
from jetsplit.edge.pool import WorkerPool

if TYPE_CHECKING:
    from jetsplit.edge.stats import AgentStats

__all__ = ["Status", "status_line"]

_log = logging.getLogger("jetsplit.edge.status")

# How often the workers' state is looked at: often enough that the warning comes
# within a fraction of a second, rarely enough to cost nothing per frame.
_CHECK_S = 0.1


@dataclass
class _Counts:
    """The agent's running totals at the last status line."""

    frames: int = 0
    offloaded: int = 0
    cloud: int = 0


def status_line(seconds: float, frames: int, total_frames: int, offloaded: int, cloud: int,
                fallbacks: Mapping[str, int], workers: tuple[int, int] | None, breaker: str) -> str:
    """The periodic status line, from the counts of one interval of ``seconds``."""
    fps = frames / seconds if seconds > 0 else 0.0
    rate = 100.0 * offloaded / frames if frames else 0.0
    n_fallback = sum(fallbacks.values())
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(fallbacks.items(), key=lambda kv: -kv[1]))
    parts = [f"status: {fps:.1f} fps", f"{total_frames} frames", f"offloaded {rate:.1f}%", f"cloud {cloud}",
             f"fallback {n_fallback}" + (f" ({why})" if why else "")]
    if workers is not None:
        parts.append(f"workers up {workers[0]}/{workers[1]}")
    parts.append(f"breaker {breaker}")
    return ", ".join(parts)


class Status:
    """The agent's warnings and status line; see the module docstring.

    ``client`` is the agent's offload client (None when nothing may be offloaded:
    then only the status line is written). ``clock`` is injectable for tests.
    """

    def __init__(self, stats: AgentStats, breaker: CircuitBreaker, client: OffloadClient | None,
                 interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stats = stats
        self.breaker = breaker
        self.client = client
        self.interval_s = interval_s
        self._clock = clock
        now = clock()
        self._last_line = now
        self._last_check = now
        self._since = _Counts()
        self._reasons: dict[str, int] = {}
        self._breaker_open = False
        self._none_up: bool | None = None  # unknown until started()

    # -- workers ---------------------------------------------------------------------
    def workers_up(self) -> tuple[int, int] | None:
        """(up, known) workers, or None without a client."""
        if self.client is None:
            return None
        if isinstance(self.client, WorkerPool):
            states = self.client.members
            return sum(1 for s in states.values() if s == "up"), len(states)
        # One endpoint: up when its connection takes a request (ZMQ_IMMEDIATE: only
        # once the handshake, CURVE included, succeeded).
        return int(self.client.wait_ready(0)), 1

    def _endpoints(self) -> str:
        assert self.client is not None
        if isinstance(self.client, WorkerPool):
            return ", ".join(self.client.configured)
        return ", ".join(getattr(self.client, "endpoints", ()))

    def started(self) -> None:
        """The agent waited for its workers: say so if none is up."""
        self._check_workers(self._clock())

    def _check_workers(self, now: float) -> None:
        self._last_check = now
        up = self.workers_up()
        if up is None:
            return
        none_up = up[0] == 0
        if none_up and self._none_up is not True:
            _log.warning("no worker is up among %s: unsure frames get the edge's answer until one answers "
                         "(is the worker running, reachable, and does it allow our CURVE key?)", self._endpoints())
        elif not none_up and self._none_up:
            _log.warning("worker(s) up again: %d of %d; offloading resumes", up[0], up[1])
        self._none_up = none_up

    # -- breaker ---------------------------------------------------------------------
    def _check_breaker(self) -> None:
        state = self.breaker.state
        if state == "open" and not self._breaker_open:
            self._breaker_open = True
            _log.warning("circuit breaker open: %s; unsure frames get the edge's answer, next probe in %.1f s",
                         self.breaker.reason, self.breaker.retry_in_s)
        elif state == "closed" and self._breaker_open:
            self._breaker_open = False
            _log.warning("circuit breaker closed: the cloud answers again (%d request(s) refused while open)",
                         self.breaker.rejected)

    # -- the loop --------------------------------------------------------------------
    def tick(self) -> None:
        """Called from the agent's loop: warnings on changes, the status line when due."""
        now = self._clock()
        self._check_breaker()
        if now - self._last_check >= _CHECK_S and self._none_up is not None:
            self._check_workers(now)
        if self.interval_s > 0 and now - self._last_line >= self.interval_s:
            self._write_line(now)

    def _write_line(self, now: float) -> None:
        s = self.stats
        fallbacks = {k: v - self._reasons.get(k, 0) for k, v in s.fallback_reasons.items()}
        _log.info("%s", status_line(
            now - self._last_line, s.frames - self._since.frames, s.frames, s.offloaded - self._since.offloaded,
            s.cloud - self._since.cloud, {k: v for k, v in fallbacks.items() if v}, self.workers_up(),
            self.breaker.state))
        self._last_line = now
        self._since = _Counts(s.frames, s.offloaded, s.cloud)
        self._reasons = dict(s.fallback_reasons)
