"""Threshold search: the vectorised grid equals a brute-force cascade, budgets
hold, and ``jetsplit tune`` on 10,000 x 4 synthetic traces runs end to end (its
speed is recorded by ``bench/search_speed.py`` in ``bench/results/``, not asserted
here, since the test machines are shared)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jetsplit.calibration.search import (
    candidate_thresholds,
    continue_curves,
    evaluate_grid,
    oracle_comparison,
    search_thresholds,
)
from jetsplit.errors import ConfigError
from jetsplit.tools.tune import main as tune_main
from tests.support.traces import synthetic_trace, synthetic_tune_inputs


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_grid_equals_brute_force(stages: int) -> None:
    trace = synthetic_trace(400, stages, seed=stages)
    grid = evaluate_grid(trace, ("time", "bytes", "offload"), first_cloud=stages - 1, grid=5)
    cands = [candidate_thresholds(trace.score[:, s], 5) for s in range(stages - 1)]
    combos = np.array(np.meshgrid(*cands, indexing="ij")).reshape(stages - 1, -1).T if cands else np.zeros((1, 0))
    assert len(grid) == len(combos)
    for row, thr in enumerate(combos):
        stats = trace.cascade([*thr, None])
        assert grid.accuracy[row] == pytest.approx(stats.accuracy, abs=1e-12)
        assert grid.costs["time"][row] == pytest.approx(stats.mean_time_ms, rel=1e-9)
        assert grid.costs["bytes"][row] == pytest.approx(stats.mean_bytes, rel=1e-9)
        assert grid.costs["offload"][row] == pytest.approx(stats.exit_fraction[-1], abs=1e-12)


def test_budgets_are_met_and_impossible_ones_are_one_error() -> None:
    trace = synthetic_trace(2000, 3)
    res = search_thresholds(trace, cost="time", objective="max_accuracy", first_cloud=2,
                            budgets={"offload": 0.2, "bytes": 800.0})
    stats = trace.cascade(res.chosen.thresholds)
    assert stats.exit_fraction[-1] <= 0.2 + 1e-12 and stats.mean_bytes <= 800.0 + 1e-9
    with pytest.raises(ConfigError, match="budgets"):
        search_thresholds(trace, cost="time", objective="max_accuracy", budgets={"time": -1.0})


def test_curves_and_oracle() -> None:
    trace = synthetic_trace(1000, 2)
    res = search_thresholds(trace, cost="offload", first_cloud=1)
    curve = continue_curves(trace, res.chosen.thresholds)[0]
    assert curve is not None and curve[1] == sorted(curve[1]) and curve[1][0] == 0.0
    o = oracle_comparison(trace, 1)
    assert o is not None and 0.0 <= o["oracle_offload"] <= 1.0
    assert o["oracle_accuracy"] >= o["final_accuracy"]


def test_tune_command_on_10k_by_4(tmp_path: Path) -> None:
    calib, test = synthetic_tune_inputs(tmp_path, 10_000, 4)
    out = tmp_path / "tuned"
    assert tune_main([str(calib), "--test", str(test), "--out", str(out), "--objective", "seed", "--alpha", "0.5"]) == 0
    summary = json.loads((out / "tuning.json").read_text())
    assert summary["evaluated"] > 10_000
