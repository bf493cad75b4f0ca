"""A batch the edge's engine ran: what the loop thread needs to gate each of its
frames (:class:`Ran`), and one frame's row of it (:func:`row`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jetsplit.chain import ChainResult
from jetsplit.edge.frame import Frame
from jetsplit.errors import JetsplitError

__all__ = ["Ran", "row"]


@dataclass(frozen=True)
class Ran:
    """A batch the engine ran (or failed on), with the thresholds it was gated by."""

    frames: Sequence[Frame]
    res: ChainResult | JetsplitError
    board: float | None
    mine: list[float | None]
    audit: list[bool]  # frames the shadow audit also sends if their gate accepts them
    t0: float
    t1: float
    early: np.ndarray | None = None  # rows stopped at the early gate to be offloaded


def row(res: ChainResult, i: int) -> ChainResult:
    """Row ``i`` of a batch's chain result, as a batch of one."""
    sl = slice(i, i + 1)
    return ChainResult(res.stage[sl], res.accepted[sl], res.probs[sl], res.pred[sl], res.score[sl], res.next_stage,
                       None if res.carry is None else res.carry[sl],
                       None if res.state is None else res.state.take(np.arange(i, i + 1)), res.stage_time_ms)
