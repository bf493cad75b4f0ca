"""Who is in the worker pool, which members are up, and which one takes a request.

- **Members.** Each configured ``tcp://`` endpoint whose host is a name is resolved
  with ``getaddrinfo`` at start and again every ``resolve_interval_s`` on a
  background thread (:class:`~jetsplit.edge.pool.resolver.NameWatch`: a slow DNS server
  never stalls the edge loop); addresses that appear join, addresses that vanish
  retire (no new requests; their replies are still taken until their requests are
  answered or expire). A failed look-up keeps the members a name has. Literal
  addresses and ``ipc://`` endpoints are members as given.
- **Health.** A member is *up* once it answers a ``ping``. Pings go out on the
  member's own socket without waiting, whenever nothing was heard from it for
  ``heartbeat_ms``, and on a new connection the moment its handshake ends (a
  socket with ``ZMQ_IMMEDIATE`` refuses messages until then: a ping that could not
  be queued is *owed*, and :meth:`Membership.wait` wakes when the socket can take
  it, so bring-up costs a round trip, not a heartbeat). It is declared *down* when its connection drops (a ZeroMQ
  socket monitor: a crash is seen at once), when nothing was heard for
  ``dead_after_ms`` after a ping, when a request cannot even be queued to it, when
  it answers ``shutting down``, or when ``timeout_strikes`` requests in a row time
  out on it. A member whose ``pong`` says ``draining`` is leaving: it gets no new
  requests, its answers to those it holds are still taken, and a ``serving``
  pong (a restarted worker at the same address) brings it back (then it is held down for ``hold_down_s`` so a worker that answers
  pings but not work does not flap back in). A down member comes back with its
  next ``pong``.
- **Choosing.** A request goes to the up member with the fewest requests in
  flight, ties broken round-robin; members whose ``pong`` does not list our bundle
  are used only if no member serves it (so the caller hears ``unknown bundle``). A
  member that refused a request ``OVERLOADED`` is passed over for
  ``overload_hold_ms`` while another can take the request (it is up, so it stays a
  candidate: when every member is overloaded they share what is sent).

:class:`Membership` applies these rules on the pool's thread; :class:`PoolConfig`
(``[pool]`` in edge.toml) holds the timings. Which requests a member holds is the
pool's business (edge/pool/workerpool.py, edge/pool/inflight.py): it tells the membership when a
request timed out on a member, and is told when a member goes down so that it can
re-send what the member held.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from jetsplit.edge.pool.inflight import Request
from jetsplit.edge.pool.members import HANDSHAKE_FAILED, Member, MemberClient
from jetsplit.edge.pool.resolver import NameWatch, Resolver, is_dns_endpoint
from jetsplit.edge.pool.stats import PoolStats
from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader
from jetsplit.protocol.client import PingReply, Reply
from jetsplit.protocol.errors import Unavailable

__all__ = ["Membership", "PoolConfig"]

# One logger for the whole pool (edge/pool/workerpool.py and its parts): what operators filter on.
_log = logging.getLogger("jetsplit.edge.pool")


@dataclass(frozen=True)
class PoolConfig:
    """``[pool]`` in edge.toml: the timings above. They are also the
    :class:`~jetsplit.edge.pool.WorkerPool` arguments of the same names, and these
    are their defaults."""

    heartbeat_ms: float = 250.0
    dead_after_ms: float = 1000.0
    timeout_strikes: int = 3
    hold_down_s: float = 1.0
    resolve_interval_s: float = 5.0
    overload_hold_ms: float = 500.0

    def __post_init__(self) -> None:
        for name in ("heartbeat_ms", "dead_after_ms", "resolve_interval_s", "overload_hold_ms"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ConfigError(f"[pool].{name}: expected a finite number > 0, got {value}")
        if not 0 <= self.hold_down_s < math.inf:
            raise ConfigError(f"[pool].hold_down_s: expected a finite number >= 0, got {self.hold_down_s}")
        if self.timeout_strikes < 1:
            raise ConfigError(f"[pool].timeout_strikes: expected an integer >= 1, got {self.timeout_strikes}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[pool]") -> PoolConfig:
        r = TableReader(table, where, ConfigError)
        cfg = cls(
            heartbeat_ms=r.number("heartbeat_ms", cls.heartbeat_ms),
            dead_after_ms=r.number("dead_after_ms", cls.dead_after_ms),
            timeout_strikes=r.integer("timeout_strikes", cls.timeout_strikes, minimum=1),
            hold_down_s=r.number("hold_down_s", cls.hold_down_s),
            resolve_interval_s=r.number("resolve_interval_s", cls.resolve_interval_s),
            overload_hold_ms=r.number("overload_hold_ms", cls.overload_hold_ms),
        )
        r.done()
        return cfg


def _handshake_failure(event: int, value: int) -> str:
    """Why a member's handshake failed, in words an operator can act on."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if value == 400:
            return "the worker does not allow our CURVE key (add our public key to its --curve-allow directory)"
        return f"authentication failed (status {value}; check the CURVE keys on both sides)"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "handshake failed (one side uses CURVE and the other does not, or the server key is wrong)"
    return "handshake failed (CURVE keys do not match, or it is not a jetsplit worker)"


