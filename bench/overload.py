"""Overload: the worker's goodput against offered load, its memory, and how fast it sheds.

Issue 13, "Benchmark". A real ``jetsplit cloud serve`` process serves a bundle's
first cloud stage; the load is :class:`jetsplit.cloud.loadgen.Load` (one thread,
many DEALER connections, requests pre-encoded but each with its own id and
deadline, every reply decoded and accounted for exactly once):

- **capacity**: closed loop, 32 edges with 4 requests in flight each and a 1 s
  deadline: the worker's ok answers per second with work always waiting;
- **overload**: open loop (Poisson arrivals) at ``m`` x that capacity, ``m`` in
  0.5, 1, 2, 5, 10, with 150 ms deadlines, from 64 edges with a window of 32 each
  (an edge with a full window answers the frame itself: ``window_full``).
  Goodput is ok answers per second that arrived within their deadline, as a
  fraction of the capacity measured in the windows just before and just after
  (the machine is shared: capacity drifts, so each point has its own baseline;
  the ratio is the median over ``--reps`` pairs). The worker's own count of
  answers sent before their deadline (``jetsplit_goodput_total``, deadline
  counted from when it received the request) is recorded beside the client's:
  on a machine shared with other work the gap between the two is time the
  requests and replies spent waiting for a CPU outside the worker's queue.
  Also per window, from the worker's metrics: ``engine_busy``, the share of the
  window its engine spent running batches, and ``run_in_time``, the share of
  the requests it ran that it answered before their deadline: with the
  capacity itself drifting under other load, these say whether admission kept
  the engine busy with work that counted;
- **flood**: 64 connections sending 50 ms requests as fast as the generator goes,
  with ``--queue-mib`` configured: the worker's peak RSS (``VmHWM``) against its
  bound, the RSS before the flood + the queue bytes + the stated overhead;
- **time to shed**: the round trip of ``OVERLOADED`` answers at the client.

Placement as in bench/worker_throughput.py: the engine thread on one core
(``--engine-cpus``), the socket thread and the load generator on the other.

    $ .venv/bin/python bench/overload.py                          # ~5 min, both bundles
    $ .venv/bin/python bench/overload.py --bundle demo:little-big --reps 1 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support, shared with the tests
from tests.support.machine import describe, pin  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "overload.json"
JETSPLIT = str(Path(sys.executable).with_name("jetsplit"))
MULTIPLES = (0.5, 1.0, 2.0, 5.0, 10.0)
TARGET = 0.9  # goodput >= 0.9 x capacity at 2x, 5x and 10x
# The RSS bound's overhead beyond the queue bytes (docs/deploy.md, "Overload"):
# ZeroMQ's pipes (rcvhwm requests per connection), formed batches, allocator slack.
OVERHEAD_MIB = 32.0


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Worker:
    def __init__(self, bundle: str, engine_core: int | None, io_core: int | None, extra: Sequence[str]) -> None:
        self.metrics_port = _free_port()
        args = [JETSPLIT, "cloud", "serve", "--bundle", bundle, "--bind", "tcp://127.0.0.1:*",
                "--log-level", "WARNING", "--metrics-port", str(self.metrics_port), *extra]
        if engine_core is not None and io_core is not None:
            args += ["--engine-cpus", str(engine_core), "--io-cpus", str(io_core)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("serving "):
                self.endpoint = line.split()[1]
                break
        else:
            raise RuntimeError(f"worker did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")

    def counters(self) -> dict[str, float]:
        """The worker's goodput, engine seconds and requests run, so far."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            for name in ("jetsplit_goodput_total", "jetsplit_compute_seconds_sum", "jetsplit_batch_size_sum"):
                if line.startswith(name + " "):
                    out[name] = float(line.split()[1])
        return out

    def rss_mib(self) -> float:
        return _status_kib(self.proc.pid, "VmRSS") / 1024.0

    def peak_mib(self) -> float:
        return _status_kib(self.proc.pid, "VmHWM") / 1024.0

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def _unpin(cores: set[int]) -> None:
    """Undo :func:`machine.pin` for every thread of this process (the next
    worker started must be free to place its threads)."""
    for tid in [int(t) for t in os.listdir("/proc/self/task")]:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:
            pass


def _capacity(load: Any, seconds: float) -> float:
    return float(load.run(0, seconds, 32, 4, 1000.0).goodput)


