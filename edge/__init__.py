"""jetsplit.edge: the board side.

The library parts the edge agent is built from, one role per module:

- :mod:`~jetsplit.edge.sources`: ``open_source(uri)`` -> :class:`Source` of
  :class:`Frame` (files, image folders, V4L2, CSI, RTSP, GStreamer);
- :mod:`~jetsplit.edge.grabber`: the newest-frame grabber thread live sources use;
- :mod:`~jetsplit.edge.power`: power readers (jtop, INA3221 sysfs, a model), the
  :class:`EnergyMeter` that attributes energy to frames, and the power budget's
  loop;
- :mod:`~jetsplit.edge.early`: early offload from an earlier edge gate;
- :mod:`~jetsplit.edge.sinks`: :class:`FrameResult` and ``open_sink(spec)``;
- :mod:`~jetsplit.edge.controller`: the :class:`BudgetController`;
- :mod:`~jetsplit.edge.breaker`: the :class:`CircuitBreaker` for the offload path;
- :mod:`~jetsplit.edge.pool`: the :class:`WorkerPool` that spreads offloads over
  several cloud workers (its parts: ``resolver``, ``members``, ``membership``,
  ``inflight``), tuned by :class:`PoolConfig`.
"""

from __future__ import annotations

from jetsplit.edge.breaker import BreakerConfig, CircuitBreaker
from jetsplit.edge.controller import (
    BudgetController,
    Budgets,
    ControllerConfig,
    ControllerState,
    ThresholdCurve,
)
from jetsplit.edge.pool import PoolConfig, WorkerPool
from jetsplit.edge.power import EnergyMeter, PowerConfig, PowerReader, detect_power
from jetsplit.edge.sinks import FrameResult, Sink, open_sink, open_sinks
from jetsplit.edge.sources import Frame, Source, open_source

__all__ = [
    "BreakerConfig",
    "BudgetController",
    "Budgets",
    "CircuitBreaker",
    "ControllerConfig",
    "ControllerState",
    "EnergyMeter",
    "Frame",
    "FrameResult",
    "PoolConfig",
    "PowerConfig",
    "PowerReader",
    "Sink",
    "Source",
    "ThresholdCurve",
    "WorkerPool",
    "detect_power",
    "open_sink",
    "open_sinks",
    "open_source",
]
