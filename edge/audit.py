"""Shadow audit: how often is the edge right on the answers it keeps?

With ``shadow_rate = R`` the agent also sends a random share R of the frames
an edge gate accepted to the cloud. Their results are unchanged (the edge's
answer went out at once); when the cloud's answer comes back it is compared
with the edge's. The share of agreements estimates the edge's accuracy on what
it accepts, taking the cloud as the reference.

The interval is Wilson's score interval at ``confidence`` on the agreement
rate, widened on both sides by the cloud's own error rate ``e_c``: where edge
and cloud disagree either may be wrong, and where they agree both may be, so
the edge's true accuracy lies within ``e_c`` of the agreement rate (when the
cloud's mistakes are not the edge's too: see docs/tuning.md). ``e_c`` is one
minus the cloud's calibrated accuracy when the bundle records it, else the
cloud's own expected error on the audited frames, the mean of one minus its
top probability (its confidence, which follows the stream). The alarm is on
disagreement itself: it is raised when the Wilson upper end of the agreement
rate falls more than ``max_drop`` below the expected accuracy (from the bundle,
or ``audit_min_accuracy``; at calibration edge and cloud agree about that
often), and cleared when it is back above. Edge and cloud disagreeing more than
they did at calibration is worth a look whichever of them is wrong; the widened
interval says how sure one can be that it is the edge. Estimates use the last ``window`` audits, so an
alarm follows a change and clears after it.

Selection uses its own seeded generator, so a run is reproducible and the
audit does not depend on the frames' content.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["AuditEstimate", "ShadowAudit", "wilson_interval"]

_Z = {0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion."""
    if n <= 0:
        return 0.0, 1.0
    z = _Z.get(round(confidence, 2), 1.96)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AuditEstimate:
    n: int
    agreement: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "edge_accuracy": round(self.agreement, 4),
                "interval": [round(self.low, 4), round(self.high, 4)]}


class ShadowAudit:
    """Selection of frames to audit and the running estimate (pure logic)."""

    def __init__(self, rate: float, seed: int = 0, window: int = 400, confidence: float = 0.95,
                 cloud_error: float | None = None, expected: float | None = None, max_drop: float = 0.05,
                 min_audits: int = 30) -> None:
        self.rate, self.window, self.confidence = rate, window, confidence
        self._fixed_error = None if cloud_error is None else max(0.0, cloud_error)
        self.expected, self.max_drop = expected, max_drop
        self._unsure: deque[float] = deque(maxlen=window)
        self.min_audits = min_audits
        self._rng = random.Random(seed)
        self._recent: deque[bool] = deque(maxlen=window)
        self.sent = 0
        self.answered = 0
        self.agreed = 0
        self.lost = 0
        self.skipped = 0
        self.alarm = False

    def select(self) -> bool:
        """Whether to audit this accepted frame."""
        return self.rate > 0 and self._rng.random() < self.rate

    @property
    def cloud_error(self) -> float:
        """The cloud's error rate the interval is widened by."""
        if self._fixed_error is not None:
            return self._fixed_error
        return sum(self._unsure) / len(self._unsure) if self._unsure else 0.0

    def record(self, edge_class: int, cloud_class: int, cloud_top: float | None = None) -> bool | None:
        """One audit's answer (``cloud_top``: the cloud's top probability); returns
        True when the alarm is raised by it, False when cleared by it, None when
        its state did not change."""
        if cloud_top is not None and 0.0 <= cloud_top <= 1.0:
            self._unsure.append(1.0 - cloud_top)
        same = edge_class == cloud_class
        self.answered += 1
        self.agreed += int(same)
        self._recent.append(same)
        return self._update_alarm()

    def estimate(self, recent: bool = True) -> AuditEstimate:
        if recent:
            n, k = len(self._recent), sum(self._recent)
        else:
            n, k = self.answered, self.agreed
        lo, hi = wilson_interval(k, n, self.confidence)
        return AuditEstimate(n, k / n if n else float("nan"), max(0.0, lo - self.cloud_error),
                             min(1.0, hi + self.cloud_error))

    def _update_alarm(self) -> bool | None:
        if self.expected is None or len(self._recent) < self.min_audits:
            return None
        n, k = len(self._recent), sum(self._recent)
        high = wilson_interval(k, n, self.confidence)[1]
        floor = self.expected - self.max_drop
        if not self.alarm and high < floor:
            self.alarm = True
            return True
        if self.alarm and high >= floor:
            self.alarm = False
            return False
        return None

    def summary(self) -> dict[str, Any]:
        overall = self.estimate(recent=False)
        return {"rate": self.rate, "sent": self.sent, "answered": self.answered, "lost": self.lost,
                "skipped": self.skipped, "expected_edge_accuracy": self.expected, "cloud_error": self.cloud_error,
                "alarm": self.alarm, "overall": overall.as_dict(), "recent": self.estimate().as_dict()}
