"""Client-side load balancing over many cloud workers, as gRPC clients do it.

Workers are stateless, so scaling out needs no broker: the edge knows every worker
(a list of endpoints, or a DNS name that resolves to many, as a Kubernetes headless
Service does) and holds one :class:`~jetsplit.protocol.Client` (one DEALER) per
worker. :class:`WorkerPool` has the interface the edge agent uses from ``Client``
(``submit``, ``poll_replies``, ``expire``, ``wait_ready``, ``close``,
``last_sent_bytes``), so the agent takes either::

    pool = WorkerPool(["tcp://workers.jetsplit.svc:5555"], fingerprint)  # doctest: +SKIP
    pool.wait_ready(1000)
    rid = pool.submit(1, {"act": act}, deadline_ms=150)
    for reply in pool.poll_replies(5):    # at most one reply per id, ever
        ...
    for rid in pool.expire():             # past their deadline, or lost with no retry left
        ...

How it decides (docs/ARCHITECTURE.md, "Scale-out"):

- **Members, health, spreading** (edge/pool/membership.py; names resolved by
  edge/pool/resolver.py, each member's client in edge/pool/members.py): who is in the pool,
  which members are up (pongs, a socket monitor, timeouts in a row), and which up
  member takes a request (the fewest in flight, ties round-robin).
- **Re-send once.** When a member goes down, each of its requests in flight whose
  deadline still allows it is re-sent, once, to a live member with the remaining
  deadline; one that cannot be re-sent is reported by the next :meth:`expire` at
  once (the edge falls back now rather than at the deadline).
- **De-duplication** (the table in edge/pool/inflight.py). Callers only see the pool's
  own request ids. The first reply to arrive for an id is delivered and the id is
  forgotten, so a late reply from the first worker after a re-send is dropped
  (``stats.duplicates``); an error reply from an attempt that has been superseded
  is ignored in favour of the re-sent one.

Like ``Client``, a pool belongs to one thread. Its timings can be set from the edge
agent's configuration: :class:`PoolConfig`, ``[pool]`` in edge.toml.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zmq

from jetsplit.edge.pool.inflight import InFlight, Request
from jetsplit.edge.pool.members import Member, MemberState
from jetsplit.edge.pool.membership import Membership, PoolConfig
from jetsplit.edge.pool.resolver import Resolver, is_dns_endpoint, resolve_endpoint
from jetsplit.edge.pool.stats import PoolStats
from jetsplit.protocol import CurveClient, StatusCode
from jetsplit.protocol.client import Reply
from jetsplit.protocol.codec import DEFAULT_LIMITS, Encodings, Limits
from jetsplit.protocol.errors import Unavailable
from jetsplit.protocol.transport import DEFAULT_OPTIONS, SocketOptions

__all__ = [
    "MemberState", "PoolConfig", "PoolStats", "Resolver", "WorkerPool", "is_dns_endpoint", "resolve_endpoint",
]

# One logger for the whole pool (this module and its parts): what operators filter on.
_log = logging.getLogger("jetsplit.edge.pool")

# Below this, a re-sent request could not even cross the link before its deadline.
_MIN_RESEND_MS = 1.0


class WorkerPool:
    """Requests spread over many workers, each through its own ``Client``.

    ``endpoints``: ``tcp://host:port`` (a name is resolved, see the module docstring),
    ``tcp://10.0.0.7:5555``, ``ipc:///run/jetsplit/w0``. ``heartbeat_ms`` to
    ``resolve_interval_s`` are the health and membership timings (edge/pool/membership.py;
    defaults: :class:`PoolConfig`'s). ``resolver`` replaces DNS (tests inject one).
    The other arguments are ``Client``'s, given to every member.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        fingerprint: str,
        timeout_ms: int = 1000,
        *,
        curve: CurveClient | None = None,
        encodings: Encodings = None,
        top_k: int = 0,
        limits: Limits = DEFAULT_LIMITS,
        options: SocketOptions = DEFAULT_OPTIONS,
        context: zmq.Context[Any] | None = None,
        heartbeat_ms: float = PoolConfig.heartbeat_ms,
        dead_after_ms: float = PoolConfig.dead_after_ms,
        timeout_strikes: int = PoolConfig.timeout_strikes,
        hold_down_s: float = PoolConfig.hold_down_s,
        resolve_interval_s: float = PoolConfig.resolve_interval_s,
        resolver: Resolver | None = None,
        overload_hold_ms: float = PoolConfig.overload_hold_ms,
    ) -> None:
        self.configured = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.configured:
            raise ValueError("WorkerPool needs at least one endpoint")
        self.fingerprint = fingerprint
        self.timeout_ms = int(timeout_ms)
        self.heartbeat_s = heartbeat_ms / 1000.0
        self.dead_after_s = dead_after_ms / 1000.0
        self.timeout_strikes = timeout_strikes
        self.hold_down_s = hold_down_s
        self.resolve_interval_s = resolve_interval_s
        self.stats = PoolStats()
        self.last_sent_bytes = 0
        self._inflight = InFlight(self.stats)
        client_kw: dict[str, Any] = {
            "timeout_ms": timeout_ms, "curve": curve, "encodings": encodings, "top_k": top_k,
            "limits": limits, "options": options, "context": context,
        }
        # Joins the configured members and resolves the names among them, at once.
        self._membership = Membership(
            self.configured, fingerprint, client_kw, self.stats, self._rescue,
            heartbeat_s=self.heartbeat_s, dead_after_s=self.dead_after_s, timeout_strikes=timeout_strikes,
            hold_down_s=hold_down_s, resolve_interval_s=resolve_interval_s, resolver=resolver or resolve_endpoint,
            overload_hold_s=overload_hold_ms / 1000.0,
        )
        self._membership.heartbeat(time.monotonic())

    @property
    def members(self) -> dict[str, MemberState]:
        """Every member's endpoint and state (retiring members included)."""
        return {ep: m.state for ep, m in self._membership.members.items()}

    @property
    def draining(self) -> list[str]:
        """Members whose last pong said ``draining``: leaving, so given no new requests."""
        return [ep for ep, m in self._membership.members.items() if m.draining]

    @property
    def pending(self) -> int:
        """Requests submitted and neither answered nor expired."""
        return len(self._inflight)

    def in_flight(self) -> dict[str, int]:
        """Requests currently routed to each member."""
        return {ep: len(m.routes) for ep, m in self._membership.members.items()}

    # ------------------------------------------------------------------ re-sending

    def _rescue(self, m: Member, now: float) -> None:
        """Re-send once, elsewhere, what ``m`` held; report what cannot be (the
        membership calls this when ``m`` goes down)."""
        moved = 0
        for pid in list(m.routes.values()):
            req = self._inflight.get(pid)
            if req is None or req.member is not m:
                continue
            if self._resend(req, now):
                moved += 1
            else:
                self._inflight.abandon(req)
        if moved:
            _log.info("worker pool: re-sent %d request(s) from %s", moved, m.endpoint)

    def _resend(self, req: Request, now: float) -> bool:
        left_ms = (req.deadline_at - now) * 1000.0
        if req.attempts >= 2 or left_ms < _MIN_RESEND_MS:
            return False
        try:
            self._send(req, left_ms, exclude=req.member)
        except Unavailable:
            return False
        self.stats.resent += 1
        return True

    # ------------------------------------------------------------------ sending

    def _send(self, req: Request, deadline_ms: float, exclude: Member | None = None) -> None:
        m, member_rid = self._membership.send(req, deadline_ms, exclude)
        req.route(m, member_rid)
        self.last_sent_bytes = m.client.last_sent_bytes

    def submit(
        self,
        stage: int,
        tensors: Mapping[str, np.ndarray[Any, Any]],
        deadline_ms: float,
        *,
        encodings: Encodings = None,
        top_k: int | None = None,
    ) -> int:
        """Send an ``infer`` request to the best live member without waiting; return
        the pool's id for it. Raises :class:`Unavailable` when no member is live."""
        req = self._inflight.new(stage, tensors, deadline_ms, encodings, top_k)
        if not self._membership.candidates(None):
            # No member is up yet: take what has arrived and ping who is owed one, so
            # that a caller which only submits until something is up still brings
            # the members up (the edge agent does, until its first request is sent).
            self._pump(0.0)
        self._send(req, deadline_ms)
        self._inflight.add(req)
        return req.id

    # ------------------------------------------------------------------ receiving

    def poll_replies(self, timeout_ms: int = 0) -> list[Reply]:
        """Replies that have arrived (pool ids, one per request at most), waiting up
        to ``timeout_ms`` for the first. Heartbeats, membership and re-sends are
        handled here too, within the same wait."""
        end = time.monotonic() + max(0, timeout_ms) / 1000.0
        while True:
            self._pump(0.0 if self._inflight.has_replies else end - time.monotonic())
            if self._inflight.has_replies or time.monotonic() >= end:
                break
        return self._inflight.take_replies()

    def _pump(self, wait_s: float) -> None:
        """What the members sent meanwhile, heartbeats and membership, a wait of up
        to ``wait_s`` for the members, and what they sent."""
        # Read first: a pong that arrived while the caller was busy elsewhere must
        # count before the heartbeat judges a member silent (else a healthy worker
        # reads "down (no heartbeat ...)" and "up" a millisecond later).
        self._take(time.monotonic())
        self._membership.wait(0.0 if self._inflight.has_replies else wait_s)
        self._receive(time.monotonic())

    def _take(self, now: float) -> None:
        for m in list(self._membership.members.values()):
            for reply in self._membership.take_replies(m, now):
                self._on_reply(m, reply, now)

    def _receive(self, now: float) -> None:
        self._take(now)
        self._sweep(now)

    def _on_reply(self, m: Member, reply: Reply, now: float) -> None:
        pid = m.routes.pop(reply.id, None)
        if pid is None:
            return
        req = self._inflight.get(pid)
        if req is None:
            self.stats.duplicates += 1  # answered already (or expired): exactly one reply per id
            return
        current = req.member is m and req.member_rid == reply.id
        if reply.status == StatusCode.SHUTTING_DOWN:
            self._membership.mark_down(m, "shutting down", now)  # re-sends the rest of what it held
            if current and not self._resend(req, now):
                self._inflight.deliver(req, reply, now)
            return
        if not current and not reply.ok:
            return  # a superseded attempt's error: the re-sent attempt may still succeed
        if reply.status == StatusCode.OVERLOADED:
            # Delivered, not re-sent: the edge answers the frame itself at once, and
            # a retry would only add load where there is too much (SPEC.md, OVERLOADED).
            self._membership.overloaded(m, now)
        if reply.ok:
            m.strikes = 0  # timeouts count against a member only in a row
        self._inflight.deliver(req, reply, now)

    def _sweep(self, now: float) -> None:
        """Let each member's client forget what it will not be answered; notice a
        member whose client reopened its socket (its requests timed out with nothing
        heard from it: the lazy pirate) and rescue what it held."""
        for m in list(self._membership.members.values()):
            for rid in m.client.expire(now):
                pid = m.routes.pop(rid, None)
                req = self._inflight.get(pid) if pid is not None else None
                if req is None or req.member is not m or req.member_rid != rid:
                    continue
                if req.deadline_at > now:
                    # Abandoned by a reconnect with time left: re-send once, or report.
                    if not self._resend(req, now):
                        self._inflight.abandon(req)
            if m.client.reconnects != m.reconnects_seen:
                m.reconnects_seen = m.client.reconnects
                self._membership.mark_down(m, "requests timed out with nothing heard", now)

    def expire(self, now: float | None = None) -> list[int]:
        """Ids of requests past their deadline, and of requests lost with a member
        that could not be re-sent; each id is reported once, and never also answered."""
        t = time.monotonic() if now is None else now
        self._receive(time.monotonic())
        out: list[int] = []
        for req in self._inflight.due(t):
            # A timeout below can take a member down, which abandons (or re-sends)
            # its other requests, some of them in this list: skip what has ended.
            if self._inflight.get(req.id) is not req:
                continue
            self._inflight.expire(req)
            out.append(req.id)
            if req.member is not None:
                self._membership.timed_out(req.member, req.sent_at, t)
        # Abandoned ones last: those the loop just caused are reported now, once.
        return out + self._inflight.take_abandoned()

    def wait_ready(self, timeout_ms: int | None = None) -> bool:
        """Wait until some member serving our bundle answered a ping (True), or the
        timeout passes (False). Replies that arrive meanwhile are kept for
        :meth:`poll_replies`."""
        wait = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        end = time.monotonic() + wait / 1000.0
        while not self._membership.candidates(None):
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._pump(left)
        return True

    def close(self) -> None:
        """Stop re-resolving and close every member's socket."""
        self._membership.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

