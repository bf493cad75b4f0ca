"""Early offload: send a frame to the cloud from an earlier edge gate, skipping
the edge stages after it.

Where the edge runs more than one gated stage before the cloud (an ensemble with
two members on the board, a multi-exit chain), a frame the first gate is unsure
of normally runs the next edge stages too. When those stages cost the board more
than sending the frame (a power budget, :mod:`jetsplit.edge.power.budget`), the
least confident of these frames can go to the cloud at once instead.

Which frames: the ``fraction`` of the frames that continue past the early gate
with the lowest scores there (the ones the later edge stages are least likely to
settle), by the quantile of the recent continuing scores. ``fraction`` 0 is the
calibrated chain.

What is sent: the request resumes at the first cloud stage, as any offload does,
so the worker needs nothing new. That is possible only when the first cloud stage
takes the frame (ensembles, little/big), not the carried tensor of a skipped
stage (a split chain: :func:`early_gate` says why not). For an averaging
ensemble the request carries the probabilities so far with the count the cloud
stage expects: the skipped members count as the ones that ran (their weight
goes to the edge members that did).

    >>> early = EarlyOffload.for_bundle(bundle)              # doctest: +SKIP
    >>> early.fraction = 0.5
    >>> res, early_rows = early.run(chain, x, thresholds)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from jetsplit.bundle import Bundle
from jetsplit.chain import Chain, ChainResult, ChainState
from jetsplit.handoff import expected_count

__all__ = ["EarlyOffload", "early_gate"]


def early_gate(bundle: Bundle) -> tuple[int | None, str]:
    """The edge gate frames may be offloaded from early, and why (or why not)."""
    first_cloud = bundle.first_cloud_stage()
    if not first_cloud or first_cloud < 2:
        return None, "one edge stage: nothing to skip"
    gated = [i for i in range(first_cloud - 1) if bundle.stages[i].gate is not None]
    if not gated:
        return None, "no gate before the last edge stage"
    cloud = bundle.stages[first_cloud]
    if cloud.input != "frame":
        return None, (f"the first cloud stage {cloud.name!r} takes the carried tensor of "
                      f"{bundle.stages[first_cloud - 1].name!r}, which an early offload would skip")
    g = gated[0]
    skipped = ", ".join(s.name for s in bundle.stages[g + 1:first_cloud])
    return g, f"after {bundle.stages[g].name!r}, skipping {skipped}"


class EarlyOffload:
    """Runs a frame's edge stages with early offload at ``gate`` (see the module
    docstring). ``fraction`` is set by the budget controller."""

    def __init__(self, bundle: Bundle, gate: int, window: int = 500) -> None:
        first_cloud = bundle.first_cloud_stage()
        assert first_cloud is not None
        self.gate = gate
        self.first_cloud = first_cloud
        self._count = expected_count(bundle, first_cloud)
        self._scores: deque[float] = deque(maxlen=window)
        self.fraction = 0.0
        self.sent = 0

    @classmethod
    def for_bundle(cls, bundle: Bundle) -> EarlyOffload | None:
        gate, _ = early_gate(bundle)
        return None if gate is None else cls(bundle, gate)

    def threshold(self) -> float:
        """Frames continuing past the gate with a score below this go early."""
        if self.fraction <= 0.0 or not self._scores:
            return float("-inf")
        if self.fraction >= 1.0:
            return float("inf")
        return float(np.quantile(np.fromiter(self._scores, float), self.fraction))

    def run(self, chain: Chain, x: np.ndarray,
            thresholds: Sequence[float | None] | None) -> tuple[ChainResult, np.ndarray]:
        """A batch through the edge stages: the result, and which rows stop at
        the early gate to be offloaded from there (their ``stage`` is the gate's,
        ``accepted`` false; the batch's ``next_stage`` is the first cloud stage)."""
        head = chain.run_from(0, x, stop_at=self.gate + 1, thresholds=thresholds)
        n = len(head.accepted)
        early = np.zeros(n, bool)
        if head.next_stage is None or head.accepted.all():
            return head, early
        limit = self.threshold()
        unsure = np.flatnonzero(~head.accepted)
        self._scores.extend(float(v) for v in head.score[unsure])
        early[unsure] = head.score[unsure] < limit
        go_on = np.flatnonzero(~head.accepted & ~early)
        self.sent += int(early.sum())
        assert head.state is not None
        if not len(go_on):
            state = replace(head.state, count=self._count)
            return replace(head, next_stage=self.first_cloud, carry=None, state=state), early
        rest = chain.run_from(head.next_stage, x[go_on],
                              None if head.carry is None else head.carry[go_on],
                              head.state.take(go_on), stop_at=self.first_cloud, thresholds=thresholds)
        # Put the rows that went on back among the others.
        stage, accepted = head.stage.copy(), head.accepted.copy()
        probs, pred, score = head.probs.copy(), head.pred.copy(), head.score.copy()
        stage[go_on], accepted[go_on], probs[go_on] = rest.stage, rest.accepted, rest.probs
        pred[go_on], score[go_on] = rest.pred, rest.score
        carry = None
        if rest.carry is not None:
            carry = np.zeros((n, *rest.carry.shape[1:]), rest.carry.dtype)
            carry[go_on] = rest.carry
        times = tuple(a + b for a, b in zip(head.stage_time_ms, rest.stage_time_ms))
        pending = bool(early.any() or not rest.accepted.all())
        resume = ChainState(probs, self._count) if pending else None
        return ChainResult(stage, accepted, probs, pred, score, self.first_cloud if pending else None, carry, resume,
                           times), early