def run_bundle(bundle: str, seconds: float, reps: int, engine_core: int | None, io_core: int | None,
               flood_mib: float) -> dict[str, Any]:
    from jetsplit.bundle import load_bundle
    from jetsplit.cloud.loadgen import Load, offload_sample
    from jetsplit.handoff import wire_encodings

    spec = load_bundle(bundle)
    fingerprint, encoding = spec.fingerprint, wire_encodings(spec)
    stage, tensors, _ = offload_sample(spec, 1)
    cores = os.sched_getaffinity(0)
    worker = _Worker(bundle, engine_core, io_core, [])
    points: list[dict[str, Any]] = []
    try:
        pin(io_core)  # the load generator shares the socket thread's core
        load = Load(worker.endpoint, fingerprint, stage, tensors[0], encodings=encoding)
        _capacity(load, 1.0)  # warm-up: connections, first batches, the service estimate
        before = _capacity(load, seconds)
        for m in MULTIPLES:
            runs = []
            for _ in range(reps):
                c0 = worker.counters()
                tally = load.run(m * before, seconds, 64, 32, 150.0)
                c1 = worker.counters()
                d = {k: c1.get(k, 0.0) - c0.get(k, 0.0) for k in c1}
                worker_goodput = d["jetsplit_goodput_total"] / seconds
                # Contention-proof view: how busy the engine was, and what share of
                # what it ran was answered in time (worker side).
                engine_busy = d["jetsplit_compute_seconds_sum"] / seconds
                useful = d["jetsplit_goodput_total"] / d["jetsplit_batch_size_sum"] if d["jetsplit_batch_size_sum"] else 0.0
                after = _capacity(load, seconds)
                capacity = (before + after) / 2.0
                runs.append({"capacity": round(capacity, 1), "ratio": round(tally.goodput / capacity, 3),
                             "worker_side_ratio": round(worker_goodput / capacity, 3),
                             "engine_busy": round(engine_busy, 3), "run_in_time": round(useful, 3),
                             "loadavg_1": round(os.getloadavg()[0], 2), **tally.summary()})
                before = after
            points.append({"multiple": m, "goodput_ratio": statistics.median(r["ratio"] for r in runs),
                           "worker_side_ratio": statistics.median(r["worker_side_ratio"] for r in runs),
                           "engine_busy": statistics.median(r["engine_busy"] for r in runs),
                           "run_in_time": statistics.median(r["run_in_time"] for r in runs),
                           "runs": runs})
        base_rss = worker.rss_mib()
    finally:
        worker.stop()
        _unpin(cores)
    flood = run_flood(bundle, fingerprint, stage, tensors[0], encoding, seconds, engine_core, io_core, flood_mib,
                      before)
    shed = [r["shed_p50_ms"] for p in points for r in p["runs"] if r["shed_p50_ms"] is not None]
    return {
        "bundle": bundle, "stage": stage, "request_bytes": sum(int(t.nbytes) for t in tensors[0].values()),
        "encoding": encoding, "worker_rss_mib_after_overload": round(base_rss, 1),
        "points": points,
        "shed_round_trip_ms_median": round(statistics.median(shed), 3) if shed else None,
        "flood": flood,
        "target_met": all(p["goodput_ratio"] >= TARGET for p in points if p["multiple"] >= 2.0),
    }


def run_flood(bundle: str, fingerprint: str, stage: int, tensors: Any, encoding: Any, seconds: float,
              engine_core: int | None, io_core: int | None, queue_mib: float, capacity: float) -> dict[str, Any]:
    """64 connections with 50 ms deadlines as fast as the generator goes."""
    from jetsplit.cloud.loadgen import Load

    cores = os.sched_getaffinity(0)
    worker = _Worker(bundle, engine_core, io_core, ["--queue-mib", str(queue_mib)])
    try:
        pin(io_core)
        load = Load(worker.endpoint, fingerprint, stage, tensors, encodings=encoding)
        _capacity(load, 1.0)
        base = worker.rss_mib()
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                samples.append(worker.rss_mib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tally = load.run(max(50_000.0, 20 * capacity), seconds * 2, 64, 64, 50.0)
        stop.set()
        sampler.join()
        peak = worker.peak_mib()
        bound = base + queue_mib + OVERHEAD_MIB
        return {"connections": 64, "window": 64, "deadline_ms": 50.0, "queue_mib": queue_mib,
                "rss_before_mib": round(base, 1), "rss_peak_mib": round(peak, 1),
                "rss_max_sampled_mib": round(max(samples, default=base), 1),
                "bound_mib": round(bound, 1), "overhead_mib": OVERHEAD_MIB, "within_bound": peak <= bound,
                "loadavg_1": round(os.getloadavg()[0], 2), **tally.summary()}
    finally:
        worker.stop()
        _unpin(cores)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", action="append", help="bundle (repeatable; default demo:little-big and demo:split)")
    p.add_argument("--seconds", type=float, default=3.0, help="seconds per window (default 3)")
    p.add_argument("--reps", type=int, default=3, help="overload windows per point (default 3)")
    p.add_argument("--queue-mib", type=float, default=16.0, help="the flood's configured queue (default 16 MiB)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    engine_core, io_core = (cores[-1], cores[0]) if len(cores) >= 2 else (None, None)
    bundles = args.bundle or ["demo:little-big", "demo:split"]
    record: dict[str, Any] = {
        "benchmark": "overload", "machine": describe(),
        "setup": {"worker": "jetsplit cloud serve (a real process), default admission settings",
                  "engine_core": engine_core, "io_core": io_core, "load_generator_core": io_core,
                  "capacity": "closed loop, 32 edges x 4 in flight, 1000 ms deadline",
                  "overload": "open loop (Poisson), 64 edges x window 32, 150 ms deadline",
                  "seconds_per_window": args.seconds, "reps": args.reps, "target": TARGET},
        "bundles": [],
    }
    for bundle in bundles:
        record["bundles"].append(run_bundle(bundle, args.seconds, args.reps, engine_core, io_core, args.queue_mib))
        print(json.dumps({k: v for k, v in record["bundles"][-1].items() if k != "points"}, indent=1), flush=True)
        for pt in record["bundles"][-1]["points"]:
            print(f"  {pt['multiple']:>4}x  goodput {pt['goodput_ratio']:.3f} of capacity "
                  f"(worker side {pt['worker_side_ratio']:.3f}; engine busy {pt['engine_busy']:.2f}, "
                  f"{pt['run_in_time']:.2f} of what it ran in time)", flush=True)
    record["machine"]["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
