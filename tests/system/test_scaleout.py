"""Scale-out as processes: two ``jetsplit cloud serve`` workers under load from a
WorkerPool (and from ``jetsplit edge run`` with two ``--cloud``), one SIGKILLed
mid-run: no request lost or duplicated, and the survivor takes the load.

Throughput with 2 workers against 1 is measured by ``bench/scaleout.py`` and
recorded in ``bench/results/scaleout.json``, not asserted here."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.edge.pool import WorkerPool
from tests.support.daemons import Daemon, start_worker
from tests.support.frames import digits_folder
from tests.support.jsonl import read_jsonl, wait_lines


def drive(pool: WorkerPool, stage: int, tensors: list[dict[str, np.ndarray]], n: int, *, window: int,
          deadline_ms: float, on_progress: Any = None) -> dict[int, str]:
    """Send ``n`` requests keeping ``window`` in flight; every id's outcome ("ok",
    an error status, or "expired"), failing on any id reported twice."""
    outcomes: dict[int, str] = {}
    ids: set[int] = set()
    end = time.monotonic() + 120.0
    while len(outcomes) < n:
        assert time.monotonic() < end, f"{len(outcomes)}/{n} outcomes; stats {pool.stats}"
        while pool.pending < window and len(ids) < n:
            ids.add(pool.submit(stage, tensors[len(ids) % len(tensors)], deadline_ms=deadline_ms))
        for r in pool.poll_replies(20):
            assert r.id in ids and r.id not in outcomes, f"duplicate or unknown reply {r.id}"
            outcomes[r.id] = "ok" if r.ok else r.status.name.lower()
        for rid in pool.expire():
            assert rid in ids and rid not in outcomes, f"duplicate or unknown expiry {rid}"
            outcomes[rid] = "expired"
        if on_progress is not None:
            on_progress(len(outcomes))
    assert set(outcomes) == ids
    return outcomes


def test_two_workers_one_sigkilled_nothing_lost_or_duplicated(make_bundle, offloads, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    stage, tensors, _ = offloads(bundle, 64)
    eps = [f"ipc://{tmp_path}/w{i}.sock" for i in range(2)]
    workers = [start_worker(str(bundle.root), bind=ep)[0] for ep in eps]
    n = 3000
    marks: dict[str, int] = {}

    def kill_one(done: int) -> None:
        if "kill" not in marks and done >= n // 3:
            workers[0].proc.kill()  # SIGKILL: no drain, what it held is gone
            marks["kill"] = done

    try:
        with WorkerPool(eps, bundle.fingerprint, heartbeat_ms=100, dead_after_ms=500) as pool:
            assert pool.wait_ready(10_000)
            end = time.monotonic() + 10
            while set(pool.members.values()) != {"up"}:
                assert time.monotonic() < end, pool.members
                pool.poll_replies(20)
            outcomes = drive(pool, stage, tensors, n, window=16, deadline_ms=3000, on_progress=kill_one)
            assert pool.members[eps[0]] == "down" and pool.members[eps[1]] == "up"
            stats = pool.stats
        assert workers[0].proc.wait(10) == -9
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()
    # Generous deadlines: every request, the dead worker's included, is answered.
    counts = {k: list(outcomes.values()).count(k) for k in set(outcomes.values())}
    assert counts == {"ok": n}, counts
    assert stats.resent >= 1 and stats.member_downs == 1, stats
    assert n - marks["kill"] > n // 2  # the survivor took the rest of the load


def test_edge_daemon_with_two_workers_one_killed(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    src = digits_folder(tmp_path / "frames", 1000, "all")
    eps = [f"ipc://{tmp_path}/w{i}.sock" for i in range(2)]
    workers = [start_worker(str(bundle.root), bind=ep)[0] for ep in eps]
    out = tmp_path / "results.jsonl"
    edge = Daemon("edge", "run", "--bundle", str(bundle.root), "--cloud", eps[0], "--cloud", eps[1],
                  "--source", str(src), "--sink", f"jsonl:{out}", "--realtime", "--fps", "200",
                  "--deadline-ms", "300")
    try:
        wait_lines(out, 300)
        workers[1].proc.kill()
        t_kill = time.monotonic()
        assert edge.proc.wait(60) == 0
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()
        if edge.proc.poll() is None:
            edge.proc.kill()
    stderr = edge.proc.stderr.read() if edge.proc.stderr else ""
    results = read_jsonl(out)
    frames = [r["frame"] for r in results]
    summary = json.loads(stderr.strip().splitlines()[-1])["summary"]
    assert len(frames) == len(set(frames)) == summary["frames"]
    assert len(frames) + summary["dropped"] == 1000
    # The killed worker was declared down; which signal saw it first (the socket
    # monitor's disconnect, a missed heartbeat, a failed send) depends on timing.
    assert f"member {eps[1]} down (" in stderr, stderr[-2000:]
    after = [r for r in results if r["t_capture"] > t_kill + 0.5]
    assert after and any(r["where"] == "cloud" for r in after), "the survivor did not take the load"
