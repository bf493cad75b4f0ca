"""The sockets: the client's configured DEALER, the server's ROUTER, sending.

Every socket gets ``LINGER 0`` (closing never waits for a dead peer), send and
receive high-water marks, ``ZMQ_MAXMSGSIZE`` (libzmq drops a peer that sends a
larger frame before our code sees a byte), reconnect intervals, and ZMTP
heartbeats. :mod:`.transport` re-exports all of it beside its ``Server``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from . import security
from .codec import DEFAULT_LIMITS, Frame, Limits
from .sockio import send_parts, wait

__all__ = ["DEFAULT_OPTIONS", "SocketOptions", "dealer_socket", "router_socket", "send_frames"]


@dataclass(frozen=True)
class SocketOptions:
    """Socket settings shared by clients and servers.

    ``heartbeat_ivl_ms`` turns on ZMTP heartbeats so a silently dead peer (a cut
    link drops packets without a reset) is noticed and its connection dropped (0
    disables them). ``connect_timeout_ms`` abandons a connection attempt whose SYNs
    go unanswered, so the next attempt starts fresh instead of waiting out the
    kernel's growing SYN retransmission intervals: with both, a link restored after
    a cut is used again within about ``connect_timeout_ms + reconnect_ivl_max_ms``.
    """

    sndhwm: int = 1000
    rcvhwm: int = 1000
    linger_ms: int = 0
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 1000
    heartbeat_ivl_ms: int = 1000
    heartbeat_timeout_ms: int = 3000
    connect_timeout_ms: int = 1000


#: The options every socket gets unless told otherwise.
DEFAULT_OPTIONS = SocketOptions()


def _configure(sock: zmq.Socket[Any], limits: Limits, options: SocketOptions) -> None:
    sock.setsockopt(zmq.LINGER, options.linger_ms)
    sock.setsockopt(zmq.SNDHWM, options.sndhwm)
    sock.setsockopt(zmq.RCVHWM, options.rcvhwm)
    sock.setsockopt(zmq.MAXMSGSIZE, limits.max_message_bytes)
    sock.setsockopt(zmq.RECONNECT_IVL, options.reconnect_ivl_ms)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, options.reconnect_ivl_max_ms)
    if options.connect_timeout_ms > 0:
        sock.setsockopt(zmq.CONNECT_TIMEOUT, options.connect_timeout_ms)
    if options.heartbeat_ivl_ms > 0:
        sock.setsockopt(zmq.HEARTBEAT_IVL, options.heartbeat_ivl_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, options.heartbeat_timeout_ms)


def dealer_socket(
    context: zmq.Context[Any],
    endpoints: Sequence[str],
    *,
    limits: Limits = DEFAULT_LIMITS,
    options: SocketOptions = DEFAULT_OPTIONS,
    curve: security.CurveClient | None = None,
) -> zmq.Socket[Any]:
    """A configured DEALER connected to every endpoint.

    ``ZMQ_IMMEDIATE`` keeps requests off connections that are not up (a dead worker,
    or one that refused our CURVE key), so round-robin skips them instead of queueing
    requests that will never be answered.
    """
    sock = context.socket(zmq.DEALER)
    try:
        _configure(sock, limits, options)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        if curve is not None:
            security.apply_client(sock, curve)
        for endpoint in endpoints:
            sock.connect(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def router_socket(
    context: zmq.Context[Any],
    endpoints: Sequence[str],
    *,
    limits: Limits = DEFAULT_LIMITS,
    options: SocketOptions = DEFAULT_OPTIONS,
    curve: security.CurveServer | None = None,
) -> zmq.Socket[Any]:
    """A configured ROUTER bound to every endpoint (start ZAP before calling this)."""
    sock = context.socket(zmq.ROUTER)
    try:
        _configure(sock, limits, options)
        if curve is not None:
            security.apply_server(sock, curve)
        for endpoint in endpoints:
            sock.bind(endpoint)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


def send_frames(sock: zmq.Socket[Any], frames: Sequence[Frame], timeout_ms: int) -> bool:
    """Send a multipart message without copying; False if it could not be queued
    within ``timeout_ms`` (no peer connected, or the high-water mark is reached)."""
    # Try first: a connected socket below its high-water mark takes the message at
    # once, and the poll would only cost a system call on every request.
    if send_parts(sock, frames):
        return True
    return timeout_ms > 0 and wait(sock, timeout_ms, writable=True) and send_parts(sock, frames)
