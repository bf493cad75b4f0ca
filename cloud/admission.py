"""Admission control: what the worker takes on, and what it refuses at once.

Past its capacity a worker that queues everything serves only late requests: each
waits behind a FIFO of others that are already lost. This module keeps the queue
short enough that what it holds can still be served in time, and says no early,
while no means little to the edge (it answers the frame locally at once):

- **Bounded queue per (bundle, stage)**, in requests and in bytes
  (:class:`QueueLimits`; ``queue_requests`` and ``queue_mib`` in cloud.toml). A
  request that would overflow it is refused ``OVERLOADED`` (reason ``queue_full``
  or ``queue_bytes``).
- **Deadline-aware admission.** With ``n`` requests ahead of a new one (queued with
  an earlier or equal deadline, in every key, plus those in formed batches), the
  time until its batch is done is predicted as::

      wait = ((busy + sum_k ahead_k * c_k + c) / E + t(B)) / eta

  where ``c_k`` is key ``k``'s measured engine time per request in full batches,
  ``t(B)`` the time of one full batch of the new request's key, ``E`` the number
  of engines and ``eta`` the measured efficiency (engine time done per second
  of wall time and engine while work was waiting: the share of the engines'
  time that is the model, not hand-overs or, with ``threads = 0``, the socket
  work). If ``now + wait`` is past its deadline the request is refused
  ``OVERLOADED`` (reason ``deadline``) at once: the client learns in a round trip,
  not at its deadline. Until the first batch has been measured only the bounds
  apply. While less than a full batch per engine waits in the key's queue, a
  request is judged by the batch it would join (the batches running, then a
  batch of its queue's size), not at full-batch rates: refusing there on a
  pessimistic rate would starve the engines into small batches.
- **Stale requests leave from the head.** Before batches are formed, requests
  whose deadline falls before ``now + t(b)`` (they would finish late even if
  their batch started now) are removed, most urgent first, and answered
  ``EXPIRED`` (:meth:`~jetsplit.cloud.batcher.Batcher.drop_stale`). When a formed
  batch starts on its engine, what would finish past its deadline by the
  batch's expected end is answered ``EXPIRED`` too, and not run (the worker).

All of it is decided from the header alone (:meth:`Admission.screen` is the
server's screen, called before any tensor is decoded), on the socket thread.

    >>> admission = Admission(QueueLimits(1024, 64 << 20), batcher, max_batch=16, engines=1)  # doctest: +SKIP
    >>> admission.check(key, deadline_at, nbytes, now)      # None: take it  # doctest: +SKIP
    Refusal(status=<StatusCode.OVERLOADED: 5>, reason='deadline', message='...')
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, NamedTuple

from jetsplit.errors import ConfigError
from jetsplit.protocol.errors import DecodeError, StatusCode
from jetsplit.protocol.messages import InferRequest, Message
from jetsplit.protocol.tensors import DEFAULT_LIMITS, Limits

__all__ = [
    "PER_REQUEST_BYTES", "Admission", "QueueLimits", "Refusal", "ServiceModel", "held_bytes",
    "machine_memory_bytes",
]

_MIB = 1 << 20
# The decoded arrays of these encodings view the received frames (the worker
# decodes with keep_f16): they hold no memory beyond the frames themselves.
_VIEW_ENCODINGS = ("raw", "f16")
_ITEMSIZE = {"float32": 4, "float16": 2, "uint8": 1, "int8": 1, "int32": 4, "int64": 8, "bool": 1}
# The Python objects of a queued request (Request, header struct, tensor dict,
# array views, zmq.Frame objects): about 1.5 kB measured, rounded up, so that
# the byte bound holds for tiny requests too.
PER_REQUEST_BYTES = 2048
# How quickly the per-batch times follow a change (per batch of a size).
_EWMA = 0.1
# Efficiency samples: one per this many seconds of backlog.
_EFFICIENCY_WINDOW_S = 0.25
_EFFICIENCY_FLOOR = 0.2


def machine_memory_bytes() -> int:
    """Physical memory of this machine (or 4 GiB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


@dataclass(frozen=True)
class QueueLimits:
    """Bounds of each (bundle, stage) queue: requests, and bytes the requests hold."""

    requests: int
    bytes: int

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ConfigError(f"queue_requests: expected an integer >= 1, got {self.requests}")
        if self.bytes < 1:
            raise ConfigError(f"queue_mib: expected a size > 0, got {self.bytes / _MIB:g} MiB")

    #: Requests per queue when none is configured: far more than a deadline lets
    #: wait (the deadline check is what binds), few enough to bound the bookkeeping.
    DEFAULT_REQUESTS = 4096

    @classmethod
    def sized(cls, keys: int, requests: int | None = None, mib: float | None = None,
              memory: int | None = None) -> QueueLimits:
        """The configured bounds, or defaults sized from the machine: all queues
        together may hold 1/16 of its memory, between 16 and 256 MiB."""
        if mib is None:
            total = min(256 * _MIB, max(16 * _MIB, (machine_memory_bytes() if memory is None else memory) // 16))
            nbytes = total // max(1, keys)
        else:
            nbytes = int(mib * _MIB)
        return cls(cls.DEFAULT_REQUESTS if requests is None else requests, nbytes)


def held_bytes(header: InferRequest, wire_bytes: int) -> int:
    """Memory a queued request holds: its received payload frames, the arrays
    decoded out of them where the encoding does not view the frame, and its
    Python objects."""
    extra = PER_REQUEST_BYTES
    for desc in header.tensors:
        if desc.encoding not in _VIEW_ENCODINGS or desc.compression != "none":
            extra += math.prod(desc.shape) * _ITEMSIZE.get(desc.dtype, 8)
    return wire_bytes + extra


def _over_wire_limits(header: InferRequest, wire: Limits) -> bool:
    """Whether the header's descriptors alone break a limit of SPEC.md section 7."""
    if len(header.tensors) > wire.max_tensors:
        return True
    decoded = 0
    for desc in header.tensors:
        elements = math.prod(desc.shape)
        if len(desc.shape) > wire.max_rank or elements > wire.max_elements:
            return True
        decoded += elements * _ITEMSIZE.get(desc.dtype, 8)
    return decoded > wire.max_decoded_bytes


class Refusal(NamedTuple):
    """Why a request is not taken: the status it is answered with, a short
    ``reason`` (a metric label) and the message the client gets."""

    status: StatusCode
    reason: str
    message: str


class _Refused(DecodeError):
    """Raised by :meth:`Admission.screen`: the server answers it as it answers a
    malformed request, with the status and message given, before decoding tensors."""


class ServiceModel:
    """Measured engine times: per key, an EWMA of the time of a batch of each size;
    overall, the efficiency ``eta`` (module docstring)."""

    def __init__(self, max_batch: int, engines: int) -> None:
        self.max_batch = max_batch
        self.engines = max(1, engines)
        self._times: dict[Hashable, list[float]] = {}  # key -> seconds per batch size (index = size)
        self.efficiency = 1.0
        self._window_start: float | None = None
        self._window_work = 0.0

    def known(self, key: Hashable) -> bool:
        return key in self._times

    def observe(self, key: Hashable, size: int, seconds: float, now: float, backlogged: bool) -> None:
        """A batch of ``size`` requests of ``key`` took ``seconds`` of engine time
        and ended at ``now``; ``backlogged``: work was waiting when it ended."""
        size = min(max(size, 1), self.max_batch)
        times = self._times.setdefault(key, [0.0] * (self.max_batch + 1))
        old = times[size]
        times[size] = seconds if old == 0.0 else old + _EWMA * (seconds - old)
        if not backlogged:
            self._window_start = None
            return
        if self._window_start is None:
            # The batches that end in the window ran (mostly) inside it.
            self._window_start, self._window_work = now, 0.0
            return
        self._window_work += seconds
        elapsed = now - self._window_start
        if elapsed >= _EFFICIENCY_WINDOW_S:
            sample = min(1.0, max(_EFFICIENCY_FLOOR, self._window_work / (elapsed * self.engines)))
            self.efficiency += 0.3 * (sample - self.efficiency)
            self._window_start, self._window_work = now, 0.0

    def batch_s(self, key: Hashable, size: int) -> float:
        """Engine seconds for a batch of ``size`` of ``key`` (0 if never measured).
        A size not measured yet scales from the nearest smaller one measured
        (linearly: batching only makes larger batches cheaper per request)."""
        times = self._times.get(key)
        if times is None:
            return 0.0
        size = min(max(size, 1), self.max_batch)
        if times[size] > 0.0:
            return times[size]
        for b in range(size - 1, 0, -1):
            if times[b] > 0.0:
                return times[b] * size / b
        for b in range(size + 1, self.max_batch + 1):
            if times[b] > 0.0:
                return times[b]  # only larger ones measured: at most that long
        return 0.0

    def per_request_s(self, key: Hashable) -> float:
        """Engine seconds per request of ``key`` in full batches."""
        return self.batch_s(key, self.max_batch) / self.max_batch

    def rate(self, key: Hashable) -> float:
        """Requests of ``key`` per second the engines serve when busy (0: unknown)."""
        c = self.per_request_s(key)
        return self.engines * self.efficiency / c if c > 0 else 0.0


class Admission:
    """Admission control over a :class:`~jetsplit.cloud.batcher.Batcher` (module
    docstring). ``keys`` are the (bundle fingerprint, stage) pairs served;
    requests for others are let through, for the worker to answer with its own
    error. ``on_refuse(status, reason)`` counts each refusal (metrics)."""

    def __init__(self, limits: QueueLimits, batcher: Any, max_batch: int, engines: int,
                 keys: set[tuple[str, int]] | None = None,
                 on_refuse: Callable[[StatusCode, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.batcher = batcher
        self.model = ServiceModel(max_batch, engines)
        self.keys = set(keys or ())
        self._on_refuse = on_refuse
        self._clock = clock
        # The wire limits the decoder enforces after the screen: a request over
        # them is TOO_LARGE (SPEC.md 6.1 step 4), never hidden by OVERLOADED.
        self.wire_limits: Limits = DEFAULT_LIMITS

    # -- deciding ----------------------------------------------------------------
    def check(self, key: Hashable, deadline_at: float, nbytes: int, now: float) -> Refusal | None:
        """None to take a request of ``key``, due at ``deadline_at`` and holding
        ``nbytes``, into the queue now; else why not."""
        if deadline_at <= now:
            return Refusal(StatusCode.EXPIRED, "arrival", "deadline passed before the request was queued")
        count, held = self.batcher.queued(key)
        limits = self.limits
        if count >= limits.requests:
            return Refusal(StatusCode.OVERLOADED, "queue_full",
                           f"queue full: {count} requests waiting (queue_requests = {limits.requests})")
        if held + nbytes > limits.bytes:
            return Refusal(StatusCode.OVERLOADED, "queue_bytes",
                           f"queue full: {held / _MIB:.1f} MiB waiting (queue_mib = {limits.bytes / _MIB:g})")
        model = self.model
        own = model.per_request_s(key)
        if own <= 0.0:
            return None  # not measured yet: only the bounds apply
        if count < model.max_batch * model.engines:
            # The engines' next batches: judged by the batch it would join (at
            # its size's cost), not by full-batch rates, so that a short queue
            # is not starved into small batches; still refused when even that
            # batch, after the ones running, would end past the deadline.
            wait = (own * self.batcher.busy / model.engines + model.batch_s(key, count + 1)) / model.efficiency
            if now + wait > deadline_at:
                return Refusal(StatusCode.OVERLOADED, "deadline",
                               f"cannot finish within the deadline: about {wait * 1000.0:.0f} ms of work ahead, "
                               f"{(deadline_at - now) * 1000.0:.0f} ms left")
            return None
        work = own * (1 + self.batcher.busy)  # itself, and the batches formed or running
        for k, n in self.batcher.ahead_all(deadline_at):
            c = own if k == key else model.per_request_s(k)
            work += n * (c if c > 0.0 else own)
        wait = (work / model.engines + model.batch_s(key, model.max_batch)) / model.efficiency
        if now + wait > deadline_at:
            return Refusal(StatusCode.OVERLOADED, "deadline",
                           f"cannot finish within the deadline: about {wait * 1000.0:.0f} ms of work ahead, "
                           f"{(deadline_at - now) * 1000.0:.0f} ms left")
        return None

    def screen(self, header: Message, payload_bytes: int) -> None:
        """The server's screen: called with a request's header before its tensors
        are decoded; a refusal is raised, and the server answers it at once."""
        if type(header) is not InferRequest:
            return
        key = (header.bundle, header.stage)
        if key not in self.keys:
            return  # the worker answers unknown bundles and stages itself
        now = self._clock()
        deadline_at = now + header.deadline_ms / 1000.0
        if deadline_at <= now or _over_wire_limits(header, self.wire_limits):
            # Already late, or over the wire limits: answered by the decoder
            # (TOO_LARGE, step 4) or the worker (EXPIRED, step 8, after its
            # tensors are checked: a malformed late request is BAD_REQUEST).
            return
        refusal = self.check(key, deadline_at, held_bytes(header, payload_bytes), now)
        if refusal is not None:
            if self._on_refuse is not None:
                self._on_refuse(refusal.status, refusal.reason)
            raise _Refused(refusal.message, refusal.status, header.id)

    # -- measuring ----------------------------------------------------------------
    def horizon(self, key: Hashable, size: int) -> float:
        """Seconds a batch of ``size`` requests of ``key`` takes now (0: unknown):
        a request due sooner than that cannot be served in time."""
        return self.model.batch_s(key, size) / self.model.efficiency

    def batch_done(self, key: Hashable, size: int, seconds: float, now: float | None = None) -> None:
        """An engine ran a batch of ``size`` requests of ``key`` in ``seconds``."""
        t = self._clock() if now is None else now
        backlogged = any(self.batcher.queued(k)[0] >= self.model.max_batch for k in self.batcher.keys())
        self.model.observe(key, size, seconds, t, backlogged)
