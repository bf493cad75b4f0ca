"""Faults over a real network: the edge agent and the cloud worker in two network
namespaces joined by a veth pair (tests/system/netns.py), the link clean, then
impaired (80 +- 20 ms delay each way, 5% packet loss), then cut, then restored.

Every frame must still get exactly one result, the p95 latency must stay within
the budget (fallbacks allowed), the edge must run local-only while the link is
cut and offload again once it is back. Results are put in phases by their
``t_capture`` (``time.monotonic``, the same clock in every namespace) against the
phase boundaries this test records.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.daemons import Daemon, Lines, start_worker_in
from tests.support.frames import digits_folder
from tests.support.jsonl import read_jsonl

from .netns import Link, unavailable_reason

_REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"fault injection: {_REASON}")

WORKER_PORT, PROXY_PORT = 5555, 6555


@dataclass(frozen=True)
class Scenario:
    """The link and the edge's settings, and how long each phase lasts."""

    fps: float = 50.0
    latency_budget_ms: float = 250.0
    deadline_ms: float = 200.0
    delay_ms: float = 80.0
    jitter_ms: float = 20.0
    loss_pct: float = 5.0
    clean_s: float = 4.0
    impaired_s: float = 10.0
    cut_s: float = 4.0
    restore_max_s: float = 10.0


@dataclass(frozen=True)
class Phase:
    """Figures of the results captured in one phase."""

    name: str
    frames: int
    edge: int
    cloud: int
    fallback: int
    p95_ms: float
    threshold: float  # mean controlled threshold in force
    offloaded: float  # fraction of frames sent to the cloud (answered by it or by the deadline)
    reasons: dict[str, int]

    @classmethod
    def of(cls, name: str, results: list[dict[str, Any]]) -> Phase:
        where = [r["where"] for r in results]
        lat = [r["latency_ms"] for r in results] or [0.0]
        thr = [r["threshold"] for r in results if r.get("threshold") is not None] or [float("nan")]
        reasons: dict[str, int] = {}
        for r in results:
            if r.get("reason"):
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        # Sent: the cloud answered, or it was sent and the cloud was late or failed.
        unsent = {"circuit open", "window full", "cloud unavailable", "local only"}
        sent = sum(1 for r in results if r["where"] == "cloud" or (r["where"] == "fallback" and r.get("reason") not in unsent))
        return cls(name, len(results), where.count("edge"), where.count("cloud"), where.count("fallback"),
                   float(np.percentile(lat, 95)), float(np.mean(thr)), sent / max(len(results), 1), reasons)


