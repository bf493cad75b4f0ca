"""One source's state in a multi-source agent: a thread that opens it, reads it,
and hands its frames to the muxer one at a time.

A source is read on its own thread so that nothing it does (a slow open, a
decode, a camera that stalls or goes away, a truncated file) can hold back the
other sources or the edge loop. Its frames wait in a one-frame slot:

- **Paced** sources (cameras, streams, files played ``realtime``) keep the newest
  frame: one the muxer has not taken when the next arrives is *stale*, replaced,
  and counted in ``stale`` (on top of what the source's own grabber dropped).
- **On-demand** sources (files read as fast as they go) wait until the slot is
  taken: every frame is delivered.

A feed can also *prepare* each frame for the model (resize, colour, normalise:
the bundle's preprocessing) on its own thread as it arrives, as DeepStream's muxer
scales each source's frame: OpenCV releases the GIL, so the sources' frames are
prepared in parallel while the loop runs the batch before. A frame that cannot be
prepared is passed on unprepared; the loop reports it.

Failures are logged once per episode (a warning when the source fails, one line
when it recovers; the retries in between at debug level). A **live** source
(camera, stream: no end of its own) is reopened with exponential backoff,
forever, until the agent stops; its frame numbers go on where they were, so a
``(source_id, frame)`` pair is never reused. A **finite** source ends at its
end, or at its first error (a truncated video ends where it breaks).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from jetsplit.edge.frame import Frame, FrameTimeout, Source
from jetsplit.edge.streams import SourceSpec
from jetsplit.errors import JetsplitError, SourceError

__all__ = ["Feed", "Opener", "Prepare"]

_log = logging.getLogger("jetsplit.edge.sources")

Opener = Callable[[SourceSpec], Source]
Prepare = Callable[[np.ndarray], np.ndarray]  # one image -> the model's input, batch axis of 1


class Feed:
    """Reads one source on a daemon thread into a one-frame slot.

    ``notify`` is called (without the feed's lock) whenever a frame arrives or
    the feed ends, so a muxer can wait on one condition for all its feeds.
    """

    def __init__(self, spec: SourceSpec, opener: Opener, *, live: bool, notify: Callable[[], None] = lambda: None,
                 prepare: Prepare | None = None, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 read_slice_s: float = 0.25, alone: bool = False) -> None:
        self.spec = spec
        self.source_id = spec.source_id
        self.live = live
        self.paced = live or bool(spec.realtime)
        self._open = opener
        self._notify = notify
        self._prepare = prepare
        self._alone = alone  # the agent's only source (no "others" to go on)
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._slice_s = read_slice_s
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._prepared: np.ndarray | None = None  # the slot's frame, prepared
        self.t_ready = 0.0  # when the frame in the slot arrived (time.monotonic())
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed:{self.source_id}", daemon=True)
        self.delivered = 0  # frames taken by the muxer
        self.stale = 0  # frames replaced in the slot before the muxer took them
        self.source_dropped = 0  # frames the source's own grabber dropped (earlier openings included)
        self.failures = 0  # times the source failed to open or broke mid-stream
        self.opens = 0  # successful openings
        self.error: str | None = None  # the last failure, as logged
        self._next_index = 0  # renumbering across reopenings
        self._source: Source | None = None

    # -- the muxer's side -------------------------------------------------------
    def start(self) -> Feed:
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self._slot is not None

    @property
    def streaming(self) -> bool:
        """Open and reading (not opening, not waiting to retry, not ended)."""
        return self._source is not None

    @property
    def ended(self) -> bool:
        """No frame will come any more (and none waits in the slot)."""
        with self._cond:
            return self._ended and self._slot is None

    @property
    def dropped(self) -> int:
        """Frames captured but never delivered: the source's drops and stale ones."""
        src = self._source
        return self.source_dropped + (src.dropped if src is not None else 0) + self.stale

    def take(self) -> tuple[Frame, np.ndarray | None] | None:
        """The frame in the slot and its prepared input (emptying it), or None."""
        with self._cond:
            frame, self._slot = self._slot, None
            if frame is None:
                return None
            self.delivered += 1
            self._cond.notify_all()
            return frame, self._prepared

    def signal_stop(self) -> None:
        """Ask the thread to stop, without waiting (to stop many feeds at once)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def stop(self, timeout: float = 2.0) -> None:
        self.signal_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the thread ---------------------------------------------------------------
    def _run(self) -> None:
        backoff = self._backoff_s
        try:
            while not self._stop.is_set():
                if self._read_once():
                    backoff = self._backoff_s  # it delivered: the next failure starts a new episode
                if not self.live or self._stop.is_set():
                    return
                _log.debug("%s: retrying in %.1f s", self.source_id, backoff)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2.0, self._max_backoff_s)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            self._notify()

    def _read_once(self) -> bool:
        """Open the source and read it until it ends or fails; True if it delivered a frame."""
        try:
            src = self._open(self.spec)
        except (SourceError, OSError) as exc:
            self._failed(str(exc))
            return False
        self.opens += 1
        self._source = src
        base = self._next_index
        got = False
        try:
            while not self._stop.is_set():
                try:
                    frame = src.read(timeout=self._slice_s)
                except FrameTimeout:
                    continue  # a camera between frames; it raises SourceError when stalled
                if frame is None:
                    if self.live and not self._stop.is_set():
                        self._failed("the stream ended")
                    return got
                if not got and self.error is not None:
                    # Back only once it delivers: a camera that opens and stalls again
                    # is still the same failure, logged once.
                    _log.info("%s: source back after %d failure(s)", self.source_id, self.failures)
                    self.error = None
                got = True
                self._next_index = base + frame.index + 1
                self._put(dataclasses.replace(frame, index=base + frame.index, source_id=self.source_id))
        except Exception as exc:  # noqa: BLE001 (a decoder's error must end this source, not the agent)
            self._failed(str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}")
        finally:
            self._source = None
            self.source_dropped += src.dropped
            src.close()
        return got

    def _failed(self, why: str) -> None:
        self.failures += 1
        if self.error is None:
            what = "retrying with backoff" if self.live else \
                "this source ends here" + ("" if self._alone else "; the others go on")
            # The message names the URI already; the name is added when it differs.
            named = why if why.startswith(self.source_id) else f"{self.source_id}: {why}"
            _log.warning("%s (%s)", named, what)
        else:
            _log.debug("%s: still failing: %s", self.source_id, why)
        self.error = why

    def _put(self, frame: Frame) -> None:
        prepared = None
        if self._prepare is not None:
            try:
                prepared = self._prepare(frame.image)
            except JetsplitError:
                pass  # the loop prepares it again, and reports the frame as bad
        with self._cond:
            if not self.paced:
                # On demand: every frame is delivered, so wait for the muxer to take the last.
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif self._slot is not None:
                self.stale += 1
            self._slot, self._prepared = frame, prepared
            self.t_ready = time.monotonic()
        self._notify()
