"""Throughput with 2 cloud workers against 1, from clients that spread over them.

Issue 6, "Must show": "throughput with 2 workers against 1 (report the figure; at
least 1.7x where the machine has the cores)". Each run starts N real
``jetsplit cloud serve`` processes (``--threads 1 --max-batch 16``) on ``ipc://``
and C client processes, each a :class:`jetsplit.edge.pool.WorkerPool` over all N
workers keeping ``window`` requests in flight (closed loop: a reply frees a slot).
Requests carry the split bundle's real hand-off activation. Throughput is replies
per second over ``duration`` seconds after ``warmup``; runs with 1 and 2 workers
alternate so drift affects both alike; the median of the repetitions is reported.

No process is pinned: the workers and the clients share the machine's cores, as
they would on one host. With 2 cores the clients need about one core themselves,
so a second worker has little idle CPU to use and 1.7x is out of reach; the
results file says how many cores there were next to the ratio.

    $ .venv/bin/python bench/scaleout.py                  # ~1 minute
    $ .venv/bin/python bench/scaleout.py --bundle DIR --clients 4 --duration 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/support, shared with the tests
from tests.support.daemons import Daemon, start_worker  # noqa: E402
from tests.support.machine import describe  # noqa: E402
from tests.support.tiny import edge_offloads, tiny_bundle  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scaleout.json"
TARGET = 1.7


def tiny_split_bundle(out: Path) -> Path:
    """The tests' tiny split bundle (real ONNX models fitted on scikit-learn's
    digits, tests/support/tiny.py), written to ``out``."""
    return tiny_bundle(out / "bundle", "split").root


def offload_tensors(bundle_dir: Path, n: int = 64) -> tuple[str, int, list[dict[str, np.ndarray]]]:
    """(fingerprint, stage, hand-off tensors) for ``n`` real digits, all offloaded."""
    from jetsplit.bundle import load_bundle

    bundle = load_bundle(str(bundle_dir))
    stage, tensors, _ = edge_offloads(bundle, n)
    return bundle.fingerprint, stage, [{k: np.ascontiguousarray(v) for k, v in t.items()} for t in tensors]


def _client(endpoints: list[str], fingerprint: str, stage: int, tensors: list[dict[str, np.ndarray]],
            window: int, warmup: float, duration: float, start: Any, out: Any) -> None:
    """One client process: closed loop through a WorkerPool; puts (ok, errors, expired)."""
    from jetsplit.edge.pool import WorkerPool

    with WorkerPool(endpoints, fingerprint, timeout_ms=5000) as pool:
        end = time.monotonic() + 30
        while set(pool.members.values()) != {"up"} and time.monotonic() < end:
            pool.poll_replies(20)
        out.put("ready")
        start.wait(60)
        t0 = time.monotonic()
        t_measure, t_end = t0 + warmup, t0 + warmup + duration
        ok = errors = expired = i = 0
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            while pool.pending < window:
                pool.submit(stage, tensors[i % len(tensors)], deadline_ms=2000)
                i += 1
            for r in pool.poll_replies(10):
                if time.monotonic() >= t_measure:
                    ok += int(r.ok)
                    errors += int(not r.ok)
            lost = len(pool.expire())
            if time.monotonic() >= t_measure:
                expired += lost
        out.put((ok, errors, expired))


def _start_workers(bundle: Path, n: int, tmp: Path, run: int) -> list[Daemon]:
    procs: list[Daemon] = []
    try:
        for i in range(n):
            worker, _ = start_worker(str(bundle), bind=f"ipc://{tmp}/r{run}w{i}.sock", stderr=subprocess.DEVNULL,
                                     extra=("--threads", "1", "--max-batch", "16", "--log-level", "WARNING"))
            procs.append(worker)
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return procs


def run_once(bundle: Path, fingerprint: str, stage: int, tensors: list[dict[str, np.ndarray]], workers: int,
             clients: int, window: int, warmup: float, duration: float, tmp: Path, run: int) -> dict[str, Any]:
    procs = _start_workers(bundle, workers, tmp, run)
    endpoints = [f"ipc://{tmp}/r{run}w{i}.sock" for i in range(workers)]
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    try:
        cs = [ctx.Process(target=_client, args=(endpoints, fingerprint, stage, tensors, window, warmup, duration,
                                                 start, out)) for _ in range(clients)]
        for c in cs:
            c.start()
        # Every client connected and sees its workers up before the common start.
        assert all(out.get(timeout=60) == "ready" for _ in cs)
        start.set()
        got = [out.get(timeout=warmup + duration + 60) for _ in cs]
        for c in cs:
            c.join(30)
    finally:
        for p in procs:
            p.stop()
    ok = sum(g[0] for g in got)
    return {"workers": workers, "replies_per_s": ok / duration, "ok": ok,
            "errors": sum(g[1] for g in got), "expired": sum(g[2] for g in got)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a split bundle (default: the tests' tiny one)")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=6.0)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="jetsplit-scaleout-") as tmpdir:
        tmp = Path(tmpdir)
        bundle = args.bundle or tiny_split_bundle(tmp)
        fingerprint, stage, tensors = offload_tensors(bundle)
        runs: list[dict[str, Any]] = []
        for rep in range(args.repetitions):
            for workers in (1, 2):
                r = run_once(bundle, fingerprint, stage, tensors, workers, args.clients, args.window,
                             args.warmup, args.duration, tmp, len(runs))
                print(f"rep {rep} workers {workers}: {r['replies_per_s']:.0f} replies/s "
                      f"(errors {r['errors']}, expired {r['expired']})", flush=True)
                runs.append(r)
    med = {w: statistics.median(r["replies_per_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
    ratio = med[2] / med[1]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    result = {
        "benchmark": "scaleout",
        "machine": describe(),
        "settings": {"clients": args.clients, "window_per_client": args.window, "warmup_s": args.warmup,
                     "duration_s": args.duration, "repetitions": args.repetitions,
                     "worker": "jetsplit cloud serve --threads 1 --max-batch 16 (ipc://, unpinned)",
                     "bundle": "tests' tiny split bundle (32-float activation, f16 on the wire)"
                     if args.bundle is None else str(args.bundle)},
        # Other work on the machine moves these figures: say how busy it was.
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "runs": runs,
        "replies_per_s": {"1_worker": med[1], "2_workers": med[2]},
        "ratio_2_vs_1": ratio,
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "note": (f"{cores} usable cores shared by the workers and {args.clients} client processes; "
                 + ("the target needs a core per worker plus the clients' own: "
                    "not reachable here, reported as measured" if cores < 4 and ratio < TARGET else
                    "measured as is")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"1 worker {med[1]:.0f}/s, 2 workers {med[2]:.0f}/s: {ratio:.2f}x (target {TARGET}x) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
