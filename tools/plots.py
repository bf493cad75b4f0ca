"""PNG plots of a trace and a threshold search, for ``jetsplit tune`` and ``report``.

- ``margins.png``: per gated stage, histograms of the gate score of right and of
  wrong answers on a log count axis (wrong answers are few: on a linear axis they
  vanish under the right ones), with the chosen threshold and what it does: the
  wrong answers it accepts and the right ones it sends on. Where the two overlap
  is what no threshold can separate.
- ``tradeoffs.png``: accuracy against mean latency, energy, uplink bytes and the
  offload fraction, every evaluated threshold set in grey, the Pareto front, the
  chosen point and every-stage-runs; on the offload panel the oracle (offloading
  exactly what the edge gets wrong and the cloud right) as a line to compare the
  gate with.

matplotlib is imported lazily with the Agg backend (no display on a board).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.calibration.search import Grid
from jetsplit.errors import ConfigError
from jetsplit.trace import Trace

__all__ = ["plot_margins", "plot_tradeoffs", "write_plots"]

_AXES = (("time", "mean latency (ms)"), ("energy", "mean energy (mJ)"), ("bytes", "mean uplink bytes"),
         ("offload", "offload (fraction of samples)"))
_BINS = 40


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_margins(trace: Trace, thresholds: Sequence[float | None], path: Path) -> Path:
    plt = _pyplot()
    gated = list(range(trace.num_stages - 1))
    cols = max(len(gated), 1)
    fig, axes = plt.subplots(1, cols, figsize=(5.2 * cols, 4.0), squeeze=False)
    correct = trace.correct
    for ax, s in zip(axes[0], gated):
        score = trace.score[:, s]
        finite = np.isfinite(score)
        if not finite.any():
            ax.set_title(f"{trace.stage_names[s]}: no finite gate score")
            continue
        lo, hi = float(score[finite].min()), float(score[finite].max())
        bins = np.linspace(lo, hi + max(1e-9, 1e-6 * abs(hi)), _BINS + 1)
        right, wrong = score[finite & correct[:, s]], score[finite & ~correct[:, s]]
        ax.hist(right, bins=bins, color="tab:green", alpha=0.45, label=f"right ({len(right)})")
        ax.hist(wrong, bins=bins, color="tab:red", alpha=0.55, label=f"wrong ({len(wrong)})")
        # Outlines too: where the bars overlap both stay visible.
        ax.hist(right, bins=bins, histtype="step", color="tab:green", linewidth=1.2)
        ax.hist(wrong, bins=bins, histtype="step", color="tab:red", linewidth=1.2)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)
        thr = thresholds[s]
        if thr is not None and np.isfinite(thr):
            ax.axvline(thr, color="k", linestyle="--", label=f"threshold {thr:.3g}")
            accepted_wrong = int((wrong >= thr).sum())
            sent_right = int((right < thr).sum())
            ax.text(0.02, 0.97, f"accepted though wrong: {accepted_wrong}\nsent on though right: {sent_right}",
                    transform=ax.transAxes, va="top", fontsize=8,
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"})
        ax.set_title(f"{trace.stage_names[s]}: gate score by answer")
        ax.set_xlabel("gate score (higher = surer)")
        ax.set_ylabel("samples (log scale)")
        # Below the axes: inside, it would hide the bars or the counts.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _front(cost: np.ndarray, acc: np.ndarray) -> tuple[list[float], list[float]]:
    """The Pareto front's steps: the best accuracy reached at each cost."""
    xs: list[float] = []
    ys: list[float] = []
    best = -1.0
    for i in np.lexsort((-acc, cost)):
        if acc[i] > best + 1e-9:
            best = float(acc[i])
            xs.append(float(cost[i]))
            ys.append(best)
    return xs, ys


def _oracle(ax: Any, oracle: Mapping[str, float]) -> None:
    """The oracle's offload for the final stage's accuracy, and the gate's."""
    x, y = oracle["oracle_offload"], 100 * oracle["final_accuracy"]
    ax.axvline(x, color="tab:purple", linestyle=":", linewidth=1.5, label=f"oracle: {100 * x:.1f}% offload")
    ax.scatter([x], [y], marker="D", s=45, color="tab:purple", zorder=6)
    gate = oracle.get("gate_offload_at_final_accuracy")
    if gate is not None and np.isfinite(gate):
        ratio = oracle.get("gate_over_oracle", float("nan"))
        ax.scatter([gate], [y], marker="o", s=90, facecolors="none", edgecolors="tab:purple", linewidths=1.5,
                   zorder=6, label=f"gate at that accuracy: {100 * gate:.1f}% ({ratio:.2g}x)")
        ax.plot([x, gate], [y, y], color="tab:purple", linewidth=1, alpha=0.6)


def plot_tradeoffs(grid: Grid, chosen: int, full: dict[str, float], path: Path,
                   title: str = "", oracle: Mapping[str, float] | None = None) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2))
    rng = np.random.default_rng(0)
    shown = rng.choice(len(grid), size=min(len(grid), 4000), replace=False)
    for ax, (kind, label) in zip(axes.flat, _AXES):
        if kind not in grid.costs:
            ax.set_visible(False)
            continue
        cost, acc = grid.costs[kind], 100 * grid.accuracy
        ax.scatter(cost[shown], acc[shown], s=4, color="0.75", label="threshold sets")
        front_x, front_y = _front(cost, acc)
        ax.step(front_x, front_y, where="post", color="tab:blue", label="Pareto front")
        ax.scatter([cost[chosen]], [acc[chosen]], marker="*", s=160, color="tab:red", zorder=5, label="chosen")
        if kind in full:
            ax.scatter([full[kind]], [100 * full["accuracy"]], marker="s", color="k", zorder=5, label="every stage")
        if kind == "offload" and oracle:
            _oracle(ax, oracle)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    # One legend for the four panels, below them (inside, it hid the points).
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        if ax.get_visible():
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(trace: Trace, grid: Grid, chosen: int, out_dir: Path, title: str = "",
                oracle: Mapping[str, float] | None = None) -> list[Path]:
    """Both plots into ``out_dir``; returns their paths. ``oracle`` is
    :func:`~jetsplit.calibration.search.oracle_comparison`'s result, if any."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"plots: cannot create the folder {str(out_dir)!r}: {exc.strerror}") from None
    thr = tuple(None if np.isnan(t) else float(t) for t in grid.thresholds[chosen])
    full = trace.full()
    ref = {"accuracy": full.accuracy, "time": full.mean_time_ms, "energy": full.mean_energy_mj,
           "bytes": full.mean_bytes, "offload": 1.0}
    return [plot_margins(trace, thr, out_dir / "margins.png"),
            plot_tradeoffs(grid, chosen, ref, out_dir / "tradeoffs.png", title, oracle)]
