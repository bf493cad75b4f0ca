"""The agent's offload path: frames the edge is unsure of go to the cloud, one
request per frame, with a deadline; each comes back as the cloud's answer or,
when the cloud is late, down, or refuses, as the edge's own (a fallback).

One request carries one frame (the protocol's hand-off, ``protocol/SPEC.md``
§12), also when the frames came through the edge stages as one batch: the
worker batches across requests (and across boards), the deadline is per frame,
and a late or lost reply then costs one frame its cloud answer, not a batch.

:class:`Offloader` owns the client (one worker, or a pool), the circuit breaker's
view of it, and the window of requests in flight; the agent asks it
:meth:`~Offloader.why_not` before sending, :meth:`~Offloader.submit` to send, and
:meth:`~Offloader.service` for what came back or ran out of time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from jetsplit.bundle import Bundle
from jetsplit.chain import ChainResult
from jetsplit.edge.breaker import CircuitBreaker
from jetsplit.edge.config import EdgeConfig
from jetsplit.edge.controller import BudgetController
from jetsplit.edge.frame import Frame
from jetsplit.edge.offload_client import OffloadClient
from jetsplit.edge.pool import WorkerPool, is_dns_endpoint
from jetsplit.edge.sinks import FrameResult
from jetsplit.handoff import pack, wire_encodings
from jetsplit.protocol import Client, CurveClient, StatusCode
from jetsplit.protocol.client import Reply
from jetsplit.protocol.errors import Unavailable

__all__ = ["Offloader", "Pending", "SideRequests"]

_log = logging.getLogger("jetsplit.edge")


@dataclass
class Pending:
    """A frame on its way through the edge: its one-row chain result, the gate
    score and threshold it was judged by, and what it cost so far."""

    frame: Frame
    edge: ChainResult
    score: float  # at the controlled gate (inf when an earlier gate accepted it)
    threshold: float | None  # the threshold this frame was gated with (its source's)
    board_threshold: float | None  # the board's (what the budget controller set)
    energy_mj: float = 0.0
    bytes_up: int = 0
    deadline_at: float = 0.0
    radio_mj: float = 0.0  # of energy_mj, what sending it cost
    early: bool = False  # sent from the early gate (edge/early.py), skipping edge stages


class SideRequests(Protocol):
    """Requests sent on the offload client besides the frames' offloads (the
    shadow audit's): their replies and expiries are handed over here."""

    @property
    def audits_in_flight(self) -> int: ...

    def on_reply(self, rid: int, ok: bool, cloud_class: int, rtt_ms: float, cloud_top: float | None = None) -> bool:
        """True when ``rid`` was one of these (the reply is then taken)."""
        ...

    def expire(self, rids: list[int], now: float) -> None: ...


def open_client(config: EdgeConfig, fingerprint: str) -> OffloadClient:
    curve = None
    if config.curve_secret is not None and config.curve_server_key is not None:
        curve = CurveClient(config.curve_secret, config.curve_server_key)
    # Several workers, or a name that may resolve to several: balance and fail
    # over per worker (edge/pool/). One fixed endpoint keeps the plain client.
    timeout_ms = int(config.deadline_ms)
    if len(config.cloud) > 1 or any(map(is_dns_endpoint, config.cloud)):
        p = config.pool
        return WorkerPool(
            list(config.cloud), fingerprint, timeout_ms=timeout_ms, curve=curve,
            heartbeat_ms=p.heartbeat_ms, dead_after_ms=p.dead_after_ms, timeout_strikes=p.timeout_strikes,
            hold_down_s=p.hold_down_s, resolve_interval_s=p.resolve_interval_s,
            overload_hold_ms=p.overload_hold_ms,
        )
    return Client(list(config.cloud), fingerprint, timeout_ms=timeout_ms, curve=curve)


