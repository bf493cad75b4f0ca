"""``jetsplit power``: what the board's power rails say, over a few seconds.

    jetsplit power [--source auto|jtop|sysfs[:ROOT]|model] [--config edge.toml]
                   [--seconds 5] [--interval-ms 100] [--json]

Reads the rails with the edge agent's own readers (``jetsplit.edge.power``), so it
shows what the agent will measure: per rail the mean, min and max watts over the
window, the board's total (its input rail where it has one, else the sum of rails),
the share of the compute rails (CPU, GPU, SoC: the rest of the board is memory,
I/O and the radio) and the energy the total amounts to, sampled and integrated by
the agent's own :class:`~jetsplit.edge.power.EnergyMeter`, whose sampler the
command runs for the window. The power mode (nvpmodel) and clocks are shown where
jtop gives them.

``auto`` tries jtop, then the INA3221 rails under ``/sys``; where neither is there
the command says so and exits 2 rather than print the configured power model as if
it were a measurement. ``--source model`` prints that model (from ``--config``'s
``[power.model]``, or the defaults) on purpose. ``--config`` reads ``[power]`` from
an edge.toml, so the sysfs root, jtop socket and model are the agent's; ``--source``
overrides its ``source``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jetsplit.edge.power import (
    INPUT_RAILS,
    EnergyMeter,
    ModelPower,
    PowerConfig,
    PowerReader,
    compute_watts,
    describe_board,
    detect_power,
    parse_source,
    total_watts,
)
from jetsplit.errors import ConfigError
from jetsplit.manifest import read_toml

__all__ = ["PowerWindow", "RailStats", "check_window", "format_window", "main", "open_reader", "parse_source", "sample_power"]


@dataclass(frozen=True)
class RailStats:
    mean_w: float
    min_w: float
    max_w: float
    samples: int


@dataclass(frozen=True)
class PowerWindow:
    """Readings over ``seconds`` (first to last sample). ``total`` is the board's
    power as ``total_label`` says it is taken; ``energy_j`` integrates it."""

    source: str
    description: str
    seconds: float
    samples: int
    rails: dict[str, RailStats]
    total: RailStats
    total_label: str
    energy_j: float
    read_errors: int
    compute: RailStats | None = None
    board: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Recording(PowerReader):
    """Passes readings through and keeps them: the meter integrates the total
    from the same reading the per-rail figures come from (one read per sample,
    so the two cannot disagree)."""

    def __init__(self, inner: PowerReader) -> None:
        super().__init__()
        self.inner = inner
        self.kind = inner.kind
        self.description = inner.description
        self.readings: list[dict[str, float]] = []

    def read_watts(self) -> dict[str, float]:
        watts = self.inner.read_watts()
        self.readings.append(watts)
        return watts

    def close(self) -> None:
        self.inner.close()


def sample_power(
    reader: PowerReader,
    seconds: float,
    interval_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PowerWindow:
    """Sample ``reader`` every ``interval_s`` for ``seconds`` (first sample at 0,
    last at or before ``seconds``). ``clock`` and ``sleep`` are parameters so a
    test can step time and change the rails between samples."""
    check_window(seconds, interval_s)
    recording = _Recording(reader)
    # History longer than the window: the meter drops older samples. Three
    # failed reads in a row end the window: a sensor that fails is said so.
    meter = EnergyMeter(recording, clock=clock, history_s=seconds + interval_s + 60.0)
    meter.sample_for(seconds, interval_s, sleep)
    times = [t for t, _ in meter.samples()]
    if meter.error is not None:
        raise ConfigError(f"power: {reader.description}: the sensor failed: {meter.error}")
    rails: dict[str, RailStats] = {}
    for name in dict.fromkeys(n for r in recording.readings for n in r):
        rails[name] = _stats([r[name] for r in recording.readings if name in r])
    totals = [total_watts(r) for r in recording.readings if r]
    if not totals:
        raise ConfigError(f"power: {reader.description}: every reading failed")
    computes = [c for r in recording.readings if r and (c := compute_watts(r)) is not None]
    return PowerWindow(
        source=reader.kind,
        description=reader.description,
        seconds=times[-1] - times[0],
        samples=len(recording.readings),
        rails=rails,
        total=_stats(totals),
        total_label="configured model" if reader.kind == "model" else _total_label(rails),
        energy_j=meter.energy_j(times[0], times[-1]),
        read_errors=int(getattr(reader, "read_errors", 0)),
        compute=_stats(computes) if computes else None,
        board=reader.board_state() or None,
    )


def check_window(seconds: float, interval_s: float) -> None:
    """At least two samples, so there is a window to integrate over."""
    if not seconds > 0:
        raise ConfigError(f"--seconds: expected a number > 0, got {seconds:g}")
    if not 0 < interval_s <= seconds:
        raise ConfigError(
            f"--interval-ms: expected a number > 0 and at most the window ({seconds * 1000:g} ms), "
            f"got {interval_s * 1000:g}"
        )


def _stats(values: Sequence[float]) -> RailStats:
    return RailStats(math.fsum(values) / len(values), min(values), max(values), len(values))


def _total_label(rails: dict[str, RailStats]) -> str:
    # Mirrors what total_watts picks, to say which it was.
    rail = next((name for name in INPUT_RAILS if name in rails), None)
    return f"input rail {rail}" if rail else "sum of rails"


def _config(path: Path | None) -> PowerConfig:
    if path is None:
        return PowerConfig()
    raw = read_toml(path, ConfigError)
    return PowerConfig.from_table(raw.get("power", {}), f"{path}: [power]")


def open_reader(config: PowerConfig) -> PowerReader:
    """The reader for ``config``; ConfigError (one line) when there are no rails
    and the model was not asked for."""
    reader = detect_power(config)
    if isinstance(reader, ModelPower) and config.source != "model":
        # detect_power fell back to the model: say why, do not pass it off as a reading.
        why = reader.description.partition("[no sensors: ")[2].rstrip("]") or reader.description
        raise ConfigError(f"no power rails on this machine ({why}); --source model prints the configured power model")
    return reader


def format_window(window: PowerWindow) -> str:
    width = max([len(n) for n in window.rails] + [len("compute"), len("rail")])
    lines = [
        f"power: {window.description}",
        f"board: {describe_board(window.board or {})}",
        f"{window.samples} samples over {window.seconds:.2f} s"
        + (f" ({window.read_errors} failed channel reads left out)" if window.read_errors else ""),
        "",
        f"{'rail'.ljust(width)}  {'mean W':>8}  {'min W':>8}  {'max W':>8}",
    ]
    rows = [*window.rails.items(), ("total", window.total)]
    if window.compute is not None:
        rows.append(("compute", window.compute))
    for name, s in rows:
        lines.append(f"{name.ljust(width)}  {s.mean_w:8.3f}  {s.min_w:8.3f}  {s.max_w:8.3f}")
    lines.append("")
    lines.append(f"total: the board's {window.total_label}; energy {window.energy_j:.3f} J over {window.seconds:.2f} s")
    if window.compute is not None:
        rest = window.total.mean_w - window.compute.mean_w
        lines.append(f"compute: the CPU/GPU/SoC rails; the other {rest:.3f} W are memory, I/O and the radio")
    if window.source == "model":
        lines.append("(a configured model, not a measurement)")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit power", description="read the board's power rails")
    p.add_argument("--source", default=None, help="auto (default) | jtop | sysfs[:ROOT] | model")
    p.add_argument("--config", type=Path, help="an edge.toml whose [power] table to use")
    p.add_argument("--seconds", type=float, default=5.0, help="window length (default 5)")
    p.add_argument("--interval-ms", type=float, default=100.0, help="sampling interval (default 100)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(list(argv))
    config = _config(args.config)
    if args.source is not None:
        config = parse_source(args.source, config)
    # Checked before opening a reader: a jtop connection takes a while to set up.
    check_window(args.seconds, args.interval_ms / 1000.0)
    reader = open_reader(config)
    try:
        window = sample_power(reader, args.seconds, args.interval_ms / 1000.0)
    finally:
        reader.close()
    print(json.dumps(window.to_json()) if args.json else format_window(window))
    return 0
