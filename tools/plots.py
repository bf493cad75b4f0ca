"""PNG plots of a trace and a threshold search, for ``jetsplit tune`` and ``report``.

- ``margins.png``: per gated stage, histograms of the gate score of right and of
  wrong answers, with the chosen threshold: where the two overlap is what no
  threshold can separate.
- ``tradeoffs.png``: accuracy against mean latency, energy and uplink bytes per
  sample, every evaluated threshold set in grey, the Pareto front, the chosen
  point and every-stage-runs.

matplotlib is imported lazily with the Agg backend (no display on a board).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jetsplit.calibration.search import Grid
from jetsplit.trace import Trace

__all__ = ["plot_margins", "plot_tradeoffs", "write_plots"]

_AXES = (("time", "mean latency (ms)"), ("energy", "mean energy (mJ)"), ("bytes", "mean uplink bytes"))


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_margins(trace: Trace, thresholds: Sequence[float | None], path: Path) -> Path:
    plt = _pyplot()
    gated = [s for s in range(trace.num_stages - 1)]
    cols = max(len(gated), 1)
    fig, axes = plt.subplots(1, cols, figsize=(4.2 * cols, 3.2), squeeze=False)
    correct = trace.correct
    for ax, s in zip(axes[0], gated):
        score = trace.score[:, s]
        finite = np.isfinite(score)
        bins = np.linspace(float(score[finite].min()), float(score[finite].max()) + 1e-9, 31) if finite.any() else 10
        ax.hist(score[finite & correct[:, s]], bins=bins, alpha=0.6, label="right", color="tab:green")
        ax.hist(score[finite & ~correct[:, s]], bins=bins, alpha=0.6, label="wrong", color="tab:red")
        thr = thresholds[s]
        if thr is not None and np.isfinite(thr):
            ax.axvline(thr, color="k", linestyle="--", label=f"threshold {thr:.3g}")
        ax.set_title(f"{trace.stage_names[s]}: gate score")
        ax.set_xlabel("score (higher = surer)")
        ax.set_ylabel("samples")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoffs(grid: Grid, chosen: int, full: dict[str, float], path: Path,
                   title: str = "") -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    rng = np.random.default_rng(0)
    shown = rng.choice(len(grid), size=min(len(grid), 4000), replace=False)
    for ax, (kind, label) in zip(axes, _AXES):
        if kind not in grid.costs:
            ax.set_visible(False)
            continue
        cost, acc = grid.costs[kind], 100 * grid.accuracy
        ax.scatter(cost[shown], acc[shown], s=4, color="0.75", label="threshold sets")
        order = np.lexsort((-acc, cost))
        front_x, front_y, best = [], [], -1.0
        for i in order:
            if acc[i] > best + 1e-9:
                best = acc[i]
                front_x.append(cost[i])
                front_y.append(acc[i])
        ax.step(front_x, front_y, where="post", color="tab:blue", label="Pareto front")
        ax.scatter([cost[chosen]], [acc[chosen]], marker="*", s=160, color="tab:red", zorder=5, label="chosen")
        if kind in full:
            ax.scatter([full[kind]], [100 * full["accuracy"]], marker="s", color="k", zorder=5, label="every stage")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(trace: Trace, grid: Grid, chosen: int, out_dir: Path, title: str = "") -> list[Path]:
    """Both plots into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    thr = tuple(None if np.isnan(t) else float(t) for t in grid.thresholds[chosen])
    full = trace.full()
    ref = {"accuracy": full.accuracy, "time": full.mean_time_ms, "energy": full.mean_energy_mj, "bytes": full.mean_bytes}
    return [plot_margins(trace, thr, out_dir / "margins.png"),
            plot_tradeoffs(grid, chosen, ref, out_dir / "tradeoffs.png", title)]
