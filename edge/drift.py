"""Drift: is the stream still the one the gates were calibrated on?

An answer the edge accepts is never checked by a label, but the gate's scores
are: calibration stored, per gate, the threshold -> fraction-continuing curve
``c(t)`` (``curve_threshold`` / ``curve_continue`` in the bundle), which is the
cumulative distribution of the gate's score over the calibration frames that
reached the gate. A camera that fogs up moves that distribution (the little
model becomes unsure, or, worse, stays sure and changes its mind), so the
monitor compares a sliding window of the stream's scores with it.

The test is the population stability index over ``bins`` bins of equal
calibration mass (edges ``c^-1(k / bins)``)::

    PSI = sum_k (o_k - e_k) * ln(o_k / e_k)

with ``o_k`` the window's share in bin ``k`` and ``e_k`` the calibration's
(both floored at ``1e-4`` so an empty bin is finite). Under no drift PSI is
about ``(bins - 1) / window`` (0.03 for 10 bins and 300 frames, sd ~0.015), so
the alarm at 0.25 (the usual "significant shift") is far outside sampling noise,
and the clear at 0.1 gives hysteresis. An alarm is raised after ``confirm``
consecutive evaluations over the alarm level and cleared after ``confirm``
under the clear level; evaluations run every ``every`` frames once the window is
full, so a change is seen within ``window / 2 + confirm * every`` frames or so.

The offload rate is the second metric: the window's share of scores below the
bundle's threshold against ``c(threshold)``, reported (and alarmed on, with a
binomial z-score above ``rate_z``) for gates whose full score distribution the
edge sees. Pure logic: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader

__all__ = ["DriftConfig", "DriftDetector", "DriftEvent", "ReferenceDistribution", "psi"]

_FLOOR = 1e-4


@dataclass(frozen=True)
class DriftConfig:
    """``[monitor]`` drift settings in edge.toml."""

    window: int = 300
    every: int = 50
    bins: int = 10
    alarm_psi: float = 0.25
    clear_psi: float = 0.10
    confirm: int = 2
    rate_z: float = 6.0

    def __post_init__(self) -> None:
        if self.window < 50:
            raise ConfigError(f"[monitor].window: expected an integer >= 50, got {self.window}")
        if not 1 <= self.every <= self.window:
            raise ConfigError(f"[monitor].every: expected an integer in [1, window], got {self.every}")
        if not 2 <= self.bins <= 50:
            raise ConfigError(f"[monitor].bins: expected an integer in [2, 50], got {self.bins}")
        if not 0 < self.clear_psi < self.alarm_psi:
            raise ConfigError(f"[monitor].clear_psi: expected 0 < clear_psi < alarm_psi ({self.alarm_psi}), "
                              f"got {self.clear_psi}")
        if self.confirm < 1:
            raise ConfigError(f"[monitor].confirm: expected an integer >= 1, got {self.confirm}")
        if not self.rate_z > 0:
            raise ConfigError(f"[monitor].rate_z: expected a number > 0, got {self.rate_z}")

    @classmethod
    def from_reader(cls, r: TableReader) -> DriftConfig:
        d = cls.__dataclass_fields__
        return cls(
            window=r.integer("window", d["window"].default), every=r.integer("every", d["every"].default),
            bins=r.integer("bins", d["bins"].default), alarm_psi=r.number("alarm_psi", d["alarm_psi"].default),
            clear_psi=r.number("clear_psi", d["clear_psi"].default),
            confirm=r.integer("confirm", d["confirm"].default), rate_z=r.number("rate_z", d["rate_z"].default),
        )


def psi(observed: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of two histograms (shares, each summing to 1)."""
    o = np.maximum(np.asarray(observed, np.float64), _FLOOR)
    e = np.maximum(np.asarray(expected, np.float64), _FLOOR)
    return float(np.sum((o - e) * np.log(o / e)))


