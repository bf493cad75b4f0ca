"""Drift detector, shadow audit, monitor config and the controller's floor: pure logic."""

from __future__ import annotations

import numpy as np
import pytest

from jetsplit.edge.audit import ShadowAudit, wilson_interval
from jetsplit.edge.controller import BudgetController, Budgets, ControllerConfig, ThresholdCurve
from jetsplit.edge.drift import DriftConfig, DriftDetector, ReferenceDistribution, psi
from jetsplit.edge.monitor import MonitorConfig
from jetsplit.errors import ConfigError


def _reference(rng: np.random.Generator, bins: int = 10) -> tuple[ReferenceDistribution, np.ndarray]:
    calib = rng.beta(5, 1, 4000)  # sure-ish gate scores in [0, 1]
    curve = ThresholdCurve.from_scores(calib, points=21)
    return ReferenceDistribution(tuple(curve.thresholds), tuple(curve.fractions), bins, threshold=0.6), calib


def test_no_alarm_while_scores_follow_calibration() -> None:
    rng = np.random.default_rng(0)
    ref, _ = _reference(rng)
    det = DriftDetector(ref, DriftConfig(), "cam0", "exit")
    events = [det.add(float(s), i) for i, s in enumerate(rng.beta(5, 1, 20_000))]
    assert not any(events)
    assert det.max_psi < DriftConfig().alarm_psi / 2
    assert det.evaluations > 300


def test_alarm_within_window_of_a_shift_and_cleared_after_it() -> None:
    rng = np.random.default_rng(1)
    ref, _ = _reference(rng)
    cfg = DriftConfig()
    det = DriftDetector(ref, cfg, "cam0", "exit")
    stream = np.concatenate([rng.beta(5, 1, 1000), rng.beta(2, 2, 1000), rng.beta(5, 1, 2000)])
    events = [e for i, s in enumerate(stream) if (e := det.add(float(s), i)) is not None]
    raised = [e for e in events if e.raised]
    cleared = [e for e in events if not e.raised]
    assert raised and 1000 <= raised[0].frame < 1000 + cfg.window // 2 + cfg.confirm * cfg.every + cfg.every
    assert raised[0].value >= raised[0].limit and raised[0].source_id == "cam0" and raised[0].stage == "exit"
    assert cleared and cleared[0].frame > 2000 and det.active is None
    assert len(raised) == 1  # hysteresis: one alarm for one episode


def test_offload_rate_alone_can_raise_the_alarm() -> None:
    rng = np.random.default_rng(2)
    ref, _ = _reference(rng, bins=2)
    # Same shape above and below the threshold in each half-bin is not the point:
    # a stream whose share under the threshold doubles moves the rate metric.
    det = DriftDetector(ref, DriftConfig(bins=2, alarm_psi=5.0, clear_psi=1.0, rate_z=4.0), "", "exit")
    calib_rate = ref.rate
    assert calib_rate is not None and 0 < calib_rate < 0.5
    low = rng.uniform(0.0, 0.6, 400)
    high = rng.beta(5, 1, 4000)
    high = high[high >= 0.6][:400]
    stream = np.where(rng.random(400) < min(1.0, 3 * calib_rate), low, high)
    events = [e for i, s in enumerate(stream) if (e := det.add(float(s), i)) is not None]
    assert events and events[0].metric == "offload_rate"


