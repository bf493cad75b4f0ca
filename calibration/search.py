"""Threshold search over a trace.

Every combination of per-gate thresholds on a grid is evaluated from the trace
(no model runs), by a depth-first walk that reuses the pending-sample mask of the
stages before: the work is sum over l of G^l mask operations of N samples, so 4
stages x 24 candidates x 10,000 samples takes a fraction of a second.

Objectives:

- ``seed``: Tann et al.'s M = a*R + (1-a)*E, where R is the cost relative to running
  every stage and E the relative increase in error over running every stage;
- ``min_cost``: the least cost whose accuracy is at least a target;
- ``max_accuracy``: the best accuracy whose cost is at most a budget.

The result carries the Pareto front (accuracy against cost) for the plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from jetsplit.errors import ConfigError
from jetsplit.trace import Trace

__all__ = ["Point", "SearchResult", "candidate_thresholds", "search_thresholds", "stage_costs"]

Cost = Literal["time", "flops", "bytes", "energy", "offload"]


@dataclass(frozen=True)
class Point:
    thresholds: tuple[float | None, ...]
    accuracy: float
    cost: float


@dataclass(frozen=True)
class SearchResult:
    chosen: Point
    front: tuple[Point, ...]
    evaluated: int
    cost_kind: str
    full_accuracy: float
    full_cost: float


def stage_costs(trace: Trace, cost: Cost, first_cloud: int | None = None) -> np.ndarray:
    """(N, S) cost of running stage s on sample n."""
    if cost == "time":
        return trace.time_ms.astype(np.float64)
    if cost == "bytes":
        return trace.bytes_up.astype(np.float64)
    if cost == "energy":
        return trace.energy_mj.astype(np.float64)
    if cost == "flops":
        if any(f is None for f in trace.flops):
            raise ConfigError("cost 'flops': the bundle does not give every stage's flops")
        return np.broadcast_to(np.asarray(trace.flops, np.float64), (trace.n, trace.num_stages)).copy()
    if cost == "offload":
        # 1 for reaching the first cloud stage: the fraction of samples offloaded.
        out = np.zeros((trace.n, trace.num_stages))
        out[:, first_cloud if first_cloud is not None else trace.num_stages - 1] = 1.0
        return out
    raise ConfigError(f"cost: expected time, flops, bytes, energy or offload, got {cost!r}")


def candidate_thresholds(scores: np.ndarray, count: int = 24) -> np.ndarray:
    """Quantiles of the observed scores, plus +inf (the gate never accepts)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return np.array([np.inf])
    qs = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, count)))
    return np.concatenate([qs, [np.inf]])


def search_thresholds(
    trace: Trace,
    cost: Cost = "time",
    objective: Literal["seed", "min_cost", "max_accuracy"] = "min_cost",
    alpha: float = 0.5,
    min_accuracy: float | None = None,
    max_cost: float | None = None,
    grid: int = 24,
    first_cloud: int | None = None,
    candidates: Sequence[np.ndarray] | None = None,
) -> SearchResult:
    """Choose one threshold per gate (the last stage has none) from ``trace``."""
    n, s_count = trace.n, trace.num_stages
    if n == 0:
        raise ConfigError("threshold search: the trace has no samples")
    costs = stage_costs(trace, cost, first_cloud)
    cum_cost = np.cumsum(costs, axis=1)  # cost of exiting at stage s
    correct = trace.correct
    cands = list(candidates) if candidates is not None else [
        candidate_thresholds(trace.score[:, s], grid) for s in range(s_count - 1)
    ]
    accepts = [trace.score[:, s][:, None] >= cands[s][None, :] for s in range(s_count - 1)]

    results: list[tuple[tuple[float, ...], int, float]] = []

    def walk(s: int, pending: np.ndarray, right: int, spent: float, thr: tuple[float, ...]) -> None:
        if s == s_count - 1:
            results.append((thr, right + int(correct[pending, s].sum()), spent + float(cum_cost[pending, s].sum())))
            return
        for g, t in enumerate(cands[s]):
            hit = pending & accepts[s][:, g]
            walk(
                s + 1,
                pending & ~hit,
                right + int(correct[hit, s].sum()),
                spent + float(cum_cost[hit, s].sum()),
                (*thr, float(t)),
            )

    walk(0, np.ones(n, bool), 0, 0.0, ())
    acc = np.array([r[1] for r in results], np.float64) / n
    cst = np.array([r[2] for r in results], np.float64) / n
    full_acc = float(correct[:, -1].mean())
    full_cost = float(cum_cost[:, -1].mean())

    if objective == "seed":
        rel_cost = cst / full_cost if full_cost > 0 else cst
        full_err = max(1.0 - full_acc, 1.0 / n)
        rel_err = ((1.0 - acc) - (1.0 - full_acc)) / full_err
        pick = int(np.argmin(alpha * rel_cost + (1.0 - alpha) * rel_err))
    elif objective == "min_cost":
        target = full_acc if min_accuracy is None else min_accuracy
        ok = np.flatnonzero(acc >= target - 1e-12)
        if ok.size == 0:
            raise ConfigError(f"no thresholds reach accuracy {target:.4f} (best {acc.max():.4f})")
        # least cost, then best accuracy among equals
        pick = int(ok[np.lexsort((-acc[ok], cst[ok]))[0]])
    elif objective == "max_accuracy":
        if max_cost is None:
            raise ConfigError("objective max_accuracy needs max_cost")
        ok = np.flatnonzero(cst <= max_cost + 1e-12)
        if ok.size == 0:
            raise ConfigError(f"no thresholds cost at most {max_cost:g} {cost} (least {cst.min():g})")
        pick = int(ok[np.lexsort((cst[ok], -acc[ok]))[0]])
    else:
        raise ConfigError(f"objective: expected seed, min_cost or max_accuracy, got {objective!r}")

    order = np.lexsort((-acc, cst))
    front: list[Point] = []
    best = -1.0
    for i in order:
        if acc[i] > best + 1e-12:
            best = float(acc[i])
            front.append(Point((*results[i][0], None), float(acc[i]), float(cst[i])))
    chosen = Point((*results[pick][0], None), float(acc[pick]), float(cst[pick]))
    return SearchResult(chosen, tuple(front), len(results), cost, full_acc, full_cost)
