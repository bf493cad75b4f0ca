"""The zoo's gate checks, with the runtime's own gates and threshold search.

Each check turns the models' logits into a :class:`~jetsplit.trace.Trace` (what
every stage would answer, with its margin score), chooses thresholds on the
``calib`` split with :func:`~jetsplit.calibration.search.search_thresholds` and
applies them unchanged to ``test``, so the figures in ``zoo.json`` are what a
bundle calibrated the same way would show.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jetsplit.calibration.search import candidate_thresholds, search_thresholds
from jetsplit.gates import margin_score, softmax
from jetsplit.trace import Trace

__all__ = ["accuracy", "cascade_check", "ensemble_check", "margin_trace"]

Splits = dict[str, np.ndarray]
# A threshold no margin reaches (margins are at most 1): the gate never accepts.
_NEVER = 1.1


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def margin_trace(probs: Sequence[np.ndarray], labels: np.ndarray,
                 flops: Sequence[int] | None = None) -> Trace:
    """A trace of stages whose answers are ``probs`` (one (N, C) array per stage),
    scored by the margin gate."""
    n, s = len(labels), len(probs)
    return Trace(
        stage_names=tuple(f"stage{i}" for i in range(s)),
        labels=np.asarray(labels, np.int64),
        score=np.stack([margin_score(p) for p in probs], axis=1),
        pred=np.stack([p.argmax(1) for p in probs], axis=1),
        own_pred=np.stack([p.argmax(1) for p in probs], axis=1),
        time_ms=np.zeros((n, s)),
        bytes_up=np.zeros((n, s)),
        energy_mj=np.zeros((n, s)),
        flops=tuple(flops) if flops is not None else (None,) * s,
        thresholds=(None,) * s,
    )


def cascade_check(little: Splits, big: Splits, y: Splits) -> dict[str, float]:
    """Little->big with a margin gate: fewest samples to big keeping big_acc - 0.002.

    Every distinct calib score is a candidate threshold; the threshold is chosen on
    calib and applied unchanged to test.
    """
    traces = {s: margin_trace([softmax(little[s]), softmax(big[s])], y[s]) for s in ("calib", "test")}
    calib = traces["calib"]
    candidates = np.unique(np.concatenate([[0.0, _NEVER], calib.score[:, 0]]))
    target = accuracy(big["calib"], y["calib"]) - 0.002
    chosen = search_thresholds(calib, "offload", "min_cost", min_accuracy=target,
                               candidates=[candidates]).chosen
    best = float(chosen.thresholds[0] if chosen.thresholds[0] is not None else _NEVER)

    def evaluate(split: str) -> tuple[float, float]:
        stats = traces[split].cascade([best, None])
        return stats.exit_fraction[1], stats.accuracy

    calib_frac, calib_acc = evaluate("calib")
    test_frac, test_acc = evaluate("test")
    return {
        "threshold": best,
        "calib_fraction_to_big": calib_frac,
        "calib_accuracy": calib_acc,
        "calib_big_accuracy": accuracy(big["calib"], y["calib"]),
        "test_fraction_to_big": test_frac,
        "test_accuracy": test_acc,
        "test_big_accuracy": accuracy(big["test"], y["test"]),
        "test_little_accuracy": accuracy(little["test"], y["test"]),
    }


def ensemble_check(members: list[Splits], flops: list[int], y: Splits) -> dict[str, object]:
    """Flexible ensemble: averaged softmax, margin gate after each member but the last.

    Thresholds (one per gate) are a grid search on calib for the least mean FLOPs
    with accuracy >= full-ensemble accuracy - 0.001; then applied to test.
    """
    k = len(members)

    def trace(split: str) -> Trace:
        probs = np.cumsum([softmax(m[split]) for m in members], axis=0)
        return margin_trace([p / (i + 1) for i, p in enumerate(probs)], y[split], flops)

    traces = {s: trace(s) for s in ("calib", "test")}
    calib = traces["calib"]
    full_accuracy = float(calib.correct[:, -1].mean())
    # 41 quantiles per gate keep the (k-1)-dimensional grid small.
    grids = [
        np.concatenate([candidate_thresholds(calib.score[:, s], 41)[:-1], [_NEVER]])
        for s in range(k - 1)
    ]
    chosen = search_thresholds(calib, "flops", "min_cost", min_accuracy=full_accuracy - 0.001,
                               candidates=grids).chosen
    thresholds = [float(t) for t in chosen.thresholds[:-1] if t is not None]

    def evaluate(split: str) -> tuple[float, float]:
        stats = traces[split].cascade([*thresholds, None])
        assert stats.mean_flops is not None
        return stats.mean_flops / float(sum(flops)), stats.accuracy

    calib_cost, calib_acc = evaluate("calib")
    test_cost, test_acc = evaluate("test")
    return {
        "thresholds": thresholds,
        "calib_flops_fraction": calib_cost,
        "calib_accuracy": calib_acc,
        "calib_full_accuracy": full_accuracy,
        "test_flops_fraction": test_cost,
        "test_accuracy": test_acc,
        "test_full_accuracy": float(traces["test"].correct[:, -1].mean()),
    }