def _between(results: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [r for r in results if start <= r["t_capture"] < end]


def _wait_for(out: Path, predicate: Any, timeout: float) -> float | None:
    """Poll the results file until ``predicate(results)`` holds; the time it did, or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate(read_jsonl(out)):
            return time.monotonic()
        time.sleep(0.05)  # polling a file another process writes
    return None


def run_scenario(bundle_root: Path, tmp_path: Path, sc: Scenario) -> dict[str, Any]:
    """Run the four phases; return the results, the edge's summary, the phase
    boundaries and the link's mechanisms."""
    n_frames = int(sc.fps * (sc.clean_s + sc.impaired_s + sc.cut_s + sc.restore_max_s + 20))
    src = digits_folder(tmp_path / "frames", n_frames, "all")
    out = tmp_path / "results.jsonl"
    marks: dict[str, float] = {}
    edge: Daemon | None = None
    worker: Daemon | None = None
    with Link() as link:
        try:
            link.start_proxy(PROXY_PORT, f"127.0.0.1:{WORKER_PORT}", seed=0)
            worker, _ = start_worker_in(link.exec_argv(link.cloud_ns, []), str(bundle_root),
                                        bind=f"tcp://127.0.0.1:{WORKER_PORT}")
            edge = Daemon("edge", "run", "--bundle", str(bundle_root),
                          "--cloud", f"tcp://{link.cloud_ip}:{PROXY_PORT}", "--insecure", "--source", str(src),
                          "--sink", f"jsonl:{out}", "--realtime", "--fps", str(sc.fps),
                          "--deadline-ms", str(sc.deadline_ms),
                          "--latency-budget-ms", str(sc.latency_budget_ms),
                          prefix=link.exec_argv(link.edge_ns, []))
            # Clean: offloading works before anything is impaired.
            t = _wait_for(out, lambda rs: any(r["where"] == "cloud" for r in rs), 30.0)
            assert t is not None, "no cloud result on the clean link"
            marks["clean"] = t
            time.sleep(sc.clean_s)  # the phase lasts this long: frames keep flowing meanwhile
            marks["impaired"] = time.monotonic()
            link.impair(delay_ms=sc.delay_ms, jitter_ms=sc.jitter_ms, loss_pct=sc.loss_pct)
            time.sleep(sc.impaired_s)
            marks["cut"] = time.monotonic()
            link.cut()
            time.sleep(sc.cut_s)
            link.restore()
            link.clear()
            marks["restored"] = time.monotonic()
            t = _wait_for(out, lambda rs: any(r["where"] == "cloud" and r["t_capture"] > marks["restored"]
                                               for r in rs), sc.restore_max_s)
            # A little more after the first cloud answer: offloading goes on.
            time.sleep(1.0)
            marks["end"] = time.monotonic()
            edge.proc.send_signal(signal.SIGTERM)
            assert edge.proc.wait(30) == 0
            mechanisms = dict(link.mechanisms)
            netem_error = link.netem_error
        finally:
            if edge is not None and edge.proc.poll() is None:
                edge.proc.kill()
                edge.proc.wait(10)
            if worker is not None:
                worker.stop()
    stderr = edge.proc.stderr.read() if edge.proc.stderr else ""
    summary = json.loads(stderr.strip().splitlines()[-1])["summary"]
    return {"results": read_jsonl(out), "summary": summary, "marks": marks, "mechanisms": mechanisms,
            "netem_error": netem_error, "n_frames": n_frames}


def _phases(run: dict[str, Any], sc: Scenario) -> dict[str, Phase]:
    rs, m = run["results"], run["marks"]
    # The controller needs a few updates to react: judge its threshold on the
    # second half of the impaired phase; the budget and losses on all of it.
    half = m["impaired"] + sc.impaired_s / 2
    return {
        "clean": Phase.of("clean", _between(rs, m["clean"], m["impaired"])),
        "impaired": Phase.of("impaired", _between(rs, m["impaired"], m["cut"])),
        "impaired_late": Phase.of("impaired_late", _between(rs, half, m["cut"])),
        "cut": Phase.of("cut", _between(rs, m["cut"], m["restored"])),
        "restored": Phase.of("restored", _between(rs, m["restored"], m["end"])),
    }


def _check(run: dict[str, Any], sc: Scenario, tmp_path: Path) -> None:
    """The Must-show checks on one run; the figures go to stdout and ``report.json``."""
    results, summary, marks = run["results"], run["summary"], run["marks"]
    phases = _phases(run, sc)
    back = sorted(r["t_capture"] for r in results if r["where"] == "cloud" and r["t_capture"] > marks["restored"])
    report = {"scenario": sc.__dict__, "mechanisms": run["mechanisms"], "netem_error": run["netem_error"],
              "summary": summary, "phases": {k: v.__dict__ for k, v in phases.items()},
              "resumed_after_s": back[0] - marks["restored"] if back else None}
    # One line for `pytest -s` readers and scripts; the same in the tmp dir.
    print("\nfaults-report " + json.dumps(report, default=str))
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1, default=str))

    # No frame lost or duplicated: one result per frame the source delivered; a
    # camera-paced source may drop a frame (counted, never delivered), nothing else.
    frames = [r["frame"] for r in results]
    assert len(frames) == len(set(frames)) == summary["frames"]
    assert max(frames) < len(frames) + summary["dropped"]  # the last frame read may be a drop
    # Drops are the grabber keeping the newest frame when the agent falls behind;
    # on a loaded 2-vCPU machine (tests running side by side) that reaches a few %.
    # The paced source starts with the agent's muxer, before the first batch is
    # gated: frames it dropped while the agent started (once 163 frames, 3.3 s, on
    # an idle CI machine) are bounded apart, so this bound is about keeping up.
    started_at = min(frames)
    assert started_at <= 5 * sc.fps, f"the agent took {started_at / sc.fps:.1f} s to take its first frame"
    running = max(frames) + 1 - started_at
    assert running - len(frames) <= 0.1 * running, summary

    clean, impaired, late, cut = (phases[k] for k in ("clean", "impaired", "impaired_late", "cut"))
    assert clean.cloud > 0 and clean.offloaded > 0.05, report
    # The budget holds on the impaired link, fallbacks allowed, and so does the frame rate.
    assert impaired.p95_ms <= sc.latency_budget_ms, report
    assert impaired.frames >= 0.8 * sc.fps * sc.impaired_s, report
    assert impaired.cloud > 0, report  # the impaired link is slow, not dead
    # Cut: local only, at the camera's rate, within the budget.
    assert cut.cloud == 0 and cut.frames >= 0.8 * sc.fps * sc.cut_s, report
    assert cut.p95_ms <= sc.latency_budget_ms, report
    # Restored: cloud answers again at the breaker's next probe. Its backoff doubles
    # while the link is cut, up to max_backoff_s (10 s): 12 s bounds that on a
    # loaded machine too (a few seconds when idle).
    assert back, f"offloading never resumed: {report}"
    assert back[0] - marks["restored"] < 12.0, f"offloading resumed {back[0] - marks['restored']:.2f} s after the restore"
    # The controller offloads less on the impaired link than on the clean one:
    # offloads that miss their deadline count against the latency budget.
    assert late.threshold < clean.threshold and late.offloaded < clean.offloaded, report