class Membership:
    """The pool's members by endpoint (:attr:`members`), kept as the module docstring
    says. ``client_kw`` are the ``Client`` arguments every member gets; ``stats``
    counts joins, leaves and downs; ``on_down(member, now)`` is called each time a
    member goes down, once its state says so."""

    def __init__(
        self,
        configured: Sequence[str],
        fingerprint: str,
        client_kw: Mapping[str, Any],
        stats: PoolStats,
        on_down: Callable[[Member, float], None],
        *,
        heartbeat_s: float,
        dead_after_s: float,
        timeout_strikes: int,
        hold_down_s: float,
        resolve_interval_s: float,
        resolver: Resolver,
        overload_hold_s: float = PoolConfig.overload_hold_ms / 1000.0,
    ) -> None:
        self.configured = list(configured)
        self.overload_hold_s = overload_hold_s
        self.fingerprint = fingerprint
        self.heartbeat_s = heartbeat_s
        self.dead_after_s = dead_after_s
        self.timeout_strikes = timeout_strikes
        self.hold_down_s = hold_down_s
        self.members: dict[str, Member] = {}
        self._rr = 0
        self._client_kw = dict(client_kw)
        self._stats = stats
        self._on_down = on_down
        self._names = [ep for ep in self.configured if is_dns_endpoint(ep)]
        self._watch = NameWatch(self._names, resolver, resolve_interval_s)
        for ep in self.configured:
            if ep not in self._names:
                self._join(ep, ep)
        if self._names:
            self._watch.resolve()  # at start, on the caller's thread: the first members
            self._apply_resolved()
            self._watch.start()

    # ------------------------------------------------------------------ joining and leaving

    def _join(self, endpoint: str, origin: str) -> None:
        client = MemberClient(endpoint, self.fingerprint, **self._client_kw)
        self.members[endpoint] = Member(endpoint, origin, client, heard=time.monotonic())
        self._stats.joins += 1
        _log.info("worker pool: member %s joined (from %s)", endpoint, origin)

    def _leave(self, m: Member) -> None:
        m.client.close()
        del self.members[m.endpoint]
        self._stats.leaves += 1
        _log.info("worker pool: member %s left", m.endpoint)

    def _apply_resolved(self) -> None:
        resolved = self._watch.take()
        if resolved is None:
            return
        wanted: dict[str, str] = {ep: ep for ep in self.configured if ep not in self._names}
        for name in self._names:
            for ep in resolved.get(name, [m.endpoint for m in self.members.values() if m.origin == name]):
                wanted.setdefault(ep, name)
        for ep, origin in wanted.items():
            m = self.members.get(ep)
            if m is None:
                self._join(ep, origin)
            elif m.retiring:
                m.retiring = False
                _log.info("worker pool: member %s is back in %s", ep, origin)
        for m in list(self.members.values()):
            if m.endpoint not in wanted and not m.retiring:
                m.retiring = True
                _log.info("worker pool: member %s no longer in DNS for %s: retiring", m.endpoint, m.origin)

    def close(self) -> None:
        """Stop re-resolving and close every member's socket."""
        self._watch.stop()
        for m in list(self.members.values()):
            m.client.close()
        self.members.clear()

    # ------------------------------------------------------------------ up and down

    def _mark_up(self, m: Member, pong: PingReply) -> None:
        draining = pong.state == "draining"
        if draining != m.draining:
            m.draining = draining
            if draining:
                _log.warning("worker pool: member %s is draining: no new requests to it; %d in flight on it",
                             m.endpoint, len(m.routes))
            else:
                _log.info("worker pool: member %s is serving again", m.endpoint)
        m.serves_bundle = self.fingerprint in pong.bundles
        if m.state == "up":
            return
        m.state = "up"
        m.strikes = 0
        if m.serves_bundle:
            _log.info("worker pool: member %s up", m.endpoint)
        else:
            _log.warning("worker pool: member %s up, but it does not serve bundle %s... (used only if no member does)",
                         m.endpoint, self.fingerprint[:12])

    def mark_down(self, m: Member, reason: str, now: float, hold: bool = False) -> None:
        """Declare ``m`` down (held out for ``hold_down_s`` if ``hold``) and tell the pool."""
        if m.state == "down":
            return
        was = m.state
        m.state = "down"
        m.pings.clear()  # a pong to a ping sent before this must not revive it
        m.probe_since = None
        if hold:
            m.hold_until = now + self.hold_down_s
        if was == "up":
            self._stats.member_downs += 1
            _log.warning("worker pool: member %s down (%s); %d request(s) in flight on it",
                         m.endpoint, reason, len(m.routes))
        self._on_down(m, now)

    def timed_out(self, m: Member, sent_at: float, now: float) -> None:
        """A request sent to ``m`` at ``sent_at`` passed its deadline unanswered."""
        # It counts against the member only if no reply at all came from it since
        # it was sent: a busy worker still answers others, a stuck one answers none.
        if m.state == "up" and m.replied <= sent_at:
            m.strikes += 1
            if m.strikes >= self.timeout_strikes:
                self.mark_down(m, f"{m.strikes} requests in a row timed out", now, hold=True)

    def overloaded(self, m: Member, now: float) -> None:
        """``m`` refused a request ``OVERLOADED``: prefer other members for a while."""
        m.overloaded_until = now + self.overload_hold_s

    def heartbeat(self, now: float) -> None:
        """Apply DNS results, take connection events, declare silent members down,
        ping where needed, and let retired members without requests leave. The
        caller takes what the members sent before this (the pool does): a pong
        already queued must count before silence is judged."""
        self._apply_resolved()
        for m in list(self.members.values()):
            self._connection_events(m, now)
            if m.state == "up" and m.probe_since is not None and now - m.probe_since > self.dead_after_s:
                self.mark_down(m, f"no heartbeat for {self.dead_after_s * 1000:.0f} ms", now)
            # An up member that is talking needs no ping; any other one needs a pong to be up.
            since = now - (max(m.heard, m.last_ping) if m.state == "up" else m.last_ping)
            if since >= self.heartbeat_s or m.ping_owed:
                self._ping(m, now)
            if m.retiring and not m.routes:
                self._leave(m)

    def _connection_events(self, m: Member, now: float) -> None:
        for event, value in m.client.connection_events():
            if event == zmq.EVENT_DISCONNECTED:
                self.mark_down(m, "connection lost", now)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                # Ping now: a new or restarted worker is up within one round trip.
                m.ping_owed = True
                m.handshake_failures = 0
            elif event & HANDSHAKE_FAILED:
                m.handshake_failures += 1
                if m.handshake_failures == 1:
                    _log.warning("worker pool: member %s refused the connection: %s", m.endpoint,
                                 _handshake_failure(event, value))

    def _ping(self, m: Member, now: float) -> None:
        m.last_ping = now
        rid = m.client.send_ping()
        if rid is None:
            # No connection takes it yet (connecting, handshaking, or the worker is
            # gone): :meth:`wait` wakes the moment one does, and it goes then.
            m.ping_owed = True
            if m.state == "up":
                self.mark_down(m, "connection not ready", now)
            return
        m.ping_owed = False
        m.pings[rid] = now
        if m.probe_since is None:
            m.probe_since = now
        # Pings lost with a dead connection are never answered: keep few.
        for old in [k for k, t in m.pings.items() if now - t > 4 * self.dead_after_s]:
            del m.pings[old]

    def take_replies(self, m: Member, now: float) -> list[Reply]:
        """What ``m`` sent since the last call: its pongs are applied here (a pong
        to a ping still wanted brings it up), its replies are returned."""
        replies = m.client.poll_replies(0)
        pongs = m.client.take_pongs()
        if replies or pongs:
            m.heard = now
            m.probe_since = None
        if replies:
            m.replied = now
        for rid, pong in pongs.items():
            if m.pings.pop(rid, None) is not None and now >= m.hold_until:
                self._mark_up(m, pong)
        return replies

    def wait(self, wait_s: float) -> None:
        """Heartbeats and membership, then wait up to ``wait_s`` (and no longer than
        the next heartbeat) for messages or connection events from any member."""
        self.heartbeat(time.monotonic())
        wait_ms = int(max(0.0, min(wait_s, self.heartbeat_s)) * 1000.0)
        poller = zmq.Poller()
        for m in self.members.values():
            # A member owing a ping is also watched for the moment its connection can take one.
            poller.register(m.client.socket, zmq.POLLIN | zmq.POLLOUT if m.ping_owed else zmq.POLLIN)
            if m.client.monitor is not None:
                poller.register(m.client.monitor, zmq.POLLIN)
        poller.poll(wait_ms)

    # ------------------------------------------------------------------ choosing

    def candidates(self, exclude: Member | None) -> list[Member]:
        """Members that may take a new request: up, neither retiring nor draining, not
        held down, and serving our bundle if any of those does."""
        now = time.monotonic()
        up = [m for m in self.members.values()
              if m.state == "up" and not m.retiring and not m.draining and m is not exclude and now >= m.hold_until]
        serving = [m for m in up if m.serves_bundle]
        return serving or up

    def send(self, req: Request, deadline_ms: float, exclude: Member | None = None) -> tuple[Member, int]:
        """Queue ``req`` on the best candidate other than ``exclude``: the member and
        its id for the request. A member that cannot even queue it is declared down
        and the next one tried; :class:`Unavailable` when none takes it."""
        candidates = self.candidates(exclude)
        if not candidates:
            raise Unavailable(f"no live worker among {sorted(self.members) or self.configured}")
        # Least in flight, ties round-robin: rotate, then take the first minimum.
        self._rr = (self._rr + 1) % len(candidates)
        order = candidates[self._rr:] + candidates[:self._rr]
        now = time.monotonic()
        # Not overloaded first, then the fewest in flight; stable: keeps the rotation among ties.
        order.sort(key=lambda m: (m.overloaded_until > now, len(m.routes)))
        for m in order:
            try:
                return m, m.client.submit(req.stage, req.tensors, deadline_ms, encodings=req.encodings,
                                          top_k=req.top_k)
            except Unavailable:
                self.mark_down(m, "request could not be queued", now)
        raise Unavailable(f"no worker took the request among {[m.endpoint for m in order]}")
