"""The calibrated threshold -> offload-rate curve of a gate.

Calibration stores, per gate, the fraction of frames whose score falls below each
of a set of thresholds (``curve_threshold`` / ``curve_continue`` in the bundle):
the cumulative distribution of the gate's score. The budget controller uses it
as feed-forward (:mod:`jetsplit.edge.controller`), the field monitor as the
reference distribution for drift (:mod:`jetsplit.edge.drift`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jetsplit.bundle import GateSpec
from jetsplit.errors import ConfigError

__all__ = ["ThresholdCurve"]


class ThresholdCurve:
    """Threshold -> fraction of frames that continue past the gate (score below
    the threshold), non-decreasing; :meth:`threshold_for` inverts it."""

    def __init__(self, thresholds: Sequence[float] | np.ndarray, continue_fraction: Sequence[float] | np.ndarray) -> None:
        t = np.asarray(thresholds, np.float64)
        c = np.asarray(continue_fraction, np.float64)
        if t.ndim != 1 or t.shape != c.shape or len(t) < 2:
            raise ConfigError(f"threshold curve: expected two equal-length lists of >= 2 points, got {t.shape} and {c.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(c))) or np.any(np.diff(t) < 0):
            raise ConfigError("threshold curve: expected finite values and non-decreasing thresholds")
        c = np.maximum.accumulate(np.clip(c, 0.0, 1.0))
        if c[-1] < 1.0:
            # Just above the largest threshold every frame continues.
            span = max(float(t[-1] - t[0]), 1e-6)
            t, c = np.append(t, t[-1] + 1e-3 * span), np.append(c, 1.0)
        self.thresholds, self.fractions = t, c
        # For the inverse: one threshold (the lowest) per distinct fraction.
        self._inv_c, first = np.unique(c, return_index=True)
        self._inv_t = t[first]

    @classmethod
    def from_gate(cls, gate: GateSpec | None) -> ThresholdCurve | None:
        if gate is None or len(gate.curve_threshold) < 2:
            return None
        return cls(gate.curve_threshold, gate.curve_continue)

    @classmethod
    def from_scores(cls, scores: Sequence[float] | np.ndarray, points: int = 41) -> ThresholdCurve:
        """The empirical curve of a set of gate scores (what calibration stores)."""
        s = np.sort(np.asarray(scores, np.float64)[np.isfinite(np.asarray(scores, np.float64))])
        if s.size == 0:
            raise ConfigError("threshold curve: no finite scores")
        t = np.unique(np.quantile(s, np.linspace(0.0, 1.0, points)))
        if len(t) == 1:
            t = np.array([t[0], t[0] + 1e-6])
        return cls(t, np.searchsorted(s, t, side="left") / s.size)

    def rate(self, threshold: float) -> float:
        """Fraction of frames that continue at ``threshold``."""
        if threshold > self.thresholds[-1]:
            return 1.0
        return float(np.interp(threshold, self.thresholds, self.fractions, left=0.0))

    def threshold_for(self, rate: float) -> float:
        """The threshold at which ``rate`` of the frames continue."""
        if len(self._inv_c) == 1:
            return float(self._inv_t[0])
        return float(np.interp(min(max(rate, 0.0), 1.0), self._inv_c, self._inv_t))
