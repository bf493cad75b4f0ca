"""The INA3221 power monitors in sysfs, read directly (no service, no root).

Both layouts are found from ``ROOT/bus/i2c/drivers/ina3221*/*`` and
``ROOT/bus/i2c/devices/*`` whose ``name`` file says ``ina3221`` (how
jetson-stats' ``jtop/core/power.py`` finds them; ROOT is ``/sys``, configurable
so tests and the simulated board (``jetsplit simboard``) use a tree laid out as
on the board).

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
of the rails (Xavier, AGX Orin): :func:`~jetsplit.edge.power.readers.total_watts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jetsplit.edge.power.readers import PowerReader
from jetsplit.errors import ConfigError

__all__ = ["Ina3221Power"]


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
            except (OSError, ValueError, IndexError):
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
