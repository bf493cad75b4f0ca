"""The power budget's loop on a simulated clock: real gate scores, a board whose
power follows the offloads with the lag of a 1 s average."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pytest

from jetsplit.chain import Chain
from jetsplit.datasets import load_dataset
from jetsplit.edge.controller import BudgetController, Budgets, ControllerConfig, ThresholdCurve
from jetsplit.edge.power.budget import PowerLoop

FPS = 50.0


def _run(ctl: BudgetController, clock: Any, scores: np.ndarray, seconds: float, p0: float, radio_w: float,
         start: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames at FPS; the board draws ``p0 + radio_w * (share of the last
    second's frames that were offloaded)``. Returns per-frame time and watts."""
    rng = np.random.default_rng(seed)
    sent: deque[tuple[float, bool]] = deque()
    times, watts = [], []

    def board() -> float:
        while sent and sent[0][0] < clock.now - 1.0:
            sent.popleft()
        share = sum(s for _, s in sent) / max(len(sent), 1)
        return p0 + radio_w * share + float(rng.normal(0.0, 0.02))

    ctl.watch_power(board)
    for i in range(int(seconds * FPS)):
        clock.now = start + i / FPS
        score = float(rng.choice(scores))
        offload = score < ctl.threshold
        sent.append((clock.now, offload))
        # Per-frame energy that does not show the radio (no J/B configured): the
        # loop has to learn the slope from the board.
        ctl.observe_frame(score, offload, 10.0, bytes_up=100 if offload else 0, energy_mj=100.0)
        times.append(clock.now)
        watts.append(board())
    return np.asarray(times), np.asarray(watts)


def _scores(make_bundle: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """The tiny little-big bundle's gate scores on digits: calib and test."""
    bundle = make_bundle("little-big")
    with Chain.open(bundle) as chain:
        calib, test = (chain.run_all(chain.preprocess(load_dataset("digits", split).images))[0].score.astype(float)
                       for split in ("calib", "test"))
    return bundle, calib, test


def test_power_budget_held_from_the_board_alone(make_bundle: Any, sim_clock: Any) -> None:
    bundle, calib, stream = _scores(make_bundle)
    gate = bundle.stages[0].gate
    curve = ThresholdCurve.from_scores(calib)
    base_rate = float(np.mean(stream < gate.threshold))
    p0, radio_w = 5.0, 4.0
    p_cal = p0 + radio_w * base_rate
    budget = (p0 + p_cal) / 2
    ctl = BudgetController(curve, gate.threshold, Budgets(power_w=budget), ControllerConfig(), sim_clock, gate_stage=0)
    t, w = _run(ctl, sim_clock, stream, 60.0, p0, radio_w)
    settled = w[t > 20.0]
    assert abs(settled.mean() - budget) <= 0.05 * budget, (settled.mean(), budget)
    for chunk in np.array_split(settled, 4):  # steadily, not on average
        assert abs(chunk.mean() - budget) <= 0.05 * budget, chunk.mean()
    assert ctl.snapshot().binding == "power" and ctl.snapshot().power_knob == "offload"
    # Relaxed: the offloads come back to the calibrated rate.
    ctl.set_budgets(Budgets(power_w=2 * p_cal))
    t, w = _run(ctl, sim_clock, stream, 40.0, p0, radio_w, start=60.0, seed=1)
    assert abs(w[t > 90.0].mean() - p_cal) <= 0.05 * p_cal
    assert ctl.snapshot().binding == "calibration" and ctl.threshold == pytest.approx(ctl.base_threshold)


def test_early_offload_when_later_stages_cost_more_than_sending() -> None:
    loop = PowerLoop(budget_w=7.5, early=True)
    # 60 fps; frames answered at the first gate cost 40 mJ, those that run the
    # next edge stage 120 mJ, an early offload 45 mJ (5 mJ of radio); half continue.
    for _ in range(200):
        loop.observe_frame("first", 40.0)
        loop.observe_frame("local", 120.0)
    loop.observe_frame("offload", 125.0, 5.0)

    def board(early: float) -> float:
        return 4.0 + 60 * (0.5 * 40 + 0.5 * ((1 - early) * 120 + early * 45)) / 1000.0

    early = 0.0
    for _ in range(100):
        _, early = loop.update(board(early), 60.0, 0.1, 0.1)
    assert loop.knob == "early" and 0.0 < early < 1.0
    assert board(early) == pytest.approx(7.5, rel=0.02)  # at the fixed point, the budget
    # Relaxed: the early offloads are given back.
    loop.budget_w = 20.0
    for _ in range(100):
        _, early = loop.update(board(early), 60.0, 0.1, 0.1)
    assert early == 0.0


def test_unmet_budget_is_reported() -> None:
    loop = PowerLoop(budget_w=3.0)
    for _ in range(50):
        rate, _ = loop.update(5.0, 30.0, 0.0, 0.5)
    assert rate == 0.0 and loop.unmet


@pytest.mark.parametrize(("tight", "binds"), [("uplink", "uplink"), ("power", "power")])
def test_with_power_and_uplink_budgets_the_tighter_binds(make_bundle: Any, sim_clock: Any, tight: str,
                                                        binds: str) -> None:
    bundle, calib, stream = _scores(make_bundle)
    gate = bundle.stages[0].gate
    base_rate = float(np.mean(stream < gate.threshold))
    p0, radio_w = 5.0, 4.0
    # 100 B per offload at 50 fps: the uplink budget allows this share of frames.
    uplink_share = {"uplink": 0.25, "power": 0.9}[tight] * base_rate
    power_share = {"uplink": 0.9, "power": 0.25}[tight] * base_rate
    budgets = Budgets(power_w=p0 + radio_w * power_share, uplink_bytes_per_s=100 * FPS * uplink_share)
    ctl = BudgetController(ThresholdCurve.from_scores(calib), gate.threshold, budgets, ControllerConfig(), sim_clock,
                           gate_stage=0)
    _run(ctl, sim_clock, stream, 40.0, p0, radio_w)
    summary = ctl.summary()
    assert summary["binding"] == binds, summary
    assert summary["power_unmet"] is False
