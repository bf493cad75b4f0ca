"""Power readers and the energy meter that attributes energy to frames.

One interface, :class:`PowerReader` (``read_watts() -> {rail: watts}``), three
implementations, chosen by :func:`detect_power` in this order:

1. :class:`JtopPower`: jetson-stats' ``jtop`` client, where its service runs
   (its socket ``/run/jtop.sock`` exists). Imported lazily: ``pip install
   jetsplit[jetson]``.
2. :class:`Ina3221Power`: the INA3221 power monitors in sysfs, read directly
   (no service, no root), from a configurable root so tests read a tree laid out
   as on the board.
3. :class:`ModelPower`: a configured model (board watts while each stage runs,
   idle watts, joules per byte sent), for boards without sensors and for hosts.

:class:`EnergyMeter` turns readings into energy: it samples the reader (on a
thread, or when told), integrates the total board power over any time window
(trapezoids between samples), and so attributes to a frame the energy the board
drew while that frame was processed. With :class:`ModelPower` it computes the
frame's energy from the model instead.

    >>> reader = detect_power(PowerConfig())           # doctest: +SKIP
    >>> meter = EnergyMeter(reader).start(interval_s=0.05)
    >>> t0 = time.monotonic(); ...; t1 = time.monotonic()
    >>> meter.frame_energy_j(t0, t1, stage_ms={"little": 1.2}, bytes_up=0)

INA3221 sysfs layouts (file names and units)
--------------------------------------------
Both are found from ``ROOT/bus/i2c/drivers/ina3221*/*`` and
``ROOT/bus/i2c/devices/*`` whose ``name`` file says ``ina3221`` (how
jetson-stats' ``jtop/core/power.py`` finds them; ROOT is ``/sys``).

- **hwmon** (mainline ``ina3221`` driver: Orin on JetPack 5/6, Xavier on JetPack
  5), e.g. ``/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3/``: per channel
  N = 1..3 ``inN_label`` (rail name), ``inN_input`` bus voltage in **mV**,
  ``currN_input`` current in **mA** (Linux ``Documentation/hwmon/ina3221.rst``);
  power = mV x mA / 1e6 W. Channels labelled ``NC`` (not connected, e.g. on the
  AGX Orin's second monitor) and ``in7`` ("sum of shunt voltages") are skipped,
  as jtop does; so is a channel whose ``inN_enable`` is 0. Rails: Orin Nano/NX
  ``VDD_IN``, ``VDD_CPU_GPU_CV``, ``VDD_SOC``; AGX Orin ``VDD_GPU_SOC``,
  ``VDD_CPU_CV``, ``VIN_SYS_5V0`` (``1-0040``) and ``VDDQ_VDD2_1V8AO``
  (``1-0041``; layout as listed in alumet-dev/alumet issue #212).
- **iio** (NVIDIA's ``ina3221x`` driver, JetPack 4: Nano, TX2, Xavier), e.g.
  ``/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/`` on a Nano (path as in
  rbonghi/jetson_stats issue #131): per channel N = 0..2 ``rail_name_N``,
  ``in_power{N}_input`` in **mW** (``in_voltage{N}_input`` mV and
  ``in_current{N}_input`` mA as a fallback). Rails: Nano ``POM_5V_IN``,
  ``POM_5V_GPU``, ``POM_5V_CPU``; AGX Xavier ``GPU``, ``CPU``, ``SOC``, ``CV``,
  ``VDDRQ``, ``SYS5V``.

The board's total is the input rail where there is one (``VDD_IN``,
``POM_5V_IN``: the others are parts of it, jetson-stats issue #51), else the sum
of the rails (Xavier, AGX Orin): :func:`total_watts`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader

__all__ = [
    "INPUT_RAILS",
    "EnergyMeter",
    "Ina3221Power",
    "JtopPower",
    "ModelPower",
    "PowerConfig",
    "PowerReader",
    "detect_power",
    "total_watts",
]

log = logging.getLogger(__name__)

INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
_JTOP_SOCKET = "/run/jtop.sock"


def total_watts(rails: Mapping[str, float]) -> float:
    """The board's power: its input rail if it has one, else the sum of rails."""
    for name in INPUT_RAILS:
        if name in rails:
            return float(rails[name])
    return float(sum(rails.values()))


