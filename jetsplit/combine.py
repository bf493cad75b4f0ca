"""How a stage's class probabilities join the stages' before it.

- ``replace``: this stage's own probabilities stand alone (a cascade's usual rule);
- ``average``: the running mean of every stage's softmax (Tann et al.'s ensemble);
- ``weighted``: a tempered product of experts, the log-linear pool
  ``log p = (1 - w) * log p_before + w * log p_own`` renormalised, with ``w`` the
  stage's ``combine_weight`` tuned on calib (``jetsplit calibrate --combine
  weighted``). ``w = 1`` is ``replace``; a little model that is right where the big
  one is wrong pulls the answer back when it was sure and the big one was not.

One function serves the chain online (edge and cloud worker) and the calibration
tools offline, so what was tuned is what runs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COMBINES", "combine"]

COMBINES = ("replace", "average", "weighted")
# Probabilities below this are floored before the log: float32 softmax underflows
# to 0 for far-off classes, and one 0 would veto a class for good.
_FLOOR = 1e-30


def combine(kind: str, own: np.ndarray, before: np.ndarray | None, count: int,
            weight: float = 1.0) -> tuple[np.ndarray, int]:
    """(combined probabilities (B, C) float32, how many stage outputs they average).

    ``before`` is None for the first stage run (nothing to combine with)."""
    if before is None or kind == "replace":
        return own, 1
    if kind == "average":
        return ((before * count + own) / (count + 1)).astype(np.float32), count + 1
    if kind == "weighted":
        logp = (1.0 - weight) * np.log(np.maximum(before.astype(np.float64), _FLOOR)) \
            + weight * np.log(np.maximum(own.astype(np.float64), _FLOOR))
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32), 1
    raise ValueError(f"combine: expected one of {', '.join(COMBINES)}, got {kind!r}")
