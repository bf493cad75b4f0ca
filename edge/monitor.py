"""Knowing in the field when the edge is wrong: drift, shadow audit, field traces.

:class:`FieldMonitor` is what the edge agent holds for this. Per frame it takes
the gate score at the gate before the cloud (:mod:`jetsplit.edge.drift`, one
detector per source), picks the accepted frames the shadow audit also sends
(:mod:`jetsplit.edge.audit`), compares the cloud's answers for them with the
edge's, and writes offloaded and audited frames, labelled by the cloud, to a
field trace (:mod:`jetsplit.fieldtrace`) that ``jetsplit tune`` re-tunes from.

While any alarm (drift or audit) is active and ``react`` is on, the budget
controller is given an offload floor: ``react_boost`` times the calibrated
offload rate, capped by every budget (budgets still bind: the floor never asks
for more than they allow). The alarm line says so; the floor goes when the
last alarm clears.

``[monitor]`` in edge.toml::

    [monitor]
    drift = true                # compare gate scores with the bundle's calibration
    window = 300                # frames per drift window (per source)
    every = 50                  # frames between evaluations
    bins = 10
    alarm_psi = 0.25
    clear_psi = 0.10
    confirm = 2                 # evaluations over (under) the level to raise (clear)
    shadow_rate = 0.0           # share of edge-accepted frames also sent to the cloud
    shadow_seed = 0
    audit_window = 400          # audits in the recent estimate
    audit_max_drop = 0.05       # alarm when the edge's accuracy is this far below expected
    audit_min_accuracy = 0.97   # expected edge accuracy (default: the bundle's meta)
    react = true                # offload more while an alarm is active
    react_boost = 2.0
    field_trace = "/var/lib/jetsplit/field.jsonl"
    field_frames = "/var/lib/jetsplit/field-frames"   # only with offload = "frames"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.bundle import Bundle
from jetsplit.edge.audit import ShadowAudit
from jetsplit.edge.controller import BudgetController, ThresholdCurve
from jetsplit.edge.drift import DriftConfig, DriftDetector, DriftEvent, ReferenceDistribution
from jetsplit.errors import ConfigError
from jetsplit.fieldtrace import FieldTraceWriter
from jetsplit.manifest import TableReader

__all__ = ["FieldMonitor", "MonitorConfig"]

_log = logging.getLogger("jetsplit.edge.monitor")


@dataclass(frozen=True)
class MonitorConfig:
    drift: bool = True
    drift_config: DriftConfig = field(default_factory=DriftConfig)
    shadow_rate: float = 0.0
    shadow_seed: int = 0
    audit_window: int = 400
    audit_max_drop: float = 0.05
    audit_min_accuracy: float | None = None
    react: bool = True
    react_boost: float = 2.0
    field_trace: str | None = None
    field_frames: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.shadow_rate <= 1.0:
            raise ConfigError(f"[monitor].shadow_rate: expected a fraction in [0, 1], got {self.shadow_rate}")
        if self.audit_window < 10:
            raise ConfigError(f"[monitor].audit_window: expected an integer >= 10, got {self.audit_window}")
        if not 0.0 < self.audit_max_drop < 1.0:
            raise ConfigError(f"[monitor].audit_max_drop: expected a fraction in (0, 1), got {self.audit_max_drop}")
        if self.audit_min_accuracy is not None and not 0.0 < self.audit_min_accuracy <= 1.0:
            raise ConfigError(f"[monitor].audit_min_accuracy: expected a fraction in (0, 1], "
                              f"got {self.audit_min_accuracy}")
        if not self.react_boost >= 1.0:
            raise ConfigError(f"[monitor].react_boost: expected a number >= 1, got {self.react_boost}")
        if self.field_frames is not None and self.field_trace is None:
            raise ConfigError("[monitor].field_frames: frames are written beside a field trace; set field_trace too")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[monitor]") -> MonitorConfig:
        r = TableReader(table, where, ConfigError)
        d = cls.__dataclass_fields__

        def flag(key: str) -> bool:
            value = r.custom(key, lambda v: v, d[key].default)
            if not isinstance(value, bool):
                raise r.fail(key, "true or false", value)
            return value

        cfg = cls(
            drift=flag("drift"), drift_config=DriftConfig.from_reader(r),
            shadow_rate=r.number("shadow_rate", 0.0), shadow_seed=r.integer("shadow_seed", 0),
            audit_window=r.integer("audit_window", d["audit_window"].default),
            audit_max_drop=r.number("audit_max_drop", d["audit_max_drop"].default),
            audit_min_accuracy=r.number("audit_min_accuracy", None), react=flag("react"),
            react_boost=r.number("react_boost", d["react_boost"].default),
            field_trace=r.text("field_trace", None), field_frames=r.text("field_frames", None),
        )
        r.done()
        return cfg


@dataclass
class _Audit:
    frame: int
    source_id: str
    edge_class: int
    score: float
    edge_ms: float
    bytes_up: int
    deadline_at: float
    truth: str | None
    image: np.ndarray | None


class FieldMonitor:
    """Drift detectors per source, the shadow audit and the field trace of one agent."""

    def __init__(self, bundle: Bundle, config: MonitorConfig, controller: BudgetController | None,
                 audit_block: str | None, frames_allowed: bool) -> None:
        self.bundle, self.config, self.controller = bundle, config, controller
        first_cloud = bundle.first_cloud_stage()
        self.gate_stage = None if not first_cloud else first_cloud - 1
        gate = None if self.gate_stage is None else bundle.stages[self.gate_stage].gate
        self.stage_name = "" if self.gate_stage is None else bundle.stages[self.gate_stage].name
        self._reference: ReferenceDistribution | None = None
        if config.drift and gate is not None and len(gate.curve_threshold) >= 2:
            self._reference = ReferenceDistribution(gate.curve_threshold, gate.curve_continue,
                                                    config.drift_config.bins, gate.threshold)
        elif config.drift:
            _log.warning("drift monitor off: the bundle stores no calibrated score curve for the gate before the "
                         "cloud (re-tune it with `jetsplit tune` to add one)")
        self._calib_rate = (ThresholdCurve.from_gate(gate).rate(gate.threshold)  # type: ignore[union-attr]
                            if gate is not None and len(gate.curve_threshold) >= 2 else None)
        self._detectors: dict[str, DriftDetector] = {}
        self.events: list[DriftEvent] = []
        self.audit: ShadowAudit | None = None
        self.audit_block = audit_block if config.shadow_rate > 0 else None
        if config.shadow_rate > 0 and audit_block is None:
            expected = config.audit_min_accuracy
            if expected is None:
                meta = bundle.extra.get("calib_edge_accuracy")
                expected = float(meta) if isinstance(meta, (int, float)) else None
            big = bundle.extra.get("calib_cloud_accuracy")
            self.audit = ShadowAudit(config.shadow_rate, seed=config.shadow_seed, window=config.audit_window,
                                     cloud_error=1.0 - float(big) if isinstance(big, (int, float)) else None,
                                     expected=expected, max_drop=config.audit_max_drop)
            if expected is None:
                _log.info("shadow audit: no expected edge accuracy (audit_min_accuracy, or the bundle's "
                          "meta.calib_edge_accuracy): estimating without an accuracy alarm")
        elif config.shadow_rate > 0:
            _log.warning("shadow audit off: %s", audit_block)
        self._audits: dict[int, _Audit] = {}
        self._audit_alarm_at: int | None = None
        self.trace: FieldTraceWriter | None = None
        if config.field_trace is not None:
            frames_dir = None
            if config.field_frames is not None:
                if frames_allowed:
                    frames_dir = Path(config.field_frames)
                else:
                    _log.warning("field_frames ignored: offload = %s keeps frames on the board; only scores are traced",
                                 "activations/none")
            self.trace = FieldTraceWriter(Path(config.field_trace), bundle, config.shadow_rate, frames_dir)
        self._floor_on = False

    # -- drift ---------------------------------------------------------------------------
    def observe(self, frame: int, source_id: str, score: float) -> None:
        """A frame's score at the gate before the cloud (frames that reached it)."""
        if self._reference is None:
            return
        det = self._detectors.get(source_id)
        if det is None:
            det = self._detectors[source_id] = DriftDetector(self._reference, self.config.drift_config,
                                                             source_id, self.stage_name)
        event = det.add(score, frame)
        if event is not None:
            self.events.append(event)
            self._on_alarm_change(event.raised, self._drift_line(event))

    def _drift_line(self, e: DriftEvent) -> str:
        where = f"stage {e.stage!r}" + (f", source {e.source_id!r}" if e.source_id else "")
        if e.raised:
            return (f"drift alarm at frame {e.frame}: {where}: {e.metric} {e.value:.3f} >= {e.limit} "
                    f"(gate scores no longer look like calibration)")
        return f"drift cleared at frame {e.frame}: {where}: psi {e.value:.3f} < {e.limit}"

    # -- shadow audit --------------------------------------------------------------------
    def pick_audit(self) -> bool:
        """Whether the next frame, if its gate accepts it, is also sent to the cloud."""
        return self.audit is not None and self.audit.select()

    def audit_thresholds(self, thresholds: tuple[float | None, ...]) -> tuple[float | None, ...]:
        """Thresholds that keep the frame going past the gate before the cloud
        (so its carry and state are there to send); the agent applies the real
        threshold to the score itself."""
        out = list(thresholds)
        if self.gate_stage is not None:
            out[self.gate_stage] = float("inf")
        return tuple(out)

    def audit_sent(self, rid: int, frame: int, source_id: str, edge_class: int, score: float, edge_ms: float,
                   bytes_up: int, deadline_at: float, truth: str | None, image: np.ndarray | None) -> None:
        assert self.audit is not None
        self.audit.sent += 1
        self._audits[rid] = _Audit(frame, source_id, edge_class, score, edge_ms, bytes_up, deadline_at, truth,
                                   image if self.trace is not None and self.trace.frames_dir is not None else None)

    def skip_audit(self) -> None:
        """A picked frame that could not be sent (window, breaker, no worker)."""
        if self.audit is not None:
            self.audit.skipped += 1

    @property
    def audits_in_flight(self) -> int:
        return len(self._audits)

    def on_reply(self, rid: int, ok: bool, cloud_class: int, rtt_ms: float, cloud_top: float | None = None) -> bool:
        """A reply; True when it answered an audit (not a frame's offload)."""
        pending = self._audits.pop(rid, None)
        if pending is None:
            return False
        assert self.audit is not None
        if not ok or time.monotonic() > pending.deadline_at:
            self.audit.lost += 1
            return True
        change = self.audit.record(pending.edge_class, cloud_class, cloud_top)
        if change is not None:
            est = self.audit.estimate()
            if change:
                self._audit_alarm_at = pending.frame
            line = (f"audit alarm at frame {pending.frame}: edge and cloud agree on {est.agreement:.3f} of the last "
                    f"{est.n} audits, below the expected {self.audit.expected:.3f} - {self.audit.max_drop:.3f} "
                    f"(edge accuracy in [{est.low:.3f}, {est.high:.3f}])" if change else
                    f"audit cleared at frame {pending.frame}: edge accuracy {est.agreement:.3f} "
                    f"[{est.low:.3f}, {est.high:.3f}]")
            self._on_alarm_change(change, line)
        if self.trace is not None:
            # Each audit stands for 1/R accepted frames, and for its share of the
            # picked frames that could not be sent (window, breaker): those are
            # skipped for load, not content, so the sent ones stay a fair sample.
            weight = (self.audit.sent + self.audit.skipped) / max(self.audit.sent, 1) / self.audit.rate
            self.trace.record("audit", pending.frame, pending.source_id, pending.score, pending.edge_class,
                              cloud_class, weight, pending.edge_ms, rtt_ms, pending.bytes_up,
                              pending.truth, pending.image, self.bundle.labels[cloud_class])
        return True

    def expire(self, rids: list[int], now: float) -> None:
        """Audits the client gave up on, and those past their deadline."""
        if self.audit is None:
            return
        gone = [r for r in rids if r in self._audits]
        gone += [r for r, a in self._audits.items() if a.deadline_at <= now and r not in gone]
        for r in gone:
            self._audits.pop(r, None)
            self.audit.lost += 1

    def offloaded(self, frame: int, source_id: str, score: float, edge_class: int, cloud_class: int,
                  edge_ms: float, rtt_ms: float, bytes_up: int, truth: str | None, image: np.ndarray | None) -> None:
        """A frame the cloud answered in time: into the field trace."""
        if self.trace is not None:
            self.trace.record("offload", frame, source_id, score, edge_class, cloud_class, 1.0, edge_ms, rtt_ms,
                              bytes_up, truth, image, self.bundle.labels[cloud_class])

    # -- reaction --------------------------------------------------------------------------
    @property
    def alarm(self) -> str | None:
        """A short text of the alarms now active (for results and ``jetsplit top``)."""
        active = [f"drift:{d.stage}@{d.source_id}" if d.source_id else f"drift:{d.stage}"
                  for d in self._detectors.values() if d.active is not None]
        if self.audit is not None and self.audit.alarm:
            active.append("audit")
        return ",".join(active) or None

    def _on_alarm_change(self, raised: bool, line: str) -> None:
        any_active = self.alarm is not None
        action = ""
        ctl = self.controller
        if self.config.react and ctl is not None and self._calib_rate is not None:
            if any_active and not self._floor_on:
                floor = min(1.0, self.config.react_boost * self._calib_rate)
                ctl.set_floor(floor)
                self._floor_on = True
                action = (f"; offloading at least {100 * floor:.1f}% of frames ({self.config.react_boost:g} x the "
                          f"calibrated {100 * self._calib_rate:.1f}%) within the budgets while it lasts")
            elif not any_active and self._floor_on:
                ctl.set_floor(None)
                self._floor_on = False
                action = "; offload back to calibration"
        elif raised and self.config.react:
            action = "; no budget controller on this agent: offload unchanged"
        (_log.warning if raised else _log.info)("%s%s", line, action)

    # -- reporting -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "drift": {
                "stage": self.stage_name if self._reference is not None else None,
                "alarms": [e.as_dict() for e in self.events if e.raised],
                "cleared": [e.as_dict() for e in self.events if not e.raised],
                "active": self.alarm,
                "sources": [d.state() for d in self._detectors.values()],
            },
        }
        if self.audit is not None or self.audit_block is not None:
            out["audit"] = self.audit.summary() if self.audit is not None else {"off": self.audit_block}
        if self.trace is not None:
            out["field_trace"] = {"path": str(self.trace.path), "records": self.trace.records}
        return out

    def close(self) -> None:
        if self.trace is not None:
            self.trace.close()