class PowerReader(ABC):
    """Reads instantaneous power per rail. ``kind`` is ``jtop``, ``ina3221`` or
    ``model``; ``description`` says what was found (and, from
    :func:`detect_power`, why the readers before it were not used)."""

    kind: str = ""

    def __init__(self) -> None:
        self.description = self.kind

    @abstractmethod
    def read_watts(self) -> dict[str, float]:
        """Watts per rail, now."""

    def total_watts(self) -> float:
        return total_watts(self.read_watts())

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what the reader holds (a jtop connection)."""


# -- jtop -----------------------------------------------------------------------


class JtopPower(PowerReader):
    """jetson-stats' ``jtop`` (>= 4.2): ``jtop().power["rail"][name]["power"]``
    in mW. Needs the jtop service (its socket) and ``pip install jetson-stats``."""

    kind = "jtop"

    def __init__(self, socket_path: str = _JTOP_SOCKET, interval_s: float = 0.5) -> None:
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

    def close(self) -> None:
        self._jtop.close()


# -- INA3221 in sysfs -----------------------------------------------------------


@dataclass(frozen=True)
class _Rail:
    name: str
    power_mw: Path | None = None  # iio: power directly
    volt_mv: Path | None = None
    curr_ma: Path | None = None


class Ina3221Power(PowerReader):
    """The INA3221 rails under ``root`` (``/sys`` on a board); see the module
    docstring for both layouts. Raises ConfigError if none is found."""

    kind = "ina3221"

    def __init__(self, root: str | Path = "/sys") -> None:
        super().__init__()
        self.root = Path(root)
        self.rails = _find_rails(self.root)
        if not self.rails:
            raise ConfigError(f"power: ina3221: no INA3221 rails under {self.root}/bus/i2c")
        self.read_errors = 0
        self.description = f"ina3221 ({len(self.rails)} rails under {self.root}/bus/i2c: {', '.join(r.name for r in self.rails)})"

    def read_watts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for rail in self.rails:
            try:
                if rail.power_mw is not None:
                    out[rail.name] = _read_number(rail.power_mw) / 1000.0
                elif rail.volt_mv is not None and rail.curr_ma is not None:
                    out[rail.name] = _read_number(rail.volt_mv) * _read_number(rail.curr_ma) / 1e6
            except (OSError, ValueError):
                # A channel mid-conversion or disabled at run time: leave it out
                # of this reading rather than fail the frame.
                self.read_errors += 1
        return out


def _read_number(path: Path) -> float:
    # Some attributes carry units ("32760 ma"): the number comes first.
    return float(path.read_text().split()[0])


def _find_rails(root: Path) -> list[_Rail]:
    devices: dict[Path, Path] = {}
    i2c = root / "bus" / "i2c"
    candidates = list((i2c / "drivers").glob("ina3221*/*")) + list((i2c / "devices").glob("*"))
    for dev in candidates:
        if not dev.is_dir():
            continue
        name_file = dev / "name"
        if "ina3221" not in dev.parent.name and not (name_file.is_file() and "ina3221" in name_file.read_text()):
            continue
        devices.setdefault(dev.resolve(), dev)
    rails: list[_Rail] = []
    seen: set[str] = set()
    for dev in sorted(devices.values()):
        for folder in sorted((dev / "hwmon").glob("hwmon*")):
            rails.extend(_hwmon_rails(folder, dev.name))
        for folder in sorted(dev.glob("iio:device*")):
            rails.extend(_iio_rails(folder, dev.name))
    unique = []
    for rail in rails:
        # Two monitors can label channels alike; keep both, told apart.
        name = rail.name if rail.name not in seen else f"{rail.name}@{len(seen)}"
        seen.add(name)
        unique.append(_Rail(name, rail.power_mw, rail.volt_mv, rail.curr_ma))
    return unique


def _hwmon_rails(folder: Path, device: str) -> list[_Rail]:
    rails = []
    for n in (1, 2, 3):  # in4..6 are shunt voltages, in7 their sum
        volt, curr = folder / f"in{n}_input", folder / f"curr{n}_input"
        if not (volt.is_file() and curr.is_file()):
            continue
        label_file, enable = folder / f"in{n}_label", folder / f"in{n}_enable"
        label = label_file.read_text().strip() if label_file.is_file() else f"{device}:in{n}"
        if label == "NC" or label.startswith("NC "):
            continue
        if enable.is_file() and enable.read_text().strip() == "0":
            continue
        rails.append(_Rail(label, volt_mv=volt, curr_ma=curr))
    return rails


def _iio_rails(folder: Path, device: str) -> list[_Rail]:
    rails = []
    for name_file in sorted(folder.glob("rail_name_*")):
        n = name_file.name.rsplit("_", 1)[-1]
        label = name_file.read_text().strip() or f"{device}:{n}"
        power = folder / f"in_power{n}_input"
        volt, curr = folder / f"in_voltage{n}_input", folder / f"in_current{n}_input"
        if power.is_file():
            rails.append(_Rail(label, power_mw=power))
        elif volt.is_file() and curr.is_file():
            rails.append(_Rail(label, volt_mv=volt, curr_ma=curr))
    return rails


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

    def frame_energy_j(self, window_s: float, stage_ms: Mapping[str, float], bytes_up: int = 0) -> float:
        busy = sum(stage_ms.values()) / 1000.0
        energy = sum(self.stage_w.get(s, self.idle_w) * ms / 1000.0 for s, ms in stage_ms.items())
        return energy + self.idle_w * max(0.0, window_s - busy) + self.j_per_byte * bytes_up

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


# -- configuration and detection ------------------------------------------------


@dataclass(frozen=True)
class PowerConfig:
    """``[power]`` in edge.toml::

        [power]
        source = "auto"          # auto | jtop | ina3221 | model
        sysfs_root = "/sys"
        jtop_socket = "/run/jtop.sock"
        [power.model]
        idle_w = 4.5
        j_per_byte = 2e-8
        stage_w = { little = 7.0 }
    """

    source: str = "auto"
    sysfs_root: str = "/sys"
    jtop_socket: str = _JTOP_SOCKET
    idle_w: float = 5.0
    stage_w: dict[str, float] = field(default_factory=dict)
    j_per_byte: float = 0.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[power]") -> PowerConfig:
        r = TableReader(table, where, ConfigError)
        source = r.text("source", "auto", choices=("auto", "jtop", "ina3221", "model"))
        sysfs_root = r.text("sysfs_root", "/sys")
        jtop_socket = r.text("jtop_socket", _JTOP_SOCKET)
        model = r.table("model", {})
        r.done()
        m = TableReader(model, f"{where}.model", ConfigError)
        idle_w = m.number("idle_w", 5.0)
        j_per_byte = m.number("j_per_byte", 0.0)
        stages = m.table("stage_w", {})
        m.done()
        s = TableReader(stages, f"{where}.model.stage_w", ConfigError)
        stage_w = {name: float(s.number(name)) for name in stages}
        s.done()
        return cls(source, sysfs_root, jtop_socket, idle_w, stage_w, j_per_byte)


def detect_power(config: PowerConfig | None = None) -> PowerReader:
    """The first reader that works: jtop, then the INA3221 in sysfs, then the
    model. ``config.source`` other than ``auto`` demands that one reader (and is
    a ConfigError if it is not there). The reader's ``description`` says which
    was chosen and why the ones before it were not; it is also logged."""
    cfg = config or PowerConfig()
    model = ModelPower(cfg.idle_w, cfg.stage_w, cfg.j_per_byte)
    if cfg.source == "model":
        return model
    makers: dict[str, Callable[[], PowerReader]] = {
        "jtop": lambda: JtopPower(cfg.jtop_socket),
        "ina3221": lambda: Ina3221Power(cfg.sysfs_root),
    }
    if cfg.source != "auto":
        return makers[cfg.source]()
    skipped: list[str] = []
    for maker in makers.values():
        try:
            reader = maker()
        except ConfigError as exc:
            skipped.append(str(exc).removeprefix("power: "))
            continue
        reader.description += f" [not used: {'; '.join(skipped)}]" if skipped else ""
        log.info("power: %s", reader.description)
        return reader
    model.description += f" [no sensors: {'; '.join(skipped)}]"
    log.info("power: %s", model.description)
    return model


# -- energy ---------------------------------------------------------------------


class EnergyMeter:
    """Samples a reader's total power and integrates it over time windows.

    ``sample()`` takes one reading (call it yourself, or ``start()`` a sampler
    thread); ``energy_j(t0, t1)`` integrates the piecewise-linear power between
    samples over ``[t0, t1]`` (held constant before the first and after the last
    sample). ``history_s`` of samples are kept. Times are ``clock()`` seconds.
    """

    def __init__(self, reader: PowerReader, clock: Callable[[], float] = time.monotonic, history_s: float = 120.0) -> None:
        self.reader = reader
        self._clock = clock
        self._history_s = history_s
        self._samples: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def kind(self) -> str:
        return self.reader.kind

    def sample(self) -> float:
        watts = self.reader.total_watts()
        now = self._clock()
        with self._lock:
            self._samples.append((now, watts))
            while self._samples and self._samples[0][0] < now - self._history_s:
                self._samples.popleft()
        return watts

    def start(self, interval_s: float = 0.05) -> EnergyMeter:
        """Sample every ``interval_s`` on a daemon thread until ``stop()``."""
        if self._thread is not None:
            return self
        self.sample()

        def run() -> None:
            try:
                while not self._stop.wait(interval_s):
                    self.sample()
            except BaseException as exc:  # kept for the owner to see
                self.error = exc
                log.error("power: sampler stopped: %s", exc)
            finally:
                self._stop.set()

        self._thread = threading.Thread(target=run, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.reader.close()

    def energy_j(self, t0: float, t1: float) -> float:
        """Joules drawn over ``[t0, t1]``."""
        if t1 <= t0:
            return 0.0
        with self._lock:
            pts = list(self._samples)
        if not pts:
            pts = [(t0, self.sample())]
        if len(pts) == 1:
            return pts[0][1] * (t1 - t0)
        energy = 0.0
        # Extend the first and last power levels to cover the window.
        pts = [(min(t0, pts[0][0]), pts[0][1]), *pts, (max(t1, pts[-1][0]), pts[-1][1])]
        for (ta, pa), (tb, pb) in zip(pts, pts[1:]):
            lo, hi = max(ta, t0), min(tb, t1)
            if hi <= lo or tb <= ta:
                continue
            p_lo = pa + (pb - pa) * (lo - ta) / (tb - ta)
            p_hi = pa + (pb - pa) * (hi - ta) / (tb - ta)
            energy += 0.5 * (p_lo + p_hi) * (hi - lo)
        return energy

    def average_watts(self, window_s: float = 5.0) -> float:
        """Mean power over the last ``window_s`` seconds."""
        if isinstance(self.reader, ModelPower):
            return self.reader.total_watts()
        now = self._clock()
        return self.energy_j(now - window_s, now) / window_s

    def frame_energy_j(self, t0: float, t1: float, stage_ms: Mapping[str, float] | None = None, bytes_up: int = 0) -> float:
        """Energy attributed to a frame processed over ``[t0, t1]``: the measured
        board energy in that window (which includes the radio), or with
        :class:`ModelPower` the model's figure for its stages and bytes."""
        if isinstance(self.reader, ModelPower):
            joules = self.reader.frame_energy_j(t1 - t0, stage_ms or {}, bytes_up)
            self.reader.note(t1, t1 - t0, joules)
            return joules
        return self.energy_j(t0, t1)
