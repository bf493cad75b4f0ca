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

- **Members.** Each configured ``tcp://`` endpoint whose host is a name is resolved
  with ``getaddrinfo`` at start and again every ``resolve_interval_s`` on a
  background thread (a slow DNS server never stalls the edge loop); addresses that
  appear join, addresses that vanish retire (no new requests; their replies are
  still taken until their requests are answered or expire). Literal addresses and
  ``ipc://`` endpoints are members as given.
- **Health.** A member is *up* once it answers a ``ping``. Pings go out on the
  member's own socket without waiting, whenever nothing was heard from it for
  ``heartbeat_ms``. It is declared *down* when its connection drops (a ZeroMQ
  socket monitor: a crash is seen at once), when nothing was heard for
  ``dead_after_ms`` after a ping, when a request cannot even be queued to it, when
  it answers ``shutting down``, or when ``timeout_strikes`` requests in a row time
  out on it (then it is held down for ``hold_down_s`` so a worker that answers
  pings but not work does not flap back in). A down member comes back with its
  next ``pong``.
- **Spreading.** A request goes to the up member with the fewest requests in flight,
  ties broken round-robin; members whose ``pong`` does not list our bundle are
  used only if no member serves it (so the caller hears ``unknown bundle``).
- **Re-send once.** When a member goes down, each of its requests in flight whose
  deadline still allows it is re-sent, once, to a live member with the remaining
  deadline; one that cannot be re-sent is reported by the next :meth:`expire` at
  once (the edge falls back now rather than at the deadline).
- **De-duplication.** Callers only see the pool's own request ids. The first reply
  to arrive for an id is delivered and the id is forgotten, so a late reply from
  the first worker after a re-send is dropped (``stats.duplicates``); an error
  reply from an attempt that has been superseded is ignored in favour of the
  re-sent one.

Like ``Client``, a pool belongs to one thread.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from jetsplit.protocol import Client, CurveClient, StatusCode
from jetsplit.protocol.client import Reply
from jetsplit.protocol.codec import DEFAULT_LIMITS, Encodings, Limits, encode_message, ping_for
from jetsplit.protocol.errors import Unavailable
from jetsplit.protocol.transport import DEFAULT_OPTIONS, SocketOptions, dealer_socket, send_frames

__all__ = ["MemberState", "PoolStats", "Resolver", "WorkerPool", "is_dns_endpoint", "resolve_endpoint"]

_log = logging.getLogger("jetsplit.edge.pool")

#: ``resolver("tcp://name:port") -> ["tcp://10.0.0.7:port", ...]``; raises OSError when
#: the name cannot be resolved now (the pool then keeps the members it has).
Resolver = Callable[[str], Sequence[str]]

MemberState = Literal["joining", "up", "down"]

_MONITOR_IDS = itertools.count()
# Below this, a re-sent request could not even cross the link before its deadline.
_MIN_RESEND_MS = 1.0


