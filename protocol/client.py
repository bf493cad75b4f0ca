"""The client API the edge agent and the tests use.

Synchronous::

    with Client(["tcp://worker:5555"], fingerprint, timeout_ms=200) as client:
        client.ping()
        reply = client.infer(1, {"act": activation}, deadline_ms=150, encodings="i8")
        if reply.ok:
            label = reply.top1

Asynchronous (the edge agent's window of requests in flight)::

    rid = client.submit(1, {"act": activation}, deadline_ms=150)
    for reply in client.poll_replies(timeout_ms=5):
        ...                       # reply.id == rid for one of them
    for rid in client.expire():   # requests that will not be answered
        ...                       # fall back to the edge answer

A timed-out request closes and reopens the socket (the "lazy pirate" pattern): stale
replies and requests queued to a dead worker are discarded, and a restarted worker
is reached again. A client is not thread-safe: use it from one thread.
"""

from __future__ import annotations

import collections
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zmq

from . import security
from .codec import (
    DEFAULT_LIMITS,
    Encodings,
    Limits,
    decode_message,
    describe_for,
    encode_infer,
    encode_message,
    ping_for,
)
from .errors import DecodeError, RequestTimeout, Unavailable
from .messages import Description, ErrorReply, Message, Pong
from .replies import PingReply, Reply, reply_for
from .sockio import readable, recv_parts, wait
from .transport import DEFAULT_OPTIONS, SocketOptions, dealer_socket, send_frames

__all__ = ["Client", "PingReply", "Reply"]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    sent_at: float
    expires_at: float