def test_link_impaired_cut_and_restored(make_bundle, tmp_path: Path) -> None:
    """The short version, inside `make test` (~25 s)."""
    sc = Scenario()
    run = run_scenario(make_bundle("split").root, tmp_path, sc)
    _check(run, sc, tmp_path)


@pytest.mark.slow
def test_link_impaired_cut_and_restored_long(make_bundle, tmp_path: Path) -> None:
    """The long version (`make soak`): a minute on the impaired link, at 30 fps."""
    sc = Scenario(fps=30.0, clean_s=10.0, impaired_s=60.0, cut_s=15.0)
    run = run_scenario(make_bundle("split").root, tmp_path, sc)
    _check(run, sc, tmp_path)


_ECHO = """
import socket, sys
srv = socket.create_server(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
srv.settimeout(30)
for _ in range(8):  # bounded: the harness test makes a few connections
    conn, _ = srv.accept()
    conn.settimeout(30)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
"""

_PROBE = """
import json, socket, sys, time
host, port, n, bulk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = {}
try:
    s = socket.create_connection((host, port), timeout=float(sys.argv[5]))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay in the figures
    rtts = []
    for _ in range(n):
        t = time.monotonic(); s.sendall(b"x"); s.recv(1); rtts.append((time.monotonic() - t) * 1000)
    out["rtt_ms"] = rtts
    if bulk:
        t = time.monotonic(); s.sendall(b"y" * bulk); got = 0
        while got < bulk:
            got += len(s.recv(65536))
        out["bulk_s"] = time.monotonic() - t
except OSError as exc:
    out["error"] = type(exc).__name__
print(json.dumps(out))
"""


def _probe(link: Link, n: int, bulk: int = 0, timeout: float = 5.0) -> dict[str, Any]:
    proc = link.run(link.edge_ns, [sys.executable, "-c", _PROBE, link.cloud_ip, str(PROXY_PORT), str(n), str(bulk),
                                   str(timeout)])
    return json.loads(proc.stdout)


def test_harness_impairs_the_link() -> None:
    """Each impairment does what it says, measured with plain TCP through the link."""
    with Link() as link:
        echo = subprocess.Popen(link.exec_argv(link.cloud_ns, [sys.executable, "-c", _ECHO, str(WORKER_PORT)]),
                                stdout=subprocess.PIPE, text=True)
        try:
            assert (Lines(echo.stdout).expect("ready", 30.0) or "").strip() == "ready"
            link.start_proxy(PROXY_PORT, f"127.0.0.1:{WORKER_PORT}", seed=0)
            clean = _probe(link, 20)
            assert np.median(clean["rtt_ms"]) < 20, clean
            link.impair(delay_ms=80, jitter_ms=20)
            delayed = _probe(link, 10)
            # Each direction 60-100 ms: a round trip of 120-200 ms (plus scheduling).
            assert 110 < min(delayed["rtt_ms"]) and np.median(delayed["rtt_ms"]) < 230, delayed
            link.clear()
            if link.netem_error is not None:  # loss by nftables: its counters show real drops
                link.impair(loss_pct=5)
                lossy = _probe(link, 100)
                dropped = link.dropped_packets()
                # Real drops, and TCP recovers every one: all pings answered.
                assert dropped > 0 and len(lossy["rtt_ms"]) == 100, lossy
                print(f"\nloss: {dropped} packets dropped, ping-pong p95 {np.percentile(lossy['rtt_ms'], 95):.1f} ms, "
                      f"max {max(lossy['rtt_ms']):.1f} ms")
                link.clear()
            link.impair(rate_kbit=800)
            limited = _probe(link, 1, bulk=100_000, timeout=10.0)
            assert limited["bulk_s"] > 0.7, limited  # 100 kB at 100 kB/s, less the bucket
            link.clear()
            link.cut()
            assert _probe(link, 1, timeout=1.0).get("error") == "TimeoutError"
            assert {"delay", "loss", "rate", "cut"} <= set(link.mechanisms), link.mechanisms
            print("\nharness-report " + json.dumps({
                "clean_rtt_ms_median": float(np.median(clean["rtt_ms"])),
                "delayed_rtt_ms": [float(np.min(delayed["rtt_ms"])), float(np.median(delayed["rtt_ms"])),
                                   float(np.max(delayed["rtt_ms"]))],
                "rate_800kbit_100kB_s": limited["bulk_s"], "mechanisms": link.mechanisms}))
        finally:
            echo.kill()
            echo.wait(10)
