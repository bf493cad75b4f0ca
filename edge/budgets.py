"""What the operator allows the edge (``[budget]``), how the budget controller's
loop is tuned (``[controller]``), and the snapshot it reports.

The control law itself is in :mod:`jetsplit.edge.controller`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader

__all__ = ["Budgets", "ControllerConfig", "ControllerState"]


@dataclass(frozen=True)
class Budgets:
    """What the operator allows; ``None`` is no budget. ``[budget]`` in edge.toml."""

    latency_ms: float | None = None
    latency_quantile: float = 0.95
    max_offload_rate: float | None = None
    uplink_bytes_per_s: float | None = None
    energy_per_frame_mj: float | None = None
    power_w: float | None = None

    def __post_init__(self) -> None:
        if not 0.5 <= self.latency_quantile < 1.0:
            raise ConfigError(f"[budget].latency_quantile: expected a number in [0.5, 1), got {self.latency_quantile}")
        if self.max_offload_rate is not None and not 0.0 <= self.max_offload_rate <= 1.0:
            raise ConfigError(f"[budget].max_offload_rate: expected a fraction in [0, 1], got {self.max_offload_rate}")
        for name in ("latency_ms", "uplink_bytes_per_s", "energy_per_frame_mj", "power_w"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"[budget].{name}: expected a number > 0, got {value}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[budget]") -> Budgets:
        r = TableReader(table, where, ConfigError)
        budgets = cls(
            latency_ms=r.number("latency_ms", None),
            latency_quantile=r.number("latency_quantile", 0.95),
            max_offload_rate=r.number("max_offload_rate", None),
            uplink_bytes_per_s=r.number("uplink_bytes_per_s", None),
            energy_per_frame_mj=r.number("energy_per_frame_mj", None),
            power_w=r.number("power_w", None),
        )
        r.done()
        return budgets


@dataclass(frozen=True)
class ControllerConfig:
    """Tuning of the loop (``[controller]``); the defaults suit 10-60 fps."""

    update_interval_s: float = 0.25
    window_frames: int = 300
    feedback_frames: int = 100
    score_window: int = 1000
    warmup_frames: int = 50
    ewma: float = 0.1
    latency_margin: float = 0.6
    max_step_down: float = 0.25
    max_step_up: float = 0.02
    deadband: float = 0.005
    shrink: float = 0.9
    grow: float = 1.02
    relax: float = 0.9
    gain_min: float = 0.05
    congestion_threshold: float = 0.02
    congestion_recover: float = 0.02
    power_gain: float = 0.3

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[controller]") -> ControllerConfig:
        r = TableReader(table, where, ConfigError)
        kwargs: dict[str, Any] = {}
        for f in cls.__dataclass_fields__.values():
            kwargs[f.name] = (r.integer if f.type == "int" else r.number)(f.name, f.default)
        r.done()
        return cls(**kwargs)


@dataclass
class ControllerState:
    """A snapshot for logs, the agent's summary and ``jetsplit top``."""

    threshold: float
    base_threshold: float
    target_rate: float
    commanded_rate: float
    observed_rate: float
    curve_bias: float
    binding: str
    limits: dict[str, float] = field(default_factory=dict)
    gains: dict[str, float] = field(default_factory=dict)
    fps: float = 0.0
    latency_p_ms: float = 0.0
    rtt_p95_ms: float = 0.0
    late_fraction: float = 0.0
    bytes_per_s: float = 0.0
    energy_per_frame_mj: float = 0.0
    watts: float = 0.0
    refused_fraction: float = 0.0  # offloads the cloud refused OVERLOADED (EWMA)
    curve: str = "calibrated"
    updates: int = 0
    early_fraction: float = 0.0
    power_knob: str = ""
    power_unmet: bool = False
