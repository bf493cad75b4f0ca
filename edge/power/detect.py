"""``[power]`` in edge.toml and :func:`detect_power`, which picks the reader."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from jetsplit.edge.power.ina3221 import Ina3221Power
from jetsplit.edge.power.readers import JTOP_SOCKET, JtopPower, ModelPower, PowerReader
from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader

__all__ = ["PowerConfig", "detect_power", "parse_source"]

log = logging.getLogger("jetsplit.edge.power")


@dataclass(frozen=True)
class PowerConfig:
    """``[power]`` in edge.toml::

        [power]
        source = "auto"          # auto | jtop | ina3221 | model
        sysfs_root = "/sys"
        jtop_socket = "/run/jtop.sock"
        interval_ms = 50         # the sampler's period (sensors only)
        average_s = 1.0          # the window of the average power the budget holds
        [power.model]
        idle_w = 4.5
        j_per_byte = 2e-8        # the radio, also with sensors: no rail shows it alone
        stage_w = { little = 7.0 }

    With a sensor, ``interval_ms`` is how often the meter reads it: a step in the
    board's draw reaches the frames within one interval. ``j_per_byte`` splits
    each frame's energy into compute and radio (model or sensor alike).
    """

    source: str = "auto"
    sysfs_root: str = "/sys"
    jtop_socket: str = JTOP_SOCKET
    idle_w: float = 5.0
    stage_w: dict[str, float] = field(default_factory=dict)
    j_per_byte: float = 0.0
    interval_ms: float = 50.0
    average_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.interval_ms > 0:
            raise ConfigError(f"[power].interval_ms: expected a number > 0, got {self.interval_ms:g}")
        if not self.average_s > 0:
            raise ConfigError(f"[power].average_s: expected a number > 0, got {self.average_s:g}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[power]") -> PowerConfig:
        r = TableReader(table, where, ConfigError)
        source = r.text("source", "auto", choices=("auto", "jtop", "ina3221", "model"))
        sysfs_root = r.text("sysfs_root", "/sys")
        jtop_socket = r.text("jtop_socket", JTOP_SOCKET)
        interval_ms = r.number("interval_ms", 50.0)
        average_s = r.number("average_s", 1.0)
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
        return cls(source, sysfs_root, jtop_socket, idle_w, stage_w, j_per_byte, interval_ms, average_s)

    def model(self) -> ModelPower:
        return ModelPower(self.idle_w, self.stage_w, self.j_per_byte)


def detect_power(config: PowerConfig | None = None) -> PowerReader:
    """The first reader that works: jtop, then the INA3221 in sysfs, then the
    model. ``config.source`` other than ``auto`` demands that one reader (and is
    a ConfigError if it is not there). The reader's ``description`` says which
    was chosen and why the ones before it were not; it is also logged."""
    cfg = config or PowerConfig()
    model = cfg.model()
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


def parse_source(spec: str, base: PowerConfig, flag: str = "--source") -> PowerConfig:
    """``auto | jtop | sysfs[:ROOT] | model`` (the command-line ``flag``) -> the
    config ``detect_power`` takes."""
    kind, sep, root = spec.partition(":")
    if kind == "sysfs":
        if sep and not root:
            raise ConfigError(f"{flag}: expected sysfs or sysfs:ROOT, got {spec!r}")
        return replace(base, source="ina3221", sysfs_root=root or base.sysfs_root)
    if kind in ("auto", "jtop", "model") and not sep:
        return replace(base, source=kind)
    raise ConfigError(f"{flag}: expected auto, jtop, sysfs, sysfs:ROOT or model, got {spec!r}")
