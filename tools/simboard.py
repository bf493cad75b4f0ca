"""``jetsplit simboard``: a simulated Jetson whose power rails follow a process's load.

    jetsplit simboard --layout orin-nano|agx-orin|nano --root DIR
                      (--pid PID | --watts W) [--results results.jsonl]
                      [--idle-w 5] [--cpu-w 8] [--j-per-byte 0] [--interval-ms 20]
                      [--window-ms 200] [--trace trace.jsonl] [--seconds S]

Writes an INA3221 sysfs tree under ``DIR/bus/i2c`` in a real board's exact layout
(file names, units, symlinks, the channels the readers must skip: see
:mod:`jetsplit.edge.power.ina3221`) and keeps its rails up to date every
``--interval-ms``, so an edge agent configured with ``[power] sysfs_root = DIR``
measures this board as it would measure a real one: nothing inside the agent is
simulated. The board's draw is modelled from the agent's measured load::

    P = idle_w + cpu_w * u + j_per_byte * b

``u`` is the process's CPU utilisation (cores busy: ``utime + stime`` from
``/proc/PID/stat`` over the last ``--window-ms``), ``b`` the bytes per second it
sent, summed from the ``bytes_up`` of the results it writes to its JSON-lines
sink (``--results``, the file given to the agent as ``--sink jsonl:PATH``), over
the same window. The compute rail carries ``0.4 * idle_w + cpu_w * u``; the radio
shows only in the board's input rail (``VDD_IN``, ``POM_5V_IN``) or, on the AGX
Orin which has none, in its other rails, as on the boards, where no rail carries
the radio alone.

``--watts W`` holds the board at W instead (a step for a demo: restart it).
``--trace`` writes one JSON line per update (``t``, ``watts``, ``cpu``,
``bytes_per_s``) with ``t`` on the monotonic clock: what the board drew, for
checking a power budget against the board rather than against the agent's
own figures. The tool ends when the process does, after ``--seconds``, or on
SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from jetsplit.errors import ConfigError

__all__ = ["LAYOUTS", "BoardModel", "LoadProbe", "SimBoard", "main"]


@dataclass(frozen=True)
class _Channel:
    label: str
    mv: int  # bus voltage; the current follows the watts written
    ma: int  # what the tree starts with
    role: str  # input | compute | fixed | rest | nc
    mw: int = 0  # ina3221x: the power it reports, converted on the chip (not mV x mA)


@dataclass(frozen=True)
class _Monitor:
    driver: str  # ina3221 (hwmon) | ina3221x (iio)
    device: str  # i2c address, e.g. 1-0040
    node: str  # hwmon/hwmon1 or iio:device0
    channels: tuple[_Channel, ...]


# Values as read on the boards at idle (tests rely on them).
LAYOUTS: dict[str, tuple[_Monitor, ...]] = {
    # Orin Nano/NX, JetPack 6: mainline hwmon driver, mV and mA.
    "orin-nano": (_Monitor("ina3221", "1-0040", "hwmon/hwmon1", (
        _Channel("VDD_IN", 5072, 1248, "input"),
        _Channel("VDD_CPU_GPU_CV", 5064, 296, "compute"),
        _Channel("VDD_SOC", 5064, 392, "fixed"),
    )),),
    # AGX Orin: two monitors, the second with NC (not connected) channels; no input rail.
    "agx-orin": (
        _Monitor("ina3221", "1-0040", "hwmon/hwmon2", (
            _Channel("VDD_GPU_SOC", 19968, 680, "fixed"),
            _Channel("VDD_CPU_CV", 19968, 160, "compute"),
            _Channel("VIN_SYS_5V0", 5048, 608, "rest"),
        )),
        _Monitor("ina3221", "1-0041", "hwmon/hwmon3", (
            _Channel("NC", 0, 0, "nc"),
            _Channel("VDDQ_VDD2_1V8AO", 5040, 184, "fixed"),
            _Channel("NC", 0, 0, "nc"),
        )),
    ),
    # Jetson Nano, JetPack 4: NVIDIA's ina3221x IIO driver, power in mW.
    "nano": (_Monitor("ina3221x", "6-0040", "iio:device0", (
        _Channel("POM_5V_IN", 5008, 680, "input", 3412),
        _Channel("POM_5V_GPU", 5008, 16, "fixed", 80),
        _Channel("POM_5V_CPU", 5008, 160, "compute", 802),
    )),),
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _replace(path: Path, text: str) -> None:
    """Write by rename: a reader sees the old value or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


