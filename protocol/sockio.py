"""Lean multipart send, receive and wait on a ZeroMQ socket.

pyzmq's ``send_multipart``/``recv_multipart``/``Socket.poll`` are convenient but
spend several microseconds of Python per message: enum arithmetic on the flags
(``SNDMORE | flags`` is a ``Flag.__or__`` call), a ``getsockopt(RCVMORE)`` per frame,
and a fresh ``Poller`` for every ``poll``. On a worker handling thousands of
messages a second, or a 1 MiB round trip that should cost little more than bare
ZeroMQ, that is a visible share of the time (bench/transport.py). These helpers call
the socket's compiled methods with plain integer flags and read ``Frame.more``.

Semantics match pyzmq's: frames go out without copying (pyzmq still copies those
below the socket's ``copy_threshold``), frames come in as ``zmq.Frame`` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq
from zmq.backend import Socket as _CSocket
from zmq.backend import zmq_poll

__all__ = ["readable", "recv_parts", "send_parts", "wait"]

_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE) | _NOBLOCK
_POLLIN = int(zmq.POLLIN)
_POLLOUT = int(zmq.POLLOUT)
_send = _CSocket.send
_recv = _CSocket.recv


def send_parts(sock: zmq.Socket[Any], parts: Sequence[Any]) -> bool:
    """Queue ``parts`` as one multipart message without blocking.

    Returns False when the message cannot be queued now (no connected peer for a
    DEALER with ``ZMQ_IMMEDIATE``, or the high-water mark is reached). A message is
    all or nothing: libzmq only fails a send on its first frame.
    """
    last = len(parts) - 1
    try:
        for i, part in enumerate(parts):
            _send(sock, part, _NOBLOCK if i == last else _MORE, copy=False)
    except zmq.Again:
        return False
    return True


def recv_parts(sock: zmq.Socket[Any]) -> list[zmq.Frame] | None:
    """One multipart message if one is queued now, else None (never blocks)."""
    try:
        frame: zmq.Frame = _recv(sock, _NOBLOCK, copy=False)
    except zmq.Again:
        return None
    parts = [frame]
    while frame.more:
        # The rest of a multipart message is delivered atomically with its first
        # frame, so these never wait.
        frame = _recv(sock, _NOBLOCK, copy=False)
        parts.append(frame)
    return parts


def wait(sock: zmq.Socket[Any], timeout_ms: int, *, writable: bool = False) -> bool:
    """Wait up to ``timeout_ms`` (-1: forever) until ``sock`` can be read (or
    written); True if it can."""
    events = zmq_poll([(sock, _POLLOUT if writable else _POLLIN)], timeout_ms)
    return bool(events)


def readable(sock: zmq.Socket[Any]) -> bool:
    """True if a message is queued on ``sock`` now: a poll that does not wait
    (cheaper than a receive on an empty socket, which raises, and than reading
    ``ZMQ_EVENTS``, which pyzmq turns into an enum)."""
    return bool(zmq_poll([(sock, _POLLIN)], 0))
