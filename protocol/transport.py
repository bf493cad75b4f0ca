"""The server helper, over the sockets :mod:`.sockets` makes (re-exported here).

Every socket gets ``LINGER 0`` (closing never waits for a dead peer), send and
receive high-water marks, and ``ZMQ_MAXMSGSIZE`` (libzmq drops a peer that sends a
larger frame before our code sees a byte). Nothing blocks without a timeout.

A worker uses :class:`Server` one request at a time or in batches::

    server = Server(["tcp://*:5555"], bundles=[fingerprint])
    while running:
        request = server.recv(timeout_ms=100)          # pings answered inside
        if request is None:
            continue                                   # timeout: check shutdown, flush batches
        header, tensors = request.header, request.tensors
        reply, payloads = result_for(header, scores, stage=header.stage)
        server.send(request, reply, payloads)          # or server.post(...) from another thread

or hands a handler to :meth:`Server.serve`. Malformed requests never reach the
caller: :meth:`Server.recv` answers them with an ``error`` reply and keeps waiting.
"""

from __future__ import annotations

import collections
import functools
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import numpy as np
import zmq

from . import security
from .codec import (
    DEFAULT_LIMITS,
    Frame,
    Limits,
    decode_message,
    encode_header,
    encode_message,
    error_for,
)
from .errors import DecodeError, StatusCode
from .messages import (
    COMPRESSIONS,
    ENCODINGS,
    SUPPORTED_VERSIONS,
    BundleInfo,
    Describe,
    Description,
    ErrorReply,
    InferRequest,
    Message,
    Ping,
    Pong,
    Result,
    ServerLimits,
)
from .payloads import decodable
from .sockets import DEFAULT_OPTIONS, SocketOptions, dealer_socket, router_socket, send_frames
from .sockio import readable, recv_parts, send_parts

__all__ = [
    "DEFAULT_OPTIONS",
    "Handler",
    "HandlerReply",
    "OutFrame",
    "Request",
    "Server",
    "SocketOptions",
    "dealer_socket",
    "router_socket",
    "send_frames",
]

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    """One decoded request as the server sees it.

    ``route`` is where the reply goes (the client's identity, plus the empty
    delimiter when the client is a REQ socket). ``tensors`` may view the received
    frames, which they keep alive. ``received_at`` is ``time.monotonic()``.
    ``payloads`` are the received payload frames, one per tensor descriptor: a
    reply may send one back as it came (libzmq shares the buffer, no copy and no
    Python-side buffer tracking), as the echo server does.
    """

    route: tuple[bytes, ...]
    header: InferRequest | Ping
    tensors: dict[str, np.ndarray[Any, Any]]
    received_at: float
    payloads: Sequence[zmq.Frame] = ()

    @property
    def nbytes(self) -> int:
        """Bytes of tensor payload the request carried."""
        return sum(len(f) for f in self.payloads)

    @property
    def deadline_at(self) -> float:
        """Monotonic time after which the answer is useless to the client."""
        if isinstance(self.header, InferRequest):
            return self.received_at + self.header.deadline_ms / 1000.0
        return float("inf")

    def remaining_ms(self, now: float | None = None) -> float:
        """Milliseconds left before the deadline (negative once it has passed)."""
        return (self.deadline_at - (time.monotonic() if now is None else now)) * 1000.0

    def expired(self, now: float | None = None) -> bool:
        """True once the deadline has passed."""
        return self.remaining_ms(now) <= 0.0


#: An outgoing payload frame: bytes, a buffer, or a received frame sent on as it is.
OutFrame = Frame | zmq.Frame
#: What a handler returns: a header alone, or a header and its payload frames.
HandlerReply = Result | ErrorReply | tuple[Result | ErrorReply, Sequence[OutFrame]]
#: ``handler(header, tensors) -> reply`` as :meth:`Server.serve` calls it.
Handler = Callable[[InferRequest, dict[str, np.ndarray[Any, Any]]], HandlerReply]