def test_psi_of_equal_histograms_is_zero_and_grows_with_shift() -> None:
    e = np.full(10, 0.1)
    assert psi(e, e) == pytest.approx(0.0)
    assert psi(np.r_[0.2, 0.2, np.full(8, 0.075)], e) > psi(np.r_[0.12, 0.12, np.full(8, 0.095)], e) > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"window": 10}, "[monitor].window: expected an integer >= 50, got 10"),
    ({"clear_psi": 0.3}, "[monitor].clear_psi: expected 0 < clear_psi < alarm_psi (0.25), got 0.3"),
    ({"every": 0}, "[monitor].every: expected an integer in [1, window], got 0"),
])
def test_drift_config_errors_name_the_key(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        DriftConfig(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


@pytest.mark.parametrize("table, message", [
    ({"shadow_rate": 1.5}, "[monitor].shadow_rate: expected a fraction in [0, 1], got 1.5"),
    ({"field_frames": "/tmp/x"}, "[monitor].field_frames: frames are written beside a field trace; set field_trace too"),
    ({"drift": "yes"}, "[monitor].drift: expected true or false, got 'yes'"),
])
def test_monitor_table_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        MonitorConfig.from_table(table)
    assert message in str(err.value)


def test_monitor_table_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="shadow_rat"):
        MonitorConfig.from_table({"shadow_rat": 0.1})


def test_wilson_interval_covers_the_rate() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(400):
        k = int(rng.binomial(80, 0.9))
        lo, hi = wilson_interval(k, 80)
        hits += lo <= 0.9 <= hi
    assert hits / 400 >= 0.92  # nominal 95%


def test_audit_selection_rate_and_alarm_hysteresis() -> None:
    audit = ShadowAudit(0.2, seed=1, window=100, expected=0.98, max_drop=0.05)
    picks = sum(audit.select() for _ in range(10_000))
    assert 1800 <= picks <= 2200
    changes = [audit.record(1, 1) for _ in range(100)]
    assert not any(c is not None for c in changes) and not audit.alarm
    changes = [audit.record(1, 2 if i % 3 == 0 else 1) for i in range(100)]  # ~67% agreement
    assert True in changes and audit.alarm
    changes = [audit.record(1, 1) for _ in range(100)]
    assert False in changes and not audit.alarm


def test_audit_interval_widened_by_the_clouds_error() -> None:
    plain = ShadowAudit(0.1, expected=None, cloud_error=0.0)
    wide = ShadowAudit(0.1, expected=None, cloud_error=0.02)
    for i in range(200):
        plain.record(0, 0 if i % 10 else 1)
        wide.record(0, 0 if i % 10 else 1)
    p, w = plain.estimate(), wide.estimate()
    assert w.low == pytest.approx(p.low - 0.02) and w.high == pytest.approx(min(1.0, p.high + 0.02))


def _controller(clock: list[float]) -> BudgetController:
    scores = np.linspace(0.0, 1.0, 1001)
    curve = ThresholdCurve.from_scores(scores)
    return BudgetController(curve, 0.1, Budgets(), ControllerConfig(update_interval_s=0.01, warmup_frames=1),
                            clock=lambda: clock[0], gate_stage=0)


def _drive(ctl: BudgetController, clock: list[float], rng: np.random.Generator, frames: int) -> float:
    sent = 0
    for _ in range(frames):
        clock[0] += 0.02
        s = float(rng.random())
        wanted = s < ctl.threshold
        sent += wanted
        ctl.observe_frame(s, wanted, 5.0)
    return sent / frames


def test_controller_floor_raises_offload_above_calibration_and_goes_back() -> None:
    clock, rng = [0.0], np.random.default_rng(4)
    ctl = _controller(clock)
    assert _drive(ctl, clock, rng, 600) == pytest.approx(0.1, abs=0.04)
    assert ctl.threshold == pytest.approx(0.1)
    ctl.set_floor(0.3)
    _drive(ctl, clock, rng, 1500)
    rate = _drive(ctl, clock, rng, 600)
    assert rate == pytest.approx(0.3, abs=0.05) and ctl.threshold > 0.2
    assert ctl.snapshot().binding == "drift"
    ctl.set_floor(None)
    _drive(ctl, clock, rng, 800)
    assert ctl.threshold == pytest.approx(0.1)


def test_controller_floor_still_obeys_budgets() -> None:
    clock, rng = [0.0], np.random.default_rng(5)
    scores = np.linspace(0.0, 1.0, 1001)
    ctl = BudgetController(ThresholdCurve.from_scores(scores), 0.1, Budgets(max_offload_rate=0.15),
                           ControllerConfig(update_interval_s=0.01), clock=lambda: clock[0], gate_stage=0)
    ctl.set_floor(0.5)
    _drive(ctl, clock, rng, 1500)
    assert _drive(ctl, clock, rng, 600) <= 0.2


def test_audit_widens_by_the_clouds_own_confidence_without_a_calibrated_figure() -> None:
    audit = ShadowAudit(0.1, expected=None)
    for _ in range(100):
        audit.record(3, 3, cloud_top=0.9)
    est = audit.estimate()
    assert audit.cloud_error == pytest.approx(0.1)
    assert est.low == pytest.approx(wilson_interval(100, 100)[0] - 0.1)


def test_top_shows_an_active_alarm() -> None:
    from jetsplit.edge.sinks import FrameResult
    from jetsplit.tools.top import format_window, summarize

    quiet = FrameResult(1, 3, "3", 0.9, "head", "edge", 1.0)
    loud = FrameResult(2, 3, "3", 0.9, "head", "edge", 1.0, alarm="drift:head@cam0")
    assert "ALARM" not in format_window(summarize([quiet], 1.0, "ipc://x"))
    window = summarize([quiet, loud], 1.0, "ipc://x")
    assert window.alarm == "drift:head@cam0"
    assert "ALARM         drift:head@cam0" in format_window(window)
    assert FrameResult.from_json(loud.to_json()).alarm == "drift:head@cam0"
    assert "alarm" not in quiet.to_dict()
