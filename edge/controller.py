"""The budget controller: moves the edge's last gate threshold to hold budgets.

The operator sets budgets (:class:`Budgets`): a p95 latency, a maximum offload
rate, uplink bytes per second, energy per frame, average power. The controller
moves the *effective threshold* of the last edge gate (the one that decides
edge answer or cloud), never above the calibrated one: calibration chose the
threshold for accuracy, and budgets can only ask to offload less.

Every ``update_interval_s`` it computes, with ``r`` the fraction of frames the
gate sends on (the *offload rate*) and ``c(theta)`` the calibrated
threshold -> continue-fraction curve (:class:`ThresholdCurve`)::

    r_max   = max_offload_rate
    r_bytes = g_B * B / (fps * mean_bytes_per_offload)   # uplink bytes/s B
    r_lat   = g_L * (1 - p) * margin / q                 # p95 latency budget L
    r_E     = g_E * (E - E_local) / (E_off - E_local)    # energy per frame E
    r_P     = the power loop's rate limit                 # average power P
    r_C     = AIMD on the cloud's OVERLOADED refusals (below)       # congestion
    r*      = clip(min(r_max, r_bytes, r_lat, r_E, r_P, r_C), 0, 1)  # 1 if no budget

``q`` is the fraction of offloaded frames whose latency (edge + round trip, or
the deadline when the cloud is late) exceeded ``L``, or whose cloud answer missed
its deadline (sent for nothing: the frame fell back), an EWMA over offloaded
frames: at most ``1 - p`` of all frames may exceed ``L``, so at most
``(1 - p) / q`` of them may be offloaded. ``E_local`` and ``E_off`` are EWMAs of
the energy of local and offloaded frames; ``fps`` is measured. Each ``g`` is a
feedback gain in [gain_min, 1] on a budget measured over the last
``feedback_frames`` frames: multiplied by ``shrink`` at each update while the
measurement is over budget (and the recent rate already obeys the feed-forward
limit: anti-windup), by ``grow`` while it is under ``relax`` x budget (integral
action in the log domain, for what the feed-forward models miss). For latency,
``1 - p`` is first reduced by the late fraction of frames answered locally.

Congestion is feedback from the cloud, not a budget: with ``f`` the fraction of
the offloads answered in the last interval that the worker refused ``OVERLOADED``
(it could not have served them in time), ``r_C`` is cut multiplicatively when
``f > congestion_threshold`` and restored additively otherwise, as TCP does::

    r_C = min(r_C, r_recent) * (1 - f) * shrink      # congested (r_C starts at r_recent)
    r_C = r_C + congestion_recover                    # not: until it reaches 1 and lapses

so many edges sharing a worker settle at what it accepts, and offload again as
before once the load goes.

Power is held by its own loop (:mod:`jetsplit.edge.power.budget`): integral
action on the board's measured average power (``watch_power``; without a meter,
the frames' energy times the frame rate), moving ``r_P`` down where offloads
cost the board more than local answers, or, where edge stages run after an
earlier gate, the early-offload fraction up (``early``,
:mod:`jetsplit.edge.early`) where skipping them saves more than sending costs.
Early offload adds uplink bytes: it is not raised while an uplink budget is
over, and the power budget is then reported unmet (``power_unmet``; the uplink
binds).

Feed-forward, then feedback on the rate itself: the threshold comes from
inverting the curve, corrected by ``b``, the bias of the curve seen in
operation: per frame, ``sent_i - c(theta_i)`` (whether the gate sent it, minus
what the curve predicted at the threshold then in force), averaged over
``window_frames``. This integrates the error between the calibration and the
stream, and does not depend on how fast the threshold moves, so it does not
wind up or oscillate::

    r_cmd   = clip(r* - b, 0, c(theta_bundle))
    theta   = min(c^-1(r_cmd), theta_bundle)

The ceiling ``c(theta_bundle)`` keeps the gate at its calibrated threshold when
no budget binds (``binding == "calibration"``): budgets only take offloads
away, whatever rate that threshold gives on the stream at hand.

One exception: while the field monitor finds the edge unreliable (a drift or
shadow-audit alarm, :mod:`jetsplit.edge.monitor`) it sets a floor ``f`` on the
observed rate, and the ceiling becomes ``max(c(theta_bundle), f - b)``: the
threshold may then rise above the calibrated one (``binding == "drift"``),
still capped by every budget through ``r*``.

Hysteresis: ``r_cmd`` may fall by at most ``max_step_down`` and rise by at most
``max_step_up`` per update (cut fast, restore slowly), and a change smaller
than ``deadband`` leaves the threshold where it is. Without a calibrated curve
the controller builds one from the last ``score_window`` gate scores it saw
(and holds the bundle threshold until it has ``warmup_frames``).

Pure logic: time comes from ``clock`` (or ``now=`` arguments), nothing sleeps.

    >>> ctl = BudgetController.for_bundle(bundle, Budgets(max_offload_rate=0.1))  # doctest: +SKIP
    >>> thr = ctl.threshold                      # use for this frame's gate
    >>> ctl.observe_frame(score, offloaded=score < thr, latency_ms=12.0)
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jetsplit.bundle import Bundle
from jetsplit.edge.budgets import Budgets, ControllerConfig, ControllerState
from jetsplit.edge.curve import ThresholdCurve
from jetsplit.edge.early import EarlyOffload
from jetsplit.edge.power.budget import PowerLoop
from jetsplit.errors import ConfigError

__all__ = ["Budgets", "BudgetController", "ControllerConfig", "ControllerState", "ThresholdCurve"]

class _Ewma:
    def __init__(self, alpha: float) -> None:
        self.alpha, self.value, self.count = alpha, 0.0, 0
        self.last = 0.0

    def add(self, x: float) -> None:
        self.count += 1
        # The first samples average plainly, so one early outlier does not linger.
        a = max(self.alpha, 1.0 / self.count)
        self.value += a * (x - self.value)


class BudgetController:
    """Holds :class:`Budgets` by moving one gate threshold (module docstring).

    ``threshold`` is what the gate should use now; feed back every frame with
    :meth:`observe_frame`, every cloud round trip with :meth:`observe_round_trip`
    and, where power is measured, :meth:`observe_power`.
    """

    def __init__(self, curve: ThresholdCurve | None, base_threshold: float, budgets: Budgets,
                 config: ControllerConfig | None = None, clock: Callable[[], float] = time.monotonic,
                 gate_stage: int | None = None) -> None:
        self.budgets = budgets
        self.config = cfg = config or ControllerConfig()
        self.base_threshold = float(base_threshold)
        self.gate_stage = gate_stage
        self._clock = clock
        self._curve = curve
        self._calibrated = curve is not None
        self.threshold = float(base_threshold)
        self._r_cmd: float | None = None
        self._last_update: float | None = None
        n = cfg.window_frames
        self._sent: deque[float] = deque(maxlen=n)  # sent_i - c(theta_i)
        self._wanted: deque[bool] = deque(maxlen=n)
        self._latency: deque[float] = deque(maxlen=n)
        self._times: deque[float] = deque(maxlen=n)
        self._bytes: deque[int] = deque(maxlen=n)
        self._energy: deque[float] = deque(maxlen=n)
        self._scores: deque[float] = deque(maxlen=cfg.score_window)
        self._rtt: deque[float] = deque(maxlen=max(20, n // 3))
        self._late = _Ewma(cfg.ewma)
        self._late_local = _Ewma(cfg.ewma)
        self._bytes_off = _Ewma(cfg.ewma)
        self._e_local = _Ewma(cfg.ewma)
        self._e_off = _Ewma(cfg.ewma)
        self._watts = _Ewma(cfg.ewma)
        self._gains = {"latency": 1.0, "bytes": 1.0, "energy": 1.0}
        self._r_congestion: float | None = None  # r_C while congestion binds
        self._replies = self._refused = 0  # cloud replies in this interval, and those refused
        self._refused_ewma = _Ewma(cfg.ewma)
        self._limits: dict[str, float] = {}
        self._binding = "calibration"
        self._target = 1.0
        self._floor: float | None = None
        self.updates = 0
        self.early: EarlyOffload | None = None
        # Always there, learning what frames cost, so a power budget set by a
        # reload acts on its first update.
        self._power = PowerLoop(budgets.power_w, gain=cfg.power_gain, max_step_down=cfg.max_step_down,
                                max_step_up=cfg.max_step_up)
        self._power_source: Callable[[], float] | None = None
        self._pending_budgets: Budgets | None = None

    @classmethod
    def for_bundle(cls, bundle: Bundle, budgets: Budgets, config: ControllerConfig | None = None,
                   clock: Callable[[], float] = time.monotonic) -> BudgetController:
        """A controller on the gate of the last edge stage (the one that
        decides edge answer or cloud), with the bundle's calibrated curve."""
        first_cloud = bundle.first_cloud_stage()
        if not first_cloud:
            raise ConfigError(f"bundle {bundle.name!r}: no edge stage followed by a cloud stage: nothing to control")
        gate = bundle.stages[first_cloud - 1].gate
        if gate is None:
            raise ConfigError(f"bundle {bundle.name!r}: stage {bundle.stages[first_cloud - 1].name!r} has no gate")
        ctl = cls(ThresholdCurve.from_gate(gate), gate.threshold, budgets, config, clock, gate_stage=first_cloud - 1)
        # Always there (at fraction 0 it is the calibrated chain), so a power
        # budget set by a reload can use it too.
        ctl.early = EarlyOffload.for_bundle(bundle)
        ctl._power.early_available = ctl.early is not None
        return ctl

    def set_budgets(self, budgets: Budgets) -> None:
        """New budgets from the next update on (the agent's config reloaded;
        safe from a signal handler). A power budget keeps its loop's state, so
        a relaxed one gives the work back at the loop's pace, not in one jump."""
        self._pending_budgets = budgets

    def _apply_budgets(self, budgets: Budgets) -> None:
        self.budgets = budgets
        self._power.set_budget(budgets.power_w)
        if budgets.power_w is None and self.early is not None:
            self.early.fraction = 0.0

    def watch_power(self, source: Callable[[], float]) -> None:
        """Where the board's average power comes from (the agent's meter),
        read at each update."""
        self._power_source = source

    # -- what the agent uses ------------------------------------------------------
    def thresholds(self, base: Sequence[float | None]) -> tuple[float | None, ...]:
        """``base`` (the bundle's thresholds) with the controlled gate's replaced:
        for ``Chain.run_from(thresholds=...)``."""
        out = list(base)
        if self.gate_stage is not None:
            out[self.gate_stage] = self.threshold
        return tuple(out)

    def observe_frame(self, score: float, offloaded: bool, latency_ms: float, bytes_up: int = 0,
                      energy_mj: float = 0.0, threshold: float | None = None, now: float | None = None,
                      missed: bool = False, radio_mj: float = 0.0, early: bool = False,
                      stage: int | None = None) -> None:
        """One frame's outcome, when its result is out: its gate ``score`` at the
        controlled gate, whether it was sent to the cloud, its capture-to-result
        latency, the bytes sent and energy used for it, and the ``threshold`` it
        was gated with (default: the current one). ``missed``: it was sent, but
        the cloud's answer did not come by the deadline (a fallback); for the
        latency budget it counts as late, since the answer the frame was sent
        for came later than allowed, whatever latency the fallback had. For the
        power budget: ``radio_mj``, the share of ``energy_mj`` sending cost;
        ``early``, sent from the early gate (its score is that gate's, not this
        one's); ``stage``, the edge stage that answered it locally."""
        now = self._clock() if now is None else now
        thr = self.threshold if threshold is None else float(threshold)
        wanted = bool(score < thr)
        # The power loop learns what frames cost, budget or not.
        first = stage is not None and self.gate_stage is not None and stage < self.gate_stage
        path = "early" if early else "offload" if offloaded else "first" if first else "local"
        self._power.observe_frame(path, energy_mj, radio_mj)
        if not early:
            if math.isfinite(score):
                self._scores.append(float(score))
            curve = self._curve
            self._sent.append(float(wanted) - (curve.rate(thr) if curve is not None else float(wanted)))
            self._wanted.append(wanted)
        self._latency.append(float(latency_ms))
        self._times.append(now)
        self._bytes.append(int(bytes_up))
        self._energy.append(float(energy_mj))
        if offloaded:
            if self.budgets.latency_ms is not None:
                self._late.add(float(missed or latency_ms > self.budgets.latency_ms))
            self._bytes_off.add(float(bytes_up))
            self._e_off.add(float(energy_mj))
        else:
            if self.budgets.latency_ms is not None:
                self._late_local.add(float(latency_ms > self.budgets.latency_ms))
            self._e_local.add(float(energy_mj))
        if self._last_update is None:
            self._last_update = now
        else:
            self.update(now)

    def observe_round_trip(self, rtt_ms: float) -> None:
        """A cloud reply's round trip (the simulator also reports a timeout this
        way, as the deadline it took)."""
        self._rtt.append(float(rtt_ms))

    def observe_congestion(self, refused: bool) -> None:
        """A cloud reply to an offload; ``refused``: the worker answered
        ``OVERLOADED`` (congestion, module docstring)."""
        self._replies += 1
        self._refused += int(refused)
        self._refused_ewma.add(float(refused))

    def _congestion_limit(self, r_recent: float) -> float | None:
        """``r_C`` after this interval's replies (None: no congestion to answer)."""
        cfg = self.config
        r = self._r_congestion
        if self._replies and self._refused / self._replies > cfg.congestion_threshold:
            f = self._refused / self._replies
            r = (r_recent if r is None else min(r, r_recent)) * (1.0 - f) * cfg.shrink
        elif r is not None:
            r += cfg.congestion_recover
            if r >= 1.0:
                r = None
        self._replies = self._refused = 0
        self._r_congestion = r
        return r

    def set_floor(self, rate: float | None) -> None:
        """Offload at least ``rate`` of the frames (observed on the stream, not as
        the curve predicts), within the budgets, even above the calibrated
        threshold; ``None`` ends it. The field monitor sets it while the edge
        looks unreliable (drift or a failing shadow audit)."""
        self._floor = None if rate is None else min(1.0, max(0.0, float(rate)))

    def observe_power(self, watts: float, now: float | None = None) -> None:
        """The board's measured average power."""
        self._watts.add(float(watts))
        self._watts.last = float(watts)

    # -- the loop -----------------------------------------------------------------
    def _fps(self) -> float:
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    def _gain(self, name: str, measured: float, budget: float, r_recent: float, feed_forward: float) -> float:
        cfg = self.config
        g = self._gains[name]
        if measured > budget:
            # Anti-windup: while the recent rate is still above the feed-forward
            # limit, the cut is under way; only a budget still missed once the
            # rate obeys the model says the model is wrong.
            if r_recent <= 1.1 * g * feed_forward + 1e-3:
                g *= cfg.shrink
        elif measured < cfg.relax * budget:
            g *= cfg.grow
        self._gains[name] = g = min(1.0, max(cfg.gain_min, g))
        return g

    def _compute_limits(self, fps: float, r_obs: float, ceiling: float = 1.0) -> dict[str, float]:
        b, cfg = self.budgets, self.config
        k = cfg.feedback_frames
        recent_wanted = list(self._wanted)[-k:]
        r_recent = sum(recent_wanted) / max(len(recent_wanted), 1)
        limits: dict[str, float] = {}
        if b.max_offload_rate is not None:
            limits["offload_rate"] = b.max_offload_rate
        r_congestion = self._congestion_limit(r_recent)
        if r_congestion is not None:
            limits["congestion"] = r_congestion
        if b.uplink_bytes_per_s is not None and fps > 0 and self._bytes_off.count and self._bytes_off.value > 0:
            recent = list(self._bytes)[-k:]
            measured = sum(recent) / len(recent) * fps
            ff = b.uplink_bytes_per_s / (fps * self._bytes_off.value)
            limits["uplink"] = self._gain("bytes", measured, b.uplink_bytes_per_s, r_recent, ff) * ff
        if b.latency_ms is not None and self._late.count:
            # Frames answered on the edge may be late too; they use up part of
            # the allowance before any offload does.
            allowed = max(0.0, (1.0 - b.latency_quantile) - self._late_local.value * (1.0 - r_obs))
            measured = float(np.quantile(list(self._latency)[-k:], b.latency_quantile))
            ff = allowed * cfg.latency_margin / max(self._late.value, 1e-6)
            limits["latency"] = self._gain("latency", measured, b.latency_ms, r_recent, ff) * ff
        delta_e = self._e_off.value - self._e_local.value if self._e_off.count and self._e_local.count else 0.0
        if b.energy_per_frame_mj is not None and self._energy:
            recent_e = list(self._energy)[-k:]
            measured = sum(recent_e) / len(recent_e)
            if delta_e > 0:
                ff = (b.energy_per_frame_mj - self._e_local.value) / delta_e
                limits["energy"] = self._gain("energy", measured, b.energy_per_frame_mj, r_recent, ff) * ff
            elif measured > b.energy_per_frame_mj:
                # Offloading does not look costlier than local answers: nothing to cut.
                limits["energy"] = 1.0
        if self._power.budget_w is not None:
            if self._power_source is not None:
                self.observe_power(self._power_source())
            # Without a meter: the frames' energy at the frame rate.
            watts = self._watts.last if self._watts.count else (
                sum(self._energy) / len(self._energy) / 1000.0 * fps if self._energy else 0.0)
            recent_bytes = list(self._bytes)[-k:]
            uplink_over = b.uplink_bytes_per_s is not None and bool(recent_bytes) and \
                sum(recent_bytes) / len(recent_bytes) * fps > b.uplink_bytes_per_s
            self._power.early_available = self.early is not None and not uplink_over
            limits["power"], fraction = self._power.update(watts, fps, r_recent, ceiling)
            if self.early is not None:
                self.early.fraction = fraction
        return {name: min(1.0, max(0.0, v)) for name, v in limits.items()}

    def update(self, now: float | None = None, force: bool = False) -> float:
        """Recompute the threshold if ``update_interval_s`` has passed since the
        last update (``observe_frame`` calls this), or now with ``force``. The
        interval is part of the rate limiting: calling this per frame does not
        make the threshold move faster."""
        now = self._clock() if now is None else now
        cfg = self.config
        if not force and self._last_update is not None and now - self._last_update < cfg.update_interval_s:
            return self.threshold
        self._last_update = now
        self.updates += 1
        pending, self._pending_budgets = self._pending_budgets, None
        if pending is not None:
            self._apply_budgets(pending)
        if not self._calibrated and len(self._scores) >= cfg.warmup_frames:
            # No calibrated curve: the stream's own scores are the curve.
            self._curve = ThresholdCurve.from_scores(self._scores)
        curve = self._curve
        if curve is None or not self._wanted:
            return self.threshold
        fps = self._fps()
        r_obs = sum(self._wanted) / len(self._wanted)
        bias = sum(self._sent) / len(self._sent) if self._calibrated else 0.0
        # The curve's rate at the bundle threshold is the most the gate may send:
        # calibration chose that threshold, budgets only take offloads away.
        base_rate = ceiling = curve.rate(self.base_threshold)
        self._limits = self._compute_limits(fps, r_obs, min(1.0, max(0.0, base_rate + bias)))
        self._binding, self._target = min(self._limits.items(), key=lambda kv: kv[1]) if self._limits else ("none", 1.0)
        if self._floor is not None:
            # An unreliable edge: a floor on the observed rate, the bias turning
            # it into a command on the curve; budgets (the target) still cap it.
            ceiling = max(ceiling, min(1.0, self._floor - bias))
        want = min(ceiling, max(0.0, self._target - bias))
        if want >= ceiling:
            self._binding = "calibration" if ceiling <= base_rate else "drift"
            if self._binding == "calibration" and self.early is not None and self.early.fraction > 0:
                self._binding = "power"  # held by offloading early, not by the last gate
        # What the curve says the threshold in force sends on (the observed
        # curve changes under a fixed threshold as scores come in).
        predicted = curve.rate(self.threshold)
        prev = predicted if self._r_cmd is None else self._r_cmd
        want = min(prev + cfg.max_step_up, max(prev - cfg.max_step_down, want))
        self._r_cmd = want
        if abs(want - predicted) >= cfg.deadband:
            # Never looser than calibrated: budgets only take offloads away.
            if want > base_rate:
                self.threshold = max(curve.threshold_for(want), self.base_threshold)
            else:
                self.threshold = self.base_threshold if want >= base_rate else min(curve.threshold_for(want),
                                                                                   self.base_threshold)
        return self.threshold

    def summary(self) -> dict[str, Any]:
        """What binds and the figures it binds on, for the agent's end-of-run
        summary: ``binding`` names the budget that limits the offload (or
        ``calibration``); with a power budget, its measured watts, the early
        fraction, the early offloads sent, and whether it went unmet."""
        snap = self.snapshot()
        out: dict[str, Any] = {"binding": snap.binding, "offload_rate": round(snap.observed_rate, 4),
                               "limits": {k: round(v, 4) for k, v in snap.limits.items()}}
        if self._power.budget_w is not None:
            out.update(power_w=self._power.budget_w, watts=round(self._power.watts, 3), power_knob=snap.power_knob,
                       early_fraction=round(snap.early_fraction, 4), power_unmet=snap.power_unmet)
        if self.early is not None:
            out["early_offloads"] = self.early.sent
        return out

    def snapshot(self) -> ControllerState:
        b = self.budgets
        q = b.latency_quantile
        return ControllerState(
            threshold=self.threshold,
            base_threshold=self.base_threshold,
            target_rate=self._target,
            commanded_rate=self._r_cmd if self._r_cmd is not None else float("nan"),
            observed_rate=sum(self._wanted) / len(self._wanted) if self._wanted else 0.0,
            curve_bias=sum(self._sent) / len(self._sent) if self._sent else 0.0,
            binding=self._binding,
            limits=dict(self._limits),
            gains=dict(self._gains),
            fps=self._fps(),
            latency_p_ms=float(np.quantile(self._latency, q)) if self._latency else 0.0,
            rtt_p95_ms=float(np.quantile(self._rtt, 0.95)) if self._rtt else 0.0,
            late_fraction=self._late.value,
            bytes_per_s=sum(self._bytes) / len(self._bytes) * self._fps() if self._bytes else 0.0,
            energy_per_frame_mj=sum(self._energy) / len(self._energy) if self._energy else 0.0,
            watts=self._watts.value,
            refused_fraction=self._refused_ewma.value,
            curve="calibrated" if self._calibrated else ("observed" if self._curve is not None else "none"),
            updates=self.updates,
            early_fraction=self.early.fraction if self.early is not None else 0.0,
            power_knob=self._power.knob,
            power_unmet=self._power.unmet,
        )
