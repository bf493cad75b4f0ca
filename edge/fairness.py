"""Sharing the board's offload budget fairly between its sources.

The budget controller moves one threshold for the board's last edge gate, so that
the board as a whole offloads what its budgets allow. With one gate threshold for
every camera, a camera whose frames the edge is unsure of (a dark scene, a dirty
lens) would take the whole allowance and the others none. :class:`FairShare`
gives each source a threshold of its own instead, so that the board's offloads
are shared out max-min fairly, per frame:

- ``T``, the board's allowance: the fraction of all frames the board threshold
  would send, measured on each source's recent gate scores;
- ``d_s``, source ``s``'s demand: the fraction of its frames the calibrated
  threshold would send (what it would get with no budget);
- the water level ``R``: ``sum_s w_s min(d_s, R) = T`` with ``w_s`` the source's
  share of the board's frames; each source may send ``min(d_s, R)`` of its frames,
  its least sure ones: its threshold is that quantile of its recent scores.

A source that wants less than its share keeps all it wants; the rest is shared by
the others. The total is the board's ``T``, so the controller's loop is
unchanged: it is told the board threshold, and the scores it sees are the same.
When no budget binds (the board threshold is the calibrated one) every source
uses it, and fairness has nothing to do.

    >>> fair = FairShare()
    >>> fair.observe("cam0", 0.4)                                     # doctest: +SKIP
    >>> fair.thresholds(board=0.6, calibrated=0.9)["cam0"]            # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter, deque

import numpy as np

__all__ = ["FairShare", "water_level"]


def water_level(demands: np.ndarray, weights: np.ndarray, total: float) -> float:
    """``R`` with ``sum(weights * min(demands, R)) == total`` (max-min fair share);
    1.0 when the demands fit within ``total``."""
    order = np.argsort(demands)
    d, w = demands[order], weights[order]
    used = 0.0  # allowance of the sources already saturated (demand below the level)
    left = float(w.sum())  # weight of the sources still sharing
    for di, wi in zip(d, w):
        if left <= 0:
            break
        level = (total - used) / left
        if level <= di:
            return max(0.0, level)
        used += float(di * wi)
        left -= float(wi)
    return 1.0


class FairShare:
    """Per-source thresholds from each source's last ``window`` gate scores."""

    def __init__(self, window: int = 256, min_scores: int = 32) -> None:
        self.window = window
        self.min_scores = min_scores
        self._scores: dict[str, deque[float]] = {}
        # Which source each of the board's recent frames came from: the weights.
        self._recent: deque[str] = deque()
        self._counts: Counter[str] = Counter()

    def observe(self, source_id: str, score: float) -> None:
        """A frame's score at the controlled gate (``inf`` for a frame an earlier gate accepted)."""
        self._recent.append(source_id)
        self._counts[source_id] += 1
        if len(self._recent) > self.window * 4:
            self._counts[self._recent.popleft()] -= 1
        self._scores.setdefault(source_id, deque(maxlen=self.window)).append(float(score))

    def thresholds(self, board: float, calibrated: float) -> dict[str, float]:
        """Each known source's threshold (sources not yet seen enough: ``board``)."""
        known = {s: np.sort(np.fromiter(q, np.float64)) for s, q in self._scores.items() if len(q) >= self.min_scores}
        out = {s: board for s in self._scores}
        if board >= calibrated or len(known) < 2:
            return out
        names = list(known)
        counts = np.array([self._counts[n] for n in names], np.float64)
        weights = counts / max(counts.sum(), 1.0)
        sent_at = np.array([np.searchsorted(known[n], board) / len(known[n]) for n in names])
        demands = np.array([np.searchsorted(known[n], calibrated) / len(known[n]) for n in names])
        level = water_level(demands, weights, float((weights * sent_at).sum()))
        for n, d in zip(names, demands):
            share = min(level, float(d))
            if share >= d:
                out[n] = calibrated
            else:
                # The score below which `share` of this source's frames lie.
                scores = known[n]
                out[n] = min(calibrated, float(scores[min(int(share * len(scores)), len(scores) - 1)]))
        return out
