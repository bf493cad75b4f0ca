"""The power budget's control law: average board power held at a budget by
moving the offload in whichever direction the chain allows.

Two knobs, each an integrator on the measured board power ``P`` (the meter's
average over ``[power] average_s``, from the sensor) against the budget ``B``:

- ``r_P``, a limit on the offload rate at the last edge gate (the controller's
  own knob): where an offload costs the board more than a local answer (the
  radio), fewer offloads draw less;
- ``e``, the early-offload fraction (:mod:`jetsplit.edge.early`): where edge
  stages run after an earlier gate, sending the least confident frames at that
  gate skips them; it helps only when what they skip costs more than sending.

Every update (the controller's ``update_interval_s``), with ``err = P - B``::

    over budget (err > 0):   raise e   if early offload saves power (d_B < 0) and e < 1
                             else lower r_P
    under budget (err < 0):  raise r_P back to the calibrated rate first,
                             then lower e back to 0   (the work is given back)
    step = gain * |err| / s  (gain in (0, 1): a damped Newton step)

with the slopes, in watts per unit of rate, from the frames' own energy
(:class:`~jetsplit.edge.power.energy.FrameEnergy`, compute and radio), ``fps``
the frame rate and ``c0`` the fraction of frames continuing past the early gate::

    s_A = fps * (E_offloaded - E_local at the last gate)            (> 0 with a radio cost)
    d_B = E_early - E_continued          (E_early: E_first + the radio of an offload)
    s_B = fps * c0 * -d_B

Where a frame's energy cannot show the cost (no radio figure configured), the
slope is taken from the board's own response instead: ``dP / dr`` between
updates at least 0.05 of rate apart (a secant, kept as an EWMA). The larger of
the two is used: overestimating a slope slows convergence, underestimating it
would overshoot. Steps are limited like the controller's (``max_step_down``,
``max_step_up``), so the integrator never runs ahead of what the gate does
(anti-windup).

Tolerance and settling (measured on the simulated board, docs/edge-power.md):
with the default ``power_gain`` 0.3 the settled average power was within 5% of
the budget in every run, the 1 s average within 5% for good 5-16 s after the
budget was set; a budget that cannot be met (nothing left to cut, every early
offload taken) is reported as ``unmet``.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

__all__ = ["PowerLoop", "PowerState"]

log = logging.getLogger("jetsplit.edge.power")


@dataclass
class PowerState:
    """The loop's view, for the controller's snapshot."""

    budget_w: float | None
    watts: float
    rate_limit: float
    early_fraction: float
    slope_rate: float  # W per unit of offload rate at the last gate
    slope_early: float  # W saved per unit of early fraction
    knob: str  # "offload", "early" or "" (none moved yet)
    unmet: bool


class _Ewma:
    def __init__(self, alpha: float = 0.05) -> None:
        self.alpha, self.value, self.count = alpha, 0.0, 0

    def add(self, x: float) -> None:
        self.count += 1
        a = max(self.alpha, 1.0 / self.count)
        self.value += a * (x - self.value)


class PowerLoop:
    """Holds ``budget_w`` (see the module docstring); with None it only learns
    what frames cost. ``early`` says whether the chain has an early gate to
    offload from."""

    def __init__(self, budget_w: float | None, early: bool = False, gain: float = 0.3,
                 max_step_down: float = 0.25, max_step_up: float = 0.02) -> None:
        self.budget_w = None if budget_w is None else float(budget_w)
        self.early_available = early
        self.gain = gain
        self.max_step_down, self.max_step_up = max_step_down, max_step_up
        self.rate_limit = 1.0
        self.early_fraction = 0.0
        self.watts = 0.0
        self.knob = ""
        self.unmet = False
        # Per-frame energy (mJ) by what happened to the frame.
        self._e = {k: _Ewma() for k in ("first", "local", "offload", "early")}
        self._radio = _Ewma()
        self._continued = _Ewma(0.01)  # did the frame continue past the early gate
        self._history: deque[tuple[float, float]] = deque(maxlen=40)  # (rate, watts) per update
        self._secant = _Ewma(0.2)
        self.slope_rate = 0.0
        self.slope_early = 0.0

    def set_budget(self, budget_w: float | None) -> None:
        """A new budget; None lets everything go back at once (no budget)."""
        if budget_w is None:
            self.rate_limit, self.early_fraction, self.knob, self.unmet = 1.0, 0.0, "", False
        self.budget_w = None if budget_w is None else float(budget_w)

    def observe_frame(self, path: str, energy_mj: float, radio_mj: float = 0.0) -> None:
        """``path``: ``first`` (answered at an edge gate before the last),
        ``local`` (answered at the last edge gate), ``offload`` (sent from the
        last gate), ``early`` (sent from the early gate)."""
        self._e[path].add(energy_mj)
        if path in ("offload", "early"):
            self._radio.add(radio_mj)
        if self.early_available:
            self._continued.add(float(path != "first"))

    def _slopes(self, fps: float, rate: float) -> tuple[float, float]:
        e = self._e
        ff = fps * (e["offload"].value - e["local"].value) / 1000.0 if e["offload"].count and e["local"].count else 0.0
        # The board's own answer: the secant between this update and one whose
        # rate differed enough to see.
        for old_rate, old_watts in self._history:
            if abs(rate - old_rate) >= 0.05:
                self._secant.add(max(0.0, (self.watts - old_watts) / (rate - old_rate)))
                break
        slope_rate = max(ff, self._secant.value if self._secant.count else 0.0)
        slope_early = 0.0
        if self.early_available and e["first"].count:
            continued = [e[k] for k in ("local", "offload") if e[k].count]
            if continued:
                e_cont = sum(x.value * x.count for x in continued) / sum(x.count for x in continued)
                e_early = e["early"].value if e["early"].count >= 10 else e["first"].value + self._radio.value
                slope_early = fps * self._continued.value * (e_cont - e_early) / 1000.0
        return slope_rate, slope_early

    def update(self, watts: float, fps: float, rate: float, ceiling: float) -> tuple[float, float]:
        """One step on the measured ``watts``; ``rate`` is the recent offload
        rate at the last gate, ``ceiling`` the calibrated one. Returns the rate
        limit and the early fraction."""
        if self.budget_w is None:
            raise ValueError("PowerLoop.update: no budget set")
        self.watts = watts
        self.slope_rate, self.slope_early = self._slopes(fps, rate)
        self._history.appendleft((rate, watts))
        err = watts - self.budget_w
        # Without any slope yet, assume the offloads span half the budget:
        # a guess only for the first step, which the secant then corrects.
        s_rate = self.slope_rate if self.slope_rate > 0.02 * self.budget_w else 0.5 * self.budget_w
        self.rate_limit = min(self.rate_limit, ceiling)
        self.unmet = False
        if err > 0 and self.early_available and not self._known():
            # Which way helps is not known yet: hold rather than cut the wrong knob.
            pass
        elif err > 0:
            if self.early_available and self.slope_early > 0 and self.early_fraction < 1.0:
                step = min(0.1, self.gain * err / self.slope_early)
                self.early_fraction = min(1.0, self.early_fraction + step)
                self.knob = "early"
            elif self.rate_limit > 0.0:
                step = min(self.max_step_down, self.gain * err / s_rate)
                self.rate_limit = max(0.0, min(self.rate_limit, rate + self.max_step_up) - step)
                self.knob = "offload"
            else:
                self.unmet = True
        elif err < 0:
            if self.rate_limit < ceiling:
                step = min(self.max_step_up, self.gain * -err / s_rate)
                self.rate_limit = min(ceiling, self.rate_limit + step)
            elif self.early_fraction > 0.0:
                slope = self.slope_early if self.slope_early > 0 else 0.5 * self.budget_w
                # As large a step as going up: unequal limits would bias the average.
                self.early_fraction = max(0.0, self.early_fraction - min(0.1, self.gain * -err / slope))
        log.debug("power loop: %.3f W of %.3f, rate %.3f limit %.3f (%.2f W/rate), early %.3f (%.2f W saved/unit)",
                  watts, self.budget_w, rate, self.rate_limit, self.slope_rate, self.early_fraction, self.slope_early)
        return self.rate_limit, self.early_fraction

    def _known(self) -> bool:
        """Enough frames of each kind to tell whether early offload saves power."""
        e = self._e
        return e["first"].count >= 20 and e["local"].count + e["offload"].count >= 20

    def state(self) -> PowerState:
        return PowerState(self.budget_w, self.watts, self.rate_limit, self.early_fraction, self.slope_rate,
                          self.slope_early, self.knob, self.unmet)
