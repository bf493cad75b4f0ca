"""Overload on loopback: a real worker process past its capacity, real sockets.

The worker must answer every request exactly once (ok, OVERLOADED or EXPIRED; the
client counts its own timeouts), refuse rather than queue what it cannot serve in
time, keep its memory within the configured bound whoever floods it, and the
edges must back off and come back. Throughput figures are in
bench/results/overload.json (bench/overload.py); nothing here asserts a rate.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jetsplit.bundle import load_bundle
from jetsplit.cloud.loadgen import Load, Tally, offload_sample
from jetsplit.demo import BUNDLES_DIR
from jetsplit.handoff import wire_encodings
from tests.support.daemons import Daemon, rss_kib, start_worker
from tests.support.frames import digits_folder
from tests.support.jsonl import read_jsonl

needs_demo = pytest.mark.skipif(not (BUNDLES_DIR / "split").is_dir(), reason="demo:split is not built (make bundles)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metrics(port: int) -> dict[str, float]:
    """The worker's Prometheus samples, ``name{labels}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def _answered(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("jetsplit_requests_total{"))


def _settled(port: int, timeout: float = 15.0) -> dict[str, float]:
    """Metrics once the worker holds nothing and its count of answers has stopped
    moving: polled, not slept."""
    end = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while True:
        samples = _metrics(port)
        answered = _answered(samples)
        if answered != last:
            last, since = answered, time.monotonic()
        elif time.monotonic() - since > 0.5 and samples.get("jetsplit_in_flight{}") == 0.0:
            return samples
        assert time.monotonic() < end, "the worker kept requests in flight"
        time.sleep(0.05)


def _load(endpoint: str, spec: str = "demo:split") -> Load:
    bundle = load_bundle(spec)
    stage, tensors, _ = offload_sample(bundle, 1)
    return Load(endpoint, bundle.fingerprint, stage, tensors[0], encodings=wire_encodings(bundle))


def _exactly_once(tally: Tally) -> None:
    assert tally.sent > 0
    assert tally.unanswered == 0 and tally.duplicates == 0, tally.summary()
    assert tally.errors == {}, tally.summary()  # only ok, OVERLOADED and EXPIRED


def _overload_run(multiples: tuple[float, ...], seconds: float) -> None:
    port = _free_port()
    worker, endpoint = start_worker("demo:split", bind="tcp://127.0.0.1:*", extra=("--metrics-port", str(port)))
    try:
        load = _load(endpoint)
        # Warm first (connections, the engine's first batches, the service
        # estimate): a cold first second once measured a tenth of the capacity,
        # and "5x" of that did not overload the worker at all.
        load.run(0, 1.0, 32, 4, 1000.0)
        capacity = load.run(0, 1.0, 32, 4, 1000.0).goodput
        assert capacity > 0
        for m in multiples:
            before = _settled(port)
            tally = load.run(m * capacity, seconds, 64, 32, 150.0)
            after = _settled(port)
            _exactly_once(tally)
            # The worker's own count agrees: it answered at most once per request
            # sent (those it never read were still queued on the client side when
            # the run ended: client timeouts) and everything the client heard back.
            worker_answered = _answered(after) - _answered(before)
            assert tally.answered + tally.late <= worker_answered <= tally.sent, (m, worker_answered, tally.summary())
            refused = sum(v - before.get(k, 0.0) for k, v in after.items()
                          if k.startswith("jetsplit_shed_total{") and "status=overloaded" in k)
            # Refused at once by the worker (on a loaded machine the answer may
            # still reach the client after its deadline: a counted timeout).
            assert refused > 0 and refused >= tally.overloaded, (m, tally.summary())
            assert after["jetsplit_goodput_total{}"] > before["jetsplit_goodput_total{}"]
    finally:
        assert worker.stop() == 0


@needs_demo
def test_a_fresh_workers_first_burst_is_served_in_time() -> None:
    """128 requests at once to a worker that just said ready, 1 s deadlines: every
    one answered ok. The float16 widening session was built on the first batch,
    which stalled the socket thread 1-2 s: all 128 timed out."""
    worker, endpoint = start_worker("demo:split", bind="tcp://127.0.0.1:*")
    try:
        tally = _load(endpoint).run(0, 0.5, 32, 4, 1000.0)
    finally:
        assert worker.stop() == 0
    _exactly_once(tally)
    assert tally.ok == tally.sent, tally.summary()


@needs_demo
def test_past_capacity_every_request_gets_one_answer_and_the_excess_is_refused() -> None:
    """5x the capacity measured in the same run, 150 ms deadlines, 64 edges with a
    window of 32: one answer per request, and OVERLOADED answers among them."""
    _overload_run((5.0,), 2.0)


@pytest.mark.slow
@needs_demo
def test_two_five_and_ten_times_capacity() -> None:
    _overload_run((2.0, 5.0, 10.0), 4.0)


