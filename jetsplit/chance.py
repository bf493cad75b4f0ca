"""Accuracy near chance: a result that says more about the set-up than the model.

A model fed images its training never saw the like of (another label order,
colour order, mean/std or size) answers close to at random, and a run that reports
10% on ten classes looks like any other. ``calibrate`` and ``eval`` warn with one
line naming the likely causes and what to change::

    >>> near_chance(0.101, [0] * 50 + [1] * 50 + [2] * 50, "folder:photos@calib", fixes="flags")  # doctest: +ELLIPSIS
    'warning: accuracy 10.1% on folder:photos@calib is below chance (33.3% ...'

"Near" is at most a tenth of the way from chance (the most frequent class's
share) to perfect: 19% for ten balanced classes, 55% for two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["near_chance"]

_NEAR = 0.1

_FIXES = {
    # calibrate: the preprocessing comes from flags.
    "flags": ("label order (a folder's classes sort by name: give --labels in the model's order), colour "
              "(--colour), mean/std (--mean, --std) or input size (--size) unlike the model's training"),
    # eval/collect: the preprocessing is the bundle's [input] table.
    "bundle": ("label order (a folder's classes sort by name: give --labels in the model's order), or data "
               "unlike what the bundle's [input] expects (colour, mean/std, size)"),
}


def near_chance(accuracy: float, labels: Sequence[int] | np.ndarray, data: str,
                fixes: Literal["flags", "bundle"] = "bundle") -> str | None:
    """A one-line warning if ``accuracy`` on samples with these ``labels`` is near
    chance, else None."""
    y = np.asarray(labels)
    if y.size == 0:
        return None
    counts = np.unique(y, return_counts=True)[1]
    chance = float(counts.max()) / y.size
    if len(counts) < 2 or accuracy > chance + _NEAR * (1.0 - chance):
        return None
    where = "below" if accuracy < chance - _NEAR * chance else "near"
    return (f"warning: accuracy {100 * accuracy:.1f}% on {data} is {where} chance ({100 * chance:.1f}% with "
            f"{len(counts)} classes); likely causes: {_FIXES[fixes]}")
