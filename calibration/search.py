"""Threshold search over a trace.

Every combination of per-gate thresholds on a grid is evaluated from the trace
(no model runs). The walk goes depth first over the gates and reuses the
pending-sample mask of the stages before; the last gate's candidates are all
evaluated at once with one matrix product per parent node, so 4 stages x 27
candidates x 10,000 samples (~20,000 threshold sets) take well under a second and
every point carries its accuracy *and* all its costs (time, energy, bytes,
offload, flops), which is what budgets on several costs and the plots need.

Objectives:

- ``seed``: Tann et al.'s M = a*R + (1-a)*E, where R is the cost relative to running
  every stage and E the relative increase in error over running every stage;
- ``min_cost``: the least cost whose accuracy is at least a target;
- ``max_accuracy``: the best accuracy whose cost is at most a budget.

Any objective can also be held to ``budgets`` (cost kind -> largest allowed mean per
sample), e.g. ``{"time": 5.0, "offload": 0.3}``.

The result carries the Pareto front (accuracy against the chosen cost) for the
plots, and the evaluated grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from jetsplit.errors import ConfigError
from jetsplit.trace import Trace

__all__ = [
    "COST_KINDS",
    "Grid",
    "Point",
    "SearchResult",
    "candidate_thresholds",
    "continue_curve",
    "continue_curves",
    "default_grid",
    "evaluate_grid",
    "oracle_comparison",
    "pareto_front",
    "search_thresholds",
    "select",
    "stage_costs",
]

Cost = Literal["time", "flops", "bytes", "energy", "offload"]
Objective = Literal["seed", "min_cost", "max_accuracy"]
COST_KINDS: tuple[str, ...] = ("time", "energy", "bytes", "offload", "flops")
# Leaves of the search tree the adaptive grid aims at: fine grids for short chains
# (2 stages: 512 candidates) and still ~20k points for 4 stages.
_LEAF_BUDGET = 20_000
_MAX_CANDIDATES = 512


@dataclass(frozen=True)
class Point:
    thresholds: tuple[float | None, ...]
    accuracy: float
    cost: float


@dataclass(frozen=True)
class Grid:
    """Every evaluated threshold set: ``thresholds`` is (P, S) with NaN for the last
    stage (no gate); ``accuracy`` (P,); ``costs`` kind -> (P,) mean per sample."""

    thresholds: np.ndarray
    accuracy: np.ndarray
    costs: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(len(self.accuracy))

    def point(self, index: int, cost: str) -> Point:
        thr = tuple(None if np.isnan(t) else float(t) for t in self.thresholds[index])
        return Point(thr, float(self.accuracy[index]), float(self.costs[cost][index]))


@dataclass(frozen=True)
class SearchResult:
    chosen: Point
    front: tuple[Point, ...]
    evaluated: int
    cost_kind: str
    full_accuracy: float
    full_cost: float
    grid: Grid | None = field(default=None, repr=False)
    chosen_index: int = -1


def stage_costs(trace: Trace, cost: str, first_cloud: int | None = None) -> np.ndarray:
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


def default_grid(num_stages: int) -> int:
    """Candidates per gate so the whole grid stays near ``_LEAF_BUDGET`` points."""
    gates = max(num_stages - 1, 1)
    return int(max(8, min(_MAX_CANDIDATES, round(_LEAF_BUDGET ** (1.0 / gates)))))


def evaluate_grid(
    trace: Trace,
    costs: Sequence[str] = ("time",),
    first_cloud: int | None = None,
    grid: int | None = None,
    candidates: Sequence[np.ndarray] | None = None,
) -> Grid:
    """Accuracy and mean costs of every threshold set on the grid."""
    n, s_count = trace.n, trace.num_stages
    if n == 0:
        raise ConfigError("threshold search: the trace has no samples")
    kinds = list(dict.fromkeys(costs))
    count = default_grid(s_count) if grid is None else grid
    cands = list(candidates) if candidates is not None else [
        candidate_thresholds(trace.score[:, s], count) for s in range(s_count - 1)
    ]
    if len(cands) != s_count - 1:
        raise ConfigError(f"candidates: expected {s_count - 1} arrays (one per gate), got {len(cands)}")
    # values[n, s, :] = [correct, cost_1, ..., cost_K] if sample n exits at stage s
    cols = [trace.correct.astype(np.float64)[:, :, None]]
    cols += [np.cumsum(stage_costs(trace, k, first_cloud), axis=1)[:, :, None] for k in kinds]
    values = np.concatenate(cols, axis=2)
    width = values.shape[2]
    accepts = [trace.score[:, s][:, None] >= cands[s][None, :] for s in range(s_count - 1)]
    accepts_f = accepts[-1].astype(np.float64) if accepts else np.zeros((n, 0))
    sums: list[np.ndarray] = []
    thrs: list[np.ndarray] = []

    if s_count == 1:
        sums.append(values[:, 0].sum(axis=0)[None])
        thrs.append(np.full((1, 1), np.nan))
    else:
        last = s_count - 1
        # The last gate's candidates are evaluated together: hit.T @ [v_s | v_last].
        both = np.concatenate([values[:, last - 1], values[:, last]], axis=1)

        def walk(s: int, pending: np.ndarray, acc: np.ndarray, thr: tuple[float, ...]) -> None:
            if s == last - 1:
                rows = np.flatnonzero(pending)
                hs = accepts_f[rows].T @ both[rows]  # (G, 2 * width)
                rest = both[rows, width:].sum(axis=0) - hs[:, width:]
                sums.append(acc + hs[:, :width] + rest)
                block = np.empty((len(cands[s]), s_count))
                block[:, : len(thr)] = thr
                block[:, s] = cands[s]
                block[:, last] = np.nan
                thrs.append(block)
                return
            for g, t in enumerate(cands[s]):
                hit = pending & accepts[s][:, g]
                walk(s + 1, pending & ~hit, acc + values[hit, s].sum(axis=0), (*thr, float(t)))

        walk(0, np.ones(n, bool), np.zeros(width), ())
    total = np.concatenate(sums, axis=0) / n
    return Grid(
        thresholds=np.concatenate(thrs, axis=0),
        accuracy=total[:, 0],
        costs={k: total[:, 1 + i] for i, k in enumerate(kinds)},
    )


def select(
    grid: Grid,
    cost: str,
    objective: Objective = "min_cost",
    alpha: float = 0.5,
    min_accuracy: float | None = None,
    max_cost: float | None = None,
    budgets: Mapping[str, float] | None = None,
    full_accuracy: float | None = None,
    full_cost: float | None = None,
    n: int = 0,
) -> int:
    """Index of the chosen point in ``grid`` (see the module docstring)."""
    acc, cst = grid.accuracy, grid.costs[cost]
    ok = np.ones(len(grid), bool)
    for kind, limit in (budgets or {}).items():
        if kind not in grid.costs:
            raise ConfigError(f"budget on {kind!r}: the grid has no such cost (has {sorted(grid.costs)})")
        ok &= grid.costs[kind] <= limit + 1e-12
    if not ok.any():
        least = ", ".join(f"{k} {grid.costs[k].min():.4g}" for k in (budgets or {}))
        raise ConfigError(f"no thresholds meet the budgets {dict(budgets or {})} (least reachable: {least})")
    full_acc = float(acc.min()) if full_accuracy is None else full_accuracy
    if objective == "seed":
        fc = float(cst.max()) if full_cost is None else full_cost
        rel_cost = cst / fc if fc > 0 else cst
        full_err = max(1.0 - full_acc, 1.0 / max(n, 1))
        rel_err = ((1.0 - acc) - (1.0 - full_acc)) / full_err
        m = np.where(ok, alpha * rel_cost + (1.0 - alpha) * rel_err, np.inf)
        return int(np.argmin(m))
    if objective == "min_cost":
        target = full_acc if min_accuracy is None else min_accuracy
        idx = np.flatnonzero(ok & (acc >= target - 1e-12))
        if idx.size == 0:
            raise ConfigError(f"no thresholds reach accuracy {target:.4f} (best {acc[ok].max():.4f})")
        return int(idx[np.lexsort((-acc[idx], cst[idx]))[0]])
    if objective == "max_accuracy":
        if max_cost is not None:
            ok &= cst <= max_cost + 1e-12
        if not ok.any():
            raise ConfigError(f"no thresholds cost at most {max_cost:g} {cost} (least {cst.min():g})")
        idx = np.flatnonzero(ok)
        return int(idx[np.lexsort((cst[idx], -acc[idx]))[0]])
    raise ConfigError(f"objective: expected seed, min_cost or max_accuracy, got {objective!r}")


def pareto_front(grid: Grid, cost: str) -> tuple[Point, ...]:
    """Points no other point beats on both accuracy and ``cost``, cheapest first."""
    acc, cst = grid.accuracy, grid.costs[cost]
    front: list[Point] = []
    best = -1.0
    for i in np.lexsort((-acc, cst)):
        if acc[i] > best + 1e-12:
            best = float(acc[i])
            front.append(grid.point(int(i), cost))
    return tuple(front)


def search_thresholds(
    trace: Trace,
    cost: Cost | str = "time",
    objective: Objective = "min_cost",
    alpha: float = 0.5,
    min_accuracy: float | None = None,
    max_cost: float | None = None,
    grid: int | None = None,
    first_cloud: int | None = None,
    candidates: Sequence[np.ndarray] | None = None,
    budgets: Mapping[str, float] | None = None,
    extra_costs: Sequence[str] = (),
) -> SearchResult:
    """Choose one threshold per gate (the last stage has none) from ``trace``.

    ``extra_costs`` are evaluated too (for budgets on them, and for plots).
    """
    kinds = [cost, *extra_costs, *(budgets or {})]
    g = evaluate_grid(trace, kinds, first_cloud, grid, candidates)
    full_acc = float(trace.correct[:, -1].mean())
    full_cost = float(np.cumsum(stage_costs(trace, cost, first_cloud), axis=1)[:, -1].mean())
    pick = select(g, cost, objective, alpha, min_accuracy, max_cost, budgets, full_acc, full_cost, trace.n)
    return SearchResult(g.point(pick, cost), pareto_front(g, cost), len(g), cost, full_acc, full_cost, g, pick)


def continue_curve(scores: np.ndarray, points: int = 21) -> tuple[list[float], list[float]]:
    """Threshold -> fraction of ``scores`` below it (the samples that continue past
    the gate): the feed-forward curve of the edge's budget controller."""
    finite = np.sort(scores[np.isfinite(scores)])
    thresholds = np.unique(np.quantile(finite, np.linspace(0, 1, points))) if finite.size else np.zeros(1)
    cont = np.searchsorted(finite, thresholds, side="left") / max(len(finite), 1)
    return [float(t) for t in thresholds], [float(c) for c in cont]