class SimBoard:
    """An INA3221 tree under ``root`` in ``layout``'s exact form; :meth:`set`
    writes the rails for a board total and a compute share."""

    def __init__(self, root: str | Path, layout: str) -> None:
        if layout not in LAYOUTS:
            raise ConfigError(f"--layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.root = Path(root)
        self.layout = layout
        self.monitors = LAYOUTS[layout]

    def _dir(self, m: _Monitor) -> Path:
        return self.root / "bus/i2c/drivers" / m.driver / m.device / m.node

    def create(self) -> SimBoard:
        """Write the tree with the board's idle readings."""
        for m in self.monitors:
            dev = self.root / "bus/i2c/drivers" / m.driver / m.device
            _write(dev / "name", m.driver)
            _write(dev / "uevent", f"DRIVER={m.driver}\nOF_NAME={m.driver}")
            node = self._dir(m)
            for i, ch in enumerate(m.channels):
                if m.driver == "ina3221x":
                    _write(node / f"rail_name_{i}", ch.label)
                    _write(node / f"in_power{i}_input", str(ch.mw))
                    _write(node / f"in_voltage{i}_input", str(ch.mv))
                    _write(node / f"in_current{i}_input", str(ch.ma))
                    _write(node / f"crit_current_limit_{i}", "32760 ma")
                    continue
                n = i + 1
                _write(node / "name", "ina3221")
                _write(node / f"in{n}_label", ch.label)
                _write(node / f"in{n}_input", str(ch.mv))
                _write(node / f"curr{n}_input", str(ch.ma))
                _write(node / f"in{n}_enable", "0" if ch.role == "nc" else "1")
                _write(node / f"curr{n}_max", "32760")
                _write(node / f"shunt{n}_resistor", "5000")
                _write(node / f"in{n + 3}_input", "6240")  # shunt voltages, uV: not rails
            if m.driver == "ina3221":
                _write(node / "in7_label", "sum of shunt voltages")
                _write(node / "in7_input", "9680")
            # On the board devices/ADDR is a symlink to the same device.
            link = self.root / "bus/i2c/devices" / m.device
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(dev)
        return self

    def set(self, total_w: float, compute_w: float | None = None) -> dict[str, float]:
        """Write the rails so the board's total (its input rail, or the sum of
        rails) is ``total_w`` and the compute rail carries ``compute_w``
        (default: its idle share). Returns the watts written per rail."""
        channels = [ch for m in self.monitors for ch in m.channels if ch.role != "nc"]
        fixed = {ch.label: (ch.mw / 1000 if ch.mw else ch.mv * ch.ma / 1e6) for ch in channels if ch.role == "fixed"}
        compute = min(total_w, 0.4 * total_w if compute_w is None else compute_w)
        if not any(ch.role == "input" for ch in channels):
            # Without an input rail the other rails are parts of the total: they
            # share what the compute rail leaves, 30% to the fixed ones.
            share = 0.3 * (total_w - compute) / sum(fixed.values())
            fixed = {k: v * share for k, v in fixed.items()}
        watts: dict[str, float] = {}
        for ch in channels:
            if ch.role == "input":
                watts[ch.label] = total_w
            elif ch.role == "compute":
                watts[ch.label] = compute
            elif ch.role == "fixed":
                watts[ch.label] = fixed[ch.label]
            else:  # the rest of a sum-of-rails board
                watts[ch.label] = max(0.0, total_w - compute - sum(fixed.values()))
        for m in self.monitors:
            node = self._dir(m)
            for i, ch in enumerate(m.channels):
                if ch.role == "nc":
                    continue
                w = watts[ch.label]
                if m.driver == "ina3221x":
                    _replace(node / f"in_power{i}_input", str(round(w * 1000)))
                    _replace(node / f"in_current{i}_input", str(round(w * 1e6 / ch.mv)))
                else:
                    _replace(node / f"curr{i + 1}_input", str(round(w * 1e6 / ch.mv)))
        return watts


class LoadProbe:
    """A process's load as the board would feel it: CPU seconds from
    ``/proc/PID/stat`` and bytes sent from its JSON-lines results file."""

    def __init__(self, pid: int, results: Path | None = None) -> None:
        self.pid = pid
        self.results = results
        self._tick = os.sysconf("SC_CLK_TCK")
        self._fh: IO[str] | None = None
        self._partial = ""
        self.bytes_sent = 0

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads), seconds."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def poll_bytes(self) -> int:
        """Bytes sent so far, from the results written since the last call."""
        if self.results is None:
            return self.bytes_sent
        if self._fh is None:
            try:
                self._fh = open(self.results, encoding="utf-8")  # noqa: SIM115 (kept open to tail it)
            except FileNotFoundError:
                return self.bytes_sent
        chunk = self._fh.read()
        if chunk:
            lines = (self._partial + chunk).split("\n")
            self._partial = lines.pop()
            for line in lines:
                try:
                    self.bytes_sent += int(json.loads(line).get("bytes_up", 0))
                except (ValueError, AttributeError):
                    continue  # not a result line
        return self.bytes_sent

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


@dataclass(frozen=True)
class BoardModel:
    """``P = idle_w + cpu_w * cores_busy + j_per_byte * bytes_per_s``."""

    idle_w: float = 5.0
    cpu_w: float = 8.0
    j_per_byte: float = 0.0

    def __post_init__(self) -> None:
        for name in ("idle_w", "cpu_w", "j_per_byte"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"--{name.replace('_', '-')}: expected a number >= 0, got {getattr(self, name)}")

    def watts(self, cpu: float, bytes_per_s: float) -> tuple[float, float]:
        """(board total, compute rail)."""
        compute = 0.4 * self.idle_w + self.cpu_w * cpu
        return compute + 0.6 * self.idle_w + self.j_per_byte * bytes_per_s, compute


