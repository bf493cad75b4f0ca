"""Power readers: one interface, ``read_watts() -> {rail: watts}``.

- :class:`JtopPower`: jetson-stats' ``jtop`` client, where its service runs;
  also the only reader that knows the board's power mode and clocks
  (:meth:`PowerReader.board_state`).
- :class:`~jetsplit.edge.power.ina3221.Ina3221Power`: the INA3221 monitors in
  sysfs (its own module: two driver layouts).
- :class:`ModelPower`: a configured model (board watts while each stage runs,
  idle watts, joules per byte sent), for boards without sensors and for hosts.

Which rails are the board's total and which its compute (the part a frame's
stages draw) is a property of the rail names, the same whoever reads them:
:func:`total_watts`, :func:`compute_watts`.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from jetsplit.errors import ConfigError

__all__ = [
    "COMPUTE_RAILS",
    "INPUT_RAILS",
    "JTOP_SOCKET",
    "JtopPower",
    "ModelPower",
    "PowerReader",
    "compute_watts",
    "total_watts",
]

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# The rails that feed the CPU, GPU and accelerators, per board (jtop and the
# INA3221 labels agree): Orin Nano/NX, AGX Orin, Nano, TX2, AGX Xavier. What the
# input rail draws beyond them is the rest of the board: memory, I/O, the radio.
COMPUTE_RAILS = (
    "VDD_CPU_GPU_CV", "VDD_SOC",            # Orin Nano / NX
    "VDD_GPU_SOC", "VDD_CPU_CV",            # AGX Orin
    "POM_5V_CPU", "POM_5V_GPU",             # Nano
    "VDD_SYS_CPU", "VDD_SYS_GPU", "VDD_SYS_SOC",  # TX2
    "CPU", "GPU", "SOC", "CV",              # AGX Xavier
)
JTOP_SOCKET = "/run/jtop.sock"


def total_watts(rails: Mapping[str, float]) -> float:
    """The board's power: its input rail if it has one, else the sum of rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return float(rails[name])
    return float(sum(rails.values()))


def compute_watts(rails: Mapping[str, float]) -> float | None:
    """What the compute rails draw (see ``COMPUTE_RAILS``), or None when the
    reading has none of them (a model, an unknown board)."""
    found = [float(w) for name, w in rails.items() if name.split("@")[0] in COMPUTE_RAILS]
    return sum(found) if found else None


class PowerReader(ABC):
    """Reads instantaneous power per rail. ``kind`` is ``jtop``, ``ina3221`` or
    ``model``; ``description`` says what was found (and, from
    :func:`~jetsplit.edge.power.detect.detect_power`, why the readers before it
    were not used)."""

    kind: str = ""

    def __init__(self) -> None:
        self.description = self.kind

    @abstractmethod
    def read_watts(self) -> dict[str, float]:
        """Watts per rail, now."""

    def total_watts(self) -> float:
        return total_watts(self.read_watts())

    def board_state(self) -> dict[str, Any]:
        """The board's power mode (nvpmodel) and clocks, where the reader knows
        them (jtop); empty otherwise."""
        return {}

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the reader holds (a jtop connection)."""


# -- jtop -----------------------------------------------------------------------


class JtopPower(PowerReader):
    """jetson-stats' ``jtop`` (>= 4.2): ``jtop().power["rail"][name]["power"]``
    in mW. Needs the jtop service (its socket) and ``pip install jetson-stats``."""

    kind = "jtop"

    def __init__(self, socket_path: str = JTOP_SOCKET, interval_s: float = 0.5) -> None:
        super().__init__()
        if not os.path.exists(socket_path):
            raise ConfigError(f"power: jtop: no service socket at {socket_path} (is jtop.service running?)")
        try:
            from jtop import jtop  # lazy: only on boards with jetson-stats
        except ImportError:
            raise ConfigError("power: jtop: the jetson-stats package is not installed (pip install jetsplit[jetson])") from None
        self._jtop: Any = jtop(interval=interval_s)
        try:
            self._jtop.start()
        except Exception as exc:  # jtop raises its own JtopException types
            raise ConfigError(f"power: jtop: cannot connect to the service: {exc}") from None
        self.description = f"jtop ({socket_path})"

    def read_watts(self) -> dict[str, float]:
        power = self._jtop.power or {}
        return {name: float(v.get("power", 0)) / 1000.0 for name, v in power.get("rail", {}).items()}

    def board_state(self) -> dict[str, Any]:
        from jetsplit.edge.power.board import jtop_board_state

        return jtop_board_state(self._jtop)

    def close(self) -> None:
        self._jtop.close()


# -- the configured model -------------------------------------------------------


class ModelPower(PowerReader):
    """A power model: ``stage_w[name]`` is the board's power while that stage
    runs, ``idle_w`` its power otherwise, ``j_per_byte`` the energy to send one
    byte. A frame that took ``window_s`` with stages running ``stage_ms`` and
    ``bytes_up`` sent costs::

        E = sum(stage_w[s] * t_s) + idle_w * (window_s - sum(t_s)) + j_per_byte * bytes_up

    ``read_watts()`` reports ``{"model": W}``: the average modelled power over
    the frames of the last ``window_s`` seconds (idle when there were none).
    """

    kind = "model"

    def __init__(self, idle_w: float, stage_w: Mapping[str, float] | None = None, j_per_byte: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, window_s: float = 5.0) -> None:
        super().__init__()
        if idle_w < 0 or j_per_byte < 0 or any(w < 0 for w in (stage_w or {}).values()):
            raise ConfigError("power.model: watts and joules must be >= 0")
        self.idle_w = float(idle_w)
        self.stage_w = dict(stage_w or {})
        self.j_per_byte = float(j_per_byte)
        self._clock = clock
        self._window_s = window_s
        self._recent: deque[tuple[float, float, float]] = deque()  # (t_end, seconds, joules)
        self._lock = threading.Lock()
        self.description = f"model (idle {self.idle_w:g} W, stages {self.stage_w}, {self.j_per_byte:g} J/B)"

    def compute_energy_j(self, window_s: float, stage_ms: Mapping[str, float]) -> float:
        """The model's energy for a frame's stages and the idle rest of its window."""
        busy = sum(stage_ms.values()) / 1000.0
        energy = sum(self.stage_w.get(s, self.idle_w) * ms / 1000.0 for s, ms in stage_ms.items())
        return energy + self.idle_w * max(0.0, window_s - busy)

    def frame_energy_j(self, window_s: float, stage_ms: Mapping[str, float], bytes_up: int = 0) -> float:
        return self.compute_energy_j(window_s, stage_ms) + self.j_per_byte * bytes_up

    def note(self, t_end: float, seconds: float, joules: float) -> None:
        """Record an attributed frame, for ``read_watts``."""
        with self._lock:
            self._recent.append((t_end, seconds, joules))

    def read_watts(self) -> dict[str, float]:
        now = self._clock()
        with self._lock:
            while self._recent and self._recent[0][0] < now - self._window_s:
                self._recent.popleft()
            seconds = sum(s for _, s, _ in self._recent)
            joules = sum(j for _, _, j in self._recent)
        if seconds <= 0:
            return {"model": self.idle_w}
        # Time in the window not covered by frames was idle.
        covered = min(seconds, self._window_s)
        return {"model": (joules * covered / seconds + self.idle_w * (self._window_s - covered)) / self._window_s}
