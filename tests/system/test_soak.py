"""Soak: 8 edge clients against one ``jetsplit cloud serve`` process: nothing lost,
nothing duplicated, and the worker's RSS flat after warm-up.

Each client is a thread with its own socket keeping a window of real hand-off
tensors in flight, as an edge agent does; half use the plain ``Client`` (what the
agent uses for one fixed endpoint), half a ``WorkerPool`` (what it uses for
several, or for a DNS name), so both are soaked. The short version runs in
``make test``; ``make soak`` runs 8 x 20,000 and records the RSS series in
``bench/results/soak.json``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.edge.pool import WorkerPool
from jetsplit.protocol import Client
from tests.support.daemons import rss_kib, start_worker
from tests.support.machine import describe

CLIENTS = 8
WINDOW = 4
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "soak.json"


class _EdgeClient(threading.Thread):
    """Sends ``n`` requests through its own client; records every outcome once."""

    def __init__(self, k: int, endpoint: str, fingerprint: str, stage: int,
                 tensors: list[dict[str, np.ndarray]], n: int) -> None:
        super().__init__(name=f"edge-client-{k}", daemon=True)
        self.k, self.endpoint, self.fingerprint, self.stage, self.tensors, self.n = k, endpoint, fingerprint, stage, tensors, n
        self.kind = "WorkerPool" if k % 2 else "Client"
        self.outcomes: dict[int, str] = {}
        self.duplicates = 0
        self.error: BaseException | None = None
        self.done = 0  # read by the sampling thread: a progress count, races are harmless

    def run(self) -> None:
        try:
            client: Client | WorkerPool = (WorkerPool if self.kind == "WorkerPool" else Client)(
                self.endpoint, self.fingerprint, timeout_ms=10_000)
            with client:
                assert client.wait_ready(10_000), "worker not reachable"
                sent: set[int] = set()
                end = time.monotonic() + 600
                while len(self.outcomes) < self.n:
                    assert time.monotonic() < end, f"{len(self.outcomes)}/{self.n} outcomes"
                    while len(sent) - len(self.outcomes) < WINDOW and len(sent) < self.n:
                        sent.add(client.submit(self.stage, self.tensors[len(sent) % len(self.tensors)],
                                               deadline_ms=5000))
                    for r in client.poll_replies(20):
                        self._record(r.id, "ok" if r.ok else r.status.name.lower())
                    for rid in client.expire():
                        self._record(rid, "expired")
                    self.done = len(self.outcomes)
                assert set(self.outcomes) == sent
        except BaseException as exc:  # passed on to the test's thread
            self.error = exc

    def _record(self, rid: int, outcome: str) -> None:
        if rid in self.outcomes:
            self.duplicates += 1
        self.outcomes[rid] = outcome


def soak(bundle: Any, offloads: Any, tmp_path: Path, per_client: int, sample_s: float) -> dict[str, Any]:
    stage, tensors, _ = offloads(bundle, 64)
    worker, endpoint = start_worker(str(bundle.root), bind=f"ipc://{tmp_path}/soak.sock")
    series: list[tuple[float, int, int]] = []  # (s since start, requests done, worker RSS KiB)
    try:
        clients = [_EdgeClient(k, endpoint, bundle.fingerprint, stage, tensors, per_client) for k in range(CLIENTS)]
        t0 = time.monotonic()
        for c in clients:
            c.start()
        while any(c.is_alive() for c in clients):
            series.append((time.monotonic() - t0, sum(c.done for c in clients), rss_kib(worker.pid)))
            for c in clients:
                c.join(sample_s / CLIENTS)  # the sampling interval, spent waiting for the clients
        elapsed = time.monotonic() - t0
        series.append((elapsed, sum(c.done for c in clients), rss_kib(worker.pid)))
    finally:
        worker.stop()
    for c in clients:
        if c.error is not None:
            raise c.error
    outcomes: dict[str, int] = {}
    for c in clients:
        for o in c.outcomes.values():
            outcomes[o] = outcomes.get(o, 0) + 1
    return {"clients": clients, "series": series, "elapsed_s": elapsed, "outcomes": outcomes}


def _rss_after_warmup(series: list[tuple[float, int, int]], total: int, warmup: float) -> tuple[int, int, int]:
    """(RSS at the end of warm-up, max after it, last), KiB."""
    after = [s for s in series if s[1] >= warmup * total]
    assert len(after) >= 3, "too few RSS samples after warm-up"
    return after[0][2], max(s[2] for s in after), after[-1][2]


def test_soak_short_nothing_lost_or_duplicated(make_bundle, offloads, tmp_path: Path) -> None:
    per_client = 500
    r = soak(make_bundle("split"), offloads, tmp_path, per_client, sample_s=0.2)
    assert sum(c.duplicates for c in r["clients"]) == 0
    assert r["outcomes"] == {"ok": CLIENTS * per_client}, r["outcomes"]


@pytest.mark.slow
def test_soak_8_clients_x_20000(make_bundle, offloads, tmp_path: Path) -> None:
    per_client, warmup = 20_000, 0.2
    total = CLIENTS * per_client
    r = soak(make_bundle("split"), offloads, tmp_path, per_client, sample_s=1.0)
    duplicates = sum(c.duplicates for c in r["clients"])
    base, peak, last = _rss_after_warmup(r["series"], total, warmup)
    growth = peak / base - 1.0
    result = {
        "benchmark": "soak",
        "machine": describe(),
        "settings": {"clients": CLIENTS, "requests_per_client": per_client, "window_per_client": WINDOW,
                     "deadline_ms": 5000, "client_kinds": [c.kind for c in r["clients"]],
                     "worker": "jetsplit cloud serve (defaults), ipc://", "warmup_fraction": warmup,
                     "bundle": "tests' tiny split bundle"},
        "elapsed_s": r["elapsed_s"],
        "requests_per_s": total / r["elapsed_s"],
        "outcomes": r["outcomes"],
        "duplicates": duplicates,
        "lost": total - r["outcomes"].get("ok", 0),
        "rss_kib": {"after_warmup": base, "max_after_warmup": peak, "last": last,
                    "growth_after_warmup": growth, "limit": 0.10},
        "rss_series": [{"t_s": round(t, 2), "done": d, "rss_kib": k} for t, d, k in r["series"]],
        "passed": duplicates == 0 and r["outcomes"] == {"ok": total} and growth <= 0.10,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    assert duplicates == 0
    assert r["outcomes"] == {"ok": total}, r["outcomes"]
    assert growth <= 0.10, f"worker RSS grew {growth:.1%} after warm-up ({base} -> {peak} KiB)"
