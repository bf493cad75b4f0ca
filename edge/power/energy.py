"""The energy meter: samples a power reader and attributes energy to frames.

Whoever owns a meter starts and stops its sampler (the edge agent for its run,
``jetsplit power`` and ``jetsplit bench`` for their windows)::

    >>> meter = EnergyMeter(detect_power(config), fallback=config.model())   # doctest: +SKIP
    >>> meter.start(interval_s=0.05)
    >>> e = meter.frame_energy(t0, t1, stage_ms={"little": 1.2}, bytes_up=180)
    >>> e.compute_j, e.radio_j
    >>> meter.stop()

With a sensor the sampler reads the board every ``interval_s``; a frame's
*compute* energy is the board's energy integrated (trapezoids between samples)
over the window in which its stages ran, so a step in the board's draw reaches
the frames within one interval. Its *radio* energy is the bytes it sent times
the radio's joules per byte (``[power.model] j_per_byte``): no Jetson rail
carries the radio alone, and the bytes are known exactly per frame. With the
:class:`~jetsplit.edge.power.readers.ModelPower` both come from the model.

A sensor that fails (the reads raise, or every rail fails ``max_failures`` times
in a row) is reported once, in the log and in :meth:`EnergyMeter.status`, and the
model (``fallback``) takes over for the rest of the run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jetsplit.edge.power.readers import ModelPower, PowerReader, total_watts
from jetsplit.errors import JetsplitError

__all__ = ["EnergyMeter", "FrameEnergy"]

log = logging.getLogger("jetsplit.edge.power")


@dataclass(frozen=True)
class FrameEnergy:
    """One frame's energy in joules: its stages' window, and what sending cost."""

    compute_j: float
    radio_j: float = 0.0

    @property
    def total_j(self) -> float:
        return self.compute_j + self.radio_j


class EnergyMeter:
    """Samples a reader's total power and integrates it over time windows.

    ``sample()`` takes one reading (call it yourself, or ``start()`` a sampler
    thread); ``energy_j(t0, t1)`` integrates the piecewise-linear power between
    samples over ``[t0, t1]`` (held constant before the first and after the last
    sample). ``history_s`` of samples are kept. Times are ``clock()`` seconds.
    ``j_per_byte`` is the radio's cost (the fallback model's when not given).
    """

    def __init__(self, reader: PowerReader, clock: Callable[[], float] = time.monotonic, history_s: float = 120.0,
                 fallback: ModelPower | None = None, j_per_byte: float | None = None, max_failures: int = 3) -> None:
        self.reader = reader
        self.fallback = fallback
        self.j_per_byte = float(j_per_byte if j_per_byte is not None else (fallback.j_per_byte if fallback else 0.0))
        if isinstance(reader, ModelPower) and j_per_byte is None:
            self.j_per_byte = reader.j_per_byte
        self._clock = clock
        self._history_s = history_s
        self._samples: deque[tuple[float, float]] = deque()  # (t, total W)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._max_failures = max_failures
        self.interval_s: float | None = None
        self.error: BaseException | None = None
        self.failed_over = False

    @property
    def kind(self) -> str:
        return self.reader.kind

    @property
    def measured(self) -> bool:
        """True while a sensor (not the model) is the source."""
        return not isinstance(self.reader, ModelPower)

    # -- sampling -----------------------------------------------------------------
    def sample(self) -> float:
        """One reading; its total watts. Raises if the reader gave no rail."""
        rails = self.reader.read_watts()
        if not rails:
            raise JetsplitError(f"power: {self.reader.kind}: no rail could be read")
        watts = total_watts(rails)
        now = self._clock()
        with self._lock:
            self._samples.append((now, watts))
            while self._samples and self._samples[0][0] < now - self._history_s:
                self._samples.popleft()
        return watts

    def start(self, interval_s: float = 0.05) -> EnergyMeter:
        """Sample every ``interval_s`` on a daemon thread until ``stop()``. A
        model needs no sampler: nothing is started for it."""
        if self._thread is not None or not self.measured:
            return self
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected a number > 0, got {interval_s}")
        self.interval_s = interval_s
        try:
            self.sample()
        except Exception as exc:  # a sensor that fails at once: the model takes over now
            self._fail_over(exc)
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._schedule, args=(interval_s, None, self._stop.wait, True),
                                        name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def sample_for(self, seconds: float, interval_s: float,
                   sleep: Callable[[float], None] = time.sleep) -> None:
        """Sample every ``interval_s`` for ``seconds`` on this thread (first
        sample at 0, last at or before ``seconds``): for a caller with nothing
        else to do (``jetsplit power``). ``sleep`` is a parameter so a test can
        step time."""
        self.interval_s = interval_s

        def wait(s: float) -> bool:
            sleep(s)
            return False

        self._schedule(interval_s, seconds, wait, False)

    def _schedule(self, interval_s: float, seconds: float | None, wait: Callable[[float], bool],
                  skip_first: bool) -> None:
        """The sampler: a fixed schedule (a slow read does not stretch it) until
        ``wait`` says stop or ``seconds`` are over."""
        t0 = self._clock()
        failures, k = 0, 0
        if skip_first and wait(interval_s):  # start() took the first sample itself
            return
        k = int(skip_first)
        while True:
            try:
                self.sample()
                failures = 0
            except Exception as exc:
                failures += 1
                # One bad read (a rail mid-conversion) is not a broken sensor.
                if failures >= self._max_failures:
                    self._fail_over(exc)
                    return
            k += 1
            due = t0 + k * interval_s
            if seconds is not None and due > t0 + seconds + 1e-9:
                return
            if wait(max(0.0, due - self._clock())):
                return

    def _fail_over(self, exc: BaseException) -> None:
        self.error = exc
        what = self.reader.description
        if self.fallback is not None:
            log.error("power: the sampler of %s failed (%s): the power model takes over for this run (%s)",
                      what, exc, self.fallback.description)
            old, self.reader, self.failed_over = self.reader, self.fallback, True
            try:
                old.close()
            except Exception:  # noqa: S110 (the sensor is already broken; its close is best effort)
                pass
        else:
            log.error("power: the sampler of %s failed (%s): energy holds the last reading", what, exc)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the sampler and release the reader (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.reader.close()

    def status(self) -> dict[str, Any]:
        """What the meter measures with, for start logs and summaries."""
        out: dict[str, Any] = {"source": self.reader.kind, "description": self.reader.description}
        if self.interval_s is not None:
            out["interval_ms"] = round(self.interval_s * 1000.0, 3)
        if self.j_per_byte:
            out["radio_j_per_byte"] = self.j_per_byte
        if self.error is not None:
            out["sampler_failed"] = str(self.error)
        board = self.reader.board_state() if not self.failed_over else {}
        if board:
            out["board"] = board
        return out

    def samples(self) -> list[tuple[float, float]]:
        """``(time, total watts)`` of the samples kept."""
        with self._lock:
            return list(self._samples)

    # -- energy -------------------------------------------------------------------
    def _points(self, t0: float) -> list[tuple[float, float]]:
        """The samples from the last one at or before ``t0`` on (newest last):
        walked from the newest, so a frame's window costs a few samples, not
        the whole history."""
        out: list[tuple[float, float]] = []
        with self._lock:
            for sample in reversed(self._samples):
                out.append(sample)
                if sample[0] <= t0:
                    break
        out.reverse()
        return out

    def energy_j(self, t0: float, t1: float) -> float:
        """Joules drawn over ``[t0, t1]``."""
        if t1 <= t0:
            return 0.0
        pts = self._points(t0)
        if not pts:
            pts = [(t0, self.sample())]
        if len(pts) == 1:
            return pts[0][1] * (t1 - t0)
        energy = 0.0
        # Extend the first and last power levels to cover the window.
        pts = [(min(t0, pts[0][0]), pts[0][1]), *pts, (max(t1, pts[-1][0]), pts[-1][1])]
        for (ta, pa), (tb, pb) in zip(pts, pts[1:]):
            lo, hi = max(ta, t0), min(tb, t1)
            if hi <= lo or tb <= ta:
                continue
            p_lo = pa + (pb - pa) * (lo - ta) / (tb - ta)
            p_hi = pa + (pb - pa) * (hi - ta) / (tb - ta)
            energy += 0.5 * (p_lo + p_hi) * (hi - lo)
        return energy

    def average_watts(self, window_s: float = 5.0) -> float:
        """Mean board power over the last ``window_s`` seconds."""
        if isinstance(self.reader, ModelPower):
            return self.reader.total_watts()
        now = self._clock()
        return self.energy_j(now - window_s, now) / window_s

    def frame_energy(self, t0: float, t1: float, stage_ms: Mapping[str, float] | None = None,
                     bytes_up: int = 0) -> FrameEnergy:
        """Energy attributed to a frame whose stages ran over ``[t0, t1]`` and
        that sent ``bytes_up`` (module docstring)."""
        radio = self.j_per_byte * bytes_up
        reader = self.reader
        if isinstance(reader, ModelPower):
            compute = reader.compute_energy_j(t1 - t0, stage_ms or {})
            reader.note(t1, t1 - t0, compute + radio)
            return FrameEnergy(compute, radio)
        return FrameEnergy(self.energy_j(t0, t1), radio)

    def frame_energy_j(self, t0: float, t1: float, stage_ms: Mapping[str, float] | None = None, bytes_up: int = 0) -> float:
        """:meth:`frame_energy`'s total."""
        return self.frame_energy(t0, t1, stage_ms, bytes_up).total_j