@needs_demo
def test_flood_of_short_deadlines_keeps_rss_within_the_configured_bound() -> None:
    """64 connections sending 50 ms requests as fast as one thread can: the worker's
    peak RSS stays within its RSS before the flood + the queue's bytes + the stated
    overhead (docs/deploy.md, "Overload"), where a worker without a bound grew by
    hundreds of MB."""
    queue_mib, rcvhwm, connections = 8.0, 8, 64
    worker, endpoint = start_worker("demo:split", bind="tcp://127.0.0.1:*",
                                    extra=("--queue-mib", str(queue_mib), "--rcvhwm", str(rcvhwm)))
    try:
        load = _load(endpoint)
        load.run(0, 0.5, 32, 4, 1000.0)  # warm: connections, batches, the service estimate
        base_mib = rss_kib(worker.pid) / 1024.0
        tally = load.run(50_000.0, 3.0, connections, 64, 50.0)
        _exactly_once(tally)
        peak_mib = _peak_kib(worker.pid) / 1024.0
    finally:
        assert worker.stop() == 0
    request_mib = 64 * 14 * 14 * 2 / 2**20  # an f16 carry of demo:split
    bound = base_mib + queue_mib + connections * rcvhwm * request_mib + 32.0
    assert peak_mib <= bound, f"peak RSS {peak_mib:.1f} MiB over the bound {bound:.1f} MiB ({tally.summary()})"


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def test_edges_back_off_from_an_overloaded_worker_and_come_back(make_bundle, tmp_path: Path) -> None:
    """A real edge process offloading to a worker that a flood overloads for a few
    seconds: every frame still has exactly one result, frames the worker refused
    are answered on the edge at once (reason ``overloaded``), the offload rate
    drops while the flood lasts and recovers once it is gone."""
    bundle = make_bundle("split")  # its gate alone offloads ~60% of these digits
    frames = 2400
    src = digits_folder(tmp_path / "frames", frames, "all")
    endpoint = f"ipc://{tmp_path}/worker.sock"
    out = tmp_path / "results.jsonl"
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[edge]\nbundle = "{bundle.root}"\ncloud = ["{endpoint}"]\nsource = "{src}"\nsinks = ["jsonl:{out}"]\n'
        'deadline_ms = 150.0\nwindow = 8\n'
        # A quick loop, so the test is short: cut and restore within a second.
        "[controller]\nupdate_interval_s = 0.1\nmax_step_up = 0.1\ncongestion_recover = 0.1\n")
    # A small queue: the flood's bursts fill it, so the worker refuses at once.
    worker, _ = start_worker(str(bundle.root), bind=endpoint, extra=("--queue-requests", "4", "--max-batch", "4"))
    flood: subprocess.Popen[str] | None = None
    try:
        edge = Daemon("edge", "run", "--config", str(config), "--realtime", "--fps", "200")
        _wait_results(out, 500)
        flood = subprocess.Popen([sys.executable, "-m", "jetsplit.cloud.loadgen", endpoint, "--bundle", str(bundle.root),
                                  "--rate", "20000", "--seconds", "3", "--edges", "32", "--window", "16"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        flood_out, flood_err = flood.communicate(timeout=60)
        assert flood.returncode == 0, flood_err
        assert edge.proc.wait(90) == 0
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
        worker.stop()
    tally = json.loads(flood_out)
    flood_start, flood_end = tally["started"], tally["started"] + tally["seconds"]
    assert tally["overloaded"] > 0 and tally["unanswered"] == 0 and tally["duplicates"] == 0
    results = read_jsonl(out)
    summary = json.loads(edge.proc.stderr.read().strip().splitlines()[-1])["summary"] if edge.proc.stderr else {}
    # Exactly one result per frame the source delivered (a camera-paced source
    # drops what the loop could not take in time, and counts it).
    ids = [r["frame"] for r in results]
    assert len(ids) == len(set(ids)) == summary["frames"] and summary["frames"] + summary["dropped"] == frames

    first = min(r["t_capture"] for r in results)
    last = max(r["t_capture"] for r in results)

    def offload_rate(t0: float, t1: float) -> float:
        window = [r for r in results if t0 <= r["t_capture"] < t1]
        assert len(window) > 50, (t0, t1, len(window), first, last, summary)
        return sum(r["bytes_up"] > 0 for r in window) / len(window)

    before = offload_rate(first + 0.3, flood_start)
    during = offload_rate(flood_start + 1.0, flood_end)
    after = offload_rate(max(flood_end + 1.5, last - 1.0), last + 1.0)
    refused = [r for r in results if r.get("reason") == "overloaded"]
    print(f"offload rate before {before:.3f}, during the flood {during:.3f}, after {after:.3f}; "
          f"{len(refused)} frames refused; flood {tally}")
    assert refused, "no frame was refused by the worker: the flood did not overload it"
    assert all(r["where"] == "fallback" for r in refused)
    assert during < 0.7 * before, (before, during, after)
    assert after > 0.8 * before, (before, during, after)


def _wait_results(path: Path, n: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while len(read_jsonl(path)) < n:
        assert time.monotonic() < end, f"fewer than {n} results in {timeout} s"
        time.sleep(0.05)
