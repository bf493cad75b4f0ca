"""Dynamic batching per (bundle, stage), ordered by deadline.

Requests wait in one queue per key. A batch is released when a key holds
``max_batch`` requests or its oldest request has waited ``max_wait_ms``, whichever
comes first; within a key the most urgent deadlines go first. A request whose
deadline has passed by the time it would run is handed back as expired, so the
worker answers it ``expired`` without spending compute on it.

The socket thread queues (``put``) and forms batches (``take``, which never
waits: the socket thread asks when the next one is due with ``next_due`` and
sleeps in its own poll); engine threads report finished items (``done``). One lock
guards it.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Batch", "Batcher"]

T = TypeVar("T")


@dataclass(order=True)
class _Entry(Generic[T]):
    deadline: float
    seq: int
    enqueued: float = field(compare=False)
    item: T = field(compare=False)


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
        self._queues: dict[Hashable, list[_Entry[T]]] = {}
        self._oldest: dict[Hashable, float] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._pending = 0
        self._busy = 0
        self._closed = False

    def put(self, key: Hashable, item: T, deadline: float) -> None:
        now = self._clock()
        with self._lock:
            q = self._queues.setdefault(key, [])
            heapq.heappush(q, _Entry(deadline, next(self._seq), now, item))
            self._oldest[key] = min(self._oldest.get(key, now), now)
            self._pending += 1

    @property
    def pending(self) -> int:
        """Requests queued or being run (the drain condition on shutdown)."""
        with self._lock:
            return self._pending + self._busy

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
                if q[0].deadline < best_deadline:
                    best, best_deadline = key, q[0].deadline
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
        items: list[T] = []
        waited: list[float] = []
        expired: list[T] = []
        while q and len(items) < self.max_batch:
            e = heapq.heappop(q)
            if e.deadline <= now:
                expired.append(e.item)
            else:
                items.append(e.item)
                waited.append((now - e.enqueued) * 1000.0)
        if q:
            self._oldest[key] = min(e.enqueued for e in q)
        else:
            del self._queues[key]
            del self._oldest[key]
        taken = len(items) + len(expired)
        self._pending -= taken
        self._busy += len(items)
        return Batch(key, items, expired, waited)

    def done(self, count: int) -> None:
        """An engine thread finished ``count`` items of a batch it took."""
        with self._lock:
            self._busy -= count