def continue_curves(trace: Trace, thresholds: Sequence[float | None],
                    points: int = 21) -> list[tuple[list[float], list[float]] | None]:
    """Per gate, the continue curve over the samples that reach it under
    ``thresholds`` (None for the last stage)."""
    reach = np.ones(trace.n, bool)
    out: list[tuple[list[float], list[float]] | None] = []
    for s, thr in enumerate(thresholds):
        if s == trace.num_stages - 1 or thr is None:
            out.append(None)
            continue
        out.append(continue_curve(trace.score[reach, s], points))
        reach &= trace.score[:, s] < thr
    return out


def oracle_comparison(trace: Trace, first_cloud: int | None) -> dict[str, float] | None:
    """The gate's offload at the final stage's accuracy against the oracle's.

    The oracle offloads exactly the samples that every edge stage gets wrong and
    the final stage gets right; its accuracy (right wherever any side is right)
    shows what a perfect gate could reach above the final stage.
    """
    if first_cloud is None or first_cloud == 0 or trace.n == 0:
        return None
    correct = trace.correct
    edge_right = correct[:, :first_cloud].any(axis=1)
    final_right = correct[:, -1]
    oracle_offload = float((~edge_right & final_right).mean())
    full_acc = float(final_right.mean())
    g = evaluate_grid(trace, ("offload",), first_cloud)
    ok = g.accuracy >= full_acc - 1e-12
    gate_offload = float(g.costs["offload"][ok].min()) if ok.any() else float("nan")
    return {
        "final_accuracy": full_acc,
        "oracle_offload": oracle_offload,
        "gate_offload_at_final_accuracy": gate_offload,
        "gate_over_oracle": gate_offload / oracle_offload if oracle_offload > 0 else float("inf"),
        "oracle_accuracy": float((edge_right | final_right).mean()),
        "edge_right_final_wrong": float((edge_right & ~final_right).mean()),
    }
