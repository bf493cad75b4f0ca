"""A grabber thread that keeps only the newest item of a live source.

A camera does not wait for its consumer: when inference falls behind, the frames
that queue up inside a capture pipeline age, and every answer comes later than the
one before. The grabber reads continuously on its own thread and holds one slot;
a new item replaces an unread one, and the replaced item is counted in
``dropped``. The consumer always gets the freshest frame, and the drop counter
tells the operator how far behind the pipeline is.

The thread follows the project's rules for workers: it marks its end in
``finally`` (so a consumer never waits for a thread that died), passes its
exception on to the consumer (``get`` re-raises it), and every wait has a timeout.

    >>> g = Grabber(read_fn, name="v4l2:///dev/video0").start()      # doctest: +SKIP
    >>> item = g.get(timeout=2.0)     # newest item; None once the source ended
    >>> g.dropped                     # items replaced before anyone read them
    >>> g.stop()

``read_fn()`` returns the next item, or ``None`` at the end of the stream; it may
raise, and that exception reaches the consumer unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Grabber", "GrabberTimeout"]

T = TypeVar("T")


class GrabberTimeout(TimeoutError):
    """No item arrived within the consumer's timeout (the source is stalled)."""


class Grabber(Generic[T]):
    """Reads ``read_fn`` on a daemon thread; ``get`` returns the newest item.

    ``grabbed`` counts items read from the source, ``dropped`` those replaced
    before the consumer took them, ``delivered`` those the consumer got:
    ``grabbed == dropped + delivered`` (+1 while an item waits in the slot).
    """

    def __init__(self, read_fn: Callable[[], T | None], name: str = "grabber") -> None:
        self._read = read_fn
        self.name = name
        self._cond = threading.Condition()
        self._slot: T | None = None
        self._has_item = False
        self._ended = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.grabbed = 0
        self.dropped = 0
        self.delivered = 0

    # -- producer ---------------------------------------------------------------
    def start(self) -> Grabber[T]:
        if self._thread is not None:
            raise RuntimeError(f"grabber {self.name!r} already started")
        # A daemon thread: a capture call stuck inside a driver must not keep the
        # process alive at exit.
        self._thread = threading.Thread(target=self._run, name=f"grabber:{self.name}", daemon=True)
        self._thread.start()
        return self

    @property
    def stop_event(self) -> threading.Event:
        """Set when the consumer stops; a pacing ``read_fn`` can wait on it."""
        return self._stop

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._read()
                if item is None:
                    break
                with self._cond:
                    self.grabbed += 1
                    if self._has_item:
                        self.dropped += 1
                    self._slot = item
                    self._has_item = True
                    self._cond.notify_all()
        except BaseException as exc:  # passed to the consumer, who decides
            self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    # -- consumer ---------------------------------------------------------------
    def get(self, timeout: float) -> T | None:
        """The newest unread item; ``None`` when the source has ended and every
        item was taken. Re-raises the reader's exception once the items before
        it are taken; raises :class:`GrabberTimeout` if nothing came in time."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._ended, timeout=timeout):
                raise GrabberTimeout(f"{self.name}: no frame within {timeout:.1f} s")
            if self._has_item:
                item = self._slot
                self._slot, self._has_item = None, False
                self.delivered += 1
                return item
            if self._error is not None:
                raise self._error
            return None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to stop and wait up to ``timeout``; returns whether it
        ended (a reader blocked in a driver call may not; it is a daemon)."""
        self._stop.set()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
