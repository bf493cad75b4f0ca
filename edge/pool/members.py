"""One member of the worker pool: its client and what the pool knows about it.

:class:`MemberClient` is a :class:`~jetsplit.protocol.Client` of one worker with
a socket monitor on top that reports connects, disconnects and failed handshakes (a
crashed worker is seen at once, not at a deadline; a worker that refuses our CURVE
key is named). :class:`Member` is the pool's record of it: its state,
the requests routed to it, its pings and the health bookkeeping
(:mod:`jetsplit.edge.pool.membership` decides on it).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

import zmq
from zmq.utils.monitor import recv_monitor_message

from jetsplit.protocol import Client
from jetsplit.protocol.transport import dealer_socket

__all__ = ["HANDSHAKE_FAILED", "Member", "MemberClient", "MemberState"]

MemberState = Literal["joining", "up", "down"]

_MONITOR_IDS = itertools.count()

# What the pool watches on each member's socket. A ZMTP handshake ends after the TCP
# connect (later still with CURVE): only then does a socket with ZMQ_IMMEDIATE take
# a message, so the first ping waits for HANDSHAKE_SUCCEEDED, not for CONNECTED.
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_MONITORED = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED | HANDSHAKE_FAILED


class MemberClient(Client):
    """A ``Client`` of one worker, plus a socket monitor that reports connects and
    disconnects. It extends ``Client`` only through its public hooks:
    :meth:`open_socket` (called again by every reconnect) and :meth:`close_socket`;
    pings that do not wait and the pongs received are ``Client``'s own
    (``send_ping``, ``take_pongs``)."""

    def __init__(self, endpoint: str, fingerprint: str, **kw: Any) -> None:
        self.monitor: zmq.Socket[Any] | None = None
        super().__init__([endpoint], fingerprint, **kw)

    def open_socket(self) -> zmq.Socket[Any]:
        # A reconnect (lazy pirate) opens a new socket: it gets a new monitor too.
        self._close_monitor()
        sock = dealer_socket(self.context, [], limits=self.limits, options=self.options, curve=self.curve)
        try:
            if "[" in self.endpoints[0]:
                sock.setsockopt(zmq.IPV6, 1)  # a resolved IPv6 address: tcp://[::1]:5555
            # Our own unique address: a closed socket's monitor may still hold pyzmq's default one.
            addr = f"inproc://jetsplit-pool-monitor-{next(_MONITOR_IDS)}"
            sock.monitor(addr, _MONITORED)
            monitor = self.context.socket(zmq.PAIR)
            monitor.setsockopt(zmq.LINGER, 0)
            monitor.connect(addr)
            self.monitor = monitor
            sock.connect(self.endpoints[0])
        except BaseException:
            sock.close(linger=0)
            self._close_monitor()
            raise
        return sock

    def close_socket(self, sock: zmq.Socket[Any]) -> None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        super().close_socket(sock)
        self._close_monitor()

    def _close_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.close(linger=0)
            self.monitor = None

    def connection_events(self) -> list[tuple[int, int]]:
        """Monitor events since the last call, as ``(event, value)``: ``zmq.EVENT_CONNECTED``,
        ``EVENT_DISCONNECTED``, ``EVENT_HANDSHAKE_SUCCEEDED``, or one of
        :data:`HANDSHAKE_FAILED` (for ``EVENT_HANDSHAKE_FAILED_AUTH`` the value is the
        ZAP status code the worker sent, 400 for a key it does not allow)."""
        events: list[tuple[int, int]] = []
        while self.monitor is not None:
            try:
                msg = recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            events.append((int(msg["event"]), int(msg["value"])))
        return events


@dataclass
class Member:
    endpoint: str
    origin: str  # the configured entry it came from (a name, or itself)
    client: MemberClient
    state: MemberState = "joining"
    retiring: bool = False  # gone from DNS: no new requests, answers still taken
    draining: bool = False  # its pong says so: no new requests, answers still taken
    serves_bundle: bool = True
    routes: dict[int, int] = field(default_factory=dict)  # member's request id -> pool id
    pings: dict[int, float] = field(default_factory=dict)  # ping id -> sent at
    last_ping: float = 0.0
    # A ping is due but the connection could not take it yet: sent the moment it can
    # (the pool waits for the socket to become writable), not a heartbeat later.
    ping_owed: bool = True
    handshake_failures: int = 0  # in a row: the first is logged, the rest counted
    probe_since: float | None = None  # first ping sent since we last heard from it
    heard: float = 0.0  # last message of any kind from it
    replied: float = 0.0  # last reply to a request
    strikes: int = 0
    hold_until: float = 0.0
    reconnects_seen: int = 0
    overloaded_until: float = 0.0  # it refused a request OVERLOADED: others are preferred until then
