"""Dynamic batching per (bundle, stage), ordered by deadline.

Requests wait in one queue per key, kept sorted by deadline. A batch is released
when a key holds ``max_batch`` requests or its oldest request has waited
``max_wait_ms``, whichever comes first; within a key the most urgent deadlines go
first. A request whose deadline has passed by the time it would run is handed back
as expired, so the worker answers it ``expired`` without spending compute on it.

Each request carries the bytes it holds, so the worker's admission control
(cloud/admission.py) can bound each queue in requests and in bytes, count the
requests ahead of a new deadline (:meth:`Batcher.ahead`) and drop what has gone
stale from the head (:meth:`Batcher.drop_stale`).

The socket thread queues (``put``) and forms batches (``take``, which never
waits: the socket thread asks when the next one is due with ``next_due`` and
sleeps in its own poll); engine threads report finished items (``done``). One lock
guards it.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

__all__ = ["Batch", "Batcher"]

T = TypeVar("T")

# A queued request: (deadline, seq, enqueued, nbytes, item). A plain tuple, so that
# keeping a queue sorted (bisect) compares in C; (deadline, seq) is unique, so the
# item itself is never compared.
_Entry = tuple[float, int, float, int, Any]
_DEADLINE: Final = 0
_ENQUEUED: Final = 2
_NBYTES: Final = 3
_ITEM: Final = 4


@dataclass(frozen=True)
class Batch(Generic[T]):
    key: Hashable
    items: list[T]
    expired: list[T]
    waited_ms: list[float]  # per item in ``items``: time in the queue


class Batcher(Generic[T]):
    def __init__(self, max_batch: int = 16, max_wait_ms: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._clock = clock
        self._queues: dict[Hashable, list[_Entry]] = {}
        # Never later than the oldest enqueue time of the key's queue; exact while
        # the queue is shorter than a batch (when "due" matters), see _pop.
        self._oldest: dict[Hashable, float] = {}
        self._bytes: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._pending = 0
        self._busy = 0
        self._closed = False

    def put(self, key: Hashable, item: T, deadline: float, nbytes: int = 0) -> None:
        """Queue ``item`` under ``key``; ``nbytes`` is the memory it holds (counted
        in :meth:`queued` until it is taken or dropped)."""
        now = self._clock()
        with self._lock:
            q = self._queues.setdefault(key, [])
            bisect.insort(q, (deadline, next(self._seq), now, nbytes, item))
            self._oldest[key] = min(self._oldest.get(key, now), now)
            self._bytes[key] = self._bytes.get(key, 0) + nbytes
            self._pending += 1

    @property
    def pending(self) -> int:
        """Requests queued or being run (the drain condition on shutdown)."""
        with self._lock:
            return self._pending + self._busy

    @property
    def busy(self) -> int:
        """Requests taken in batches and not yet reported :meth:`done`."""
        return self._busy

    def keys(self) -> list[Hashable]:
        """The keys with requests queued."""
        with self._lock:
            return list(self._queues)

    def queued(self, key: Hashable) -> tuple[int, int]:
        """Requests and bytes queued under ``key`` (not yet taken)."""
        with self._lock:
            q = self._queues.get(key)
            return (len(q), self._bytes.get(key, 0)) if q else (0, 0)

    def ahead(self, key: Hashable, deadline: float) -> int:
        """Requests queued under ``key`` that go before one due at ``deadline``:
        those due no later (ties go to the earlier request)."""
        with self._lock:
            q = self._queues.get(key)
            return bisect.bisect_right(q, (deadline, float("inf"))) if q else 0

    def ahead_all(self, deadline: float) -> list[tuple[Hashable, int]]:
        """:meth:`ahead` for every key with requests ahead (one lock: the
        admission check runs per request on the socket thread)."""
        probe = (deadline, float("inf"))
        with self._lock:
            out = [(key, bisect.bisect_right(q, probe)) for key, q in self._queues.items()]
        return [(key, n) for key, n in out if n]

    def drop_stale(self, now: float, horizon: Callable[[Hashable, int], float]) -> list[tuple[Hashable, list[T]]]:
        """Remove, from the head of each queue, the requests due before
        ``now + horizon(key, batch)``: those that would finish late even if their
        batch (of ``batch`` requests) started now. Returns them per key, most
        urgent first."""
        out: list[tuple[Hashable, list[T]]] = []
        with self._lock:
            for key, q in list(self._queues.items()):
                limit = now + horizon(key, min(len(q), self.max_batch))
                n = bisect.bisect_left(q, (limit,))
                if n:
                    out.append((key, [e[_ITEM] for e in q[:n]]))
                    self._remove_head(key, q, n)
        return out

    def _remove_head(self, key: Hashable, q: list[_Entry], n: int) -> None:
        """Drop the first ``n`` entries of ``key``'s queue ``q`` (lock held)."""
        gone = q[:n]
        del q[:n]
        self._pending -= n
        if q:
            self._bytes[key] -= sum(e[_NBYTES] for e in gone)
            if len(q) < self.max_batch:
                # Exact again once a partial batch could be due; while the queue holds
                # a full batch the earlier value only makes it look due sooner.
                self._oldest[key] = min(e[_ENQUEUED] for e in q)
        else:
            del self._queues[key]
            del self._oldest[key]
            del self._bytes[key]

    def close(self) -> None:
        """Release everything without waiting (shutdown drain)."""
        with self._lock:
            self._closed = True

    def _ready_key(self, now: float, partial: bool = True) -> tuple[Hashable | None, float]:
        """The key to release now, or None and how long until one may be ready.
        ``partial`` False: only full batches (or everything once closed)."""
        best: Hashable | None = None
        best_deadline = float("inf")
        wait = float("inf")
        for key, q in self._queues.items():
            if not q:
                continue
            due = self._oldest[key] + self.max_wait
            if len(q) >= self.max_batch or (partial and due <= now) or self._closed:
                if q[0][_DEADLINE] < best_deadline:
                    best, best_deadline = key, q[0][_DEADLINE]
            else:
                wait = min(wait, due - now)
        return best, wait

    def next_due(self) -> float:
        """Seconds until some batch may be released (0: one is ready; inf: none queued)."""
        with self._lock:
            key, wait = self._ready_key(self._clock())
            return 0.0 if key is not None else wait

    def take(self, *, partial: bool = True) -> Batch[T] | None:
        """The next batch ready now, or None (it never waits).

        ``partial`` False releases full batches only: for a caller whose engines
        are all busy, a batch released because its oldest request waited
        ``max_wait_ms`` would only wait again, smaller than it could have been.
        """
        with self._lock:
            now = self._clock()
            key, _ = self._ready_key(now, partial)
            return None if key is None else self._pop(key, now)

    def _pop(self, key: Hashable, now: float) -> Batch[T]:
        q = self._queues[key]
        # Sorted by deadline: the expired come first, then the batch.
        late = bisect.bisect_right(q, (now, float("inf")))
        n = min(len(q), late + self.max_batch)
        expired: list[T] = [e[_ITEM] for e in q[:late]]
        items: list[T] = [e[_ITEM] for e in q[late:n]]
        waited = [(now - e[_ENQUEUED]) * 1000.0 for e in q[late:n]]
        self._remove_head(key, q, n)
        self._busy += len(items)
        return Batch(key, items, expired, waited)

    def done(self, count: int) -> None:
        """An engine thread finished ``count`` items of a batch it took."""
        with self._lock:
            self._busy -= count
