"""The stream muxer: one batch of frames from several sources at a time.

Each source is read by its :class:`~jetsplit.edge.feed.Feed` into a one-frame
slot (the newest frame, for a camera). A batch takes at most one frame per
source and at most ``max_batch`` frames, and is pushed as soon as

- it is full (``max_batch`` frames, or a frame from every source that is
  streaming: one being opened or waiting to be retried is not waited for), or
- its oldest frame has waited ``max_wait_ms`` (DeepStream's batched-push timeout:
  a slow or stalled source costs the others that much latency, never more).

When there are more sources with frames than ``max_batch``, the batch starts
after the source the last batch started with (round-robin), so none waits for
ever. ``finished`` is true once every source has ended (finite ones at their
end or first error; live ones only when the agent stops: they are retried).

    >>> mux = Muxer(specs, opener, max_batch=8, max_wait_ms=10.0).start()   # doctest: +SKIP
    >>> while not mux.finished:
    ...     frames, inputs = mux.next_batch(timeout=0.05)    # [] if none came in time

With ``prepare`` (the bundle's preprocessing of one image), each feed prepares its
frames on its own thread, and ``inputs`` is the batch ready for the first stage;
else (or when a frame could not be prepared) it is None.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from jetsplit.edge.feed import Feed, Opener, Prepare
from jetsplit.edge.frame import Frame
from jetsplit.edge.streams import SourceSpec

__all__ = ["Muxer"]


class Muxer:
    """Feeds for ``specs``, batched; ``is_live(uri)`` says which sources to retry."""

    def __init__(self, specs: Sequence[SourceSpec], opener: Opener, is_live: Callable[[str], bool], *,
                 max_batch: int = 8, max_wait_ms: float = 10.0, prepare: Prepare | None = None,
                 backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self._cond = threading.Condition()
        self.feeds = [Feed(s, opener, live=is_live(s.uri), notify=self.wake, prepare=prepare,
                           backoff_s=backoff_s, max_backoff_s=max_backoff_s, alone=len(specs) == 1) for s in specs]
        self._start = 0
        self.batches = 0

    def wake(self) -> None:
        """Wake a caller waiting in :meth:`next_batch` (to look at its ``wake`` predicate)."""
        with self._cond:
            self._cond.notify_all()

    def start(self) -> Muxer:
        for feed in self.feeds:
            feed.start()
        return self

    @property
    def paced(self) -> bool:
        """Whether any source runs at its own rate (then nothing may wait for the cloud)."""
        return any(f.paced for f in self.feeds)

    @property
    def finished(self) -> bool:
        return all(f.ended for f in self.feeds)

    def next_batch(self, timeout: float, wake: Callable[[], bool] | None = None) -> tuple[list[Frame], np.ndarray | None]:
        """The next batch and its prepared inputs, waiting up to ``timeout`` s for it
        to be due; ``([], None)`` if none is, or as soon as ``wake()`` is true
        (checked whenever :meth:`wake` is called)."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                wait = self._due_in(now)
                if wait <= 0.0:
                    return self._take()
                if wake is not None and wake():
                    return [], None
                left = end - now
                if left <= 0.0:
                    return [], None
                self._cond.wait(min(wait, left))

    def _due_in(self, now: float) -> float:
        """Seconds until a batch is due (<= 0: now); inf while no frame waits."""
        ready = [f for f in self.feeds if f.ready]
        if not ready:
            return float("inf")
        # A source that is not streaming (opening, or waiting to be retried) is not
        # waited for at all; one that is, at most max_wait_ms.
        streaming = sum(1 for f in self.feeds if f.ready or f.streaming)
        if len(ready) >= min(self.max_batch, streaming):
            return 0.0
        return min(f.t_ready for f in ready) + self.max_wait_s - now

    def _take(self) -> tuple[list[Frame], np.ndarray | None]:
        n = len(self.feeds)
        order = [self.feeds[(self._start + k) % n] for k in range(n)]
        batch: list[Frame] = []
        inputs: list[np.ndarray | None] = []
        first: int | None = None
        for k, feed in enumerate(order):
            if len(batch) >= self.max_batch:
                break
            item = feed.take()
            if item is not None:
                batch.append(item[0])
                inputs.append(item[1])
                if first is None:
                    first = (self._start + k) % n
        if first is not None:
            self._start = (first + 1) % n
            self.batches += 1
        ready = [x for x in inputs if x is not None]
        return batch, (np.concatenate(ready) if ready and len(ready) == len(batch) else None)

    def stop(self) -> None:
        for feed in self.feeds:
            feed.signal_stop()
        for feed in self.feeds:
            feed.stop()