class Server:
    """The server side of the protocol: a ROUTER plus decoding, limits and errors.

    Single-threaded like any zmq socket: :meth:`recv`, :meth:`send`,
    :meth:`send_error` and :meth:`serve` belong to one thread. Other threads (engine
    workers) hand replies back with :meth:`post`, which is thread-safe and wakes up
    a :meth:`recv` in progress.

    ``bundles`` and ``name`` are reported in ``pong`` replies; assign to
    ``server.bundles`` when the set of loaded bundles changes. ``keep_f16`` and
    ``screen`` are :func:`~.codec.decode_message`'s: requests' ``f16`` tensors stay
    float16; ``screen(header, payload_bytes)`` may refuse a request from its header
    alone by raising a :class:`DecodeError` (admission control), which is answered
    at once like any malformed request.

    ``state`` (``serving`` or ``draining``) and ``load()`` (requests held, queued or
    running) go into every ``pong``; ``describe()`` returns the bundles part of the
    ``description`` a ``describe`` request gets (none by default). The server fills
    in its name, state, limits and the encodings it can decode.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        bundles: Sequence[str] = (),
        name: str = "jetsplit",
        limits: Limits = DEFAULT_LIMITS,
        options: SocketOptions = DEFAULT_OPTIONS,
        curve: security.CurveServer | None = None,
        context: zmq.Context[Any] | None = None,
        answer_pings: bool = True,
        keep_f16: bool = False,
        screen: Callable[[Message, int], None] | None = None,
    ) -> None:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self.keep_f16 = keep_f16
        self.screen = screen
        self.bundles: list[str] = list(bundles)
        self.state: Literal["serving", "draining"] = "serving"
        self.load: Callable[[], int] = lambda: 0
        self.describe: Callable[[], list[BundleInfo]] = list
        self.name = name
        self.limits = limits
        self.answer_pings = answer_pings
        # Our own context by default: a ZAP authenticator is per context, and a
        # private one means closing the server cannot hang on other sockets.
        self._own_context = context is None
        self.context: zmq.Context[Any] = zmq.Context() if context is None else context
        self._auth: Any = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # deque.append and popleft are atomic: engine threads append, the socket
        # thread pops, no lock needed.
        self._outbox: collections.deque[Callable[[], object]] = collections.deque()
        self._sleeping = False
        self._closed = False
        try:
            if curve is not None:
                self._auth = security.start_authenticator(self.context, curve.allowed_clients_dir)
            self.socket = router_socket(self.context, eps, limits=limits, options=options, curve=curve)
        except BaseException:
            self._close_resources()
            raise
        self._poll_items: list[tuple[Any, int]] = [(self.socket, zmq.POLLIN), (self._wake_r.fileno(), zmq.POLLIN)]

    @property
    def last_endpoint(self) -> str:
        """The last bound endpoint as libzmq resolved it (``tcp://127.0.0.1:*`` -> port)."""
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    # ------------------------------------------------------------------ receive

    def recv(self, timeout_ms: int) -> Request | None:
        """The next valid request, or None once ``timeout_ms`` has passed or after
        running what other threads posted with :meth:`call_soon` (or :meth:`post`).

        Answers malformed requests with an error reply (never raises for what a
        peer sent) and pings when ``answer_pings``.
        """
        # Set now, not when idle: a flood of malformed messages must not keep the
        # caller (its watchdog, its stop check) from getting control back.
        deadline = time.monotonic() + max(0, timeout_ms) / 1000.0
        sock = self.socket
        polled_in = False  # the last poll said the socket has a message
        while True:
            if self._outbox:
                self._flush_outbox()
            # Ask libzmq whether a message is queued before receiving: a receive on
            # an empty socket costs a raised zmq.Again, several times the query.
            if polled_in or readable(sock):
                polled_in = False
                frames = recv_parts(sock)
                if frames is not None:
                    request = self._decode(frames)
                    if request is not None:
                        return request
                if time.monotonic() >= deadline:
                    return None
                continue
            left = int((deadline - time.monotonic()) * 1000.0)
            if left <= 0:
                return None
            # Say we are about to sleep, then look at the outbox once more: a
            # call_soon either lands before that look or sees the flag and wakes us.
            self._sleeping = True
            if self._outbox:
                self._sleeping = False
                continue
            events = zmq.zmq_poll(self._poll_items, left)
            self._sleeping = False
            polled_in = any(e[0] is sock for e in events)
            if len(events) > 1 or (events and not polled_in):
                # Woken by call_soon: run what was posted, then let the caller look
                # again (a posted hand-over may change how long it should wait).
                self._drain_wakeups()
                self._flush_outbox()
                if not readable(sock):
                    return None

    def _decode(self, frames: list[zmq.Frame]) -> Request | None:
        received_at = time.monotonic()
        if len(frames) < 2:
            return None  # no identity or no body: nothing we can even answer
        route: tuple[bytes, ...] = (frames[0].bytes,)
        body = frames[1:]
        if len(body) > 1 and len(body[0]) == 0:
            # A REQ client put an empty delimiter before the header: keep it in the route.
            route, body = (*route, b""), body[1:]
        try:
            # zmq.Frame exports the buffer protocol (pyzmq's stubs do not say so).
            msg, tensors = decode_message(body, self.limits, keep_f16=self.keep_f16,  # type: ignore[arg-type]
                                          screen=self.screen)
        except DecodeError as exc:
            _log.debug("bad request from %r: %s", route[0], exc)
            version = exc.version if exc.version in SUPPORTED_VERSIONS else 1
            self._send_route(route, [error_for(exc.request_id or 0, exc.status, str(exc), version)])  # type: ignore[arg-type]
            return None
        except Exception as exc:  # a codec bug must not kill the serving loop
            _log.exception("internal error decoding a request")
            self._send_route(route, [error_for(0, StatusCode.INTERNAL, f"decoding failed: {exc!r}")])
            return None
        if type(msg) is InferRequest:
            return Request(route, msg, tensors, received_at, body[1:])
        if isinstance(msg, Ping):
            if self.answer_pings:
                self._send_route(route, [self.pong_for(msg)])
                return None
            return Request(route, msg, {}, received_at)
        if type(msg) is Describe:
            try:
                reply: Message = self.description_for(msg)
            except Exception as exc:  # a bug in describe() must not end the loop
                _log.exception("describing the server failed")
                reply = error_for(msg.id, StatusCode.INTERNAL, f"describe failed: {exc!r}", msg.v)
            self._send_route(route, [reply])
            return None
        self._send_route(route, [error_for(
            msg.id, StatusCode.BAD_REQUEST, f"a server does not accept {msg.kind} messages", msg.v)])
        return None

    def pong_for(self, ping: Ping) -> Pong:
        """The ``pong`` this server answers ``ping`` with, in the ping's version
        (version 1 has no ``state`` and ``load``)."""
        if ping.v < 2:
            return Pong(v=ping.v, id=ping.id, server=self.name, bundles=list(self.bundles),
                        max_message_bytes=self.limits.max_message_bytes)
        return Pong(
            v=ping.v,
            id=ping.id,
            server=self.name,
            bundles=list(self.bundles),
            max_message_bytes=self.limits.max_message_bytes,
            state=self.state,
            load=max(0, int(self.load())),
        )

    def description_for(self, request: Describe) -> Description:
        """The ``description`` this server answers ``request`` with."""
        limits = self.limits
        return Description(
            v=request.v,
            id=request.id,
            server=self.name,
            state=self.state,
            encodings=[e for e in ENCODINGS if decodable(e)],  # type: ignore[misc]
            compressions=[c for c in COMPRESSIONS if decodable(c)],  # type: ignore[misc]
            limits=ServerLimits(
                max_message_bytes=limits.max_message_bytes,
                max_header_bytes=limits.max_header_bytes,
                max_tensors=limits.max_tensors,
                max_rank=limits.max_rank,
                max_elements=limits.max_elements,
                max_decoded_bytes=limits.max_decoded_bytes,
            ),
            bundles=self.describe(),
        )

    # ------------------------------------------------------------------ send

    def send(self, request: Request, reply: Message, payloads: Sequence[OutFrame] = ()) -> None:
        """Send ``reply`` (with its payload frames) to the client of ``request``.

        Never blocks: a reply to a client that is gone, or whose queue is full, is
        dropped by the ROUTER, which is what a client past its deadline wants.
        """
        self._send_encoded(request.route, encode_message(reply, payloads))

    def send_error(self, request: Request, status: StatusCode, message: str = "") -> None:
        """Answer ``request`` with an ``error`` reply (in the request's version)."""
        self.send(request, error_for(request.header.id, status, message, request.header.v))

    def post(self, request: Request, reply: Message, payloads: Sequence[OutFrame] = ()) -> None:
        """Thread-safe :meth:`send`: queue the reply for the socket's thread to send."""
        self.call_soon(functools.partial(self._send_encoded, request.route, encode_message(reply, payloads)))

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Thread-safe: run ``fn()`` on the socket's thread at its next :meth:`recv`
        (waking one in progress). An engine thread hands a whole batch's replies
        over this way, so building and sending them costs it nothing."""
        self._outbox.append(fn)
        # Only a sleeping socket thread needs the wake-up byte; a busy one runs
        # the outbox at its next turn. Saves a system call per hand-over, and the
        # GIL round trip around it, when the worker is loaded.
        if self._sleeping:
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # the wake-up pipe is full: the receiving thread is awake anyway

    def _send_route(self, route: tuple[bytes, ...], messages: Sequence[Message]) -> None:
        self._send_encoded(route, [encode_header(m) for m in messages])

    def _send_encoded(self, route: tuple[bytes, ...], frames: Sequence[OutFrame]) -> None:
        try:
            if not send_parts(self.socket, [*route, *frames]):
                _log.debug("dropped a reply: client's queue is full")
        except zmq.ZMQError as exc:
            _log.warning("dropped a reply: %s", exc)

    def _flush_outbox(self) -> None:
        outbox = self._outbox
        while outbox:
            fn = outbox.popleft()
            try:
                fn()
            except Exception:  # one failed hand-over must not stop the socket thread
                _log.exception("a callback posted to the socket thread failed")

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # ------------------------------------------------------------------ loop

    def serve(self, handler: Handler, stop: threading.Event, *, poll_ms: int = 100) -> None:
        """Answer requests with ``handler(header, tensors)`` until ``stop`` is set.

        Expired requests are answered ``EXPIRED`` without calling the handler; an
        exception in the handler becomes an ``INTERNAL`` error reply; the result's
        ``queue_ms`` and ``compute_ms`` are filled in when the handler left them 0.
        """
        self.serve_requests(lambda request: handler(request.header, request.tensors), stop,  # type: ignore[arg-type]
                            poll_ms=poll_ms)

    def serve_requests(
        self, handler: Callable[[Request], HandlerReply], stop: threading.Event, *, poll_ms: int = 100
    ) -> None:
        """:meth:`serve` with a handler that gets the whole :class:`Request` (its
        route, timing and received payload frames as well as its tensors)."""
        while not stop.is_set():
            request = self.recv(poll_ms)
            if request is None:
                continue
            header = request.header
            if type(header) is not InferRequest:
                continue
            started = time.monotonic()
            if started >= request.received_at + header.deadline_ms / 1000.0:
                self.send_error(request, StatusCode.EXPIRED, "deadline passed before the request ran")
                continue
            try:
                outcome = handler(request)
                reply, payloads = outcome if isinstance(outcome, tuple) else (outcome, ())
                if type(reply) is Result and reply.queue_ms == 0.0 and reply.compute_ms == 0.0:
                    reply = msgspec.structs.replace(
                        reply,
                        queue_ms=(started - request.received_at) * 1000.0,
                        compute_ms=(time.monotonic() - started) * 1000.0,
                    )
                self.send(request, reply, payloads)
            except Exception as exc:
                _log.exception("handler failed on request %d", header.id)
                self.send_error(request, StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Close the socket (LINGER 0), stop ZAP, and end our own context."""
        if self._closed:
            return
        self._closed = True
        self.socket.close(linger=0)
        self._close_resources()

    def _close_resources(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context:
            self.context.term()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
