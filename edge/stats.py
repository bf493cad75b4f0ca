"""The agent's counters: one :class:`AgentStats` for the board, and one per source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jetsplit.edge.sinks import FrameResult

__all__ = ["AgentStats"]


@dataclass
class AgentStats:
    frames: int = 0
    edge: int = 0
    cloud: int = 0
    fallback: int = 0
    offloaded: int = 0
    bytes_up: int = 0
    energy_mj: float = 0.0
    dropped: int = 0  # frames the source captured but never delivered (a camera's, or stale in the muxer)
    correct: int = 0
    labelled: int = 0
    exits: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    # Per source, by source_id (the board's figures above are their sums).
    sources: dict[str, AgentStats] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # the last failure of each source that had one
    radio_mj: float = 0.0  # of energy_mj, what sending cost
    power: dict[str, Any] = field(default_factory=dict)  # the board's: the meter's status, at the end
    budget: dict[str, Any] = field(default_factory=dict)  # the board's: what the controller held, at the end

    def source(self, source_id: str) -> AgentStats:
        """The counters of one source (made on first use)."""
        s = self.sources.get(source_id)
        if s is None:
            s = self.sources[source_id] = AgentStats()
        return s

    def add(self, r: FrameResult) -> None:
        self._add(r)
        self.source(r.source_id)._add(r)

    def _add(self, r: FrameResult) -> None:
        self.frames += 1
        setattr(self, r.where, getattr(self, r.where) + 1)
        self.bytes_up += r.bytes_up
        self.energy_mj += r.energy_mj
        self.radio_mj += r.radio_mj
        self.exits[r.stage] = self.exits.get(r.stage, 0) + 1
        self.latencies_ms.append(r.latency_ms)
        if r.truth is not None:
            self.labelled += 1
            self.correct += int(r.label == r.truth)
        if r.reason:
            self.fallback_reasons[r.reason] = self.fallback_reasons.get(r.reason, 0) + 1

    def count_offload(self, source_id: str) -> None:
        self.offloaded += 1
        self.source(source_id).offloaded += 1

    def summary(self) -> dict[str, Any]:
        """The board's figures, and under ``sources`` each source's (when there are several)."""
        out = self._summary()
        if self.power:
            out["power"] = dict(self.power)
        if self.budget:
            out["budget"] = dict(self.budget)
        if len(self.sources) > 1 or self.errors:
            out["sources"] = {sid: s._summary() for sid, s in self.sources.items()}
            for sid, error in self.errors.items():
                out["sources"].setdefault(sid, AgentStats()._summary())["error"] = error
        return out

    def _summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        n = max(self.frames, 1)
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "edge": self.edge, "cloud": self.cloud, "fallback": self.fallback,
            "offloaded": self.offloaded,
            "offload_fraction": self.offloaded / n,
            "exits": dict(self.exits),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "bytes_up_per_frame": self.bytes_up / n,
            "energy_mj_per_frame": self.energy_mj / n,
            "radio_mj_per_frame": self.radio_mj / n,
            "fallback_reasons": dict(self.fallback_reasons),
        }
