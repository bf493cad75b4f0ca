"""Power on the edge: what the board draws, and how much of it each frame cost.

Split by role:

- :mod:`~jetsplit.edge.power.readers`: the :class:`PowerReader` interface,
  jetson-stats' ``jtop`` (:class:`JtopPower`) and the configured model
  (:class:`ModelPower`); which rails are the board's total and its compute;
- :mod:`~jetsplit.edge.power.ina3221`: the INA3221 monitors in sysfs
  (:class:`Ina3221Power`: the hwmon layout of Orin and AGX Orin, the ina3221x
  IIO layout of Nano, TX2 and Xavier);
- :mod:`~jetsplit.edge.power.detect`: ``[power]`` (:class:`PowerConfig`) and
  :func:`detect_power` (jtop, then sysfs, then the model);
- :mod:`~jetsplit.edge.power.energy`: the :class:`EnergyMeter`, its sampler
  and the attribution of energy to frames (:class:`FrameEnergy`: compute and
  radio);
- :mod:`~jetsplit.edge.power.board`: the power mode (nvpmodel) and clocks jtop
  reports;
- :mod:`~jetsplit.edge.power.budget`: the power budget's control law (used by
  the budget controller).

    >>> reader = detect_power(PowerConfig())           # doctest: +SKIP
    >>> meter = EnergyMeter(reader, fallback=PowerConfig().model()).start(interval_s=0.05)
    >>> meter.frame_energy(t0, t1, stage_ms={"little": 1.2}, bytes_up=0)
"""

from __future__ import annotations

from jetsplit.edge.power.board import describe_board, jtop_board_state
from jetsplit.edge.power.detect import PowerConfig, detect_power, parse_source
from jetsplit.edge.power.energy import EnergyMeter, FrameEnergy
from jetsplit.edge.power.ina3221 import Ina3221Power
from jetsplit.edge.power.readers import (
    COMPUTE_RAILS,
    INPUT_RAILS,
    JtopPower,
    ModelPower,
    PowerReader,
    compute_watts,
    total_watts,
)

__all__ = [
    "COMPUTE_RAILS",
    "INPUT_RAILS",
    "EnergyMeter",
    "FrameEnergy",
    "Ina3221Power",
    "JtopPower",
    "ModelPower",
    "PowerConfig",
    "PowerReader",
    "compute_watts",
    "describe_board",
    "detect_power",
    "jtop_board_state",
    "parse_source",
    "total_watts",
]