class Offloader:
    """Requests in flight to the cloud; results come back through ``fallback``
    (the edge's answer for a pending frame, with a reason) or as cloud answers."""

    def __init__(self, config: EdgeConfig, bundle: Bundle, breaker: CircuitBreaker,
                 controller: BudgetController | None, fallback: Callable[[Pending, str], FrameResult]) -> None:
        self.config = config
        self.bundle = bundle
        self.breaker = breaker
        self.controller = controller
        self._fallback = fallback
        self.client = open_client(config, bundle.fingerprint)
        self.inflight: dict[int, Pending] = {}
        self.encodings = wire_encodings(bundle)
        self.side: SideRequests | None = None
        self._stage_names = [s.name for s in bundle.stages]
        self._mismatch_reported = False

    def close(self) -> None:
        self.client.close()

    def why_not(self) -> str | None:
        """Why the next frame may not be sent now, or None."""
        if len(self.inflight) >= self.config.window:
            return "window full"
        if not self.breaker.allow():
            return "circuit open"
        return None

    def submit(self, pending: Pending, stage: int) -> str | None:
        """Send ``pending`` resuming at ``stage``; None when sent, else why not."""
        rid = self.send(pending, stage)
        if rid is None:
            self.breaker.record_failure("unavailable")
            return "cloud unavailable"
        self.inflight[rid] = pending
        return None

    def send(self, pending: Pending, stage: int) -> int | None:
        """Send ``pending``'s hand-off with what is left of its deadline, setting its
        ``bytes_up`` and ``deadline_at``; the request id, or None if the cloud is
        unavailable. Not tracked here: :meth:`submit` tracks offloads; a side
        request (the shadow audit's) is tracked by whoever sent it."""
        deadline_ms = max(self.config.deadline_ms - (time.monotonic() - pending.frame.t_capture) * 1000.0, 0.0)
        res = pending.edge
        tensors = pack(self.bundle, stage, pending.frame.image, res.carry, res.state)
        try:
            rid = self.client.submit(stage, tensors, deadline_ms=deadline_ms, encodings=self.encodings)
        except Unavailable:
            return None
        pending.bytes_up = self.client.last_sent_bytes
        pending.deadline_at = time.monotonic() + deadline_ms / 1000.0
        return rid

    def soonest(self) -> float | None:
        """The earliest deadline in flight (time.monotonic()), or None."""
        return min((p.deadline_at for p in self.inflight.values()), default=None)

    def service(self, timeout_ms: int) -> Iterator[tuple[Pending, FrameResult]]:
        """Replies that came within ``timeout_ms`` (cut short at the soonest
        deadline), then every frame whose deadline passed: each frame once."""
        side = self.side
        if not self.inflight and not (side is not None and side.audits_in_flight):
            # Nothing to answer, but a pool's heartbeats and members move only while
            # it is polled (edge/pool/): it must come up with nothing in flight.
            self.client.poll_replies(0)
            return
        wait = timeout_ms
        if wait and self.inflight:
            soonest = self.soonest() or 0.0
            wait = int(max(0.0, min(timeout_ms / 1000.0, soonest - time.monotonic())) * 1000)
        for reply in self.client.poll_replies(wait):
            if side is not None and side.on_reply(
                    reply.id, reply.ok, reply.top1 if reply.ok else -1, reply.rtt_ms,
                    float(np.max(reply.scores)) if reply.ok and len(reply.scores) else None):
                continue
            pending = self.inflight.pop(reply.id, None)
            if pending is None:
                continue  # already answered by its fallback: exactly one result per frame
            yield pending, self._on_reply(pending, reply)
        now = time.monotonic()
        expired = self.client.expire(now)
        if side is not None:
            side.expire(expired, now)
        for rid in expired:
            pending = self.inflight.pop(rid, None)
            if pending is not None:
                self.breaker.record_failure("timeout")
                yield pending, self._fallback(pending, "deadline")
        for rid in [rid for rid, p in self.inflight.items() if p.deadline_at <= now]:
            pending = self.inflight.pop(rid)
            self.breaker.record_failure("timeout")
            yield pending, self._fallback(pending, "deadline")

    def _on_reply(self, pending: Pending, reply: Reply) -> FrameResult:
        if self.controller is not None:
            self.controller.observe_congestion(reply.status == StatusCode.OVERLOADED)
        if time.monotonic() > pending.deadline_at:
            # The contract is the cloud's answer *before* the deadline; one that
            # comes later is a fallback like any other, whatever it says.
            self.breaker.record_failure("late")
            return self._fallback(pending, "deadline")
        if reply.ok:
            self.breaker.record_success()
            if self.controller is not None:
                self.controller.observe_round_trip(reply.rtt_ms)
            scores = np.asarray(reply.scores, np.float32)
            if reply.classes is not None:
                class_id = int(reply.classes[0])
                top = float(scores[0])
            else:
                class_id = int(scores.argmax())
                top = float(scores[class_id])
            f = pending.frame
            return FrameResult(
                frame=f.index, class_id=class_id, label=self.bundle.labels[class_id], score=top,
                stage=self._stage_names[reply.stage] if reply.stage < len(self._stage_names) else str(reply.stage),
                where="cloud", latency_ms=(time.monotonic() - f.t_capture) * 1000.0,
                bytes_up=pending.bytes_up, energy_mj=pending.energy_mj, truth=f.truth,
                t_capture=f.t_capture, source_id=f.source_id, threshold=pending.threshold,
                radio_mj=pending.radio_mj,
            )
        if reply.status == StatusCode.UNKNOWN_BUNDLE:
            if not self._mismatch_reported:
                _log.error("the cloud does not serve this bundle (fingerprint %s...): running local only until it does",
                           self.bundle.fingerprint[:12])
                self._mismatch_reported = True
            self.breaker.trip("bundle mismatch", backoff_s=self.config.breaker.max_backoff_s)
            return self._fallback(pending, "bundle mismatch")
        if reply.status == StatusCode.OVERLOADED and self.controller is not None:
            # A worker that refuses at once is up: the controller offloads less
            # (congestion), the breaker need not stop everything.
            self.breaker.record_success()
        elif reply.status in (StatusCode.EXPIRED, StatusCode.OVERLOADED, StatusCode.SHUTTING_DOWN):
            self.breaker.record_failure(reply.status.name.lower())
        else:
            _log.warning("cloud error on %s frame %d: %s %s", pending.frame.source_id, pending.frame.index,
                         reply.status.name, reply.message)
            self.breaker.record_failure("error")
        return self._fallback(pending, reply.status.name.lower())