def follow(board: SimBoard, probe: LoadProbe, model: BoardModel, interval_s: float, window_s: float,
           stop: threading.Event, trace: IO[str] | None = None, seconds: float | None = None) -> int:
    """Keep ``board``'s rails on ``model`` of ``probe``'s load until the process
    ends, ``seconds`` pass or ``stop`` is set. Returns the number of updates."""
    history: deque[tuple[float, float, int]] = deque()
    t_end = None if seconds is None else time.monotonic() + seconds
    updates = 0
    while not stop.is_set() and probe.alive() and (t_end is None or time.monotonic() < t_end):
        try:
            cpu_s = probe.cpu_seconds()
        except (OSError, IndexError, ValueError):
            break  # the process went away between the check and the read
        now = time.monotonic()
        history.append((now, cpu_s, probe.poll_bytes()))
        while len(history) > 2 and history[1][0] <= now - window_s:
            history.popleft()
        t0, c0, b0 = history[0]
        span = now - t0
        cpu = (cpu_s - c0) / span if span > 0 else 0.0
        rate = (history[-1][2] - b0) / span if span > 0 else 0.0
        total, compute = model.watts(cpu, rate)
        board.set(total, compute)
        updates += 1
        if trace is not None:
            trace.write(json.dumps({"t": round(now, 6), "watts": round(total, 4), "cpu": round(cpu, 4),
                                    "bytes_per_s": round(rate, 1)}) + "\n")
            trace.flush()
        stop.wait(interval_s)
    return updates


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit simboard",
                                description="a simulated Jetson whose INA3221 rails follow a process's load")
    p.add_argument("--layout", required=True, help=f"board layout: {' | '.join(LAYOUTS)}")
    p.add_argument("--root", required=True, type=Path, help="where to write the sysfs tree (the agent's [power] sysfs_root)")
    p.add_argument("--pid", type=int, help="the process whose load the board follows (the edge agent)")
    p.add_argument("--watts", type=float, help="hold the board at this many watts instead")
    p.add_argument("--results", type=Path, help="the agent's JSON-lines sink, for the bytes it sent")
    p.add_argument("--idle-w", type=float, default=5.0, help="board power with the process idle (default 5)")
    p.add_argument("--cpu-w", type=float, default=8.0, help="watts per core the process keeps busy (default 8)")
    p.add_argument("--j-per-byte", type=float, default=0.0, help="radio energy per byte sent (default 0)")
    p.add_argument("--interval-ms", type=float, default=20.0, help="how often the rails are updated (default 20)")
    p.add_argument("--window-ms", type=float, default=200.0, help="the load is averaged over this (default 200)")
    p.add_argument("--trace", type=Path, help="write what the board drew, one JSON line per update")
    p.add_argument("--seconds", type=float, help="stop after this long")
    args = p.parse_args(list(argv))
    if (args.pid is None) == (args.watts is None):
        raise ConfigError("expected --pid PID (follow a process) or --watts W (hold), got "
                          + ("both" if args.pid is not None else "neither"))
    if not args.interval_ms > 0 or not args.window_ms > 0:
        raise ConfigError("--interval-ms and --window-ms: expected numbers > 0")
    model = BoardModel(args.idle_w, args.cpu_w, args.j_per_byte)
    probe = LoadProbe(args.pid, args.results) if args.pid is not None else None
    if probe is not None and not probe.alive():
        raise ConfigError(f"--pid {args.pid}: no such process")
    try:
        board = SimBoard(args.root, args.layout).create()
    except OSError as exc:
        raise ConfigError(f"--root {args.root}: cannot write the sysfs tree there: {exc.strerror}") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.watts is not None:
        if not args.watts > 0:
            raise ConfigError(f"--watts: expected a number > 0, got {args.watts:g}")
        board.set(args.watts)
        print(f"simboard: {args.layout} at {args.root}, held at {args.watts:g} W", flush=True)
        stop.wait(args.seconds)
        return 0
    assert probe is not None
    board.set(*model.watts(0.0, 0.0))
    print(f"simboard: {args.layout} at {args.root}, following pid {args.pid} "
          f"(idle {model.idle_w:g} W, {model.cpu_w:g} W per core, {model.j_per_byte:g} J/B)", flush=True)
    trace = open(args.trace, "w", encoding="utf-8") if args.trace else None  # noqa: SIM115
    try:
        updates = follow(board, probe, model, args.interval_ms / 1000.0, args.window_ms / 1000.0, stop, trace,
                         args.seconds)
    finally:
        probe.close()
        if trace is not None:
            trace.close()
    print(f"simboard: {updates} updates; pid {args.pid} {'ended' if not probe.alive() else 'still running'}",
          file=sys.stderr, flush=True)
    return 0