class Client:
    """A DEALER-based client of one or more workers.

    ``endpoints`` are ZeroMQ endpoints (``tcp://host:port``, ``ipc:///path``);
    requests are spread round-robin over the connected ones. ``fingerprint`` is the
    bundle's hex SHA-256. ``timeout_ms`` is the default wait for a reply and for a
    connection to be ready to send.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        fingerprint: str,
        timeout_ms: int = 1000,
        *,
        curve: security.CurveClient | None = None,
        encodings: Encodings = None,
        top_k: int = 0,
        limits: Limits = DEFAULT_LIMITS,
        options: SocketOptions = DEFAULT_OPTIONS,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("Client needs at least one endpoint")
        self.fingerprint = fingerprint
        self.timeout_ms = int(timeout_ms)
        self.encodings = encodings
        self.top_k = top_k
        self.limits = limits
        self._curve = curve
        self._options = options
        self._context: zmq.Context[Any] = context if context is not None else zmq.Context.instance()
        # Random start: ids from different clients differ in the workers' logs.
        self._next_id = secrets.randbits(31)
        self._pending: dict[int, _Pending] = {}
        self._abandoned: list[int] = []
        self._ready: collections.deque[Reply] = collections.deque()
        self._pongs: dict[int, PingReply] = {}
        self._descriptions: dict[int, Description] = {}
        self._last_recv = time.monotonic()
        self.reconnects = 0
        self.last_sent_bytes = 0
        self._socket: zmq.Socket[Any] | None = None
        self._socket = self.open_socket()

    # ------------------------------------------------------------------ socket
    # open_socket and close_socket are the hooks a subclass overrides to shape the
    # socket (the worker pool's member client attaches a connection monitor).

    @property
    def context(self) -> zmq.Context[Any]:
        return self._context

    @property
    def options(self) -> SocketOptions:
        return self._options

    @property
    def curve(self) -> security.CurveClient | None:
        return self._curve

    def open_socket(self) -> zmq.Socket[Any]:
        """A new DEALER connected to :attr:`endpoints`: called at start and by every
        :meth:`reconnect`."""
        return dealer_socket(self._context, self.endpoints, limits=self.limits, options=self._options, curve=self._curve)

    def close_socket(self, sock: zmq.Socket[Any]) -> None:
        """Close a socket :meth:`open_socket` made (LINGER 0: nothing queued is kept)."""
        sock.close(linger=0)

    @property
    def socket(self) -> zmq.Socket[Any]:
        """The live socket (to poll on); :class:`Unavailable` once closed."""
        if self._socket is None:
            raise Unavailable("client is closed")
        return self._socket

    def reconnect(self) -> None:
        """Close and reopen the socket. Requests in flight are abandoned: their ids
        are returned by the next :meth:`expire`."""
        if self._socket is not None:
            self.close_socket(self._socket)
            self._socket = None
        self._abandoned.extend(self._pending)
        self._pending.clear()
        self._pongs.clear()
        self._descriptions.clear()
        self.reconnects += 1
        self._socket = self.open_socket()

    def close(self) -> None:
        """Close the socket (LINGER 0: nothing queued is kept)."""
        if self._socket is not None:
            self.close_socket(self._socket)
            self._socket = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Requests sent and neither answered nor expired."""
        return len(self._pending)

    def wait_ready(self, timeout_ms: int | None = None) -> bool:
        """Wait until some worker connection can take a request (True), or the
        timeout passes (False). Useful before the first :meth:`submit`."""
        wait = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        return bool(self.socket.poll(wait, zmq.POLLOUT))

    def _new_id(self) -> int:
        # 1 .. 2^63-1: a server answers id 0 only to a request whose id it could not read.
        self._next_id = self._next_id % (2**63 - 1) + 1
        return self._next_id

    # ------------------------------------------------------------------ infer

    def submit(
        self,
        stage: int,
        tensors: Mapping[str, np.ndarray[Any, Any]],
        deadline_ms: float,
        *,
        encodings: Encodings = None,
        top_k: int | None = None,
        send_timeout_ms: int = 0,
    ) -> int:
        """Send an ``infer`` request without waiting for the reply; return its id.

        Raises :class:`Unavailable` if no connection can take it within
        ``send_timeout_ms`` (0: not at all), :class:`EncodeError` for bad tensors.
        """
        request_id, now = self._send_request(stage, tensors, deadline_ms, encodings, top_k, send_timeout_ms)
        self._pending[request_id] = _Pending(now, now + max(0.0, deadline_ms) / 1000.0)
        return request_id

    def _send_request(self, stage: int, tensors: Mapping[str, np.ndarray[Any, Any]], deadline_ms: float,
                      encodings: Encodings, top_k: int | None, send_timeout_ms: int) -> tuple[int, float]:
        """Encode and send one request: its id and when it was sent."""
        request_id = self._new_id()
        frames = encode_infer(
            request_id,
            self.fingerprint,
            stage,
            deadline_ms,
            tensors,
            self.encodings if encodings is None else encodings,
            self.top_k if top_k is None else top_k,
        )
        now = time.monotonic()
        if not send_frames(self.socket, frames, send_timeout_ms):
            raise Unavailable(f"no worker connection ready among {self.endpoints}")
        # What went up the link, header included: the edge accounts it per frame.
        sent = 0
        for f in frames:
            sent += len(f) if type(f) is bytes else memoryview(f).nbytes
        self.last_sent_bytes = sent
        return request_id, now

    def poll_replies(self, timeout_ms: int = 0) -> list[Reply]:
        """Replies that have arrived, waiting up to ``timeout_ms`` for the first one.

        Replies to requests no longer pending (expired, abandoned) are dropped.
        """
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        while True:
            # Once a reply is in hand, only drain what is already queued.
            left = 0 if self._ready else max(0, int((deadline - time.monotonic()) * 1000.0))
            if self._receive_one(left) is None:
                break
        out = list(self._ready)
        self._ready.clear()
        return out

    def expire(self, now: float | None = None) -> list[int]:
        """Forget requests whose deadline has passed, and those abandoned by a
        reconnect; return their ids (the caller falls back to the edge answer).

        If nothing at all was received since the oldest expired request was sent,
        the connection is presumed dead and the socket is reopened.
        """
        t = time.monotonic() if now is None else now
        expired = [rid for rid, p in self._pending.items() if p.expires_at <= t]
        oldest = min((self._pending[rid].sent_at for rid in expired), default=None)
        for rid in expired:
            del self._pending[rid]
        if oldest is not None and self._last_recv < oldest:
            self.reconnect()
        out = expired + self._abandoned
        self._abandoned = []
        return out

    def infer(
        self,
        stage: int,
        tensors: Mapping[str, np.ndarray[Any, Any]],
        deadline_ms: float | None = None,
        *,
        encodings: Encodings = None,
        top_k: int | None = None,
        timeout_ms: int | None = None,
    ) -> Reply:
        """Send one ``infer`` request and wait for its reply.

        ``deadline_ms`` (default: the timeout) is what the server is told; the wait
        is ``timeout_ms`` (default: the client's). Error statuses come back as a
        :class:`Reply` with ``ok`` False; no reply in time raises
        :class:`RequestTimeout` after reopening the socket, and the requests
        :meth:`submit` had in flight on it are reported by the next :meth:`expire`.
        """
        wait = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        deadline = float(wait if deadline_ms is None else deadline_ms)
        if not self._pending and not self._ready:
            return self._infer_alone(stage, tensors, deadline, encodings, top_k, wait)
        start = time.monotonic()
        try:
            rid = self.submit(stage, tensors, deadline, encodings=encodings, top_k=top_k, send_timeout_ms=wait)
        except Unavailable:
            # The others in flight are abandoned with the socket: the caller's next
            # expire() reports them (each request ends exactly once).
            self.reconnect()
            raise RequestTimeout(f"no worker reachable at {self.endpoints} within {wait} ms") from None
        # Keep the request pending for as long as we wait, whatever its deadline.
        end = start + wait / 1000.0
        pending = self._pending[rid]
        pending.expires_at = max(pending.expires_at, end)
        ready = self._ready
        for i, reply in enumerate(ready):  # answered while submit() was sending? (rare)
            if reply.id == rid:
                del ready[i]
                return reply
        while True:
            left = int((end - time.monotonic()) * 1000.0)
            if left <= 0:
                break
            got = self._receive_one(left)
            if type(got) is Reply and got.id == rid:
                ready.pop()  # _receive_one appended it last
                return got
        self._pending.pop(rid, None)
        # Requests in flight on the old socket are gone too: reconnect() files them
        # for the caller's next expire() (discarding them here lost them for good).
        self.reconnect()
        raise RequestTimeout(f"no reply to request {rid} within {wait} ms from {self.endpoints}")

    def _infer_alone(self, stage: int, tensors: Mapping[str, np.ndarray[Any, Any]], deadline_ms: float,
                     encodings: Encodings, top_k: int | None, wait_ms: int) -> Reply:
        """:meth:`infer` with no other request in flight, the usual case: nothing
        to keep apart, so no bookkeeping beyond the one id (a synchronous client's
        whole per-request cost is this method; see bench/transport.py)."""
        try:
            rid, start = self._send_request(stage, tensors, deadline_ms, encodings, top_k, wait_ms)
        except Unavailable:
            self.reconnect()
            raise RequestTimeout(f"no worker reachable at {self.endpoints} within {wait_ms} ms") from None
        sock = self.socket
        end = start + wait_ms / 1000.0
        while (left := int((end - time.monotonic()) * 1000.0)) > 0:
            if not wait(sock, left):
                continue
            got = self._read(sock)
            if got is None or got is True:
                continue
            now, msg, received = got
            if msg.id == rid:
                reply = reply_for(msg, received, (now - start) * 1000.0)
                if reply is not None:
                    return reply
            # Anything else answers a request given up on earlier: dropped.
        self.reconnect()
        raise RequestTimeout(f"no reply to request {rid} within {wait_ms} ms from {self.endpoints}")

    def _read(self, sock: zmq.Socket[Any]) -> tuple[float, Message, dict[str, np.ndarray[Any, Any]]] | Literal[True] | None:
        """Receive one queued message: ``(when, header, tensors)`` of a reply, True
        for one handled here (a malformed one is dropped, a ``pong`` filed for
        :meth:`ping`), None when nothing is queued."""
        frames = recv_parts(sock)
        if frames is None:
            return None
        now = self._last_recv = time.monotonic()
        try:
            msg, tensors = decode_message(frames, self.limits)  # type: ignore[arg-type]  # zmq.Frame is a buffer
        except DecodeError as exc:
            _log.warning("dropped a malformed reply: %s", exc)
            return True
        if type(msg) is Pong:
            self._pongs[msg.id] = PingReply(msg.server, list(msg.bundles), msg.max_message_bytes, 0.0,
                                            msg.state, msg.load)
            return True
        if type(msg) is Description:
            self._descriptions[msg.id] = msg
            return True
        if type(msg) is ErrorReply and msg.id == 0:
            # SPEC.md 7.1: the server could not read a request's id, so it answers no
            # request in particular (each runs on to its own reply or timeout); it
            # means this side sent something malformed.
            _log.warning("the server could not read the id of a request we sent: %s (status %d)",
                         msg.message, msg.status)
            return True
        return now, msg, tensors

    def _receive_one(self, timeout_ms: int) -> Reply | Literal[True] | None:
        """Receive and dispatch one message: a Reply to a pending request, True for
        one handled otherwise (a pong filed, a malformed or late reply dropped), or
        None on timeout."""
        sock = self.socket
        if not (wait(sock, timeout_ms) if timeout_ms > 0 else readable(sock)):
            return None
        got = self._read(sock)
        if got is None or got is True:
            return got
        now, msg, received = got
        pending = self._pending.pop(msg.id, None)
        if pending is None:
            return True  # late reply to a request we gave up on
        reply = reply_for(msg, received, (now - pending.sent_at) * 1000.0)
        if reply is None:
            return True
        self._ready.append(reply)
        return reply

    # ------------------------------------------------------------------ ping

    def send_ping(self, timeout_ms: int = 0) -> int | None:
        """Send a ``ping`` without waiting for its ``pong``: its id, or None if no
        connection takes it within ``timeout_ms``. The pong is filed for
        :meth:`take_pongs` by whichever call receives it."""
        rid = self._new_id()
        return rid if send_frames(self.socket, encode_message(ping_for(rid)), timeout_ms) else None

    def take_pongs(self) -> dict[int, PingReply]:
        """Pongs received and not yet taken: ping id -> the server's pong (its
        ``rtt_ms`` is 0: the client does not keep when each ping went out)."""
        out = self._pongs
        self._pongs = {}
        return out

    def ping(self, timeout_ms: int | None = None) -> PingReply:
        """Health check: one ``ping``, its ``pong`` or :class:`RequestTimeout`."""
        rid, start = self._ask(ping_for, self._pongs, "pong", timeout_ms)
        pong = self._pongs.pop(rid)
        rtt = (time.monotonic() - start) * 1000.0
        return PingReply(pong.server, pong.bundles, pong.max_message_bytes, rtt, pong.state, pong.load)

    def describe(self, timeout_ms: int | None = None) -> Description:
        """What the server serves (SPEC.md 3.8): one ``describe``, its
        ``description`` or :class:`RequestTimeout`."""
        rid, _ = self._ask(describe_for, self._descriptions, "description", timeout_ms)
        return self._descriptions.pop(rid)

    def _ask(self, header: Callable[[int], Message], answers: Mapping[int, object], what: str,
             timeout_ms: int | None) -> tuple[int, float]:
        """Send a header-only request and wait until its answer is filed in
        ``answers`` (by :meth:`_read`); its id and when it was sent."""
        wait = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        rid = self._new_id()
        start = time.monotonic()
        if not send_frames(self.socket, encode_message(header(rid)), wait):
            self.reconnect()
            raise RequestTimeout(f"no worker reachable at {self.endpoints} within {wait} ms")
        end = start + wait / 1000.0
        # Pending like a request, so that an error reply to it is not dropped as late.
        self._pending[rid] = _Pending(start, end)
        try:
            while rid not in answers:
                left = int((end - time.monotonic()) * 1000.0)
                if left <= 0:
                    del self._pending[rid]  # not a request of the caller's: expire() must not report it
                    self.reconnect()
                    raise RequestTimeout(f"no {what} within {wait} ms from {self.endpoints}")
                got = self._receive_one(left)
                if type(got) is Reply and got.id == rid:
                    self._ready.pop()  # _receive_one appended it last
                    got.raise_for_status()
        finally:
            self._pending.pop(rid, None)
        return rid, start

