"""``jetsplit plan``: fleet capacity, from devices x fps x offload rate x bytes.

    jetsplit plan --devices 200 --fps 30 --offload-rate 0.1 --bytes-per-offload 26000 \\
                  --worker-rps 3000 [--headroom 0.7] [--json]

Offloads per second = devices x fps x offload rate; workers = that / (worker
throughput x headroom), rounded up, plus one so a worker can fail or be upgraded
(N+1); uplink = offloads x bytes, per device and in all. ``--bundle`` with
``--trace`` fills the offload rate and bytes from a collected trace instead;
``--worker-rps`` comes from ``bench/worker_throughput.py`` (or your own load test)
on the cloud machine type.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from jetsplit.errors import ConfigError

__all__ = ["Plan", "main", "plan"]


@dataclass(frozen=True)
class Plan:
    devices: int
    fps: float
    offload_rate: float
    bytes_per_offload: float
    worker_rps: float
    headroom: float
    offloads_per_s: float
    workers: int
    workers_with_spare: int
    uplink_mbit_s_per_device: float
    uplink_mbit_s_total: float


def plan(devices: int, fps: float, offload_rate: float, bytes_per_offload: float, worker_rps: float,
         headroom: float = 0.7) -> Plan:
    """The capacity a fleet needs (see the module docstring for the arithmetic)."""
    for name, value in (("devices", devices), ("fps", fps), ("worker_rps", worker_rps)):
        if not value > 0:
            raise ConfigError(f"{name}: expected a number > 0, got {value}")
    if not 0 <= offload_rate <= 1:
        raise ConfigError(f"offload_rate: expected a fraction in [0, 1], got {offload_rate}")
    if not 0 < headroom <= 1:
        raise ConfigError(f"headroom: expected a fraction in (0, 1], got {headroom}")
    if bytes_per_offload < 0:
        raise ConfigError(f"bytes_per_offload: expected a number >= 0, got {bytes_per_offload}")
    offloads = devices * fps * offload_rate
    workers = math.ceil(offloads / (worker_rps * headroom)) if offloads > 0 else 0
    per_device = fps * offload_rate * bytes_per_offload * 8 / 1e6
    return Plan(devices, fps, offload_rate, bytes_per_offload, worker_rps, headroom, offloads, workers,
                workers + 1 if workers else 0, per_device, per_device * devices)


def _from_trace(path: Path) -> tuple[float, float]:
    """Offload rate and mean bytes per offload from a trace collected with
    ``jetsplit collect`` (bytes are charged to the first cloud stage)."""
    from jetsplit.trace import Trace

    trace = Trace.load(path)
    stats = trace.cascade()
    offloaded = trace.bytes_up.sum(axis=1) > 0
    sent = trace.bytes_up.sum(axis=1)
    first_cloud = next((s for s in range(trace.num_stages) if trace.bytes_up[:, s].any()), None)
    if first_cloud is None:
        raise ConfigError(f"trace {str(path)!r}: records no bytes sent (collect it with jetsplit collect)")
    reach = stats.exit_stage >= first_cloud
    rate = float(reach.mean())
    per = float(sent[offloaded].mean()) if offloaded.any() else 0.0
    return rate, per


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit plan", description="fleet capacity planning: workers and uplink "
                                "for devices x fps x offload rate x bytes (docs/tools.md)")
    p.add_argument("--devices", type=int, required=True, help="edge boards in the fleet")
    p.add_argument("--fps", type=float, required=True, help="frames per second on each board")
    p.add_argument("--offload-rate", type=float, help="fraction of frames offloaded, 0..1 (or --trace)")
    p.add_argument("--bytes-per-offload", type=float, help="bytes sent per offloaded frame (or --trace)")
    p.add_argument("--trace", type=Path, help="take offload rate and bytes from a collected trace")
    p.add_argument("--worker-rps", type=float, required=True, help="requests/s one worker sustains")
    p.add_argument("--headroom", type=float, default=0.7, help="fraction of a worker's throughput to plan on")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = p.parse_args(list(argv))
    rate, per = args.offload_rate, args.bytes_per_offload
    if args.trace is not None:
        t_rate, t_per = _from_trace(args.trace)
        rate = t_rate if rate is None else rate
        per = t_per if per is None else per
    if rate is None or per is None:
        raise ConfigError("give --offload-rate and --bytes-per-offload, or --trace")
    result = plan(args.devices, args.fps, rate, per, args.worker_rps, args.headroom)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    print(f"{result.devices} devices x {result.fps:g} fps x {100 * result.offload_rate:.1f}% offloaded "
          f"= {result.offloads_per_s:,.0f} requests/s")
    print(f"workers: {result.workers} at {100 * result.headroom:.0f}% of {result.worker_rps:,.0f} req/s each; "
          f"{result.workers_with_spare} with one spare (N+1)")
    print(f"uplink: {result.uplink_mbit_s_per_device:.3f} Mbit/s per device, "
          f"{result.uplink_mbit_s_total:,.1f} Mbit/s into the cloud ({result.bytes_per_offload:,.0f} B per offload)")
    return 0