def _host_port(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://host:port`` endpoint, else None."""
    if not endpoint.startswith("tcp://"):
        return None
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or port is None:
        return None
    return parts.hostname, port


def is_dns_endpoint(endpoint: str) -> bool:
    """True for ``tcp://NAME:port`` where NAME is a host name, not an address
    (``*`` and interface names are for binding, never for connecting)."""
    hp = _host_port(endpoint)
    if hp is None:
        return False
    try:
        ipaddress.ip_address(hp[0])
    except ValueError:
        return True
    return False


def resolve_endpoint(endpoint: str) -> list[str]:
    """Every address ``endpoint``'s name resolves to, as ``tcp://`` endpoints
    (IPv6 in brackets), sorted; raises OSError (``socket.gaierror``) on failure."""
    hp = _host_port(endpoint)
    if hp is None:
        return [endpoint]
    host, port = hp
    out: set[str] = set()
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        addr = str(sockaddr[0])
        out.add(f"tcp://[{addr}]:{port}" if family == socket.AF_INET6 else f"tcp://{addr}:{port}")
    return sorted(out)


@dataclass
class PoolStats:
    """What the pool did, for logs, tests and benchmarks."""

    submitted: int = 0
    replies: int = 0
    expired: int = 0
    resent: int = 0
    abandoned: int = 0  # lost with a member and not re-sendable: reported by expire() at once
    duplicates: int = 0  # replies dropped because the request was already answered
    member_downs: int = 0
    joins: int = 0
    leaves: int = 0


class _MemberClient(Client):
    """A ``Client`` of one worker, plus what the pool needs: pings that do not wait,
    the pongs received, when the worker was last heard from, and a socket monitor
    that reports connects and disconnects. It extends ``Client`` through its
    internals (``_open``, ``_sock``, ``_new_id``, ``_pongs``, ``_last_recv``);
    tests/edge/test_pool.py pins that contract."""

    def __init__(self, endpoint: str, fingerprint: str, **kw: Any) -> None:
        self.monitor: zmq.Socket[Any] | None = None
        super().__init__([endpoint], fingerprint, **kw)

    def _open(self) -> None:
        # A reconnect (lazy pirate) opens a new socket: it gets a new monitor too.
        self._close_monitor()
        sock = dealer_socket(self._context, [], limits=self.limits, options=self._options, curve=self._curve)
        try:
            if "[" in self.endpoints[0]:
                sock.setsockopt(zmq.IPV6, 1)  # a resolved IPv6 address: tcp://[::1]:5555
            # Our own unique address: a closed socket's monitor may still hold pyzmq's default one.
            addr = f"inproc://jetsplit-pool-monitor-{next(_MONITOR_IDS)}"
            sock.monitor(addr, zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
            monitor = self._context.socket(zmq.PAIR)
            monitor.setsockopt(zmq.LINGER, 0)
            monitor.connect(addr)
            self.monitor = monitor
            sock.connect(self.endpoints[0])
        except BaseException:
            sock.close(linger=0)
            self._close_monitor()
            raise
        self._socket = sock

    def _close_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.close(linger=0)
            self.monitor = None

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
        super().close()
        self._close_monitor()

    @property
    def socket(self) -> zmq.Socket[Any]:
        return self._sock()

    @property
    def last_heard(self) -> float:
        return self._last_recv

    def send_ping(self) -> int | None:
        """Queue a ``ping`` without waiting; its id, or None if no connection takes it."""
        rid = self._new_id()
        return rid if send_frames(self._sock(), encode_message(ping_for(rid)), 0) else None

    def take_pongs(self) -> dict[int, list[str]]:
        """Pongs received since the last call: ping id -> bundle fingerprints served."""
        out = {rid: pong.bundles for rid, pong in self._pongs.items()}
        self._pongs.clear()
        return out

    def connection_events(self) -> list[int]:
        """Monitor events (``zmq.EVENT_CONNECTED`` / ``EVENT_DISCONNECTED``) since the last call."""
        events: list[int] = []
        while self.monitor is not None:
            try:
                events.append(int(recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)["event"]))
            except zmq.Again:
                break
        return events


@dataclass
class _Member:
    endpoint: str
    origin: str  # the configured entry it came from (a name, or itself)
    client: _MemberClient
    state: MemberState = "joining"
    retiring: bool = False  # gone from DNS: no new requests, answers still taken
    serves_bundle: bool = True
    routes: dict[int, int] = field(default_factory=dict)  # member's request id -> pool id
    pings: dict[int, float] = field(default_factory=dict)  # ping id -> sent at
    last_ping: float = 0.0
    probe_since: float | None = None  # first ping sent since we last heard from it
    heard: float = 0.0  # last message of any kind from it
    replied: float = 0.0  # last reply to a request
    strikes: int = 0
    hold_until: float = 0.0
    reconnects_seen: int = 0


@dataclass
class _Request:
    id: int
    stage: int
    tensors: Mapping[str, np.ndarray[Any, Any]]  # kept for a re-send
    encodings: Encodings
    top_k: int | None
    sent_at: float
    deadline_at: float
    member: _Member | None = None
    member_rid: int = -1
    attempts: int = 0


class WorkerPool:
    """Requests spread over many workers, each through its own ``Client``.

    ``endpoints``: ``tcp://host:port`` (a name is resolved, see the module docstring),
    ``tcp://10.0.0.7:5555``, ``ipc:///run/jetsplit/w0``. ``resolver`` replaces DNS
    (tests inject one). The other arguments are ``Client``'s, given to every member.
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
        heartbeat_ms: float = 250.0,
        dead_after_ms: float = 1000.0,
        timeout_strikes: int = 3,
        hold_down_s: float = 1.0,
        resolve_interval_s: float = 5.0,
        resolver: Resolver | None = None,
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
        self._client_kw: dict[str, Any] = {
            "timeout_ms": timeout_ms, "curve": curve, "encodings": encodings, "top_k": top_k,
            "limits": limits, "options": options, "context": context,
        }
        self._resolver: Resolver = resolver or resolve_endpoint
        self._members: dict[str, _Member] = {}
        self._requests: dict[int, _Request] = {}
        self._ready: list[Reply] = []
        self._abandoned: list[int] = []
        self._rr = 0
        self._next_id = 0
        self._names = [ep for ep in self.configured if is_dns_endpoint(ep)]
        # The resolver thread writes here; the pool's thread applies it (membership
        # changes happen only on the caller's thread, like everything else).
        self._lock = threading.Lock()
        self._resolved: dict[str, list[str]] = {}
        self._resolved_gen = 0
        self._applied_gen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for ep in self.configured:
            if ep not in self._names:
                self._join(ep, ep)
        if self._names:
            self._resolve_names()  # at start, on the caller's thread: the first members
            self._apply_resolved()
            self._thread = threading.Thread(target=self._resolve_loop, name="jetsplit-pool-dns", daemon=True)
            self._thread.start()
        self._heartbeat(time.monotonic())

    # ------------------------------------------------------------------ membership

    @property
    def members(self) -> dict[str, MemberState]:
        """Every member's endpoint and state (retiring members included)."""
        return {ep: m.state for ep, m in self._members.items()}

    @property
    def pending(self) -> int:
        """Requests submitted and neither answered nor expired."""
        return len(self._requests)

    def in_flight(self) -> dict[str, int]:
        """Requests currently routed to each member."""
        return {ep: len(m.routes) for ep, m in self._members.items()}

    def _join(self, endpoint: str, origin: str) -> None:
        client = _MemberClient(endpoint, self.fingerprint, **self._client_kw)
        self._members[endpoint] = _Member(endpoint, origin, client, heard=time.monotonic())
        self.stats.joins += 1
        _log.info("worker pool: member %s joined (from %s)", endpoint, origin)

    def _leave(self, m: _Member) -> None:
        m.client.close()
        del self._members[m.endpoint]
        self.stats.leaves += 1
        _log.info("worker pool: member %s left", m.endpoint)

    def _resolve_names(self) -> None:
        results: dict[str, list[str]] = {}
        for name in self._names:
            try:
                results[name] = sorted(set(self._resolver(name)))
            except OSError as exc:
                # A DNS blip must not empty the pool: keep what we have.
                _log.warning("worker pool: cannot resolve %s (%s); keeping its members", name, exc)
        with self._lock:
            self._resolved.update(results)
            self._resolved_gen += 1

    def _resolve_loop(self) -> None:
        while not self._stop.wait(self.resolve_interval_s):
            try:
                self._resolve_names()
            except Exception:  # a resolver bug must not end re-resolution silently
                _log.exception("worker pool: resolver failed")

    def _apply_resolved(self) -> None:
        with self._lock:
            if self._resolved_gen == self._applied_gen:
                return
            self._applied_gen = self._resolved_gen
            resolved = {k: list(v) for k, v in self._resolved.items()}
        wanted: dict[str, str] = {ep: ep for ep in self.configured if ep not in self._names}
        for name in self._names:
            for ep in resolved.get(name, [m.endpoint for m in self._members.values() if m.origin == name]):
                wanted.setdefault(ep, name)
        for ep, origin in wanted.items():
            m = self._members.get(ep)
            if m is None:
                self._join(ep, origin)
            elif m.retiring:
                m.retiring = False
                _log.info("worker pool: member %s is back in %s", ep, origin)
        for m in list(self._members.values()):
            if m.endpoint not in wanted and not m.retiring:
                m.retiring = True
                _log.info("worker pool: member %s no longer in DNS for %s: retiring", m.endpoint, m.origin)

    # ------------------------------------------------------------------ health

    def _mark_up(self, m: _Member, bundles: list[str]) -> None:
        m.serves_bundle = self.fingerprint in bundles
        if m.state == "up":
            return
        m.state = "up"
        m.strikes = 0
        if m.serves_bundle:
            _log.info("worker pool: member %s up", m.endpoint)
        else:
            _log.warning("worker pool: member %s up, but it does not serve bundle %s... (used only if no member does)",
                         m.endpoint, self.fingerprint[:12])

    def _mark_down(self, m: _Member, reason: str, now: float, hold: bool = False) -> None:
        if m.state == "down":
            return
        was = m.state
        m.state = "down"
        m.pings.clear()  # a pong to a ping sent before this must not revive it
        m.probe_since = None
        if hold:
            m.hold_until = now + self.hold_down_s
        if was == "up":
            self.stats.member_downs += 1
            _log.warning("worker pool: member %s down (%s); %d request(s) in flight on it",
                         m.endpoint, reason, len(m.routes))
        self._rescue(m, now)

    def _rescue(self, m: _Member, now: float) -> None:
        """Re-send once, elsewhere, what ``m`` held; report what cannot be."""
        moved = 0
        for pid in list(m.routes.values()):
            req = self._requests.get(pid)
            if req is None or req.member is not m:
                continue
            if self._resend(req, now):
                moved += 1
            else:
                self._abandon(req)
        if moved:
            _log.info("worker pool: re-sent %d request(s) from %s", moved, m.endpoint)

    def _resend(self, req: _Request, now: float) -> bool:
        left_ms = (req.deadline_at - now) * 1000.0
        if req.attempts >= 2 or left_ms < _MIN_RESEND_MS:
            return False
        try:
            self._send(req, left_ms, exclude=req.member)
        except Unavailable:
            return False
        self.stats.resent += 1
        return True

    def _abandon(self, req: _Request) -> None:
        del self._requests[req.id]
        self._abandoned.append(req.id)
        self.stats.abandoned += 1

    def _heartbeat(self, now: float) -> None:
        self._apply_resolved()
        for m in list(self._members.values()):
            for event in m.client.connection_events():
                if event == zmq.EVENT_DISCONNECTED:
                    self._mark_down(m, "connection lost", now)
                elif event == zmq.EVENT_CONNECTED:
                    m.last_ping = 0.0  # ping now: a restarted worker is back within one round trip
            if m.state == "up" and m.probe_since is not None and now - m.probe_since > self.dead_after_s:
                self._mark_down(m, f"no heartbeat for {self.dead_after_s * 1000:.0f} ms", now)
            # An up member that is talking needs no ping; any other one needs a pong to be up.
            since = now - (max(m.heard, m.last_ping) if m.state == "up" else m.last_ping)
            if since >= self.heartbeat_s:
                m.last_ping = now
                rid = m.client.send_ping()
                if rid is None:
                    if m.state == "up":
                        self._mark_down(m, "connection not ready", now)
                else:
                    m.pings[rid] = now
                    if m.probe_since is None:
                        m.probe_since = now
                    # Pings lost with a dead connection are never answered: keep few.
                    for old in [k for k, t in m.pings.items() if now - t > 4 * self.dead_after_s]:
                        del m.pings[old]
            if m.retiring and not m.routes:
                self._leave(m)

    # ------------------------------------------------------------------ sending

    def _candidates(self, exclude: _Member | None) -> list[_Member]:
        now = time.monotonic()
        up = [m for m in self._members.values()
              if m.state == "up" and not m.retiring and m is not exclude and now >= m.hold_until]
        serving = [m for m in up if m.serves_bundle]
        return serving or up

    def _send(self, req: _Request, deadline_ms: float, exclude: _Member | None = None) -> None:
        candidates = self._candidates(exclude)
        if not candidates:
            raise Unavailable(f"no live worker among {sorted(self._members) or self.configured}")
        # Least in flight, ties round-robin: rotate, then take the first minimum.
        self._rr = (self._rr + 1) % len(candidates)
        order = candidates[self._rr:] + candidates[:self._rr]
        order.sort(key=lambda m: len(m.routes))  # stable: keeps the rotation among ties
        now = time.monotonic()
        for m in order:
            try:
                mrid = m.client.submit(req.stage, req.tensors, deadline_ms, encodings=req.encodings, top_k=req.top_k)
            except Unavailable:
                self._mark_down(m, "request could not be queued", now)
                continue
            req.member, req.member_rid = m, mrid
            req.attempts += 1
            m.routes[mrid] = req.id
            self.last_sent_bytes = m.client.last_sent_bytes
            return
        raise Unavailable(f"no worker took the request among {[m.endpoint for m in order]}")

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
        now = time.monotonic()
        self._next_id = (self._next_id + 1) % (2**63)
        req = _Request(self._next_id, stage, tensors, encodings, top_k, now,
                       now + max(0.0, deadline_ms) / 1000.0)
        self._send(req, deadline_ms)
        self._requests[req.id] = req
        self.stats.submitted += 1
        return req.id

    # ------------------------------------------------------------------ receiving

    def poll_replies(self, timeout_ms: int = 0) -> list[Reply]:
        """Replies that have arrived (pool ids, one per request at most), waiting up
        to ``timeout_ms`` for the first. Heartbeats, membership and re-sends are
        handled here too, within the same wait."""
        end = time.monotonic() + max(0, timeout_ms) / 1000.0
        while True:
            self._pump(0.0 if self._ready else end - time.monotonic())
            if self._ready or time.monotonic() >= end:
                break
        out, self._ready = self._ready, []
        return out

    def _pump(self, wait_s: float) -> None:
        """Heartbeats and membership, then wait up to ``wait_s`` (and no longer than
        the next heartbeat) for messages or connection events, and take them."""
        self._heartbeat(time.monotonic())
        wait_ms = int(max(0.0, min(wait_s, self.heartbeat_s)) * 1000.0)
        poller = zmq.Poller()
        for m in self._members.values():
            poller.register(m.client.socket, zmq.POLLIN)
            if m.client.monitor is not None:
                poller.register(m.client.monitor, zmq.POLLIN)
        poller.poll(wait_ms)
        self._receive(time.monotonic())

    def _receive(self, now: float) -> None:
        for m in list(self._members.values()):
            replies = m.client.poll_replies(0)
            pongs = m.client.take_pongs()
            if replies or pongs:
                m.heard = now
                m.probe_since = None
            if replies:
                m.replied = now
            for rid, bundles in pongs.items():
                if m.pings.pop(rid, None) is not None and now >= m.hold_until:
                    self._mark_up(m, bundles)
            for reply in replies:
                self._on_reply(m, reply, now)
        self._sweep(now)

    def _on_reply(self, m: _Member, reply: Reply, now: float) -> None:
        pid = m.routes.pop(reply.id, None)
        if pid is None:
            return
        req = self._requests.get(pid)
        if req is None:
            self.stats.duplicates += 1  # answered already (or expired): exactly one reply per id
            return
        current = req.member is m and req.member_rid == reply.id
        if reply.status == StatusCode.SHUTTING_DOWN:
            self._mark_down(m, "shutting down", now)  # re-sends the rest of what it held
            if current and not self._resend(req, now):
                self._deliver(req, reply, now)
            return
        if not current and not reply.ok:
            return  # a superseded attempt's error: the re-sent attempt may still succeed
        if reply.ok:
            m.strikes = 0
        self._deliver(req, reply, now)

    def _deliver(self, req: _Request, reply: Reply, now: float) -> None:
        del self._requests[req.id]
        self._ready.append(dataclasses.replace(reply, id=req.id, rtt_ms=(now - req.sent_at) * 1000.0))
        self.stats.replies += 1

    def _sweep(self, now: float) -> None:
        """Let each member's client forget what it will not be answered; notice a
        member whose client reopened its socket (its requests timed out with nothing
        heard from it: the lazy pirate) and rescue what it held."""
        for m in list(self._members.values()):
            for rid in m.client.expire(now):
                pid = m.routes.pop(rid, None)
                req = self._requests.get(pid) if pid is not None else None
                if req is None or req.member is not m or req.member_rid != rid:
                    continue
                if req.deadline_at > now:
                    # Abandoned by a reconnect with time left: re-send once, or report.
                    if not self._resend(req, now):
                        self._abandon(req)
            if m.client.reconnects != m.reconnects_seen:
                m.reconnects_seen = m.client.reconnects
                self._mark_down(m, "requests timed out with nothing heard", now)

    def expire(self, now: float | None = None) -> list[int]:
        """Ids of requests past their deadline, and of requests lost with a member
        that could not be re-sent; each id is reported once, and never also answered."""
        t = time.monotonic() if now is None else now
        self._receive(time.monotonic())
        out = self._abandoned
        self._abandoned = []
        for req in [r for r in self._requests.values() if r.deadline_at <= t]:
            del self._requests[req.id]
            out.append(req.id)
            self.stats.expired += 1
            m = req.member
            # It counts against the member only if no reply at all came from it since
            # it was sent: a busy worker still answers others, a stuck one answers none.
            if m is not None and m.state == "up" and m.replied <= req.sent_at:
                m.strikes += 1
                if m.strikes >= self.timeout_strikes:
                    self._mark_down(m, f"{m.strikes} requests in a row timed out", t, hold=True)
        return out

    def wait_ready(self, timeout_ms: int | None = None) -> bool:
        """Wait until some member serving our bundle answered a ping (True), or the
        timeout passes (False). Replies that arrive meanwhile are kept for
        :meth:`poll_replies`."""
        wait = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        end = time.monotonic() + wait / 1000.0
        while not self._candidates(None):
            left = end - time.monotonic()
            if left <= 0:
                return False
            self._pump(left)
        return True

    def close(self) -> None:
        """Stop re-resolving and close every member's socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for m in list(self._members.values()):
            m.client.close()
        self._members.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