class ReferenceDistribution:
    """A gate's calibration score distribution, as the bundle stores it."""

    def __init__(self, thresholds: tuple[float, ...], fractions: tuple[float, ...], bins: int,
                 threshold: float | None = None) -> None:
        t = np.asarray(thresholds, np.float64)
        c = np.maximum.accumulate(np.clip(np.asarray(fractions, np.float64), 0.0, 1.0))
        if len(t) < 2 or t.shape != c.shape:
            raise ConfigError("drift: the gate's calibrated curve needs at least two points")
        # Bin edges at equal calibration mass, from the inverse of the curve;
        # repeated edges (a curve with flat stretches) merge their bins.
        inner = np.interp(np.arange(1, bins) / bins, c, t)
        self.edges = np.unique(inner)
        cdf = np.interp(self.edges, t, c, left=0.0, right=1.0)
        self.expected = np.diff(np.concatenate(([0.0], cdf, [1.0])))
        self.threshold = threshold
        self.rate = float(np.interp(threshold, t, c, left=0.0, right=1.0)) if threshold is not None else None

    def histogram(self, scores: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.edges, scores, side="right")
        counts = np.bincount(idx, minlength=len(self.edges) + 1).astype(np.float64)
        out: np.ndarray = counts / max(len(scores), 1)
        return out


@dataclass(frozen=True)
class DriftEvent:
    """An alarm raised (``raised``) or cleared, at a frame."""

    raised: bool
    frame: int
    source_id: str
    stage: str
    metric: str
    value: float
    limit: float

    def as_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "source_id": self.source_id, "stage": self.stage,
                "metric": self.metric, "value": round(self.value, 4), "limit": self.limit}


class DriftDetector:
    """One gate of one source: feed scores with :meth:`add`; events come back."""

    def __init__(self, reference: ReferenceDistribution, config: DriftConfig, source_id: str, stage: str) -> None:
        self.reference, self.config = reference, config
        self.source_id, self.stage = source_id, stage
        self._scores: deque[float] = deque(maxlen=config.window)
        self._since = 0
        self._over = 0
        self._under = 0
        self.active: DriftEvent | None = None
        self.last_psi: float | None = None
        self.last_rate: float | None = None
        self.max_psi = 0.0
        self.evaluations = 0

    def add(self, score: float, frame: int) -> DriftEvent | None:
        if not math.isfinite(score):
            return None
        self._scores.append(score)
        self._since += 1
        if len(self._scores) < self.config.window or self._since < self.config.every:
            return None
        self._since = 0
        return self._evaluate(frame)

    def _evaluate(self, frame: int) -> DriftEvent | None:
        cfg, ref = self.config, self.reference
        window = np.fromiter(self._scores, np.float64, len(self._scores))
        value = psi(ref.histogram(window), ref.expected)
        self.last_psi, self.evaluations = value, self.evaluations + 1
        self.max_psi = max(self.max_psi, value)
        metric, limit = "psi", cfg.alarm_psi
        over = value >= cfg.alarm_psi
        if ref.rate is not None and ref.threshold is not None:
            rate = float((window < ref.threshold).mean())
            self.last_rate = rate
            sd = math.sqrt(max(ref.rate * (1.0 - ref.rate), 1e-4) / len(window))
            if not over and abs(rate - ref.rate) / sd >= cfg.rate_z:
                metric, limit, value, over = "offload_rate", round(ref.rate, 4), rate, True
        if self.active is None:
            self._over = self._over + 1 if over else 0
            if self._over >= cfg.confirm:
                self._over = 0
                self.active = DriftEvent(True, frame, self.source_id, self.stage, metric, value, limit)
                return self.active
            return None
        self._under = self._under + 1 if (self.last_psi < cfg.clear_psi and not over) else 0
        if self._under >= cfg.confirm:
            self._under = 0
            self.active = None
            return DriftEvent(False, frame, self.source_id, self.stage, "psi", self.last_psi, cfg.clear_psi)
        return None

    def state(self) -> dict[str, Any]:
        return {"source_id": self.source_id, "stage": self.stage, "psi": self.last_psi, "max_psi": self.max_psi,
                "offload_rate": self.last_rate, "calib_offload_rate": self.reference.rate,
                "alarm": self.active is not None, "evaluations": self.evaluations}

